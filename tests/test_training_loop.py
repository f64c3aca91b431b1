"""Training, checkpoints, resume and the model folder, on a tiny corpus with a tiny BiLSTM."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tagpipe.model import Tagger
from tagpipe.training.loop import Trainer
from tagpipe.training.settings import TrainSettings

REPO = Path(__file__).resolve().parent.parent
TINY = str(REPO / "corpora" / "samples" / "tiny.conll")
SMALL = {"word_dim": 16, "char_dim": 8, "char_hidden": 8, "hidden": 16}


FRESH_ENV = "TAGPIPE_TEST_FRESH_PROCESS"


def in_a_fresh_process(test):
    """Run ``test`` in a new Python process (pytest on its own node id), as a user reruns a command.

    Comparing two trainings bit for bit inside the suite's long-lived process fails after earlier tests (spaCy
    training, forked workers) have run in it: the 2-thread CPU kernels then vary in the 4th decimal from the
    second epoch on. Each run on its own is reproducible, which is what these tests promise.
    """

    @functools.wraps(test)
    def wrapper(*args, **kwargs):
        if os.environ.get(FRESH_ENV) == test.__name__:
            return test(*args, **kwargs)
        node = f"{Path(__file__).resolve()}::{test.__name__}"
        out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", node], cwd=REPO,
                             env={**os.environ, FRESH_ENV: test.__name__}, capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]

    return wrapper


def settings(tmp_path, **overrides) -> TrainSettings:
    values = dict(train=TINY, dev=TINY, output=str(tmp_path / "model"), encoder_config=SMALL, epochs=4,
                  batch_size=8, lr=1e-2, device="cpu", seed=3)
    values.update(overrides)
    return TrainSettings(**values)


def quiet(s: TrainSettings, **kwargs):
    return Trainer(s, log=lambda _: None, progress=False, **kwargs).run()


def test_model_folder_is_readable_and_self_contained(tmp_path):
    quiet(settings(tmp_path))
    folder = tmp_path / "model"
    config = json.loads((folder / "config.json").read_text())
    assert config["format_version"] == 1
    assert config["encoder"]["name"] == "tagpipe.bilstm.v1" and config["decoder"]["name"] == "tagpipe.crf.v1"
    assert config["labels"][0] == "O" and "B-PER" in config["labels"] and "E-PER" in config["labels"]
    assert config["lang"] == "en" and config["task"] == "ner"
    assert (folder / "model.safetensors").is_file() and (folder / "vocab.json").is_file()
    assert (folder / "checkpoint" / "trainer_state.pt").is_file()


@in_a_fresh_process
def test_seeded_cpu_training_is_reproducible(tmp_path):
    a = quiet(settings(tmp_path / "a", epochs=2))
    b = quiet(settings(tmp_path / "b", epochs=2))
    assert [h["loss"] for h in a["history"]] == [h["loss"] for h in b["history"]]
    wa = Tagger.load(tmp_path / "a" / "model").state_dict()
    wb = Tagger.load(tmp_path / "b" / "model").state_dict()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def interrupt_at(monkeypatch, epoch_number: int):
    """Make the trainer's ``epoch_number``-th epoch raise KeyboardInterrupt (Ctrl-C) halfway in."""
    calls = {"n": 0}
    original = Trainer._epoch

    def crashing_epoch(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == epoch_number:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "_epoch", crashing_epoch)
    return original


@in_a_fresh_process
def test_ctrl_c_leaves_the_best_model_usable_and_resume_matches_an_uninterrupted_run(tmp_path, monkeypatch):
    full = quiet(settings(tmp_path / "full", epochs=4, patience=100))
    cut = settings(tmp_path / "cut", epochs=4, patience=100)
    original = interrupt_at(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        quiet(cut)
    model = Tagger.load(tmp_path / "cut" / "model")  # the best of epochs 1-2, loadable
    assert model.meta["best_dev"]["epoch"] in (1, 2)
    monkeypatch.setattr(Trainer, "_epoch", original)
    resumed = quiet(cut, resume=True)
    assert [h["epoch"] for h in resumed["history"]] == [1, 2, 3, 4]
    assert [h["loss"] for h in resumed["history"]] == pytest.approx([h["loss"] for h in full["history"]], rel=1e-5)


def test_save_load_round_trip_predicts_identically(tmp_path):
    quiet(settings(tmp_path, epochs=2, decoder="softmax"))
    model = Tagger.load(tmp_path / "model")
    sentences = [["Peter", "Smith", "lives", "in", "Berlin", "."], ["Hello"], []]
    model.save(tmp_path / "copy", dtype=torch.float16)
    copy = Tagger.load(tmp_path / "copy")
    assert copy.decoder_name == "tagpipe.softmax.v1"
    tags, scores = model.tag(sentences, with_scores=True)
    assert tags[2] == [] and len(tags[0]) == 6
    copy_tags, copy_scores = copy.tag(sentences, with_scores=True)
    assert copy_tags == tags
    assert copy_scores[0] == pytest.approx(scores[0], abs=1e-2)


def test_config_file_values_are_defaults_that_flags_override(tmp_path):
    from click.testing import CliRunner

    from tagpipe.cli import cli

    config = tmp_path / "train.json"
    config.write_text(json.dumps({"train": TINY, "dev": TINY, "epochs": 1, "batch-size": 8, "device": "cpu",
                                  "encoder_config": SMALL, "output": str(tmp_path / "from-config")}))
    result = CliRunner().invoke(cli, ["train", "--config", str(config), "--output", str(tmp_path / "flag"), "-q"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "flag" / "config.json").is_file() and not (tmp_path / "from-config").exists()
    meta = json.loads((tmp_path / "flag" / "config.json").read_text())["meta"]["settings"]
    assert meta["epochs"] == 1 and meta["batch_size"] == 8 and meta["encoder_config"] == SMALL


def test_config_file_format_reaches_the_reader(tmp_path):
    from click.testing import CliRunner

    from tagpipe.cli import cli

    config = tmp_path / "train.json"
    config.write_text(json.dumps({"train": TINY, "format": "no-such-format", "output": str(tmp_path / "m")}))
    result = CliRunner().invoke(cli, ["train", "--config", str(config), "-q"])
    assert result.exit_code != 0 and "no-such-format" in result.output
