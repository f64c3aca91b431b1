"""UniLM seq2seq: the mask, training, cached decoding, save/load, the spaCy component and the CLI.

Everything runs on the session's tiny random BERT (hidden 32, 2 layers), on one CPU thread.
"""

from __future__ import annotations

import json
import pickle

import pytest
import torch

from tagpipe.errors import ModelError
from tagpipe.plugins.seq2seq.attention import Packed, unilm_mask
from tagpipe.plugins.seq2seq.generation import generate
from tagpipe.plugins.seq2seq.model import Seq2SeqModel

SOURCES = ["the cat sat on the mat", "a dog ran home", "big green house", "the small dog was happy"]
COPY = [{"source": s, "target": s} for s in SOURCES]


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model(tiny_bert_dir) -> Seq2SeqModel:
    """A tiny seq2seq model, briefly trained to copy (read-only in tests)."""
    torch.manual_seed(0)
    m = Seq2SeqModel.from_pretrained(tiny_bert_dir, max_source_length=24, max_target_length=12)
    optimizer = torch.optim.AdamW(m.parameters(), lr=3e-3)
    for _ in range(10):
        loss = m.loss(SOURCES, SOURCES)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return m.eval()


def test_mask_is_bidirectional_on_the_source_and_causal_on_the_target():
    # row 0: 3 source tokens + 1 source pad, 3 target tokens; row 1: 4 source, 2 target + 1 pad
    segment = torch.tensor([[0, 0, 0, 0, 1, 1, 1]] * 2)
    valid = torch.tensor([[1, 1, 1, 0, 1, 1, 1], [1, 1, 1, 1, 1, 1, 0]], dtype=torch.bool)
    mask = unilm_mask(segment, valid)
    assert mask.shape == (2, 1, 7, 7)
    for b in range(2):
        for i in range(7):
            for j in range(7):
                seen = bool(valid[b, j]) and (segment[b, j] == 0 or (segment[b, i] == 1 and j <= i))
                seen = seen or i == j  # padding rows see themselves, nothing else changes
                expected = 0.0 if seen else torch.finfo(torch.float32).min
                assert mask[b, 0, i, j].item() == expected, (b, i, j)
    # spelled out for row 0: a source token sees no target, a target token no later target
    allowed = (mask[0, 0] == 0).int().tolist()
    assert allowed[0] == [1, 1, 1, 0, 0, 0, 0]
    assert allowed[4] == [1, 1, 1, 0, 1, 0, 0]
    assert allowed[6] == [1, 1, 1, 0, 1, 1, 1]


def test_own_layers_match_the_hf_forward_on_a_source(tiny_bert_dir):
    m = Seq2SeqModel.from_pretrained(tiny_bert_dir, max_source_length=24, max_target_length=12).eval()
    ids = m.encode_sources(SOURCES[:2])
    packed = m.pack(ids, [[], []])
    hidden = m.embed(packed.input_ids, packed.segment_ids, packed.position_ids)
    hidden, _ = m.run_layers(hidden, unilm_mask(packed.segment_ids, packed.valid))
    reference = m.mlm(input_ids=packed.input_ids, attention_mask=packed.valid.long()).logits
    assert torch.allclose(m.lm_logits(hidden)[packed.valid], reference[packed.valid], atol=1e-5)


def test_lm_head_is_tied_to_the_word_embeddings(model):
    assert model.mlm.cls.predictions.decoder.weight is model.mlm.bert.embeddings.word_embeddings.weight


def test_a_few_steps_reduce_the_copy_loss(tiny_bert_dir):
    torch.manual_seed(0)
    m = Seq2SeqModel.from_pretrained(tiny_bert_dir, max_source_length=24, max_target_length=12)
    optimizer = torch.optim.AdamW(m.parameters(), lr=3e-3)
    losses = []
    for _ in range(8):
        loss = m.loss(SOURCES, SOURCES)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]


def test_loss_ignores_the_source_and_padding(model):
    ids = model.encode_targets(["the cat", "a dog ran home"])
    packed: Packed = model.pack(model.encode_sources(["x", "y"]), [[model.bos_id, *t] for t in ids])
    assert packed.segment_ids[:, packed.source_width :].eq(1).all()
    assert packed.valid[0, packed.source_width :].tolist() == [True] * 3 + [False] * 2


