"""UAS of Perturbed Masking per layer, orientation and decoder, next to the chain baselines.

    nice -n 10 python benchmarks/pm_uas.py --pretrained ~/.cache/tagpipe-data/minilm \
        --limit 200 --threads 1 --out out/pm_uas.md

Impact matrices for every layer come from one pass per corpus (cached under ``--cache`` so the
decoding table can be redone without the encoder). Two root protocols are reported: ``cls``
(root arcs from the impact on [CLS]; no gold information) and ``gold`` (the paper code's
default: the gold root is given to the parser and to the baselines alike).
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tagpipe.corpora.conllu import read_conllu  # noqa: E402
from tagpipe.plugins.perturbed_masking.masking import ImpactModel  # noqa: E402
from tagpipe.plugins.perturbed_masking.protocol import Attachment, is_punct, parse_matrix  # noqa: E402
from tagpipe.plugins.perturbed_masking.trees import left_chain, right_chain  # noqa: E402

UD = Path(__file__).resolve().parent.parent.parent / "shared" / "corpora" / "ud"
CORPORA = {"PUD": UD / "en_pud-ud-test.conllu", "EWT dev": UD / "en_ewt-ud-dev.conllu"}
VARIANTS = [(o, a) for o in ("paper", "transposed") for a in ("eisner", "cle")]


def matrices(model: ImpactModel, name: str, sentences, cache: Path) -> dict:
    path = cache / f"{name.replace(' ', '_')}-{len(sentences)}-{model.distance}-{model.pooling}.pt"
    if path.exists():
        return torch.load(path)
    start = time.perf_counter()
    layers = list(range(1, model.num_layers + 1))
    result = model.matrices_by_layer([s.tokens for s in sentences], layers)
    print(f"{name}: matrices for {len(sentences)} sentences, layers 1..{layers[-1]}, "
          f"{time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    cache.mkdir(parents=True, exist_ok=True)
    torch.save(result, path)
    return result


def gold_root(sentence) -> int:
    return sentence.heads.index(0) + 1


def score(sentences, heads_of) -> Attachment:
    acc = Attachment()
    for k, s in enumerate(sentences):
        punct = [is_punct(t, u) for t, u in zip(s.tokens, s.upos or [None] * len(s), strict=True)]
        acc.add(heads_of(k, s)[1:], s.heads, punct)
    return acc


def table(name: str, sentences, by_layer: dict, root: str) -> list[str]:
    gold = root == "gold"
    pick = (lambda s: gold_root(s)) if gold else (lambda s: None)
    left = score(sentences, lambda k, s: left_chain(len(s), pick(s)))
    right = score(sentences, lambda k, s: right_chain(len(s), pick(s)))
    protocol = ("gold root given to parser and baselines" if gold
                else "root arcs from the [CLS] impact, no gold information")
    lines = [
        f"**{name}**, first {len(sentences)} sentences, {protocol}. Cells: UAS punctuation excluded / "
        "included (root attachment counted).",
        "",
        f"Baselines: left chain {left.uas:.1f} / {left.uas_with_punct:.1f}; "
        f"right chain {right.uas:.1f} / {right.uas_with_punct:.1f}.",
        "",
        "| layer | " + " | ".join(f"{o} {a}" for o, a in VARIANTS) + " |",
        "| --- |" + " --- |" * len(VARIANTS),
    ]
    for layer, mats in sorted(by_layer.items()):
        cells = []
        for orientation, algorithm in VARIANTS:
            acc = score(sentences, lambda k, s, m=mats, a=algorithm, o=orientation: parse_matrix(
                m[k], a, o, "cls", gold_root(s) if gold else None))
            cells.append(f"{acc.uas:.1f} / {acc.uas_with_punct:.1f}")
        lines.append(f"| {layer} | " + " | ".join(cells) + " |")
    return lines + [""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pretrained", required=True)
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--distance", default="euclidean")
    parser.add_argument("--cache", type=Path, default=Path("out/pm_cache"))
    parser.add_argument("--out", type=Path, default=Path("out/pm_uas.md"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = ImpactModel.from_pretrained(args.pretrained, distance=args.distance, device="auto")
    lines = [f"Model `{args.pretrained}`, distance {args.distance}, first-subword pooling, "
             "orientation `paper`: score(h -> d) = F[d, h]; `transposed`: F[h, d].", ""]
    for name, path in CORPORA.items():
        sentences = list(itertools.islice(read_conllu(path), args.limit))
        by_layer = matrices(model, name, sentences, args.cache)
        for root in ("cls", "gold"):
            lines += table(name, sentences, by_layer, root)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
        print("\n".join(lines), flush=True)


if __name__ == "__main__":
    main()
