"""Decode speed (sentences/s) of both triple heads on WebNLG test with MiniLM.

    nice -n 10 python benchmarks/triples_speed.py --threads 1 [--model pointer=DIR --model gplinker=DIR]

Without ``--model`` the heads are untrained (random weights over the pretrained encoder) and
timed with a threshold nothing passes: encoder, head scores and the decoders' scans, but no
candidate enumeration (random scores pass threshold 0 about half the time, far more candidates
than a trained model has, so timing them at 0 would measure nothing real). Trained models given
with ``--model`` are timed as they are, at threshold 0. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import torch

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "corpora" / "webnlg"
MINILM = Path.home() / ".cache" / "tagpipe-data" / "minilm"


def time_decode(model, sentences, batch_size: int, repeats: int, threshold: float = 0.0) -> tuple[float, int]:
    """Median sentences/s over ``repeats`` runs, and the number of triples predicted."""
    model.predict(sentences[:batch_size], batch_size=batch_size, threshold=threshold)  # warm-up
    rates, found = [], 0
    for _ in range(repeats):
        start = time.perf_counter()
        out = model.predict(sentences, batch_size=batch_size, threshold=threshold)
        rates.append(len(sentences) / (time.perf_counter() - start))
        found = sum(len(t) for t in out)
    return statistics.median(rates), found


def main() -> None:
    from tagpipe.corpora.webnlg import read_relations, read_webnlg
    from tagpipe.plugins.triples.model import TripleModel

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--pretrained", type=Path, default=MINILM)
    parser.add_argument("--model", action="append", default=[],
                        help="HEAD=DIR: time a trained model (HEAD: pointer, gplinker, gplinker-efficient)")
    parser.add_argument("--limit", type=int, default=None, help="first N test sentences (default: all 703)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sentences = [s.tokens for s in read_webnlg(args.data / "test.json")][: args.limit]
    relations = read_relations(args.data / "rel2id.json")
    print(f"torch {torch.__version__}, {args.threads} thread(s), {platform.processor() or platform.machine()}, "
          f"{len(sentences)} sentences, batch {args.batch_size}, median of {args.repeats}\n")
    print("| head | weights | threshold | sentences/s | triples predicted |")
    print("| --- | --- | --- | --- | --- |")
    trained = dict(item.split("=", 1) for item in args.model)
    for head in ("pointer", "gplinker", "gplinker-efficient"):
        if head in trained:
            model = TripleModel.load(trained[head])
            rate, found = time_decode(model, sentences, args.batch_size, args.repeats)
            print(f"| {head} | trained ({trained[head]}) | 0 | {rate:.1f} | {found} |")
            continue
        torch.manual_seed(0)
        name, _, variant = head.partition("-")
        model = TripleModel.build(args.pretrained, relations, name, {"efficient": True} if variant else {}).eval()
        rate, found = time_decode(model, sentences, args.batch_size, args.repeats, threshold=1e9)
        print(f"| {head} | untrained, nothing passes | 1e9 | {rate:.1f} | {found} |")


if __name__ == "__main__":
    main()
