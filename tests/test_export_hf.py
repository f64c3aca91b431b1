"""``tagpipe export MODEL --to hf OUT``: a folder transformers loads, with our scores and our labels."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from tagpipe.cli import cli
from tagpipe.corpora.conll import read_conll
from tagpipe.corpora.schemes import is_valid, tags_to_spans
from tagpipe.model import Tagger
from tagpipe.plugins.export import chains
from tagpipe.plugins.export.hf import first_subword_logits, iob2_name, pipeline_word_labels
from tagpipe.training.loop import Trainer
from tagpipe.training.settings import TrainSettings
from tests.conftest import REPO, TINY_CONLL, invoke_cli
from tests.tiny_models import build_tiny_bert

SENTENCES = [s.tokens for s in read_conll(TINY_CONLL)]


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """Taggers on a tiny random BERT that knows the corpus's words, trained for a few steps."""
    root = tmp_path_factory.mktemp("bert-taggers")
    bert = build_tiny_bert(root / "bert", words=sorted({w.lower() for s in SENTENCES for w in s}))

    def train(name: str, decoder: str, **overrides) -> Path:
        settings = TrainSettings(train=str(TINY_CONLL), dev=str(TINY_CONLL), output=str(root / name),
                                 encoder="bert", pretrained=str(bert), encoder_config={"dropout": 0.1},
                                 decoder=decoder, epochs=4, batch_size=8, lr=2e-2, encoder_lr=3e-3, device="cpu",
                                 seed=1, threads=1, **overrides)
        Trainer(settings, log=lambda _: None, progress=False).run()
        return root / name

    return {"softmax": train("softmax", "softmax"), "crf": train("crf", "crf"),
            "pos": train("pos", "softmax", task="tag", tag_column=1)}


def export(model: Path, out: Path, *options: str) -> Path:
    invoke_cli("export", model, "--to", "hf", out, *options)
    return out


def hf_pipeline(folder: Path):
    from transformers import pipeline

    return pipeline("token-classification", model=str(folder), device=-1)


def our_scores(tagger: Tagger, sentences) -> list[torch.Tensor]:
    """Our decoder's tag scores ``[words, C]`` per sentence."""
    with torch.no_grad():
        hidden, mask = tagger.encode(tagger.featurize(sentences))
        scores = tagger.decoder.projection(hidden)
    return [scores[b, : len(s)] for b, s in enumerate(sentences)]


def refused(*args) -> str:
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


# -- the folder ------------------------------------------------------------------------------------
def test_the_folder_loads_in_transformers_with_our_scores(models, tmp_path):
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    out = export(models["softmax"], tmp_path / "hf")
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= names
    config = json.loads((out / "config.json").read_text())
    tagger = Tagger.load(models["softmax"])
    assert config["model_type"] == "bert"
    assert config["id2label"] == {str(i): iob2_name(t) for i, t in enumerate(tagger.labels)}
    assert config["label2id"]["B-PER"] == tagger.labels.index("B-PER")  # S-PER is named B-PER too: the first id
    assert config["tagpipe"]["labels"] == tagger.labels and config["tagpipe"]["scheme"] == "bioes"
    hf = AutoModelForTokenClassification.from_pretrained(out, local_files_only=True).eval()
    assert type(hf).__name__ == "BertForTokenClassification"
    assert AutoTokenizer.from_pretrained(out, local_files_only=True).is_fast
    # HF's logits at each word's first subword are our decoder's scores
    tagger.encoder.tokenizer = AutoTokenizer.from_pretrained(out, local_files_only=True)
    theirs = first_subword_logits(tagger, hf, SENTENCES)
    torch.testing.assert_close(theirs, torch.cat(our_scores(tagger, SENTENCES)), atol=1e-5, rtol=1e-5)


def test_the_pipeline_labels_equal_ours_word_for_word(models, tmp_path):
    """A softmax tagger without span constraints (POS tags) decodes by argmax, as HF does."""
    out = export(models["pos"], tmp_path / "hf")
    ours = Tagger.load(models["pos"]).tag(SENTENCES)
    assert pipeline_word_labels(hf_pipeline(out), SENTENCES) == ours
    assert len({t for s in ours for t in s}) > 3


