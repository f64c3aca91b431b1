"""Data-parallel training: 2 CPU processes (gloo) under torchrun against one process, same global batch."""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tagpipe.model import Tagger
from tagpipe.training import distributed
from tagpipe.training.loop import CHECKPOINT_DIR, STATE_FILE, Trainer
from tagpipe.training.settings import TrainSettings

REPO = Path(__file__).resolve().parent.parent
TINY = str(REPO / "corpora" / "samples" / "tiny.conll")  # 40 sentences
NO_DROPOUT = {"word_dim": 16, "char_dim": 8, "char_hidden": 8, "hidden": 16, "dropout": 0.0, "word_dropout": 0.0}
# SGD, so that the parameters after one step differ as the gradients do (Adam's first step is lr * sign);
# a batch of 7 splits unevenly (4 + 3, and the last batch of 5 as 3 + 2), which tests the loss weighting
# no --dev (it would only add seqeval's import time): rank 0 keeps the model of the lowest loss
OPTIONS = dict(train=TINY, encoder_config=NO_DROPOUT, batch_size=7, optimizer="sgd", lr=0.05,
               device="cpu", seed=3, patience=100)
# the tiny BERT with grad checkpointing, steps of 39 sentences then 1: 13 passes of 3 in one process, on 2 ranks
# 10 passes of 2 (the first 9 under no_sync) and then a step that leaves rank 1 nothing; weight decay would
# move a parameter that got a zero gradient instead of none
BERT = dict(train=TINY, encoder="bert", encoder_config={"dropout": 0.0}, batch_size=3, accumulate=13,
            optimizer="sgd", lr=0.05, weight_decay=0.01, clip=0, grad_checkpointing=True, device="cpu", seed=3,
            patience=100, epochs=1, reference_batch_size=39)  # the lr is the global batch's of 39: unscaled


def torchrun(tmp_path: Path, trace: Path, *args: str, options: dict | None = None) -> subprocess.CompletedProcess:
    config = tmp_path / "train.json"
    config.write_text(json.dumps({k.replace("_", "-"): v for k, v in (options or OPTIONS).items()}))
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


class Toy(torch.nn.Module):
    """A "tagger" whose ``loss`` reaches ``shared`` always, ``some`` only when asked, ``never`` never."""

    def __init__(self) -> None:
        super().__init__()
        self.shared, self.some, self.never = (torch.nn.Parameter(torch.ones(n)) for n in (3, 2, 2))

    def loss(self, features: dict[str, torch.Tensor], tags: torch.Tensor) -> torch.Tensor:
        x = features["x"]
        loss = (self.shared * x).sum()
        return loss + (self.some * x[:2]).sum() if tags.item() else loss


