"""Peak RSS of ``tagpipe annotate`` on a 10 MB and a 100 MB input: streaming keeps it flat.

Each run is a child of a fresh measuring process, whose ``resource.getrusage(RUSAGE_CHILDREN)``
gives the child's peak RSS alone. The input is the CoNLL-2003 train text (one sentence per line)
repeated to the size asked for. The target: the 100 MB peak within 10% of the 10 MB peak.

    python benchmarks/annotate_memory.py [--model DIR] [--sizes 10 100] [--n-process 1]

The model only changes the constant part of the footprint (its weights), not how it grows, so a
small model (the tests' tiny one) makes the 100 MB run take minutes instead of an hour.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("TAGPIPE_DATA", Path.home() / ".cache" / "tagpipe-data")) / "conll2003" / "train.txt"
MEASURE = """
import resource, subprocess, sys, time
started = time.perf_counter()
subprocess.run(sys.argv[1:], check=True)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, time.perf_counter() - started)
"""


def make_input(target: Path, megabytes: int) -> int:
    """The train text repeated to ``megabytes``; returns the number of lines."""
    sys.path.insert(0, str(REPO))
    from tagpipe.corpora.conll import read_conll

    block = "".join(" ".join(s.tokens) + "\n" for s in read_conll(DATA)).encode()
    size, lines = megabytes * 1_000_000, 0
    with open(target, "wb") as out:
        while out.tell() < size:
            chunk = block[: size - out.tell()]
            chunk = chunk[: chunk.rfind(b"\n") + 1] or chunk
            out.write(chunk)
            lines += chunk.count(b"\n")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 100], help="input sizes in MB")
    parser.add_argument("--n-process", type=int, default=1)
    args = parser.parse_args()
    print("uptime:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(), flush=True)
    results = {}
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        for megabytes in args.sizes:
            source = tmp / f"in{megabytes}.txt"
            lines = make_input(source, megabytes)
            command = [sys.executable, "cli.py", "annotate", str(source), "-o", str(tmp / "out.jsonl"), "-q",
                       "--n-process", str(args.n_process)] + (["-m", args.model] if args.model else [])
            measured = subprocess.run([sys.executable, "-c", MEASURE, *command], cwd=REPO, check=True,
                                      capture_output=True, text=True).stdout.split()
            results[f"{megabytes} MB"] = {"lines": lines, "peak_rss_mb": int(measured[0]) / 1024,
                                          "seconds": float(measured[1])}
            print(megabytes, "MB:", results[f"{megabytes} MB"], flush=True)
            (tmp / "out.jsonl").unlink()
    peaks = [r["peak_rss_mb"] for r in results.values()]
    print(json.dumps({"results": results, "ratio_largest_to_smallest": peaks[-1] / peaks[0]}, indent=2))


if __name__ == "__main__":
    main()
