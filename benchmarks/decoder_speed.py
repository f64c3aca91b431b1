"""Training-step and decoding speed of each decoder on one encoder, interleaved in one process.

``tagpipe compare`` times every cell while it trains, minutes or hours apart; on a shared machine
those timings move with the load. This script measures the decoders' cost side by side instead:
the same BiLSTM encoder (the CoNLL-2003 config, freshly initialised: speed does not depend on the
weights) under each decoder, the same CoNLL-2003 batches, rounds of forward+backward+step and of
``Tagger.tag`` alternating decoder by decoder, best round kept.

    python benchmarks/decoder_speed.py [--decoders softmax memm bimemm crf] [--steps 40] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
DATA = Path(os.environ.get("TAGPIPE_DATA", Path.home() / ".cache" / "tagpipe-data")) / "conll2003"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--decoders", nargs="+", default=["softmax", "memm", "bimemm", "crf"])
    parser.add_argument("--steps", type=int, default=40, help="training steps per round")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    from tagpipe.corpora.conll import read_conll
    from tagpipe.corpora.schemes import convert
    from tagpipe.model import Tagger, span_labels
    from tagpipe.training.settings import DECODER_ALIASES

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    train = list(read_conll(DATA / "train.txt"))
    test = [s.tokens for s in read_conll(DATA / "test.txt")]
    config = json.loads((REPO / "benchmarks" / "configs" / "conll2003-bilstm-crf.json").read_text())
    labels = span_labels(["LOC", "MISC", "ORG", "PER"], "bioes")
    index = {label: i for i, label in enumerate(labels)}
    sentences = [s.tokens for s in train]
    batches = [train[i : i + args.batch_size] for i in range(0, args.steps * args.batch_size, args.batch_size)]
    models = {}
    for name in args.decoders:
        torch.manual_seed(0)
        models[name] = Tagger.build(sentences, labels, encoder="tagpipe.bilstm.v1",
                                    decoder=DECODER_ALIASES.get(name, name),
                                    encoder_config=config["encoder_config"])
    features = {name: [model.featurize([s.tokens for s in batch]) for batch in batches]
                for name, model in models.items()}
    gold = []
    for batch in batches:
        width = max(len(s) for s in batch)
        gold.append(torch.tensor([[index[t] for t in convert(s.tags, "iob2", "bioes")] + [0] * (width - len(s))
                                  for s in batch]))
    for name, model in models.items():  # warm-up, untimed: first calls build kernels and caches
        model.loss(features[name][0], gold[0]).backward()
        model.zero_grad()
        model.tag(test[:256], batch_size=128)
    step_ms = {name: [] for name in models}
    decode = {name: [] for name in models}
    tokens = sum(map(len, test))
    for _ in range(args.rounds):
        for name, model in models.items():
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
            model.train()
            started = time.perf_counter()
            for feats, tags in zip(features[name], gold, strict=True):
                loss = model.loss(feats, tags)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            step_ms[name].append(1000 * (time.perf_counter() - started) / len(batches))
            started = time.perf_counter()
            model.tag(test, batch_size=128)
            decode[name].append(tokens / (time.perf_counter() - started))
    print(f"BiLSTM (CoNLL-2003 config) x decoder; {args.steps} training steps of {args.batch_size} CoNLL-2003 "
          f"train sentences and Tagger.tag over test ({tokens} tokens) per round, best of {args.rounds}; "
          f"torch {torch.__version__}, {args.threads} thread(s), {platform.processor() or platform.machine()}; "
          f"uptime before: {uptime}\n")
    base = min(step_ms["crf"]) if "crf" in step_ms else None
    print("| decoder | ms per training step | vs crf | decode tokens/s |")
    print("| --- | ---: | ---: | ---: |")
    for name in models:
        ratio = f"{min(step_ms[name]) / base:.2f}x" if base else ""
        print(f"| {name} | {min(step_ms[name]):.1f} | {ratio} | {max(decode[name]):,.0f} |")
    print(json.dumps({"step_ms": step_ms, "decode_tokens_per_s": decode, "uptime_before": uptime}))


if __name__ == "__main__":
    main()