def test_ner_labels_are_ours_where_argmax_keeps_to_bioes(models, tmp_path):
    """Our NER softmax decodes the best *valid* BIOES sequence; HF takes each word's argmax. HF's words are our
    argmax's, so they are our tags in every sentence whose argmax sequence is valid."""
    out = export(models["softmax"], tmp_path / "hf")
    tagger = Tagger.load(models["softmax"])
    ours = tagger.tag(SENTENCES)
    argmax = [[tagger.labels[i] for i in s.argmax(-1).tolist()] for s in our_scores(tagger, SENTENCES)]
    pipe = hf_pipeline(out)
    theirs = pipeline_word_labels(pipe, SENTENCES)
    assert theirs == [[iob2_name(t) for t in s] for s in argmax]
    valid = [i for i, tags in enumerate(argmax) if is_valid(tags, "bioes")]
    assert len(valid) >= len(SENTENCES) // 2
    assert all(argmax[i] == ours[i] for i in valid)
    # with IOB2 names, HF's entity grouping finds our entities
    found = 0
    for i in valid:
        grouped = pipe(" ".join(SENTENCES[i]), aggregation_strategy="first")
        starts = np.cumsum([0] + [len(w) + 1 for w in SENTENCES[i]])
        spans = [(int(np.searchsorted(starts, g["start"])), int(np.searchsorted(starts, g["end"] + 1)),
                  g["entity_group"]) for g in grouped]
        assert spans == tags_to_spans(ours[i], "bioes"), SENTENCES[i]
        found += len(spans)
    assert found >= 10


def test_labels_model_keeps_our_tag_names(models, tmp_path):
    out = export(models["softmax"], tmp_path / "hf", "--labels", "model")
    tagger = Tagger.load(models["softmax"])
    config = json.loads((out / "config.json").read_text())
    assert config["id2label"] == {str(i): t for i, t in enumerate(tagger.labels)}
    assert config["label2id"] == {t: i for i, t in enumerate(tagger.labels)}


def test_crf_transitions_travel_and_viterbi_over_hf_logits_gives_our_tags(models, tmp_path):
    from transformers import AutoModelForTokenClassification

    out = export(models["crf"], tmp_path / "hf")
    crf = json.loads((out / "crf_transitions.json").read_text())
    tagger = Tagger.load(models["crf"])
    assert crf["labels"] == tagger.labels
    assert None in sum(crf["transitions"], [])  # BIOES forbids some transitions
    hf = AutoModelForTokenClassification.from_pretrained(out, local_files_only=True).eval()
    arrays = [chains.from_json(crf[k]) for k in ("transitions", "start", "end")]
    ours = tagger.tag(SENTENCES)
    agree = total = 0
    for words, tags in zip(SENTENCES, ours, strict=True):
        logits = first_subword_logits(tagger, hf, [words]).numpy()[None]
        path = chains.viterbi(logits, np.array([len(words)]), *arrays)[0]
        assert [tagger.labels[i] for i in path] == tags
        agree += sum(tagger.labels[i] == t for i, t in zip(logits[0].argmax(-1), tags, strict=True))
        total += len(tags)
    assert 0 < agree <= total


# -- refusals --------------------------------------------------------------------------------------
def edited_copy(model: Path, tmp_path: Path, part: str, **changes) -> Path:
    folder = tmp_path / f"edited-{part}"
    shutil.copytree(model, folder)
    config = json.loads((folder / "config.json").read_text())
    if part == "pooling":
        config["encoder"]["config"]["pooling"] = changes["pooling"]
    else:
        config["decoder"]["name"] = changes["decoder"]
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_what_hf_cannot_express_is_refused_in_one_line(models, tmp_path):
    line = refused("export", REPO / "plugins" / "default_model", "--to", "hf", tmp_path / "a")
    assert "--to hf exports tagpipe.bert.v1 models, not this tagpipe.bilstm.v1 model (it exports with --to onnx)" \
        in line
    mean = edited_copy(models["softmax"], tmp_path, "pooling", pooling="mean")
    assert "--to hf needs pooling 'first'" in refused("export", mean, "--to", "hf", tmp_path / "b")
    memm = edited_copy(models["softmax"], tmp_path, "decoder", decoder="tagpipe.memm.v1")
    assert "cannot carry decoder tagpipe.memm.v1" in refused("export", memm, "--to", "hf", tmp_path / "c")
    assert not any((tmp_path / name).exists() for name in "abc")


def test_a_non_empty_out_is_left_as_it_is(models, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "config.json").write_bytes(b"{}\n")
    assert f"{out}: exists and is not empty" in refused("export", models["softmax"], "--to", "hf", out)
    assert [p.name for p in out.iterdir()] == ["config.json"] and (out / "config.json").read_bytes() == b"{}\n"
