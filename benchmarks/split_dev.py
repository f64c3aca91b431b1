"""Hold out a seeded random share of a CoNLL-style training file's sentences as dev.

Usage: python benchmarks/split_dev.py TRAIN OUT_DIR [--share 0.05] [--seed 1]
Writes OUT_DIR/train.txt and OUT_DIR/dev.txt (blank-line separated blocks, order kept within each).
A random split, not the file's tail: the tail of MSRA's training file scores far below its test set
and misled model selection (docs/benchmarks-history.md).
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("train", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--share", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    blocks = [b.strip("\n") for b in args.train.read_text(encoding="utf-8").split("\n\n") if b.strip()]
    held = set(random.Random(args.seed).sample(range(len(blocks)), round(len(blocks) * args.share)))
    args.out.mkdir(parents=True, exist_ok=True)
    for name, keep in (("train", False), ("dev", True)):
        part = [b for i, b in enumerate(blocks) if (i in held) is keep]
        (args.out / f"{name}.txt").write_text("\n\n".join(part) + "\n", encoding="utf-8")
    print(f"train {len(blocks) - len(held)} sentences, dev {len(held)} (seed {args.seed})")


if __name__ == "__main__":
    main()