@pytest.mark.parametrize("strategy", ["greedy", "beam", "sample"])
def test_cached_and_uncached_decoding_agree(model, strategy):
    options = dict(strategy=strategy, num_beams=3, top_k=20, top_p=0.9, seed=7, batch_size=3)
    cached = generate(model, SOURCES, use_cache=True, **options)
    uncached = generate(model, SOURCES, use_cache=False, **options)
    assert cached == uncached
    assert all(len(row) <= model.cfg.max_target_length for row in cached)


def test_cached_steps_give_the_uncached_logits(model):
    from tagpipe.plugins.seq2seq.generation import CachedStepper, UncachedStepper

    ids = model.encode_sources(SOURCES)  # sources of different lengths: padding inside the rows
    cached, uncached = CachedStepper(model, ids), UncachedStepper(model, ids)
    with torch.inference_mode():
        assert torch.allclose(cached.start(), uncached.start(), atol=1e-5)
        for token in (10, 11, 12, 13):
            tokens = torch.full((len(ids),), token)
            assert torch.allclose(cached.step(tokens), uncached.step(tokens), atol=1e-5)
        order = torch.tensor([2, 2, 0, 1])  # beam search reorders rows
        cached.reorder(order)
        uncached.reorder(order)
        tokens = torch.tensor([5, 6, 7, 8])
        assert torch.allclose(cached.step(tokens), uncached.step(tokens), atol=1e-5)


def test_one_beam_without_length_penalty_is_greedy(model):
    greedy = generate(model, SOURCES, strategy="greedy")
    assert generate(model, SOURCES, strategy="beam", num_beams=1, length_penalty=0.0) == greedy


def test_min_length_and_sampling_seed(model):
    rows = generate(model, SOURCES[:2], strategy="greedy", min_length=5, max_length=5)
    assert [len(r) for r in rows] == [5, 5]
    a = generate(model, SOURCES, strategy="sample", seed=1)
    assert a == generate(model, SOURCES, strategy="sample", seed=1)


