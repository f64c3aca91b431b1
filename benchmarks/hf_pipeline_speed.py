"""Inference speed of a fine-tuned BERT-family tagger (softmax decoder) against HuggingFace's
``pipeline("token-classification")`` on the same weights and the same texts, in one run.

The tagpipe model (``--model``, trained with ``--encoder bert --decoder softmax``) is exported to a
``BertForTokenClassification`` folder: its transformer weights as they are, and the softmax
decoder's projection as the classifier. HF's pipeline reads that folder; tagpipe runs
``Tagger.tag`` on the words. Both get CoNLL-2003 test (3,453 sentences, 46,435 words): tagpipe the
words, HF the words joined by spaces (the BERT pre-tokenizer splits them back into the same
subwords, so both models see the same input ids). A word's label is its first subword's (our
``first`` pooling; for HF the token that starts at the word's first character).

Labels must be identical: the softmax decoder's transition constraints (a Viterbi repair of
invalid BIOES sequences, which HF does not do) are switched off for the comparison; the timing of
the constrained decoder, as shipped, is printed too.

    python benchmarks/hf_pipeline_speed.py --model out/compare-conll/runs/minilm-softmax-seed1 \
        [--threads 1] [--hf-batch-sizes 1 8 32] [--limit N]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
DATA = Path(os.environ.get("TAGPIPE_DATA", Path.home() / ".cache" / "tagpipe-data")) / "conll2003" / "test.txt"


def export_hf(tagger, folder: Path) -> None:
    """Our bert encoder + softmax decoder as a ``BertForTokenClassification`` folder (with tokenizer)."""
    from transformers import AutoModelForTokenClassification

    encoder, decoder = tagger.encoder, tagger.decoder
    if tagger.encoder_name != "tagpipe.bert.v1" or tagger.decoder_name != "tagpipe.softmax.v1":
        raise SystemExit(f"needs a bert + softmax model, not {tagger.encoder_name} + {tagger.decoder_name}")
    if encoder.cfg.pooling != "first":
        raise SystemExit("the HF pipeline labels a word by its first subword: the model must pool 'first'")
    config = encoder.model.config.__class__.from_dict(encoder.model.config.to_dict())
    config.num_labels = len(tagger.labels)
    config.id2label = dict(enumerate(tagger.labels))
    config.label2id = {label: i for i, label in enumerate(tagger.labels)}
    config.architectures = None
    hf = AutoModelForTokenClassification.from_config(config)
    base = getattr(hf, hf.base_model_prefix)
    missing = base.load_state_dict(encoder.model.state_dict(), strict=False)
    if missing.missing_keys and any("pooler" not in k for k in missing.missing_keys):
        raise SystemExit(f"weights not carried over: {missing.missing_keys}")
    hf.classifier.load_state_dict(decoder.projection.state_dict())
    hf.save_pretrained(folder)
    encoder.tokenizer.save_pretrained(folder)


def hf_labels(outputs: list[list[dict]], texts: list[str], words: list[list[str]]) -> list[list[str]]:
    """Each word's label: that of the token starting at the word's first character."""
    labels = []
    for tokens, text, sentence in zip(outputs, texts, words, strict=True):
        by_start = {}
        for token in tokens:
            by_start.setdefault(token["start"], token["entity"])
        starts, at = [], 0
        for word in sentence:
            at = text.index(word, at)
            starts.append(at)
            at += len(word)
        labels.append([by_start.get(s, "?") for s in starts])
    return labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a tagpipe bert + softmax model folder")
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=64, help="tagpipe sentences per forward pass")
    parser.add_argument("--hf-batch-sizes", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--limit", type=int, default=None)
    args = parser.parse_args()

    from transformers import pipeline as hf_pipeline
    from transformers.utils import logging as hf_logging

    from tagpipe.corpora.conll import read_conll
    from tagpipe.model import Tagger

    hf_logging.set_verbosity_error()
    torch.set_num_threads(args.threads)
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print("uptime:", uptime, flush=True)
    words = [s.tokens for s in read_conll(args.data)][: args.limit]
    texts = [" ".join(w) for w in words]
    count = sum(map(len, words))
    tagger = Tagger.load(args.model).eval()

    with tempfile.TemporaryDirectory() as folder:
        export_hf(tagger, Path(folder))
        hf = hf_pipeline("token-classification", model=folder, tokenizer=folder, device=-1, ignore_labels=[],
                         aggregation_strategy="none")
        hf(texts[:8])  # warm-up, untimed
        tagger.tag(words[:64], batch_size=args.batch_size)

        seconds, hf_results = {}, {}
        with torch.inference_mode():
            tagger.decoder.constrained = False  # plain argmax, as HF
            started = time.perf_counter()
            ours = tagger.tag(words, batch_size=args.batch_size)
            seconds["tagpipe"] = time.perf_counter() - started
            tagger.decoder.constrained = True
            started = time.perf_counter()
            tagger.tag(words, batch_size=args.batch_size)
            seconds["tagpipe, constrained"] = time.perf_counter() - started
            for size in args.hf_batch_sizes:
                started = time.perf_counter()
                hf_results[size] = hf(texts, batch_size=size)
                seconds[f"HF pipeline, batch_size {size}"] = time.perf_counter() - started
                print(f"HF batch_size {size}: {count / seconds[f'HF pipeline, batch_size {size}']:.0f} tokens/s",
                      flush=True)

    theirs = hf_labels(hf_results[args.hf_batch_sizes[0]], texts, words)
    same = sum(a == b for s, t in zip(ours, theirs, strict=True) for a, b in zip(s, t, strict=True))
    best_hf = min(v for k, v in seconds.items() if k.startswith("HF"))
    print(f"\n{len(words)} sentences, {count} words of {Path(args.data).name}; model {args.model}; "
          f"torch {torch.__version__}, {args.threads} thread(s), {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs; uptime before: {uptime}\n")
    print("| system | seconds | tokens/s | tagpipe (unconstrained) vs this |")
    print("| --- | ---: | ---: | ---: |")
    for name, value in seconds.items():
        print(f"| {name} | {value:.1f} | {count / value:.0f} | {value / seconds['tagpipe']:.2f}x |")
    print(f"\nlabels identical for {same} of {count} words ({100 * same / count:.2f}%); "
          f"tagpipe vs the fastest HF setting: {best_hf / seconds['tagpipe']:.2f}x")
    print(json.dumps({"seconds": seconds, "words": count, "identical": same,
                      "uptime_after": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()}))


if __name__ == "__main__":
    main()
