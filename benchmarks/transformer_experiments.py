"""Issue 20's two small-scale experiments with ``tagpipe.transformer.v1`` on CoNLL-2003 NER.

``deepnorm``: the same deep, narrow stack (24 layers of width 64 by default) with post-norm, pre-norm and
DeepNorm, trained for ``--steps`` optimizer steps on the same batches; prints the loss curve as a table
(mean loss per window of ``--report-every`` steps; ``nan`` once a run diverged), test F1 at the end, and
writes ``deepnorm.json`` and (with matplotlib) ``deepnorm.png`` into ``--out``. DeepNet's claim: the
post-norm stack stalls or diverges at this depth, DeepNorm trains.

``length``: GAU variants (plain softmax, log-n-scaled softmax, relu^2; optionally multi-head softmax)
trained only on sentences of at most ``--max-train-length`` tokens, then scored by length bucket on the
test set (and on whole test documents, each one sequence): the log-n scale should hold up best on
sentences far longer than any it was trained on. Writes ``length.json`` into ``--out``.

Both train with a plain loop over ``Tagger.loss`` (AdamW, optional linear warm-up, clipping), not
``tagpipe train``, so the loss of every step is recorded. Smoke run (seconds)::

    python benchmarks/transformer_experiments.py deepnorm --steps 4 --layers 2 --train-limit 200 --test-limit 50
    python benchmarks/transformer_experiments.py length --steps 4 --train-limit 200 --test-limit 100

Full runs (``--threads 1`` on a CPU core): ``deepnorm --steps 3000`` takes ~0.45 s a step per model at 24 layers
x width 64 (about 25 minutes each, three models); ``length --steps 6000`` ~0.08 s a step at 2 layers x width 128
(about 8 minutes a variant) plus scoring. A 30-step smoke of ``deepnorm`` on 3,000 sentences already showed
post-norm at test F1 0 against pre-norm 35 and DeepNorm 70 (100 test sentences: a smoke, not a result).
Output goes to ``out/transformer/`` (git-ignored) unless ``--out`` says otherwise; see ``--help``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from tagpipe.corpora.conll import read_conll
from tagpipe.corpora.schemes import convert, tags_to_spans
from tagpipe.corpora.types import Sentence
from tagpipe.evaluation import entity_scores
from tagpipe.model import Tagger, span_labels

DATA = Path.home() / ".cache" / "tagpipe-data" / "conll2003"
FEATURES = {"word_dim": 100, "char_dim": 30, "char_hidden": 50, "casing_dim": 12, "dropout": 0.3}
LENGTH_VARIANTS = {
    "softmax": {"attention": "gau_softmax"},
    "logn": {"attention": "gau_softmax", "log_n": True},
    "relu2": {"attention": "gau_relu2"},
    "mha": {"attention": "softmax"},
}
BUCKETS = ((1, 20), (21, 40), (41, 60), (61, 10_000))


# -- data ------------------------------------------------------------------------------------------

def load(path: Path, limit: int | None = None, max_length: int | None = None) -> list[Sentence]:
    """Non-empty sentences of a CoNLL-2003 file (IOB2), tags in BIOES, optionally the first ``limit`` short ones."""
    out = []
    for sentence in read_conll(path, scheme="iob2", target_scheme="bioes"):
        if sentence.tokens and (max_length is None or len(sentence.tokens) <= max_length):
            out.append(sentence)
            if limit is not None and len(out) >= limit:
                break
    return out


def documents(path: Path, limit: int | None = None) -> list[Sentence]:
    """Each ``-DOCSTART-`` document of the file as one sequence (its sentences' tokens and tags end to end)."""
    docs: list[Sentence] = []
    for sentence in read_conll(path, scheme="iob2", target_scheme="bioes"):
        if sentence.doc_start or not docs:
            if limit is not None and len(docs) >= limit:
                break
            docs.append(Sentence(tokens=[], tags=[]))
        docs[-1].tokens.extend(sentence.tokens)
        docs[-1].tags.extend(sentence.tags or [])
    return [d for d in docs if d.tokens]


def build(train: Sequence[Sentence], encoder_config: dict[str, Any], decoder: str, seed: int) -> Tagger:
    types = sorted({label for s in train for _, _, label in tags_to_spans(s.tags or [], "bioes")})
    torch.manual_seed(seed)
    return Tagger.build([s.tokens for s in train], span_labels(types, "bioes"), encoder="tagpipe.transformer.v1",
                        decoder=decoder, encoder_config=encoder_config, scheme="bioes")


# -- training and scoring --------------------------------------------------------------------------

def train(model: Tagger, sentences: Sequence[Sentence], args: argparse.Namespace, label: str) -> list[float]:
    """``args.steps`` AdamW steps on random batches (the same batches for every model: seeded); the losses.

    A non-finite loss ends the run: the remaining steps read ``nan`` (diverged).
    """
    device = torch.device(args.device)
    model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    warmup = args.warmup_steps

    def schedule(step: int) -> float:
        return min(1.0, (step + 1) / warmup) if warmup else 1.0

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    batches = torch.Generator().manual_seed(args.seed)
    losses: list[float] = []
    started = time.perf_counter()
    for step in range(args.steps):
        chunk = [sentences[i] for i in torch.randint(len(sentences), (args.batch_size,), generator=batches).tolist()]
        features = {k: v.to(device) for k, v in model.featurize([s.tokens for s in chunk]).items()}
        width = max(len(s.tokens) for s in chunk)
        gold = torch.tensor([[model.label_ids[t] for t in s.tags or []] + [-1] * (width - len(s.tokens))
                             for s in chunk], device=device)  # shape: [B, T]
        loss = model.loss(features, gold)
        if not torch.isfinite(loss):
            print(f"  {label}: loss {loss.item()} at step {step + 1}: diverged")
            losses += [math.nan] * (args.steps - step)
            break
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
        if (step + 1) % args.report_every == 0:
            recent = losses[-args.report_every :]
            print(f"  {label}: step {step + 1}/{args.steps} loss {sum(recent) / len(recent):.4f} "
                  f"({time.perf_counter() - started:.0f}s)", flush=True)
    model.eval()
    return losses


def f1(model: Tagger, sentences: Sequence[Sentence], batch_size: int) -> dict[str, Any]:
    """Strict micro F1 (seqeval, IOB2) of ``model`` on ``sentences``, with the number of gold entities."""
    if not sentences:
        return {"f1": None, "sentences": 0, "entities": 0}
    predicted = model.tag([s.tokens for s in sentences], batch_size=batch_size)
    gold = [convert(s.tags or [], "bioes", "iob2") for s in sentences]
    scores = entity_scores(gold, [convert(p, "bioes", "iob2") for p in predicted])
    return {"f1": scores["f1"], "sentences": len(sentences), "entities": scores["support"]}


def window_means(losses: Sequence[float], every: int) -> list[tuple[int, float]]:
    """``(last step, mean loss)`` per window of ``every`` steps."""
    return [(min(i + every, len(losses)), sum(losses[i : i + every]) / len(losses[i : i + every]))
            for i in range(0, len(losses), every)]


def plot(curves: dict[str, list[float]], path: Path, title: str, every: int) -> bool:
    """Loss curves (window means) as a PNG; False when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(7, 4))
    for label, losses in curves.items():
        points = window_means(losses, every)
        ax.plot([s for s, _ in points], [v for _, v in points], label=label)
    ax.set(xlabel="step", ylabel=f"training loss (mean of {every} steps)", title=title, yscale="log")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


# -- the experiments -------------------------------------------------------------------------------

def deepnorm(args: argparse.Namespace) -> dict[str, Any]:
    train_set = load(args.data / "train.txt", args.train_limit)
    test_set = load(args.data / "test.txt", args.test_limit)
    stack = {"layers": args.layers, "width": args.width, "heads": args.heads, "ffn": 4 * args.width,
             "attention": "softmax", "positions": "rope", "layer_dropout": 0.0}
    curves: dict[str, list[float]] = {}
    scores: dict[str, Any] = {}
    for norm in args.norms:
        print(f"{norm}: {args.layers} layers x width {args.width}, {args.steps} steps", flush=True)
        model = build(train_set, {**FEATURES, **stack, **args.features, "norm": norm}, args.decoder, args.seed)
        curves[norm] = train(model, train_set, args, norm)
        diverged = any(math.isnan(v) for v in curves[norm])
        scores[norm] = None if diverged else f1(model, test_set, args.eval_batch_size)
    print(f"\nmean training loss per {args.report_every} steps ({args.layers} layers, width {args.width}, "
          f"lr {args.lr}, warm-up {args.warmup_steps} steps)")
    print("| step | " + " | ".join(args.norms) + " |")
    print("| ---: | " + " | ".join("---:" for _ in args.norms) + " |")
    columns = {norm: window_means(curves[norm], args.report_every) for norm in args.norms}
    for i, (step, _) in enumerate(columns[args.norms[0]]):
        print(f"| {step} | " + " | ".join(f"{columns[n][i][1]:.4f}" for n in args.norms) + " |")
    print("| test F1 | " + " | ".join("diverged" if scores[n] is None else f"{100 * scores[n]['f1']:.2f}"
                                      for n in args.norms) + " |")
    args.out.mkdir(parents=True, exist_ok=True)
    png = args.out / "deepnorm.png"
    if plot(curves, png, f"{args.layers} layers, width {args.width}: post-norm, pre-norm, DeepNorm",
            args.report_every):
        print(f"wrote {png}")
    return {"experiment": "deepnorm", "settings": settings_of(args), "losses": curves, "test": scores}


def length(args: argparse.Namespace) -> dict[str, Any]:
    train_set = load(args.data / "train.txt", args.train_limit, max_length=args.max_train_length)
    test_set = load(args.data / "test.txt", args.test_limit)
    buckets = {f"{lo}-{hi}" if hi < 10_000 else f"{lo}+": [s for s in test_set if lo <= len(s.tokens) <= hi]
               for lo, hi in BUCKETS}
    docs = documents(args.data / "test.txt", args.doc_limit) if args.doc_limit != 0 else []
    stack = {"layers": args.layers, "width": args.width, "heads": args.heads, "positions": "rope",
             "train_length": args.max_train_length}
    print(f"{len(train_set)} training sentences of <= {args.max_train_length} tokens; test buckets: "
          + ", ".join(f"{k} ({len(v)})" for k, v in buckets.items()) + f"; {len(docs)} documents", flush=True)
    results: dict[str, Any] = {}
    for name in args.variants:
        print(f"{name}: {LENGTH_VARIANTS[name]}, {args.steps} steps", flush=True)
        model = build(train_set, {**FEATURES, **stack, **args.features, **LENGTH_VARIANTS[name]}, args.decoder,
                      args.seed)
        losses = train(model, train_set, args, name)
        scored = {bucket: f1(model, sentences, args.eval_batch_size) for bucket, sentences in buckets.items()}
        scored["documents"] = f1(model, docs, 4)
        results[name] = {"final_loss": sum(losses[-50:]) / len(losses[-50:]), "f1": scored}
    columns = [*buckets, "documents"]
    print(f"\ntest F1 by sentence length (trained on sentences of <= {args.max_train_length} tokens)")
    print("| variant | " + " | ".join(columns) + " |")
    print("| --- | " + " | ".join("---:" for _ in columns) + " |")
    for name, result in results.items():
        cells = [result["f1"][c]["f1"] for c in columns]
        print(f"| {name} | " + " | ".join("-" if v is None else f"{100 * v:.2f}" for v in cells) + " |")
    counts = [f"{results[args.variants[0]]['f1'][c]['entities']}" for c in columns] if results else []
    print("| (gold entities) | " + " | ".join(counts) + " |")
    return {"experiment": "length", "settings": settings_of(args), "results": results}


def settings_of(args: argparse.Namespace) -> dict[str, Any]:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "run"}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="experiment", required=True)
    for name, run, layers, width, steps in (("deepnorm", deepnorm, 24, 64, 3000), ("length", length, 2, 128, 6000)):
        p = sub.add_parser(name, help=(deepnorm if name == "deepnorm" else length).__doc__)
        p.set_defaults(run=run)
        p.add_argument("--data", type=Path, default=DATA, help="folder of CoNLL-2003 train.txt and test.txt")
        p.add_argument("--out", type=Path, default=Path("out/transformer"), help="JSON (and PNG) here")
        p.add_argument("--steps", type=int, default=steps, help="optimizer steps per model")
        p.add_argument("--layers", type=int, default=layers)
        p.add_argument("--width", type=int, default=width)
        p.add_argument("--heads", type=int, default=4)
        p.add_argument("--batch-size", type=int, default=32)
        p.add_argument("--lr", type=float, default=1e-3)
        p.add_argument("--warmup-steps", type=int, default=0, help="linear warm-up (0: none, the harder test)")
        p.add_argument("--clip", type=float, default=5.0)
        p.add_argument("--decoder", default="tagpipe.softmax.v1")
        p.add_argument("--features", type=json.loads, default={},
                       help='JSON of extra encoder_config keys, e.g. \'{"pretrained_vectors": "glove.txt"}\'')
        p.add_argument("--train-limit", type=int, default=None, help="first N training sentences only")
        p.add_argument("--test-limit", type=int, default=None, help="first N test sentences only")
        p.add_argument("--eval-batch-size", type=int, default=64)
        p.add_argument("--report-every", type=int, default=100, help="steps per row of the loss table")
        p.add_argument("--seed", type=int, default=1)
        p.add_argument("--device", default="cpu")
        p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
        if name == "deepnorm":
            p.add_argument("--norms", type=lambda s: s.split(","), default=["post", "pre", "deepnorm"])
        else:
            p.add_argument("--max-train-length", type=int, default=20, help="longest training sentence")
            p.add_argument("--variants", type=lambda s: s.split(","), default=["softmax", "logn", "relu2"],
                           help=f"comma-separated, of {', '.join(LENGTH_VARIANTS)}")
            p.add_argument("--doc-limit", type=int, default=None, help="first N test documents (0: none)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.report_every = max(1, min(args.report_every, args.steps))
    result = args.run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{args.experiment}.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
