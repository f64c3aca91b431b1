"""The ``tagpipe.bert.v1`` encoder on a tiny random BERT: windows, pooling, persistence, training options."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from tagpipe.errors import ModelError
from tagpipe.model import Tagger
from tagpipe.plugins.encoders.bert import BertEncoder, best_windows, window_bounds
from tagpipe.training.loop import Trainer
from tagpipe.training.settings import TrainSettings
from tests.conftest import TINY_CONLL

SENTENCES = [
    ["the", "unhappy", "cat", "sat", "on", "the", "mat", "walking", "home", "."],
    ["dog"],
    ["a", "happy", "dog", "ran", "home", "playing", "!"],
]
LABELS = ["O", "B-PER", "I-PER", "E-PER", "S-PER"]


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def encoder(tiny_bert_dir: Path, **config) -> BertEncoder:
    config.setdefault("dropout", 0.0)
    return BertEncoder.from_corpus([], pretrained=str(tiny_bert_dir), **config).eval()


def direct_states(enc: BertEncoder, ids: list[int]) -> torch.Tensor:
    """The transformer run on one window of ids ``[S, H]`` (no batching, no padding)."""
    with torch.no_grad():
        return enc.model(input_ids=torch.tensor([ids])).last_hidden_state[0]


def oracle_words(enc: BertEncoder, words: list[str], pooling: str, *, window: int) -> torch.Tensor:
    """Word features ``[W, H]`` computed the slow way: every window run alone, each word pooled
    from the window where min(subwords before, subwords after) is largest (first on ties)."""
    enc_words = enc.tokenizer(words, is_split_into_words=True, add_special_tokens=False)
    pieces, word_of = enc_words["input_ids"], enc_words.word_ids()
    capacity = window - 2
    bounds = window_bounds(len(pieces), capacity, enc.cfg.stride)
    cls_id, sep_id = enc.tokenizer.cls_token_id, enc.tokenizer.sep_token_id
    states = [direct_states(enc, [cls_id, *pieces[a:b], sep_id]) for a, b in bounds]
    out = []
    for w in range(len(words)):
        mine = [i for i, x in enumerate(word_of) if x == w]
        contexts = [min(mine[0] - a, b - 1 - mine[-1]) for a, b in bounds]
        j = contexts.index(max(contexts))
        a, b = bounds[j]
        vectors = torch.stack([states[j][1 + i - a] for i in mine if a <= i < b])
        out.append({"first": vectors[0], "mean": vectors.mean(0), "max": vectors.max(0).values}[pooling])
    return torch.stack(out)


# -- featurize / forward ----------------------------------------------------------------------------
@pytest.mark.parametrize("pooling", ["first", "mean", "max"])
def test_pooled_word_features_match_the_transformer_run_directly(tiny_bert_dir, pooling):
    enc = encoder(tiny_bert_dir, pooling=pooling)
    features = enc.featurize(SENTENCES + [[]])
    assert features["input_ids"].shape[0] == 3  # one window per non-empty sentence
    with torch.no_grad():
        out = enc(features)
    assert out.shape == (4, 10, 32)
    assert torch.all(out[3] == 0) and torch.all(out[1, 1:] == 0)  # padding rows are zeros
    for b, words in enumerate(SENTENCES):
        expected = oracle_words(enc, words, pooling, window=128)
        torch.testing.assert_close(out[b, : len(words)], expected, atol=1e-5, rtol=1e-5)


def test_multi_subword_words_are_one_row_each(tiny_bert_dir):
    enc = encoder(tiny_bert_dir)
    features = enc.featurize([["unhappy", "walking"]])
    assert features["input_ids"].shape == (1, 6)  # [CLS] un ##happy walk ##ing [SEP]
    assert features["word_slot"].tolist() == [[-1, 0, 0, 1, 1, -1]]
    assert enc(features).shape == (1, 2, 32)


@pytest.mark.parametrize("pooling", ["first", "mean", "max"])
def test_long_documents_are_windowed_without_dropping_a_token(tiny_bert_dir, pooling):
    window, stride = 8, 3
    enc = encoder(tiny_bert_dir, pooling=pooling, window=window, stride=stride)
    long_doc = (SENTENCES[0] + SENTENCES[2]) * 3  # 51 words, 60 subwords: ~19 windows of 6
    features = enc.featurize([long_doc, ["dog"]])
    assert features["input_ids"].shape[1] <= window
    slots = features["word_slot"][features["word_slot"] >= 0].unique().tolist()
    assert slots == list(range(len(long_doc))) + [len(long_doc)]  # every word, exactly its own slot
    with torch.no_grad():
        out = enc(features)
    assert out.shape == (2, len(long_doc), 32)
    torch.testing.assert_close(out[0], oracle_words(enc, long_doc, pooling, window=window), atol=1e-5, rtol=1e-5)


def test_window_arithmetic():
    assert window_bounds(5, 6, 3) == [(0, 5)]
    assert window_bounds(12, 6, 3) == [(0, 6), (3, 9), (6, 12)]
    assert window_bounds(13, 6, 4) == [(0, 6), (4, 10), (7, 13)]  # the last window ends at the end
    word_of = torch.tensor([0, 1, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9])
    choice = best_windows(word_of, 10, [(0, 6), (3, 9), (6, 12)])
    # word 3 (piece 4): 1 after it in window 0, 1 before it in window 1: a tie, the earlier wins;
    # word 4 (piece 5): none after it in window 0, 2 before and 3 after in window 1
    assert choice.tolist() == [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]


def test_bad_window_settings_are_refused(tiny_bert_dir):
    with pytest.raises(ValueError, match="window"):
        encoder(tiny_bert_dir, window=500)  # the model has 128 positions
    with pytest.raises(ValueError, match="stride"):
        encoder(tiny_bert_dir, window=8, stride=7)
    with pytest.raises(ValueError, match="pooling"):
        encoder(tiny_bert_dir, pooling="last")


# -- loading and saving ----------------------------------------------------------------------------
def test_clear_errors_for_folders_that_cannot_serve(tiny_bert_dir, tmp_path):
    with pytest.raises(ModelError, match="not a folder"):
        BertEncoder.from_corpus([], pretrained=str(tmp_path / "nowhere"))
    with pytest.raises(ModelError, match="--pretrained"):
        BertEncoder.from_corpus([])
    no_tokenizer = tmp_path / "no-tokenizer"
    no_tokenizer.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(tiny_bert_dir / name, no_tokenizer)
    with pytest.raises(ModelError, match="fast tokenizer"):
        BertEncoder.from_corpus([], pretrained=str(no_tokenizer))
    no_weights = tmp_path / "no-weights"
    shutil.copytree(tiny_bert_dir, no_weights)
    (no_weights / "model.safetensors").unlink()
    with pytest.raises(ModelError, match="no weights"):
        BertEncoder.from_corpus([], pretrained=str(no_weights))


def test_saved_tagger_is_self_contained(tiny_bert_dir, tmp_path):
    source = tmp_path / "pretrained"
    shutil.copytree(tiny_bert_dir, source)
    tagger = Tagger.build(SENTENCES, LABELS, encoder="tagpipe.bert.v1", decoder="tagpipe.crf.v1",
                          encoder_config={"pretrained": str(source), "window": 8, "stride": 3, "dropout": 0.0})
    with torch.no_grad():
        for p in tagger.parameters():
            p.add_(torch.randn_like(p) * 0.1)  # "fine-tuned": differs from the folder's weights
    before = tagger.tag(SENTENCES, with_scores=True)
    tagger.save(tmp_path / "model")
    shutil.rmtree(source)
    assert str(source) not in (tmp_path / "model" / "config.json").read_text()
    assert (tmp_path / "model" / "encoder" / "tokenizer.json").is_file()
    loaded = Tagger.load(tmp_path / "model")
    after = loaded.tag(SENTENCES, with_scores=True)
    assert after[0] == before[0]
    for a, b in zip(after[1], before[1], strict=True):
        assert a == pytest.approx(b, abs=1e-6)


def test_stack_bert_then_bilstm_round_trips(tiny_bert_dir, tmp_path):
    config = {"encoders": [{"name": "tagpipe.bert.v1", "config": {"dropout": 0.0}},
                           {"name": "tagpipe.bilstm.v1", "config": {"hidden": 8, "dropout": 0.0}}],
              "pretrained": str(tiny_bert_dir)}
    tagger = Tagger.build(SENTENCES, LABELS, encoder="tagpipe.stack.v1", decoder="tagpipe.softmax.v1",
                          encoder_config=config).eval()
    assert tagger.encoder.output_dim == 16
    features = tagger.featurize(SENTENCES)
    hidden, mask = tagger.encode(features)
    assert hidden.shape == (3, 10, 16) and torch.all(hidden[~mask] == 0)
    tagger.save(tmp_path / "model")
    saved = json.loads((tmp_path / "model" / "config.json").read_text())["encoder"]["config"]
    assert [s["name"] for s in saved["encoders"]] == ["tagpipe.bert.v1", "tagpipe.bilstm.v1"]
    assert str(tiny_bert_dir) not in json.dumps(saved)
    assert Tagger.load(tmp_path / "model").tag(SENTENCES) == tagger.tag(SENTENCES)


# -- training --------------------------------------------------------------------------------------
def bert_settings(tmp_path, tiny_bert_dir, **overrides) -> TrainSettings:
    values = dict(train=str(TINY_CONLL), dev=str(TINY_CONLL), output=str(tmp_path / "model"), encoder="bert",
                  pretrained=str(tiny_bert_dir), encoder_config={"dropout": 0.0}, epochs=2, batch_size=8,
                  lr=1e-2, encoder_lr=1e-3, device="cpu", seed=1, threads=1)
    values.update(overrides)
    return TrainSettings(**values)


def run(settings: TrainSettings) -> dict:
    return Trainer(settings, log=lambda _: None, progress=False).run()


@pytest.mark.parametrize("decoder", ["crf", "softmax"])
def test_trains_end_to_end_with_any_decoder(tiny_bert_dir, tmp_path, decoder):
    result = run(bert_settings(tmp_path, tiny_bert_dir, decoder=decoder))
    losses = [h["loss"] for h in result["history"]]
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
    model = Tagger.load(tmp_path / "model")
    assert model.encoder_name == "tagpipe.bert.v1" and len(model.tag([["Angela", "Merkel"]])[0]) == 2


def test_a_bert_run_resumes_from_its_checkpoint(tiny_bert_dir, tmp_path):
    run(bert_settings(tmp_path, tiny_bert_dir, epochs=1))
    resumed = Trainer(bert_settings(tmp_path, tiny_bert_dir, epochs=2), resume=True, log=lambda _: None,
                      progress=False).run()
    assert [h["epoch"] for h in resumed["history"]] == [1, 2]


def test_encoder_and_head_learning_rates_are_separate(tiny_bert_dir, tmp_path):
    s = bert_settings(tmp_path, tiny_bert_dir)
    trainer = Trainer(s, log=lambda _: None, progress=False)
    tagger = Tagger.build([["a"]], LABELS, encoder=s.encoder, decoder=s.decoder, encoder_config=s.encoder_config)
    groups = trainer._optimizer(tagger).param_groups
    assert [g["lr"] for g in groups] == [1e-3, 1e-2]
    assert sum(len(g["params"]) for g in groups) == len(list(tagger.parameters()))


@pytest.mark.parametrize("options", [{"precision": "bf16"}, {"optimizer": "adafactor"}])
def test_bf16_on_cpu_and_adafactor_train(tiny_bert_dir, tmp_path, options):
    result = run(bert_settings(tmp_path, tiny_bert_dir, epochs=1, **options))
    assert torch.isfinite(torch.tensor(result["history"][0]["loss"]))


def test_bf16_autocast_on_cpu_trains_the_bilstm_too(tmp_path):
    small = {"word_dim": 16, "char_dim": 8, "char_hidden": 8, "hidden": 16}
    losses = {}
    for precision in ("fp32", "bf16"):
        s = TrainSettings(train=str(TINY_CONLL), output=str(tmp_path / precision), encoder_config=small, epochs=1,
                          batch_size=8, lr=1e-2, device="cpu", precision=precision)
        losses[precision] = run(s)["history"][0]["loss"]
    assert losses["bf16"] == pytest.approx(losses["fp32"], rel=0.02)


def test_grad_checkpointing_gives_the_same_loss_and_gradients(tiny_bert_dir):
    tagger = Tagger.build(SENTENCES, LABELS, encoder="tagpipe.bert.v1", decoder="tagpipe.crf.v1",
                          encoder_config={"pretrained": str(tiny_bert_dir), "dropout": 0.0}).train()
    features = tagger.featurize(SENTENCES)
    tags = torch.zeros((3, 10), dtype=torch.long)

    def loss_and_grads():
        tagger.zero_grad()
        loss = tagger.loss(features, tags)
        loss.backward()
        return loss.item(), [p.grad.clone() for p in tagger.encoder.parameters() if p.grad is not None]

    plain = loss_and_grads()
    assert tagger.encoder.enable_grad_checkpointing()
    assert getattr(tagger.encoder.model, "is_activation_checkpointing", False)
    checkpointed = loss_and_grads()
    assert checkpointed[0] == pytest.approx(plain[0], abs=1e-5)
    assert len(checkpointed[1]) == len(plain[1]) > 0
    for a, b in zip(checkpointed[1], plain[1], strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_accumulating_two_batches_of_4_equals_one_batch_of_8(tiny_bert_dir, tmp_path):
    eight = tmp_path / "eight.conll"
    eight.write_text("\n\n".join(TINY_CONLL.read_text().split("\n\n")[1:9]) + "\n")  # 8 sentences: one step
    weights = []
    for name, batch, accumulate in (("whole", 8, 1), ("accumulated", 4, 2)):
        run(bert_settings(tmp_path / name, tiny_bert_dir, train=str(eight), dev=None, epochs=1, batch_size=batch,
                          accumulate=accumulate, optimizer="sgd", clip=0.0, warmup=0.0, reference_batch_size=8))
        weights.append(Tagger.load(tmp_path / name / "model").state_dict())
    from safetensors.torch import load_file

    pretrained = load_file(str(tiny_bert_dir / "model.safetensors"))
    key = "bert.encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(weights[0]["encoder.model." + key[5:]], pretrained[key])  # the step moved BERT
    for key in weights[0]:
        torch.testing.assert_close(weights[1][key], weights[0][key], atol=1e-6, rtol=1e-5)


# -- Chinese, per character ------------------------------------------------------------------------
MSRA_LIKE = """我 O
在 B-LOC
北 M-LOC
京 E-LOC

