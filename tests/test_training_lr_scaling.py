"""The learning rate follows the global batch (pipeline/training/lr_scaling.py, ``--lr-scaling``,
``reference_batch_size``): the scaled rates, the line printed at the start, what the model's settings keep,
--accumulate counting in the global batch, and --resume of checkpoints written before these settings existed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from tagpipe.cli import cli
from tagpipe.errors import TagpipeError
from tagpipe.training import checkpoints
from tagpipe.training.lr_scaling import LrScaling
from tagpipe.training.settings import TrainSettings, upgrade_saved

REPO = Path(__file__).resolve().parent.parent
TINY = str(REPO / "corpora" / "samples" / "tiny.conll")


@pytest.mark.parametrize(("rule", "factor"), [("sqrt", 2.0), ("linear", 4.0), ("none", 1.0)])
def test_the_rules_scale_by_the_ratio_of_the_batches(rule, factor):
    scaling = LrScaling(rule, global_batch=128, reference=32)
    assert scaling.factor == factor
    assert scaling.scaled(0.002) == pytest.approx(0.002 * factor)
    assert scaling.scaled(None) is None  # no --encoder-lr: the encoder follows --lr


def test_the_printed_line():
    assert (LrScaling("sqrt", 128, 32).message(0.002)
            == "lr 0.002 -> 0.004 (sqrt scaling: global batch 128 vs reference 32)")
    assert (LrScaling("linear", 16, 32).message(0.1, 1e-4)
            == "lr 0.1 -> 0.05, encoder lr 0.0001 -> 5e-05 (linear scaling: global batch 16 vs reference 32)")
    assert LrScaling("none", 128, 32).message(0.002) == "lr 0.002 kept (no scaling: global batch 128 vs reference 32)"
    assert LrScaling("sqrt", 32, 32).message(0.002) is None  # nothing to say


def test_each_optimizer_declares_its_default_rule_and_the_reference_defaults_to_the_batch_size():
    defaults = {name: TrainSettings(optimizer=name, batch_size=16) for name in ("adamw", "adafactor", "sgd", "adax")}
    assert {n: s.lr_scaling for n, s in defaults.items()} == {"adamw": "sqrt", "adafactor": "sqrt", "sgd": "linear",
                                                              "adax": "sqrt"}
    assert {s.reference_batch_size for s in defaults.values()} == {16}
    chosen = TrainSettings(optimizer="sgd", lr_scaling="none", reference_batch_size=64, accumulate=4)
    assert (chosen.lr_scaling, chosen.reference_batch_size) == ("none", 64)
    assert LrScaling.of(TrainSettings(batch_size=8, accumulate=4)) == LrScaling("sqrt", 32, 8)  # accumulate counts
    with pytest.raises(TagpipeError, match="--lr-scaling must be sqrt, linear, none, not 'cubic'"):
        TrainSettings(lr_scaling="cubic")


def train(out: Path, *args: str):
    result = CliRunner().invoke(cli, ["train", "--train", TINY, "--epochs", "1", "--batch-size", "4", "--device",
                                      "cpu", "--seed", "1", "-o", str(out), "-q", *args])
    assert result.exit_code == 0, result.output
    return result


def initial_lrs(out: Path) -> list[float]:
    """The rates the optimizer was built with (LambdaLR keeps them as ``initial_lr``), from the checkpoint."""
    state = checkpoints.read_state(out / checkpoints.CHECKPOINT_DIR / checkpoints.STATE_FILE)
    return [group["initial_lr"] for group in state["optimizer"]["param_groups"]]


def test_accumulate_4_doubles_adams_lr_prints_it_once_and_saves_it(tmp_path):
    result = train(tmp_path / "m", "--accumulate", "4", "--lr", "0.002")
    lines = [line for line in result.output.splitlines() if line.startswith("lr ")]
    assert lines == ["lr 0.002 -> 0.004 (sqrt scaling: global batch 16 vs reference 4)"]
    meta = json.loads((tmp_path / "m" / "config.json").read_text())["meta"]
    assert {k: meta["settings"][k] for k in ("optimizer", "lr", "lr_scaling", "reference_batch_size")} == {
        "optimizer": "tagpipe.adamw.v1", "lr": 0.002, "lr_scaling": "sqrt", "reference_batch_size": 4}
    assert meta["lr_scaling"] == {"rule": "sqrt", "global_batch": 16, "reference_batch_size": 4, "factor": 2.0,
                                  "lr": 0.004, "encoder_lr": None}
    assert initial_lrs(tmp_path / "m") == [pytest.approx(0.004)]


def test_sgd_scales_linearly_and_a_recorded_reference_or_none_keeps_the_lr(tmp_path):
    result = train(tmp_path / "sgd", "--optimizer", "sgd", "--accumulate", "4", "--lr", "0.01")
    assert "lr 0.01 -> 0.04 (linear scaling: global batch 16 vs reference 4)" in result.output
    assert initial_lrs(tmp_path / "sgd") == [pytest.approx(0.04)]
    tuned = train(tmp_path / "tuned", "--accumulate", "4", "--reference-batch-size", "16")
    assert not any(line.startswith("lr ") for line in tuned.output.splitlines())  # the batch it was tuned for
    assert initial_lrs(tmp_path / "tuned") == [0.002]
    kept = train(tmp_path / "kept", "--accumulate", "4", "--lr-scaling", "none")
    assert "lr 0.002 kept (no scaling: global batch 16 vs reference 4)" in kept.output
    assert initial_lrs(tmp_path / "kept") == [0.002]


def test_a_config_file_records_the_reference_batch(tmp_path):
    config = tmp_path / "train.json"
    config.write_text(json.dumps({"reference-batch-size": 2, "lr-scaling": "linear", "lr": 0.001}))
    result = train(tmp_path / "m", "--config", str(config))
    assert "lr 0.001 -> 0.002 (linear scaling: global batch 4 vs reference 2)" in result.output


def test_a_bad_reference_batch_is_one_line(tmp_path):
    result = CliRunner().invoke(cli, ["train", "--train", TINY, "--reference-batch-size", "0", "-o", str(tmp_path)])
    assert result.exit_code != 0
    assert result.output.strip().splitlines()[-1] == "Error: --reference-batch-size 0: must be at least 1"


# -- --resume --------------------------------------------------------------------------------------
def as_before_these_settings(out: Path) -> None:
    """Make the checkpoint's manifest one that a tagpipe without optimizer plugins and lr scaling wrote."""
    path = out / checkpoints.CHECKPOINT_DIR / checkpoints.MANIFEST_FILE
    manifest = json.loads(path.read_text())
    for key in ("flood", "lr_scaling", "reference_batch_size"):
        del manifest["settings"][key]
    manifest["settings"]["optimizer"] = "adamw"
    path.write_text(json.dumps(manifest))