def _toy_rank(rank: int, folder: str) -> None:
    """One of 2 gloo ranks: two passes of a step (the first under ``no_sync``), as ``Trainer._epoch``
    runs them; ``some`` is reached on rank 0 in the first pass only. Saves the gradients."""
    import torch.distributed as dist

    dist.init_process_group("gloo", store=dist.FileStore(f"{folder}/store", 2), rank=rank, world_size=2)
    try:
        context = distributed.Context(world_size=2, rank=rank, owns_group=True)
        toy = Toy()
        module = distributed.data_parallel(toy, context, torch.device("cpu"))
        for k, x in enumerate((1.0, 10.0), 1):
            with distributed.no_sync(module) if k == 1 else contextlib.nullcontext():
                loss = module({"x": torch.full((3,), x * (rank + 1))}, torch.tensor(rank == 0 and k == 1))
                (loss * 2).backward()  # x world size, as the trainer does: DDP averages
        torch.save({n: p.grad for n, p in toy.named_parameters()}, f"{folder}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()
    os._exit(0)  # gloo's threads can abort interpreter finalization (see distributed.exit_launched_process)


def test_data_parallel_sums_shares_and_keeps_unreached_parameters_without_gradient(tmp_path):
    spawn = multiprocessing.get_context("spawn")
    ranks = [spawn.Process(target=_toy_rank, args=(r, str(tmp_path))) for r in range(2)]
    for process in ranks:
        process.start()
    try:
        for process in ranks:
            process.join(120)
    finally:
        for process in ranks:
            if process.is_alive():
                process.kill()
    assert [p.exitcode for p in ranks] == [0, 0]
    grads = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    for g in grads:  # the sum over ranks and passes of each rank's gradient, on every rank
        assert g["shared"].tolist() == [11.0 + 22.0] * 3
        assert g["some"].tolist() == [1.0, 1.0]  # reached by one rank, in a no_sync pass
        assert g["never"] is None  # no rank reached it: the optimizer skips it, as in one process


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
    assert two_ranks["stdout"].count("model in ") == 1  # only rank 0 reports
    assert two_ranks["stdout"].count("epoch 1:") == 1
    state = torch.load(two_ranks["out"] / CHECKPOINT_DIR / STATE_FILE, weights_only=False)
    assert [h["epoch"] for h in state["history"]] == [1, 2]  # --resume continued after epoch 1
    assert len(state["torch_rng_ranks"]) == 2
    assert "resuming from" in two_ranks["resumed_stdout"]
    model = Tagger.load(two_ranks["out"])
    tags = model.tag([["Angela", "Merkel", "met", "Emmanuel", "Macron", "in", "Paris", "."], ["Hello"]])
    assert [len(t) for t in tags] == [8, 1]
    assert all(t in model.labels for sentence in tags for t in sentence)


def test_bert_with_checkpointing_accumulation_and_an_empty_slice_matches_one_process(tiny_bert_dir, tmp_path,
                                                                                     monkeypatch):
    from safetensors.torch import load_file

    options = {**BERT, "pretrained": str(tiny_bert_dir)}
    torchrun(tmp_path, tmp_path / "trace-two", "--output", str(tmp_path / "two"), options=options)
    monkeypatch.setenv(distributed.TRACE_ENV, str(tmp_path / "trace-one"))
    Trainer(TrainSettings(**options, output=str(tmp_path / "one")), log=lambda _: None, progress=False).run()
    one, two = steps(tmp_path / "trace-one", 0), steps(tmp_path / "trace-two", 0)
    assert [s["digest"] for s in two] == [s["digest"] for s in steps(tmp_path / "trace-two", 1)]
    assert len(one) == len(two) == 2
    assert [s["loss"] for s in two] == pytest.approx([s["loss"] for s in one], rel=1e-5, abs=1e-5)
    final_one, final_two = (load_file(tmp_path / run / "model.safetensors") for run in ("one", "two"))
    assert final_two.keys() == final_one.keys()
    for name, tensor in final_one.items():  # after both steps, the second with an empty slice on rank 1
        torch.testing.assert_close(final_two[name], tensor, rtol=0, atol=1e-5, msg=name)


def test_a_transformer_encoder_on_two_ranks_matches_one_process(tmp_path, monkeypatch):
    """Issue 20's encoder under torchrun: a GAU (log-n softmax, DeepNorm, no biases) with gradient checkpointing
    takes the same steps on 2 ranks as in one process, and both ranks hold the same parameters."""
    from safetensors.torch import load_file

    encoder_config = {"word_dim": 8, "char_dim": 4, "char_hidden": 4, "casing_dim": 2, "width": 16, "key_size": 8,
                      "ffn": 24, "attention": "gau_softmax", "log_n": True, "norm": "deepnorm", "bias": False,
                      "norm_gain": False, "dropout": 0.0, "word_dropout": 0.0, "layer_dropout": 0.0}
    options = {**OPTIONS, "encoder": "transformer", "encoder_config": encoder_config, "epochs": 1,
               "grad_checkpointing": True}
    torchrun(tmp_path, tmp_path / "trace-two", "--output", str(tmp_path / "two"), options=options)
    monkeypatch.setenv(distributed.TRACE_ENV, str(tmp_path / "trace-one"))
    Trainer(TrainSettings(**options, output=str(tmp_path / "one")), log=lambda _: None, progress=False).run()
    one, two = steps(tmp_path / "trace-one", 0), steps(tmp_path / "trace-two", 0)
    assert [s["digest"] for s in two] == [s["digest"] for s in steps(tmp_path / "trace-two", 1)]
    assert len(one) == len(two) == 6  # 40 sentences in batches of 7
    assert [s["loss"] for s in two] == pytest.approx([s["loss"] for s in one], rel=1e-5, abs=1e-5)
    final_one, final_two = (load_file(tmp_path / run / "model.safetensors") for run in ("one", "two"))
    for name, tensor in final_one.items():
        torch.testing.assert_close(final_two[name], tensor, rtol=0, atol=1e-5, msg=name)