def test_save_load_round_trip_generates_the_same(model, tmp_path):
    model.save(tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["task"] == "seq2seq" and config["format_version"] == 1
    assert (tmp_path / "m" / "encoder" / "tokenizer.json").is_file()  # the same layout as every task's folder
    loaded = Seq2SeqModel.load(tmp_path / "m")
    for strategy in ("greedy", "beam"):
        assert loaded.generate(SOURCES, strategy=strategy) == model.generate(SOURCES, strategy=strategy)


def test_a_folder_saved_before_the_common_layout_still_loads(model, tmp_path):
    model.save(tmp_path / "m")
    (tmp_path / "m" / "encoder").rename(tmp_path / "m" / "transformer")  # how 0.1 wrote it
    assert Seq2SeqModel.load(tmp_path / "m").generate(SOURCES[:1]) == model.generate(SOURCES[:1])


def test_loading_errors_are_model_errors(tmp_path, model):
    with pytest.raises(ModelError, match="not a folder"):
        Seq2SeqModel.from_pretrained(tmp_path / "missing")
    with pytest.raises(ModelError, match="no config.json"):
        Seq2SeqModel.load(tmp_path)
    model.save(tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    (tmp_path / "m" / "config.json").write_text(json.dumps({**config, "task": "ner"}))
    with pytest.raises(ModelError, match="task 'ner'"):
        Seq2SeqModel.load(tmp_path / "m")


def test_spacy_component_sets_the_extension_and_survives_to_disk(model, tmp_path):
    import spacy

    import tagpipe.plugins.seq2seq.spacy_component  # noqa: F401 - registers the factory in a source checkout

    model.save(tmp_path / "model")
    nlp = spacy.blank("en")
    component = nlp.add_pipe("tagpipe_seq2seq", config={"model": str(tmp_path / "model")})
    assert not component.is_loaded
    docs = list(nlp.pipe(SOURCES[:2]))
    expected = model.generate(SOURCES[:2])
    assert [d._.tagpipe_generated for d in docs] == expected
    nlp.to_disk(tmp_path / "pipeline")
    reloaded = spacy.load(tmp_path / "pipeline")
    assert reloaded(SOURCES[0])._.tagpipe_generated == expected[0]
    copy = spacy.blank("en").add_pipe("tagpipe_seq2seq", config={"model": None})
    copy.from_bytes(component.to_bytes())
    assert copy.seq2seq.generate(SOURCES[:1]) == expected[:1]
    clone = pickle.loads(pickle.dumps(component))  # nlp.pipe(n_process=2) ships components this way
    assert clone.is_loaded and clone(nlp.make_doc(SOURCES[1]))._.tagpipe_generated == expected[1]


def test_cli_generate_and_train(model, tmp_path):
    from click.testing import CliRunner

    from tagpipe.cli import cli

    model.save(tmp_path / "m")
    data = tmp_path / "in.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in COPY[:2]))
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(cli, ["generate", str(data), "--model", str(tmp_path / "m"), "-o", str(out)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["generated"] for r in rows] == model.generate(SOURCES[:2])
    assert rows[0]["target"] == SOURCES[0]  # input fields are kept

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"source": "a"}\n{"text": 1}\n')
    result = CliRunner().invoke(cli, ["generate", str(bad), "--model", str(tmp_path / "m")])
    assert result.exit_code == 1 and "bad.jsonl:2" in result.output


def test_cli_seq2seq_train(tiny_bert_dir, tmp_path):
    from click.testing import CliRunner

    from tagpipe.cli import cli

    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in COPY))
    result = CliRunner().invoke(cli, ["seq2seq-train", "--train", str(data), "--dev", str(data), "--pretrained",
                                      str(tiny_bert_dir), "-o", str(tmp_path / "m"), "--epochs", "2",
                                      "--batch-size", "2", "--lr", "1e-3", "--max-source-length", "24",
                                      "--max-target-length", "12", "-q"])
    assert result.exit_code == 0, result.output
    meta = json.loads((tmp_path / "m" / "config.json").read_text())["meta"]
    assert len(meta["train_loss"]) == meta["epochs"] and meta["dev_loss"]
    assert Seq2SeqModel.load(tmp_path / "m").generate(SOURCES[:1], max_length=4)


def test_plugin_and_factory_are_declared_in_setup_cfg():
    import configparser
    from pathlib import Path

    from tagpipe.host import BUILTIN_PLUGINS

    config = configparser.ConfigParser()
    config.read(Path(__file__).resolve().parent.parent / "setup.cfg")
    entry_points = config["options.entry_points"]
    assert "seq2seq = tagpipe.plugins.seq2seq.hooks" in entry_points["tagpipe"]
    assert "tagpipe_seq2seq = tagpipe.plugins.seq2seq.spacy_component:make_seq2seq" in entry_points["spacy_factories"]
    assert BUILTIN_PLUGINS["seq2seq"] == "tagpipe.plugins.seq2seq.hooks"


# -- the shared commands: train --task seq2seq, evaluate, WebNLG both ways -----------------------------
def test_train_task_seq2seq_maps_the_common_options(tiny_seq2seq_model):
    config = json.loads((tiny_seq2seq_model / "config.json").read_text())
    assert (config["task"], config["max_source_length"], config["max_target_length"]) == ("seq2seq", 24, 12)
    meta = config["meta"]
    assert (meta["format"], meta["lr"], meta["batch_size"], meta["seed"]) == ("jsonl", 3e-3, 2, 0)
    assert len(meta["train_loss"]) == 5 and len(meta["dev_loss"]) == 5


def test_train_task_seq2seq_refuses_options_it_has_no_use_for(tiny_bert_dir, tmp_path):
    from click.testing import CliRunner

    from tagpipe.cli import cli

    data = tmp_path / "pairs.jsonl"
    data.write_text(json.dumps(COPY[0]) + "\n")
    base = ["train", "--task", "seq2seq", "--train", str(data), "-o", str(tmp_path / "m")]
    for args, message in [(["--pretrained", str(tiny_bert_dir), "--encoder-lr", "1e-4"],
                           "--encoder-lr: not an option of task 'seq2seq'"),
                          (["--pretrained", str(tiny_bert_dir), "--head", "pointer"], "--head: not an option"),
                          ([], "--task seq2seq needs --pretrained"),
                          (["--pretrained", str(tiny_bert_dir), "--format", "conll"], "not 'conll'")]:
        result = CliRunner().invoke(cli, [*base, *args])
        assert result.exit_code == 1 and message in result.output, (args, result.output)
    assert not (tmp_path / "m").exists()


