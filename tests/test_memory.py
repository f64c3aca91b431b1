"""tagpipe.memory: freed tensor memory goes back to the OS, so peak RSS measures live tensors."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO

PROBE = """
import torch
from tagpipe.memory import return_freed_memory, trim_freed_memory

def rss_mib():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20

set_up = return_freed_memory() if sys.argv[1] == "threshold" else False
big = torch.ones(4 * 2**20)  # 16 MiB: freeing it raises glibc's dynamic mmap threshold to 16 MiB
del big
blocks = [torch.ones(2 * 2**20) for _ in range(24)]  # 24 x 8 MiB: on the heap once the threshold rose
del blocks[::2]  # every other one freed: holes in the heap, or unmapped when each is an mmap of its own
if sys.argv[1] == "trim":
    set_up = trim_freed_memory()  # the holes' pages handed back
print(set_up, round(rss_mib()))
"""


def run_probe(mode: str) -> tuple[str, int]:
    """PROBE in a fresh process: (whether ``mode``'s call did something, RSS in MiB at the end)."""
    out = subprocess.run([sys.executable, "-c", "import sys\n" + PROBE, mode], cwd=REPO, check=True,
                         capture_output=True, text=True).stdout.split()
    return out[0], int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator (Linux)")
def test_freed_tensors_leave_the_process():
    (set_up, ours), (_, default) = run_probe("threshold"), run_probe("default")
    assert set_up == "True"
    assert ours < default - 60, f"RSS after freeing: {ours} MiB with return_freed_memory, {default} MiB without"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator (Linux)")
def test_trimming_hands_back_the_holes_of_the_heap():
    """What annotate does between batches: glibc keeps its threshold, the free pages go back at once."""
    (trimmed, ours), (_, default) = run_probe("trim"), run_probe("default")
    assert trimmed == "True"
    assert ours < default - 60, f"RSS after freeing: {ours} MiB with trim_freed_memory, {default} MiB without"
