"""Data-parallel training: 2 CPU processes (gloo) under torchrun against one process, same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pipeline import distributed
from pipeline.model import Tagger
from pipeline.settings import TrainSettings
from pipeline.training import CHECKPOINT_DIR, STATE_FILE, Trainer

REPO = Path(__file__).resolve().parent.parent
TINY = str(REPO / "corpora" / "samples" / "tiny.conll")  # 40 sentences
NO_DROPOUT = {"word_dim": 16, "char_dim": 8, "char_hidden": 8, "hidden": 16, "dropout": 0.0, "word_dropout": 0.0}
# SGD, so that the parameters after one step differ as the gradients do (Adam's first step is lr * sign);
# a batch of 7 splits unevenly (4 + 3, and the last batch of 5 as 3 + 2), which tests the loss weighting
# no --dev (it would only add seqeval's import time): rank 0 keeps the model of the lowest loss
OPTIONS = dict(train=TINY, encoder_config=NO_DROPOUT, batch_size=7, optimizer="sgd", lr=0.05,
               device="cpu", seed=3, patience=100)


def torchrun(tmp_path: Path, trace: Path, *args: str) -> subprocess.CompletedProcess:
    config = tmp_path / "train.json"
    config.write_text(json.dumps({k.replace("_", "-"): v for k, v in OPTIONS.items()}))
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone",
               "cli.py", "train", "--config", str(config), "-q", *args]
    env = {**os.environ, distributed.TRACE_ENV: str(trace), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def steps(trace: Path, rank: int) -> list[dict]:
    return [json.loads(line) for line in (trace / f"rank{rank}.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    """One epoch on 2 ranks, then ``--resume`` for a second; the output folder and both traces."""
    tmp = tmp_path_factory.mktemp("ddp")
    out = tmp / "model"
    first = torchrun(tmp, tmp / "trace", "--epochs", "1", "--output", str(out))
    resumed = torchrun(tmp, tmp / "trace-resumed", "--epochs", "2", "--output", str(out), "--resume")
    return {"out": out, "trace": tmp / "trace", "resumed": tmp / "trace-resumed", "stdout": first.stdout,
            "resumed_stdout": resumed.stdout}


def test_shard_splits_a_global_batch_into_contiguous_parts_of_near_equal_size():
    batch = list(range(10, 17))  # 7 sentences
    parts = [distributed.shard(batch, r, 3) for r in range(3)]
    assert parts == [[10, 11, 12], [13, 14], [15, 16]]
    assert [distributed.shard([5], r, 2) for r in range(2)] == [[5], []]
    assert distributed.shard(batch, 0, 1) == batch


def test_outside_torchrun_nothing_is_distributed(monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    context, device = distributed.setup(torch.device("cpu"))
    assert context is distributed.SINGLE and not context.enabled and context.is_main and device.type == "cpu"
    assert distributed.is_main()
    monkeypatch.setenv("RANK", "1")
    assert not distributed.is_main()


def test_gradient_all_reduce_keeps_unreached_parameters_without_gradient(tmp_path, monkeypatch):
    import torch.distributed as dist

    dist.init_process_group("gloo", store=dist.FileStore(str(tmp_path / "store"), 1), rank=0, world_size=1)
    try:
        monkeypatch.setattr(distributed, "BUCKET_ELEMENTS", 5)  # several buckets
        params = [torch.nn.Parameter(torch.zeros(n)) for n in (3, 4, 2, 6)]
        for p, n in zip(params[:3], (3, 4, 2), strict=True):
            p.grad = torch.arange(n, dtype=torch.float32)
        distributed.all_reduce_gradients(params)
        assert [p.grad.tolist() for p in params[:3]] == [[0, 1, 2], [0, 1, 2, 3], [0, 1]]
        assert params[3].grad is None  # no rank reached it: the optimizer skips it, as in one process
    finally:
        dist.destroy_process_group()


def test_ranks_hold_identical_parameters_after_every_step(two_ranks):
    for trace in (two_ranks["trace"], two_ranks["resumed"]):
        rank0, rank1 = steps(trace, 0), steps(trace, 1)
        assert len(rank0) == len(rank1) > 0
        assert [s["digest"] for s in rank0] == [s["digest"] for s in rank1]
        assert [s["loss"] for s in rank0] == [s["loss"] for s in rank1]


def test_two_processes_match_one_process_with_the_same_global_batch(two_ranks, tmp_path, monkeypatch):
    monkeypatch.setenv(distributed.TRACE_ENV, str(tmp_path / "trace"))
    single = Trainer(TrainSettings(**OPTIONS, epochs=1, output=str(tmp_path / "model")), log=lambda _: None,
                     progress=False).run()
    one, two = steps(tmp_path / "trace", 0), steps(two_ranks["trace"], 0)
    assert len(one) == len(two) == 6  # ceil(40 / 7) steps an epoch: --batch-size is the global batch
    assert two[0]["loss"] == pytest.approx(one[0]["loss"], rel=1e-5, abs=1e-5)
    params_one = torch.load(tmp_path / "trace" / "rank0-step1.pt")
    for rank in (0, 1):
        params_two = torch.load(two_ranks["trace"] / f"rank{rank}-step1.pt")
        assert params_two.keys() == params_one.keys()
        for name, tensor in params_one.items():
            torch.testing.assert_close(params_two[name], tensor, rtol=0, atol=1e-5, msg=name)
    state = torch.load(two_ranks["out"] / CHECKPOINT_DIR / STATE_FILE, weights_only=False)
    assert state["history"][0]["loss"] == pytest.approx(single["history"][0]["loss"], rel=1e-4)


def test_rank_zero_alone_reports_and_the_model_loads_predicts_and_resumes(two_ranks):
    assert two_ranks["stdout"].count("best dev score") == 1  # only rank 0 logs
    assert two_ranks["stdout"].count("epoch 1:") == 1
    state = torch.load(two_ranks["out"] / CHECKPOINT_DIR / STATE_FILE, weights_only=False)
    assert [h["epoch"] for h in state["history"]] == [1, 2]  # --resume continued after epoch 1
    assert len(state["torch_rng_ranks"]) == 2
    assert "resuming from" in two_ranks["resumed_stdout"]
    model = Tagger.load(two_ranks["out"])
    tags = model.tag([["Angela", "Merkel", "met", "Emmanuel", "Macron", "in", "Paris", "."], ["Hello"]])
    assert [len(t) for t in tags] == [8, 1]
    assert all(t in model.labels for sentence in tags for t in sentence)
