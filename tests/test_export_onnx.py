"""``tagpipe export MODEL --to onnx OUT``: the graph, the torch-free runtime, and the refusals."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from tagpipe.cli import cli
from tagpipe.corpora.conll import read_conll
from tagpipe.model import Tagger
from tagpipe.plugins.decoders.viterbi import viterbi_decode
from tagpipe.plugins.export import chains
from tagpipe.plugins.export.checks import ExportError
from tagpipe.plugins.export.featurize import Featurizer
from tagpipe.plugins.export.onnx_export import _compare, probe_sentences
from tagpipe.plugins.export.onnx_runtime import OnnxTagger
from tagpipe.training.loop import Trainer
from tagpipe.training.settings import TrainSettings
from tests.conftest import REPO, TINY_BILSTM, TINY_CONLL, invoke_cli

SENTENCES = [s.tokens for s in read_conll(TINY_CONLL)]
DEFAULT_MODEL = REPO / "plugins" / "default_model"


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def train(folder: Path, decoder: str, **encoder_config) -> Path:
    """A tiny BiLSTM tagger trained for a few steps on the tiny corpus."""
    settings = TrainSettings(train=str(TINY_CONLL), dev=str(TINY_CONLL), output=str(folder), decoder=decoder,
                             encoder_config={**TINY_BILSTM, **encoder_config}, epochs=3, batch_size=4, lr=2e-2,
                             device="cpu", seed=1, threads=1)
    Trainer(settings, log=lambda _: None, progress=False).run()
    return folder


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bilstm")
    return {
        "crf": train(root / "crf", "crf"),
        "softmax": train(root / "softmax", "softmax"),
        # the other paths of the graph: an MEMM in both directions, the character LSTM, bigrams, two layers
        "bimemm": train(root / "bimemm", "bimemm", char_encoder="lstm", bigram_dim=8, bigram_min_count=1, layers=2),
    }


def export(model: Path, out: Path, *options: str) -> Path:
    invoke_cli("export", model, "--to", "onnx", out, *options)
    return out


def refused(*args) -> str:
    """The one stderr line of a ``tagpipe`` call that must fail with exit code 1."""
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


# -- tags ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("decoder", ["crf", "softmax", "bimemm"])
def test_onnx_tags_equal_torch_tags_on_the_tiny_corpus(models, tmp_path, decoder):
    out = export(models[decoder], tmp_path / "onnx")
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.onnx", "vocab.json"]
    ours = Tagger.load(models[decoder]).tag(SENTENCES)
    assert OnnxTagger.load(out, threads=1).tag(SENTENCES) == ours
    assert OnnxTagger.load(out).tag(SENTENCES, batch_size=5) == ours  # other batches, other padding


def test_the_runtime_runs_without_torch(models, tmp_path):
    out = export(models["crf"], tmp_path / "onnx")
    expected = Tagger.load(models["crf"]).tag(SENTENCES[:6])
    script = (
        "import json, sys\n"
        "for name in ('torch', 'transformers', 'spacy'):\n"
        "    sys.modules[name] = None  # any import of them now fails\n"
        "from tagpipe.plugins.export.onnx_runtime import OnnxTagger\n"
        f"tags = OnnxTagger.load({str(out)!r}, threads=1).tag(json.loads(sys.argv[1]))\n"
        "assert not any(name == 'torch' or name.startswith('torch.') for name in sys.modules if sys.modules[name])\n"
        "print(json.dumps(tags))\n"
    )
    done = subprocess.run([sys.executable, "-c", script, json.dumps(SENTENCES[:6])], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == expected


def test_the_embedded_model_exports_with_the_same_entities(tmp_path):
    out = export(DEFAULT_MODEL, tmp_path / "onnx", "--json")
    config = json.loads((out / "config.json").read_text())
    assert config["decoder"] == "tagpipe.crf.v1" and config["decoding"]["method"] == "viterbi"
    assert OnnxTagger.load(out, threads=1).tag(SENTENCES) == Tagger.load(DEFAULT_MODEL).tag(SENTENCES)


# -- pieces ----------------------------------------------------------------------------------------
def test_the_featurizer_makes_the_encoders_arrays(models):
    for name in ("crf", "bimemm"):  # without and with bigrams
        tagger = Tagger.load(models[name])
        config = json.loads((models[name] / "config.json").read_text())["encoder"]["config"]
        vocab = json.loads((models[name] / "vocab.json").read_text())
        settings = {**config, "bigrams": bool(config.get("bigram_dim")), "pad": 0, "unk": 1, "bow": 2, "eow": 3}
        featurizer = Featurizer(vocab, settings)
        odd = [["Ünïcode", "x" * 50, "2-1", "MiXeD42", "ALLCAPS", "<unk>", "1984"],
               *probe_sentences(tagger.encoder.words, (4, 1, 6))]
        for sentences in (SENTENCES[:9], odd):
            expected = tagger.encoder.featurize(sentences)
            got = featurizer(sentences)
            assert sorted(got) == sorted(expected)
            for key, value in expected.items():
                np.testing.assert_array_equal(got[key], value.numpy(), err_msg=key)


def test_the_featurizer_looks_words_up_cased_as_a_cased_encoder_does():
    from tagpipe.plugins.encoders.bilstm import BiLSTMEncoder

    corpus = [["Paris", "is", "in", "France"], ["the", "EU", "and", "Apple"]]
    encoder = BiLSTMEncoder.from_corpus(corpus, lowercase=False, word_dim=4, char_dim=4, char_hidden=4, hidden=4)
    settings = {**encoder.config(), "bigrams": False, "pad": 0, "unk": 1, "bow": 2, "eow": 3}
    vocab = {"words": encoder.words, "chars": encoder.chars}
    sentences = [["PARIS", "paris", "Paris", "The", "eu", "APPLE", "apple", "nowhere"]]
    got, expected = Featurizer(vocab, settings)(sentences), encoder.featurize(sentences)
    np.testing.assert_array_equal(got["word_ids"], expected["word_ids"].numpy())
    assert expected["word_ids"][0, 0] == expected["word_ids"][0, 2] != 1  # PARIS -> Paris


@pytest.mark.parametrize("per_step", [False, True])
def test_numpy_viterbi_finds_torchs_paths(per_step):
    generator = torch.Generator().manual_seed(3)
    batch, seq, tags = 6, 9, 5
    scores = torch.randn(batch, seq, tags, generator=generator)
    lengths = torch.tensor([9, 1, 4, 7, 2, 9])
    mask = torch.arange(seq)[None, :] < lengths[:, None]
    shape = (batch, seq, tags, tags) if per_step else (tags, tags)
    transitions = torch.randn(*shape, generator=generator)
    transitions[..., 0, 2] = float("-inf")  # forbidden, as a scheme forbids
    start, end = torch.randn(tags, generator=generator), torch.randn(tags, generator=generator)
    start[1] = end[3] = float("-inf")
    expected = viterbi_decode(scores, mask, transitions, start, end)
    got = chains.viterbi(scores.numpy(), lengths.numpy(), transitions.numpy(), start.numpy(), end.numpy())
    np.testing.assert_array_equal(got, expected.numpy())


def test_scores_survive_json_with_forbidden_entries():
    values = np.array([[0.5, -np.inf], [-1.25, 2.0]], dtype=np.float32)
    text = json.dumps(chains.to_json(values))
    assert "null" in text and "Infinity" not in text
    np.testing.assert_array_equal(chains.from_json(json.loads(text)), values)


def test_a_graph_that_differs_from_the_model_is_refused():
    lengths = torch.tensor([2, 1])
    same = torch.zeros(2, 2, 3)
    _compare("the graph", (same,), (same.clone(),), lengths)
    shifted = same.clone()
    shifted[1, 0, 2] = 0.01
    with pytest.raises(ExportError, match="does not reproduce the model's scores"):
        _compare("the graph", (shifted,), (same,), lengths)
    shifted[1, 0, 2] = 0
    shifted[1, 1, 2] = 5.0  # padding: not compared
    _compare("the graph", (shifted,), (same,), lengths)


# -- refusals --------------------------------------------------------------------------------------
def bert_config_copy(tmp_path: Path) -> Path:
    """A model folder whose config names the bert encoder (the export refuses before reading weights)."""
    folder = tmp_path / "bert-model"
    shutil.copytree(DEFAULT_MODEL, folder)
    config = json.loads((folder / "config.json").read_text())
    config["encoder"] = {"name": "tagpipe.bert.v1", "config": {"pooling": "first"}}
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_a_bert_model_is_refused_naming_the_other_target(tmp_path):
    line = refused("export", bert_config_copy(tmp_path), "--to", "onnx", tmp_path / "out")
    assert "--to onnx exports tagpipe.bilstm.v1 models, not this tagpipe.bert.v1 model (it exports with --to hf)" \
        in line
    assert not (tmp_path / "out").exists()


def test_a_stack_encoder_and_a_non_tagger_are_refused(tmp_path):
    folder = bert_config_copy(tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config["encoder"]["name"] = "tagpipe.stack.v1"
    (folder / "config.json").write_text(json.dumps(config))
    assert "not this tagpipe.stack.v1 model" in refused("export", folder, "--to", "onnx", tmp_path / "out")
    (folder / "config.json").write_text(json.dumps({"format_version": 1, "task": "triples"}))
    assert "a 'triples' model; only taggers (ner, tag) export" in refused("export", folder, "--to", "onnx",
                                                                         tmp_path / "out")
    assert "is not a tagpipe model folder" in refused("export", tmp_path / "nowhere", "--to", "onnx", tmp_path / "o")


def test_an_out_folder_that_holds_anything_is_left_as_it_is(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_bytes(b"mine\n")
    line = refused("export", DEFAULT_MODEL, "--to", "onnx", out)
    assert f"{out}: exists and is not empty" in line
    assert [p.name for p in out.iterdir()] == ["keep.txt"] and (out / "keep.txt").read_bytes() == b"mine\n"
    (tmp_path / "file").write_bytes(b"x")
    assert "exists and is not a folder" in refused("export", DEFAULT_MODEL, "--to", "onnx", tmp_path / "file")
    assert (tmp_path / "file").read_bytes() == b"x"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "out"]  # no staging folder left behind


def test_an_empty_out_folder_is_filled(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    export(DEFAULT_MODEL, out)
    assert (out / "model.onnx").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_folder_that_is_no_onnx_export_is_one_error(tmp_path):
    from tagpipe.errors import ModelError

    with pytest.raises(ModelError, match="not a tagpipe ONNX export"):
        OnnxTagger.load(DEFAULT_MODEL)


def test_without_onnx_installed_the_export_says_what_to_install(tmp_path):
    script = ("import sys\nsys.modules['onnx'] = None  # as if not installed\nfrom tagpipe.cli import main\n"
              f"sys.argv = ['tagpipe', 'export', {str(DEFAULT_MODEL)!r}, '--to', 'onnx', {str(tmp_path / 'out')!r}]\n"
              "main()\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == ["Error: --to onnx needs the onnx package: pip install 'tagpipe[onnx]'"]
    assert not (tmp_path / "out").exists()
