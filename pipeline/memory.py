"""Host memory: hand freed tensor memory back to the OS (glibc), so RSS follows live tensors.

Why: glibc serves large allocations from ``mmap`` only below a threshold that it raises itself,
up to 32 MB, each time such a block is freed. Once raised, a training step's activations and a
batch's buffers come from the heap, which fragments and seldom shrinks: the process keeps every
peak it ever reached and grows further when a later step's tensors do not fit the holes: MiniLM
training held several times more RSS than its live tensors, which also hid most of what
``--grad-checkpointing`` saves (docs/benchmarks.md, gradient checkpointing).

Two remedies, for two access patterns:

- Training (:func:`return_freed_memory`): fixing the threshold at 128 KB (glibc's own starting
  value; setting it turns the adjustment off) makes every tensor buffer of that size or more an
  ``mmap`` of its own, unmapped when freed. Small objects (Python's) stay on the heap. The cost is
  a page fault per fresh page of a large tensor, a few per cent of a training step.
- Annotating (:func:`trim_freed_memory`): batch after batch of the same shapes, where that cost is
  not small: a packed LSTM allocates several buffers per time step, and the page faults took a
  large share of the run (docs/benchmarks.md). glibc keeps its own threshold, and after each
  batch ``malloc_trim`` hands the free pages of the heap back at once, so peak RSS stays that of
  one batch however long the input.

Not glibc (macOS, musl, Windows): nothing to do.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number
THRESHOLD = 128 * 1024


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    """The C library when it is glibc (it has ``mallopt`` and ``malloc_trim``), else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
    except (OSError, AttributeError):  # not glibc
        return None
    return libc


@functools.cache
def return_freed_memory() -> bool:
    """Fix glibc's mmap threshold (once per process); True when it was set."""
    libc = _glibc()
    return libc is not None and bool(libc.mallopt(M_MMAP_THRESHOLD, THRESHOLD))


def trim_freed_memory() -> bool:
    """Hand the heap's free pages back to the OS now (call between batches); True when any were."""
    libc = _glibc()
    return libc is not None and bool(libc.malloc_trim(0))


def peak_rss_mib() -> float:
    """This process's peak resident set size so far, in MiB (Linux reports KiB)."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024
