"""Impact-matrix speed: tagpipe's batched implementation against the straightforward loop.

    nice -n 10 python benchmarks/pm_speed.py --pretrained ~/.cache/tagpipe-data/minilm \
        --limit 40 --layers 3 6 --threads 1 --out out/pm_speed.md

The straightforward implementation (below, written as the paper's code does it) runs, for each
of [CLS] + n words, one batch of n + 1 copies through the whole model and reads the layer from
``output_hidden_states``. Both run the same model on the same machine, one run each, on the
first ``--limit`` sentences of UD English PUD; they alternate chunk by chunk so that load from
other users of the machine hits both alike. Matrices must agree to 1e-5 in fp32.

``--precision fp32 bf16`` times ours at each precision in the same alternation (the straightforward
loop is always fp32); bf16 matrices are reported with their largest difference relative to the
matrix's largest entry, and must stay within 5% of it.
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

from tagpipe.corpora.conllu import read_conllu  # noqa: E402
from tagpipe.plugins.encoders.subwords import align_words  # noqa: E402
from tagpipe.plugins.perturbed_masking.masking import ImpactModel, distance  # noqa: E402

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
    parser.add_argument("--precision", nargs="+", default=["fp32"], choices=["fp32", "bf16", "fp16"],
                        help="ours at each of these precisions, in the same run")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sentences = [s.tokens for s in itertools.islice(read_conllu(PUD), args.limit)]
    ours = ImpactModel.from_pretrained(args.pretrained, device="auto")
    model, tokenizer = ours.model, ours.tokenizer
    rows = []
    for layer in args.layers:
        ours.layer = ours.resolve_layer(layer)
        t_ours = dict.fromkeys(args.precision, 0.0)
        worst = dict.fromkeys(args.precision, 0.0)
        t_ref = 0.0
        for start in range(0, len(sentences), args.chunk):
            chunk = sentences[start : start + args.chunk]
            t0 = time.perf_counter()
            refs = [straightforward(model, tokenizer, words, ours.layer) for words in chunk]
            t_ref += time.perf_counter() - t0
            for precision in args.precision:
                ours.precision = precision
                t0 = time.perf_counter()
                mats = ours.matrices(chunk)
                t_ours[precision] += time.perf_counter() - t0
                scale = 1.0 if precision == "fp32" else max(float(b.abs().max()) for b in refs)
                worst[precision] = max([worst[precision]] + [float((a - b).abs().max()) / scale
                                                             for a, b in zip(mats, refs, strict=True)])
            print(f"layer {ours.layer}: {start + len(chunk)}/{len(sentences)} ours "
                  f"{', '.join(f'{p} {s:.0f} s' for p, s in t_ours.items())}, straightforward {t_ref:.0f} s",
                  file=sys.stderr, flush=True)
        for precision in args.precision:
            if worst[precision] > (1e-5 if precision == "fp32" else 0.05):
                raise SystemExit(f"layer {ours.layer} {precision}: matrices differ by {worst[precision]:.2e}")
            n = len(sentences)
            kind = "abs" if precision == "fp32" else "relative"
            rows.append(f"| {ours.layer} | {precision} | {n / t_ours[precision]:.2f} | {n / t_ref:.2f} | "
                        f"{t_ref / t_ours[precision]:.2f}x | {worst[precision]:.1e} ({kind}) |")
    words = sum(map(len, sentences)) / len(sentences)
    lines = [
        f"First {len(sentences)} sentences of UD English PUD (mean {words:.1f} words), model "
        f"`{Path(args.pretrained).name}` ({ours.num_layers} layers, hidden {model.config.hidden_size}), "
        f"straightforward in fp32 on {ours.device}, torch threads {args.threads}, "
        f"{platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs; load average at the end {os.getloadavg()[0]:.1f}.",
        "",
        "| layer | ours: precision | ours (sentences/s) | straightforward (sentences/s) | speed-up | max difference |",
        "| --- | --- | --- | --- | --- | --- |",
        *rows,
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
