"""Tokens/s of ``tagpipe annotate`` by engine: one process, ``--n-process 2``, ``--engine ray --num-workers 2``.

Input: the CoNLL-2003 train text, one sentence per line (204k tokens), ``--copies`` times (built as
``benchmarks/annotate_speed.py`` does). Each system is timed as a whole fresh CLI process, start-up
included; tokens/s is the input's whitespace token count over wall seconds, so all systems divide
the same number. The outputs must be byte-identical (checked).

Ray's fixed cost is measured apart: the same three commands on a one-line input (the difference
between the Ray and the local engine is starting a local instance and its workers, loading the
model in each, and shutting it down), and ``ray.init`` / ``ray.shutdown`` alone in a subprocess.

    python benchmarks/annotate_engines.py [--model DIR] [--copies 1] [--rounds 1] [--limit LINES]

``--limit`` keeps the first LINES sentences (a quick check that everything runs). Machines are
shared and noisy: the script prints ``uptime`` before and after and runs the systems interleaved,
round after round, keeping each system's best round. Needs ``pip install 'tagpipe[distributed]'``.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from annotate_speed import DATA, REPO, tagpipe, timed, write_text  # noqa: E402

SYSTEMS = {
    "local, 1 process": [],
    "local, --n-process 2": ["--n-process", "2"],
    "ray, --num-workers 2": ["--engine", "ray", "--num-workers", "2"],
}
RAY_INIT = """
import os, time
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
os.environ.setdefault("RAY_AUTH_MODE", "token")
import ray
started = time.perf_counter()
ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="error")
ready = time.perf_counter()
ray.shutdown()
print(ready - started, time.perf_counter() - ready)
"""


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def limited(text: Path, lines: int) -> int:
    """Keep the first ``lines`` lines of ``text``; returns their token count."""
    kept = text.read_text(encoding="utf-8").split("\n")[:lines]
    text.write_text("\n".join(kept) + "\n", encoding="utf-8")
    return sum(len(line.split()) for line in kept)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model folder (default: the embedded model)")
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--copies", type=int, default=1, help="the train text this many times (1: 204k tokens)")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--limit", type=int, default=None, help="only the first LINES sentences (a quick check)")
    args = parser.parse_args()

    before = uptime()
    print("uptime:", before, flush=True)
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        text, one_line = tmp / "train.txt", tmp / "one.txt"
        tokens = write_text(Path(args.data), text, copies=args.copies)
        if args.limit is not None:
            tokens = limited(text, args.limit)
        one_line.write_text("EU rejects German call to boycott British lamb .\n", encoding="utf-8")

        seconds: dict[str, list[float]] = {name: [] for name in SYSTEMS}
        for _ in range(args.rounds):
            for index, (name, extra) in enumerate(SYSTEMS.items()):
                seconds[name].append(timed(tagpipe(text, args.model, tmp / f"out{index}.jsonl", *extra)))
                print(f"{name}: {tokens / seconds[name][-1]:.0f} tokens/s ({seconds[name][-1]:.1f} s)", flush=True)
        identical = all(filecmp.cmp(tmp / "out0.jsonl", tmp / f"out{i}.jsonl", shallow=False)
                        for i in range(1, len(SYSTEMS)))

        fixed = {name: timed(tagpipe(one_line, args.model, tmp / f"one{i}.jsonl", *extra))
                 for i, (name, extra) in enumerate(SYSTEMS.items())}
        init_s, shutdown_s = map(float, subprocess.run([sys.executable, "-c", RAY_INIT], cwd=REPO, check=True,
                                                       capture_output=True, text=True).stdout.split())

    best = {name: min(values) for name, values in seconds.items()}
    base = tokens / best["local, 1 process"]
    print(f"\n{tokens} tokens ({args.copies} x CoNLL-2003 train text"
          f"{f', first {args.limit} lines' if args.limit else ''}); best of {args.rounds} round(s); "
          f"outputs byte-identical: {'yes' if identical else 'NO'}\n")
    print("| engine | wall s | tokens/s | vs 1 process | one-line input, wall s |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name in SYSTEMS:
        rate = tokens / best[name]
        print(f"| {name} | {best[name]:.1f} | {rate:.0f} | {rate / base:.2f}x | {fixed[name]:.1f} |")
    startup = fixed["ray, --num-workers 2"] - fixed["local, 1 process"]
    print(f"\nRay fixed cost (one-line input, Ray minus local): {startup:.1f} s; of which ray.init of a local "
          f"instance {init_s:.1f} s and ray.shutdown {shutdown_s:.1f} s (the rest: starting 2 workers and loading the "
          "model in each)")
    print("uptime after:", uptime())
    print(json.dumps({"tokens": tokens, "seconds": seconds, "one_line_seconds": fixed, "ray_init_s": init_s,
                      "ray_shutdown_s": shutdown_s, "identical": identical, "uptime_before": before,
                      "uptime_after": uptime()}))


if __name__ == "__main__":
    main()
