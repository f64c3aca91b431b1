"""Shared fixtures: a fresh plugin manager per test, paths to the real corpora."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_CORPORA = REPO.parent / "shared" / "corpora"
DATA_DIR = Path(os.environ.get("TAGPIPE_DATA", Path.home() / ".cache" / "tagpipe-data"))


@pytest.fixture(autouse=True)
def fresh_plugins():
    """Each test starts with a freshly built plugin manager and registry."""
    from tagpipe import host as plugins

    plugins.reset()
    yield
    plugins.reset()


def data_path(*parts: str) -> Path:
    """A file fetched by ../shared/corpora/get-pypi-data.sh; skips the test when absent."""
    path = DATA_DIR.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} not found: run ../shared/corpora/get-pypi-data.sh (or set TAGPIPE_DATA)")
    return path


def shared_path(*parts: str) -> Path:
    """A file committed in ../shared/corpora; skips the test when the folder is absent."""
    path = SHARED_CORPORA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} not found: ../shared/corpora is expected beside the checkout")
    return path


TINY_CONLL = REPO / "corpora" / "samples" / "tiny.conll"
TINY_BILSTM = {"word_dim": 24, "char_dim": 12, "char_hidden": 12, "hidden": 32}


@pytest.fixture(scope="session")
def tiny_ner_model(tmp_path_factory) -> Path:
    """A BiLSTM-CRF trained to fit the tiny sample corpus (a few seconds), shared by the session."""
    from tagpipe.training.loop import Trainer
    from tagpipe.training.settings import TrainSettings

    out = tmp_path_factory.mktemp("tiny-ner") / "model"
    settings = TrainSettings(train=str(TINY_CONLL), dev=str(TINY_CONLL), output=str(out), encoder_config=TINY_BILSTM,
                             epochs=25, batch_size=4, lr=2e-2, patience=100, device="cpu", seed=1)
    Trainer(settings, log=lambda _: None, progress=False).run()
    return out


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    """A tiny random BERT (masked-LM head, fast tokenizer) saved with ``save_pretrained``.

    Built once per session by :func:`tests.tiny_models.build_tiny_bert`; treat it as read-only.
    """
    from tests.tiny_models import build_tiny_bert

    return build_tiny_bert(tmp_path_factory.mktemp("tiny_bert"))


#: a WebNLG-style corpus in the tiny BERT's words: a subject in two triples, a multi-word entity
TINY_WEBNLG = [
    {"text": "the cat sat on the mat .", "triple_list": [["cat", "r1", "mat"], ["cat", "r0", "the mat"]]},
    {"text": "the dog ran home .", "triple_list": [["dog", "r0", "home"]]},
    {"text": "a big house is green .", "triple_list": [["big house", "r2", "green"]]},
]
#: copy pairs for seq2seq
TINY_PAIRS = [{"source": s, "target": s} for s in ("the cat sat on the mat", "a dog ran home", "big green house",
                                                    "the small dog was happy")]


def invoke_cli(*args: str):
    """``tagpipe ARGS`` in this process; fails the test on a non-zero exit, showing the output."""
    from click.testing import CliRunner

    from tagpipe.cli import cli

    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="session")
def tiny_webnlg(tmp_path_factory) -> Path:
    import json

    path = tmp_path_factory.mktemp("webnlg") / "tiny.json"
    path.write_text(json.dumps(TINY_WEBNLG))
    return path


@pytest.fixture(scope="session")
def tiny_triples_model(tiny_bert_dir, tiny_webnlg, tmp_path_factory) -> Path:
    """A pointer-head triples model that ``tagpipe train --task triples`` fits to TINY_WEBNLG (dev F1 1.0)."""
    out = tmp_path_factory.mktemp("tiny-triples") / "model"
    invoke_cli("train", "--task", "triples", "--format", "webnlg", "--train", tiny_webnlg, "--dev", tiny_webnlg,
               "--pretrained", tiny_bert_dir, "-o", out, "--epochs", "40", "--batch-size", "3", "--lr", "1e-2",
               "--encoder-lr", "1e-3", "--device", "cpu", "--threads", "1", "-q")
    return out


@pytest.fixture(scope="session")
def tiny_seq2seq_model(tiny_bert_dir, tmp_path_factory) -> Path:
    """A seq2seq model that ``tagpipe train --task seq2seq`` trains a little on TINY_PAIRS (copying)."""
    import json

    folder = tmp_path_factory.mktemp("tiny-seq2seq")
    pairs = folder / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(p) + "\n" for p in TINY_PAIRS))
    invoke_cli("train", "--task", "seq2seq", "--format", "jsonl", "--train", pairs, "--dev", pairs, "--pretrained",
               tiny_bert_dir, "-o", folder / "model", "--epochs", "5", "--batch-size", "2", "--lr", "3e-3",
               "--max-source-length", "24", "--max-target-length", "12", "--device", "cpu", "--threads", "1", "-q")
    return folder / "model"