def test_old_checkpoints_resume_and_one_trained_with_accumulate_must_name_its_reference(tmp_path):
    train(tmp_path / "plain")
    as_before_these_settings(tmp_path / "plain")
    resumed = train(tmp_path / "plain", "--epochs", "2", "--resume")
    assert "resuming from" in resumed.output and "epoch 2: loss" in resumed.output

    train(tmp_path / "acc", "--accumulate", "2", "--lr-scaling", "none")
    as_before_these_settings(tmp_path / "acc")  # trained at lr 0.002 on a global batch of 8: no scaling then
    refused = CliRunner().invoke(cli, ["train", "--train", TINY, "--epochs", "2", "--batch-size", "4", "--accumulate",
                                       "2", "--device", "cpu", "--seed", "1", "-o", str(tmp_path / "acc"), "--resume"])
    assert refused.exit_code != 0
    assert "--reference-batch-size: 8 (checkpoint) vs 4 (now)" in refused.output.splitlines()[-1]
    resumed = train(tmp_path / "acc", "--epochs", "2", "--accumulate", "2", "--reference-batch-size", "8", "--resume")
    assert "epoch 2: loss" in resumed.output and initial_lrs(tmp_path / "acc") == [0.002]


def test_resume_refuses_another_flood_level_or_rule(tmp_path):
    train(tmp_path / "m", "--flood", "0.5")
    changes = {"--flood: 0.5 (checkpoint) vs 0.2 (now)": ["--flood", "0.2"],
               "--lr-scaling: sqrt (checkpoint) vs linear (now)": ["--flood", "0.5", "--lr-scaling", "linear"],
               "--optimizer: tagpipe.adamw.v1 (checkpoint) vs tagpipe.adax.v1 (now)": ["--flood", "0.5", "--optimizer",
                                                                                   "adax"]}
    for why, change in changes.items():
        result = CliRunner().invoke(cli, ["train", "--train", TINY, "--epochs", "2", "--batch-size", "4", "--device",
                                          "cpu", "--seed", "1", "-o", str(tmp_path / "m"), "--resume", *change])
        assert result.exit_code != 0 and why in result.output, result.output
    assert "epoch 2: loss" in train(tmp_path / "m", "--epochs", "2", "--flood", "0.5", "--resume").output


def test_upgrade_saved_fills_what_older_runs_trained_with():
    old = {"optimizer": "adam", "batch_size": 16, "accumulate": 2, "lr": 0.01}
    assert upgrade_saved(old) == {**old, "optimizer": "tagpipe.adamw.v1", "flood": 0.0, "reference_batch_size": 32,
                                  "lr_scaling": "sqrt"}
    now = TrainSettings(optimizer="sgd").to_dict()
    assert upgrade_saved(now) == now  # settings of this version are left as they are
