"""Measuring a trained cell of a ``tagpipe compare`` grid: test scores, decoding speed, the machine."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tagpipe.corpora.schemes import convert
from tagpipe.corpora.types import Sentence
from tagpipe.training.settings import TrainSettings

MIN_DECODE_SECONDS = 1.0  # decoding a small test set is repeated for at least this long (20 passes at most)


def measure(folder: Path, test: Sequence[Sentence], settings: TrainSettings, batch_size: int) -> dict[str, Any]:
    """Test scores, decoding speed and trainable parameters of the model saved in ``folder``.

    Decoding is ``Tagger.tag`` over the test sentences (featurising included) on the training
    device, timed after one untimed warm-up batch; a small test set is tagged again until
    :data:`MIN_DECODE_SECONDS` have passed, so its speed is not a single noisy interval."""
    from tagpipe.devices import resolve_device
    from tagpipe.evaluation import entity_scores, token_accuracy
    from tagpipe.model import Tagger

    device = resolve_device(settings.device)
    model = Tagger.load(folder, device=device)
    tokens = [s.tokens for s in test]
    model.tag(tokens[:batch_size], batch_size=batch_size)  # warm-up: allocator, kernels, lazy initialisation
    passes, started = 0, time.perf_counter()
    while not passes or (time.perf_counter() - started < MIN_DECODE_SECONDS and passes < 20):
        predicted = model.tag(tokens, batch_size=batch_size)  # ends with .tolist(): CUDA work is done
        passes += 1
    seconds = time.perf_counter() - started
    gold = [s.tags for s in test]
    if model.task == "ner":
        scores = entity_scores(gold, [convert(p, model.scheme, "iob2") for p in predicted])
    else:
        scores = token_accuracy(gold, predicted)
        scores["f1"] = scores["accuracy"]
    count = sum(len(t) for t in tokens) * passes
    return {
        "test": scores,
        "parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "decode": {"tokens": count, "passes": passes, "seconds": seconds,
                   "tokens_per_second": count / max(seconds, 1e-9), "batch_size": batch_size},
        "machine": machine(device),
    }


def machine(device) -> dict[str, Any]:
    """Where a cell ran: platform, CPU, CPU count, torch threads, device."""
    import torch

    info = {"platform": platform.platform(), "processor": _cpu_name(), "cpus": os.cpu_count(),
            "python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "device": str(device)}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe_machine(info: dict[str, Any]) -> str:
    gpu = f" ({info['gpu']})" if info.get("gpu") else ""
    return (f"{info['platform']}, {info['processor']}, {info['cpus']} CPUs, torch {info['torch']} with "
            f"{info['threads']} threads, device {info['device']}{gpu}")
