"""Time the BiLSTM encoder's featurize against its forward/backward on CoNLL-2003 train.

Featurize runs for every batch, so it must stay a small share of a training step. Usage::

    python benchmarks/bilstm_featurize.py [path/to/train.txt] [--threads 1] [--batches N] [--char-encoder lstm]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tagpipe.plugins.encoders.bilstm import BiLSTMEncoder  # noqa: E402

DEFAULT = Path.home() / ".cache" / "tagpipe-data" / "conll2003" / "train.txt"


def read_tokens(path: Path) -> list[list[str]]:
    """Sentences of the first column of a CoNLL file, ``-DOCSTART-`` lines skipped."""
    sentences, tokens = [], []
    for line in path.open(encoding="utf-8"):
        parts = line.split()
        if not parts or parts[0] == "-DOCSTART-":
            if tokens:
                sentences.append(tokens)
            tokens = []
        else:
            tokens.append(parts[0])
    return [*sentences, tokens] if tokens else sentences


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", nargs="?", type=Path, default=DEFAULT)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--batches", type=int, default=0, help="stop after N batches (0: all)")
    parser.add_argument("--char-encoder", choices=("cnn", "lstm"), default="cnn")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    sentences = read_tokens(args.path)
    start = time.perf_counter()
    encoder = BiLSTMEncoder.from_corpus(sentences, char_encoder=args.char_encoder)
    built = time.perf_counter() - start
    batches = [sentences[i : i + args.batch_size] for i in range(0, len(sentences), args.batch_size)]
    batches = batches[: args.batches] if args.batches else batches

    cold = time.perf_counter()
    features = [encoder.featurize(b) for b in batches]
    cold = time.perf_counter() - cold
    warm = time.perf_counter()
    for b in batches:
        encoder.featurize(b)
    warm = time.perf_counter() - warm
    step = time.perf_counter()
    for f in features:
        encoder.zero_grad()
        encoder(f).sum().backward()
    step = time.perf_counter() - step

    tokens = sum(len(s) for b in batches for s in b)
    print(f"{len(batches)} batches of {args.batch_size}, {tokens} tokens, {args.threads} thread(s)")
    print(f"from_corpus        {built:7.2f} s")
    print(f"featurize (cold)   {cold:7.2f} s   {1e3 * cold / len(batches):6.2f} ms/batch")
    print(f"featurize (cached) {warm:7.2f} s   {1e3 * warm / len(batches):6.2f} ms/batch")
    print(f"forward+backward   {step:7.2f} s   {1e3 * step / len(batches):6.2f} ms/batch")
    print(f"featurize share    {100 * warm / (warm + step):6.1f} %")


if __name__ == "__main__":
    main()
