"""pipeline.memory: freed tensor memory goes back to the OS, so peak RSS measures live tensors."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO

PROBE = """
import torch
from pipeline.memory import return_freed_memory

def rss_mib():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20

set_up = return_freed_memory() if sys.argv[1] == "tagpipe" else False
big = torch.ones(4 * 2**20)  # 16 MiB: freeing it raises glibc's dynamic mmap threshold to 16 MiB
del big
blocks = [torch.ones(2 * 2**20) for _ in range(24)]  # 24 x 8 MiB: on the heap once the threshold rose
del blocks[::2]  # every other one freed: holes in the heap, or unmapped when each is an mmap of its own
print(set_up, round(rss_mib()))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator (Linux)")
def test_freed_tensors_leave_the_process():
    def run(mode: str) -> tuple[str, int]:
        out = subprocess.run([sys.executable, "-c", "import sys\n" + PROBE, mode], cwd=REPO, check=True,
                             capture_output=True, text=True).stdout.split()
        return out[0], int(out[1])

    (set_up, ours), (_, default) = run("tagpipe"), run("default")
    assert set_up == "True"
    assert ours < default - 60, f"RSS after freeing: {ours} MiB with return_freed_memory, {default} MiB without"
