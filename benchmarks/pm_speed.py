"""Impact-matrix speed: tagpipe's batched implementation against the straightforward loop.

    nice -n 10 python benchmarks/pm_speed.py --pretrained ~/.cache/tagpipe-data/minilm \
        --limit 40 --layers 3 6 --threads 1 --out out/pm_speed.md

The straightforward implementation (below, written as the paper's code does it) runs, for each
of [CLS] + n words, one batch of n + 1 copies through the whole model and reads the layer from
``output_hidden_states``. Both run the same model on the same machine, one run each, on the
first ``--limit`` sentences of UD English PUD; they alternate chunk by chunk so that load from
other users of the machine hits both alike. Matrices must agree to 1e-5.
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from corpora.conllu import read_conllu  # noqa: E402
from plugins.perturbed_masking import ImpactModel, distance  # noqa: E402
from plugins.subwords import align_words  # noqa: E402

PUD = Path(__file__).resolve().parent.parent.parent / "shared" / "corpora" / "ud" / "en_pud-ud-test.conllu"


@torch.inference_mode()
def straightforward(model, tokenizer, words: list[str], layer: int) -> torch.Tensor:
    """``[n + 1, n + 1]``: n + 1 batches of n + 1 copies, the whole model, first-subword pooling."""
    align = align_words(tokenizer, [words])
    ids, owner, n = align.input_ids[0], align.word_index[0], len(words)
    read_at = [0] + [first for first, _ in align.spans(0)]
    matrix = torch.zeros(n + 1, n + 1)
    for i in range(n + 1):
        base = ids.clone()
        if i:
            base[owner == i - 1] = tokenizer.mask_token_id
        batch = base.repeat(n + 1, 1)
        for j in range(1, n + 1):
            batch[j, owner == j - 1] = tokenizer.mask_token_id
        states = model(input_ids=batch, output_hidden_states=True).hidden_states[layer][:, read_at[i]]
        matrix[i, 1:] = distance(states[:1], states[1:], "euclidean")
    return matrix


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pretrained", required=True)
    parser.add_argument("--limit", type=int, default=40)
    parser.add_argument("--layers", type=int, nargs="+", default=[-1])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--chunk", type=int, default=8, help="sentences per alternation")
    parser.add_argument("--out", type=Path, default=Path("out/pm_speed.md"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sentences = [s.tokens for s in itertools.islice(read_conllu(PUD), args.limit)]
    ours = ImpactModel.from_pretrained(args.pretrained, device="auto")
    model, tokenizer = ours.model, ours.tokenizer
    rows = []
    for layer in args.layers:
        ours.layer = ours.resolve_layer(layer)
        t_ours = t_ref = 0.0
        worst = 0.0
        for start in range(0, len(sentences), args.chunk):
            chunk = sentences[start : start + args.chunk]
            t0 = time.perf_counter()
            mats = ours.matrices(chunk)
            t1 = time.perf_counter()
            refs = [straightforward(model, tokenizer, words, ours.layer) for words in chunk]
            t2 = time.perf_counter()
            t_ours, t_ref = t_ours + t1 - t0, t_ref + t2 - t1
            worst = max([worst] + [float((a - b).abs().max()) for a, b in zip(mats, refs, strict=True)])
            print(f"layer {ours.layer}: {start + len(chunk)}/{len(sentences)} ours {t_ours:.0f} s, "
                  f"straightforward {t_ref:.0f} s", file=sys.stderr, flush=True)
        if worst > 1e-5:
            raise SystemExit(f"layer {ours.layer}: matrices differ by {worst:.2e} > 1e-5")
        n = len(sentences)
        rows.append(f"| {ours.layer} | {n / t_ours:.2f} | {n / t_ref:.2f} | {t_ref / t_ours:.2f}x | {worst:.1e} |")
    words = sum(map(len, sentences)) / len(sentences)
    lines = [
        f"First {len(sentences)} sentences of UD English PUD (mean {words:.1f} words), model "
        f"`{Path(args.pretrained).name}` ({ours.num_layers} layers, hidden {model.config.hidden_size}), "
        f"fp32 on {ours.device}, torch threads {args.threads}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs; load average at the end {os.getloadavg()[0]:.1f}.",
        "",
        "| layer | ours (sentences/s) | straightforward (sentences/s) | speed-up | max abs difference |",
        "| --- | --- | --- | --- | --- |",
        *rows,
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
