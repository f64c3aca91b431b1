"""``--n-process N``: batches annotated by a pool of worker processes, results kept in order.

On Linux the workers are forked after the parent has loaded the models, so each starts at once
and shares the weights' memory pages; elsewhere (and for a GPU ``--device``, which cannot cross a
fork) they are spawned and receive the pipeline pickled, once each (the tagpipe components pickle
with their weights). Each worker runs ``--threads`` torch threads. At most ``2 N`` batches are in
flight, so a large input is never read ahead into memory.
"""

from __future__ import annotations

import multiprocessing
from collections import deque
from collections.abc import Iterator
from typing import Any

_annotator: Any = None  # the worker's Annotator


def _init(annotator: Any, threads: int) -> None:
    import torch

    global _annotator
    torch.set_num_threads(threads)
    _annotator = annotator


def _annotate(batch: list) -> tuple[list[tuple[bytes, ...]], int]:
    return _annotator(batch)


def parallel(annotator: Any, batches: Iterator[list], settings: Any) -> Iterator[tuple[list[tuple[bytes, ...]], int]]:
    """``annotator(batch)`` for each batch, computed by ``settings.n_process`` workers, in order."""
    fork = settings.device == "cpu" and "fork" in multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if fork else "spawn")
    with context.Pool(settings.n_process, initializer=_init, initargs=(annotator, settings.threads)) as pool:
        pending: deque = deque()
        for batch in batches:
            pending.append(pool.apply_async(_annotate, (batch,)))
            if len(pending) >= 2 * settings.n_process:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()