def test_train_and_evaluate_on_webnlg_text_to_triples(tiny_webnlg, tmp_path):
    from tests.conftest import invoke_cli
    from tests.tiny_models import build_tiny_bert

    bert = build_tiny_bert(tmp_path / "bert", words=["|", "r0", "r1", "r2"])  # words to write the triples with
    invoke_cli("train", "--task", "seq2seq", "--format", "webnlg-text2triples", "--train", tiny_webnlg,
               "--pretrained", bert, "-o", tmp_path / "m", "--epochs", "1", "--max-source-length", "24",
               "--max-target-length", "16", "--device", "cpu", "-q")
    assert json.loads((tmp_path / "m" / "config.json").read_text())["meta"]["format"] == "webnlg-text2triples"
    scores = json.loads(invoke_cli("evaluate", tiny_webnlg, "-m", tmp_path / "m", "--format",
                                   "webnlg-text2triples", "--json").stdout)
    assert scores["pairs"] == 3 and scores["gold"] == 4 and 0.0 <= scores["f1"] <= 1.0
    assert scores["bleu"] is not None and "case:lc" in scores["bleu_signature"]  # the tiny tokenizer lower-cases
    text = invoke_cli("evaluate", tiny_webnlg, "-m", tmp_path / "m", "--format", "webnlg-triples2text").stdout
    assert "3 pairs" in text and "BLEU" in text and "triples:" not in text  # targets are text: no triple scores


def test_evaluate_scores_generations_against_the_targets(tiny_seq2seq_model, tmp_path):
    import sacrebleu

    from tagpipe.plugins.seq2seq.task import score_generations
    from tests.conftest import TINY_PAIRS, invoke_cli

    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(p) + "\n" for p in TINY_PAIRS))
    scores = json.loads(invoke_cli("evaluate", data, "-m", tiny_seq2seq_model, "--json").stdout)
    model = Seq2SeqModel.load(tiny_seq2seq_model)
    generated = model.generate([p["source"] for p in TINY_PAIRS])
    expected = sacrebleu.corpus_bleu(generated, [[p["target"] for p in TINY_PAIRS]], lowercase=True).score
    assert scores["bleu"] == pytest.approx(expected) and scores["pairs"] == 4 and "f1" not in scores

    # triples the model writes right, in its own lower case and spacing, are right
    targets = ["The Cat | sat on | The Mat ; The Cat | ran | Home", "Big Dog | is | Unhappy"]
    model.generate = lambda sources, **_: ["the cat | sat on | the mat ; the cat|ran|home", "big dog | was | unhappy"]
    triples = score_generations(model, [{"source": "x", "target": t} for t in targets])
    assert (triples["correct"], triples["predicted"], triples["gold"]) == (2, 3, 3)
    assert triples["precision"] == pytest.approx(2 / 3) and triples["recall"] == pytest.approx(2 / 3)


def test_load_pairs_reads_jsonl_and_webnlg_both_ways(tiny_webnlg, tmp_path):
    from tagpipe.errors import TagpipeError
    from tagpipe.plugins.seq2seq.model import load_pairs

    data = tmp_path / "pairs.jsonl"
    data.write_text(json.dumps(COPY[0]) + "\n")
    assert load_pairs(data) == [COPY[0]]
    assert load_pairs(tiny_webnlg, "webnlg-text2triples")[1] == {"source": "the dog ran home .",
                                                                 "target": "dog | r0 | home"}
    assert load_pairs(tiny_webnlg, "webnlg-triples2text")[1] == {"source": "dog | r0 | home",
                                                                 "target": "the dog ran home ."}
    with pytest.raises(TagpipeError, match="not 'conll'"):
        load_pairs(data, "conll")
