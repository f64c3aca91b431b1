"""Optimizers as plugins (``register_optimizers``, pipeline/training/optimizers.py): the builtins registered by
the builtin_optimizers plugin like any other, ``--optimizer`` checked against the registry, and a third-party
distribution, pip-installed (no network) into a temporary folder, that ``tagpipe train`` trains with."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from tagpipe import hookimpl
from tagpipe import host as plugins
from tagpipe.cli import cli
from tagpipe.errors import TagpipeError
from tagpipe.training import checkpoints
from tagpipe.training.optimizers import build_optimizer, optimizer_name
from tagpipe.training.settings import TrainSettings
from tests.test_host_entry_points import pip_install

REPO = Path(__file__).resolve().parent.parent
TINY = str(REPO / "corpora" / "samples" / "tiny.conll")
FIXTURE = REPO / "tests" / "fixtures" / "throwaway_optimizer"
BUILTINS = ["tagpipe.adafactor.v1", "tagpipe.adamw.v1", "tagpipe.adax.v1", "tagpipe.sgd.v1"]


def test_the_builtins_come_from_the_builtin_plugin_through_the_hook():
    registry = plugins.get_registry()
    assert registry.names("optimizer") == BUILTINS
    assert {registry.entry("optimizer", n).plugin for n in BUILTINS} == {"builtin_optimizers"}
    result = CliRunner().invoke(cli, ["plugins"])
    listed = [line.split() for line in result.stdout.splitlines()]
    assert ["tagpipe.adax.v1", "optimizer", "builtin_optimizers", "(tagpipe)"] in listed


@pytest.mark.parametrize(("alias", "name", "kind"), [("adam", "tagpipe.adamw.v1", torch.optim.AdamW),
                                                     ("adamw", "tagpipe.adamw.v1", torch.optim.AdamW),
                                                     ("adafactor", "tagpipe.adafactor.v1", torch.optim.Adafactor),
                                                     ("sgd", "tagpipe.sgd.v1", torch.optim.SGD)])
def test_the_short_names_still_build_torchs_optimizers(alias, name, kind):
    assert optimizer_name(alias) == name == TrainSettings(optimizer=alias).optimizer
    weight = torch.nn.Parameter(torch.zeros(2))
    optimizer = build_optimizer(name, [{"params": [weight], "lr": 0.1}], lr=0.1, weight_decay=0.01)
    assert isinstance(optimizer, kind) and optimizer.param_groups[0]["weight_decay"] == 0.01
    if kind is torch.optim.SGD:
        assert optimizer.param_groups[0]["momentum"] == 0.9  # as when it was hard-wired


def test_an_unknown_optimizer_is_one_line_listing_the_registered_ones(tmp_path):
    result = CliRunner().invoke(cli, ["train", "--train", TINY, "--optimizer", "lion", "-o", str(tmp_path / "m")])
    assert result.exit_code != 0
    assert result.output.strip().splitlines() == [
        "Error: --optimizer 'lion': no such optimizer is registered (available: adamw, adam, adafactor, sgd, adax, "
        + ", ".join(BUILTINS) + "; see `tagpipe plugins`)"]


class NotAnOptimizer:
    @hookimpl
    def register_optimizers(self, register):
        register("broken.list.v1", lambda groups, lr, weight_decay: list(groups))
        register("broken.rule.v1", type("Odd", (torch.optim.SGD,), {"lr_scaling": "cubic"}))


def test_a_plugin_optimizer_that_is_no_optimizer_is_refused_naming_the_plugin():
    pm = plugins.make_plugin_manager()
    pm.register_module("broken", NotAnOptimizer(), "tests")
    plugins.reset(pm)
    with pytest.raises(TagpipeError, match="plugin 'broken': optimizer 'broken.list.v1' returned a list, not a torch"):
        build_optimizer("broken.list.v1", [{"params": [torch.nn.Parameter(torch.zeros(1))]}], lr=0.1, weight_decay=0)
    with pytest.raises(TagpipeError, match="plugin 'broken': optimizer 'broken.rule.v1' declares lr_scaling 'cubic'"):
        TrainSettings(optimizer="broken.rule.v1")


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("throwaway-optimizer") / "site"
    pip_install(FIXTURE, target)
    assert (target / "tagpipe_throwaway_optimizer-0.1.0.dist-info" / "entry_points.txt").is_file()
    return target


def test_an_installed_plugin_optimizer_trains_a_tagger(site, monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(site))
    plugins.reset()
    registry = plugins.get_registry()
    assert registry.entry("optimizer", "throwaway.signsgd.v1").plugin == "throwaway_optimizer"
    assert registry.errors == []
    out = tmp_path / "model"
    result = CliRunner().invoke(cli, ["train", "--train", TINY, "--dev", TINY, "--optimizer", "throwaway.signsgd.v1",
                                      "--lr", "0.001", "--batch-size", "4", "--accumulate", "2", "--epochs", "2",
                                      "--device", "cpu", "-o", str(out), "-q"])
    assert result.exit_code == 0, result.output
    assert "lr 0.001 -> 0.002 (linear scaling: global batch 8 vs reference 4)" in result.output  # its own default
    steps = sys.modules["tagpipe_throwaway_optimizer.sign_sgd"].STEPS
    assert len(steps) == 2 * 5  # 40 sentences in steps of 8, two epochs: every step went through it
    assert steps[0] == pytest.approx(0.002)  # the scaled lr (a warm-up of one step: full at the first)
    settings = json.loads((out / "config.json").read_text())["meta"]["settings"]
    assert (settings["optimizer"], settings["lr_scaling"]) == ("throwaway.signsgd.v1", "linear")
    state = checkpoints.read_state(out / checkpoints.CHECKPOINT_DIR / checkpoints.STATE_FILE)
    assert {s["steps"] for s in state["optimizer"]["state"].values()} == {10}  # its state, saved for --resume