他 S-PER
是 O
中 B-ORG
国 M-ORG
大 M-ORG
学 E-ORG
生 O

京 M-LOC
上 O
海 B-LOC
"""  # the last segment was cut mid-entity on both sides: M-LOC after nothing, B-LOC never closed


@pytest.mark.parametrize("invalid, kept", [("repair", 3), ("drop", 2)])
def test_chinese_bmes_training_repairs_or_drops_broken_segments(tiny_bert_dir, tmp_path, invalid, kept):
    corpus = tmp_path / "msra.txt"
    corpus.write_text(MSRA_LIKE, encoding="utf-8")
    logs: list[str] = []
    s = bert_settings(tmp_path, tiny_bert_dir, train=str(corpus), dev=str(corpus), scheme="bmes", lang="zh",
                      invalid_tags=invalid, epochs=1, batch_size=2)
    trainer = Trainer(s, log=logs.append, progress=False)
    result = trainer.run()
    assert torch.isfinite(torch.tensor(result["history"][0]["loss"]))
    action = {"repair": "repaired", "drop": "dropped"}[invalid]
    assert trainer.invalid_counts[str(corpus)] == {"repaired": 0, "dropped": 0, action: 1}
    assert f"{corpus}: 1 sentences whose tags break BMES {action}" in logs
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert config["lang"] == "zh" and config["tokenizer"] == {"segmenter": "char"}
    assert len(trainer._read(str(corpus))) == kept


def test_chinese_models_predict_per_character(tiny_bert_dir, tmp_path):
    from tagpipe.predict import Predictor

    tagger = Tagger.build([list("我在北京")], ["O", "B-LOC", "I-LOC", "E-LOC", "S-LOC"], encoder="tagpipe.bert.v1",
                          decoder="tagpipe.softmax.v1", encoder_config={"pretrained": str(tiny_bert_dir)}, lang="zh")
    tagger.save(tmp_path / "model")
    record = Predictor.load(tmp_path / "model").predict(["我们在北京上学"])[0]
    assert [t["text"] if isinstance(t, dict) else t for t in record["tokens"]] == list("我们在北京上学")

    from click.testing import CliRunner

    from tagpipe.cli import cli

    (tmp_path / "in.txt").write_text("我们在北京上学\n", encoding="utf-8")
    result = CliRunner().invoke(cli, ["annotate", str(tmp_path / "in.txt"), "-m", str(tmp_path / "model"), "-o",
                                      str(tmp_path / "out.jsonl"), "-q"])
    assert result.exit_code == 0, result.output
    annotated = json.loads((tmp_path / "out.jsonl").read_text(encoding="utf-8"))
    assert annotated["tokens"] == record["tokens"], "annotate tokenises as the model was trained: per character"


def test_cli_training_options(tiny_bert_dir, tmp_path):
    from click.testing import CliRunner

    from tagpipe.cli import cli

    args = ["train", "--train", str(TINY_CONLL), "--output", str(tmp_path / "model"), "--encoder", "bert",
            "--pretrained", str(tiny_bert_dir), "--epochs", "1", "--batch-size", "4", "--accumulate", "2",
            "--lr", "1e-3", "--encoder-lr", "1e-4", "--optimizer", "adam", "--grad-checkpointing", "--device", "cpu",
            "--threads", "1", "-q"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    meta = json.loads((tmp_path / "model" / "config.json").read_text())["meta"]["settings"]
    assert meta["optimizer"] == "tagpipe.adamw.v1" and meta["accumulate"] == 2 and meta["encoder_lr"] == 1e-4
    assert meta["grad_checkpointing"] and meta["encoder_config"]["pretrained"] == str(tiny_bert_dir)


def test_a_roformer_folder_trains_saves_and_predicts_through_the_bert_encoder(tmp_path):
    """RoFormer (rotary positions) loads as any HF encoder folder; its WordPiece tokenizer loads as BERT's."""
    from tests.tiny_models import build_tiny_roformer

    folder = build_tiny_roformer(tmp_path / "roformer")
    model = Tagger.build(SENTENCES, LABELS, encoder="tagpipe.bert.v1", decoder="tagpipe.crf.v1",
                         encoder_config={"pretrained": str(folder)}, scheme="bioes")
    assert type(model.encoder.model).__name__ == "RoFormerModel"
    assert model.encoder.enable_grad_checkpointing()
    model.train()
    loss = model.loss(model.featurize(SENTENCES), torch.zeros((3, 10), dtype=torch.long))
    loss.backward()
    torch.optim.Adam(model.parameters(), lr=1e-2).step()
    assert torch.isfinite(loss)
    model.save(tmp_path / "model")
    shutil.rmtree(folder)  # the saved tagger never reads the pretrained folder again
    loaded = Tagger.load(tmp_path / "model")
    assert json.loads((tmp_path / "model" / "encoder" / "config.json").read_text())["model_type"] == "roformer"
    model.eval()
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key
    features = model.featurize(SENTENCES)
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode(features)[0], model.encode(features)[0], atol=0, rtol=0)
    assert loaded.tag(SENTENCES) == model.tag(SENTENCES)
