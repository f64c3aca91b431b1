"""Peak training memory of MiniLM + CRF with and without ``--grad-checkpointing``, and the loss curve.

Each setting trains in a fresh process: the tagger is built exactly as ``tagpipe train`` builds it
(``Tagger.build`` with the ``bert`` encoder over the local MiniLM folder and the CRF), then
``--steps`` AdamW steps on batches of ``--batch`` sentences of ``--subwords`` subwords each (made
from CoNLL-2003 train text), the same batches and seed in both runs. Dropout stays on: checkpointing
replays the random state in its recomputation, so the two loss curves must agree to 1e-3.

Peak memory: on GPU ``torch.cuda.max_memory_allocated`` (tensors only); on CPU the process's peak
RSS (``getrusage``), which is what the machine must have (tracemalloc does not see tensors). On CPU
the child first calls ``tagpipe.memory.return_freed_memory()`` as ``tagpipe train`` does (freed
tensors go back to the OS instead of fragmenting glibc's heap); ``--allocator default`` leaves
glibc as it is, to show the difference.

    python benchmarks/grad_checkpointing.py --pretrained ~/.cache/tagpipe-data/minilm [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("TAGPIPE_DATA", Path.home() / ".cache" / "tagpipe-data"))


def sentences_of(subwords: int, count: int, tokenizer, conll: Path) -> tuple[list[list[str]], list[list[str]]]:
    """``count`` word sequences of exactly ``subwords`` subwords (specials included) and their tags,
    cut from consecutive CoNLL sentences."""
    sys.path.insert(0, str(REPO))
    from tagpipe.corpora.conll import read_conll

    words, tags = [], []
    out_words, out_tags = [], []
    budget = subwords - 2  # [CLS] and [SEP]
    used = 0
    for sentence in read_conll(conll):
        for word, tag in zip(sentence.tokens, sentence.tags, strict=True):
            pieces = len(tokenizer.tokenize(word)) or 1
            if used + pieces > budget:
                if used == budget:
                    out_words.append(words)
                    out_tags.append(tags)
                    if len(out_words) == count:
                        return out_words, out_tags
                words, tags, used = [], [], 0
                if pieces > budget:
                    continue
            words.append(word)
            tags.append("O" if tag == "O" else tag)
            used += pieces
    raise SystemExit(f"not enough text in {conll} for {count} sequences of {subwords} subwords")


def child(args: argparse.Namespace) -> None:
    import torch

    sys.path.insert(0, str(REPO))
    from transformers import AutoTokenizer

    from tagpipe.corpora.schemes import convert
    from tagpipe.memory import peak_rss_mib, return_freed_memory
    from tagpipe.model import Tagger, span_labels

    if args.device == "cpu" and args.allocator == "tagpipe":
        return_freed_memory()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    tokenizer = AutoTokenizer.from_pretrained(args.pretrained, local_files_only=True)
    words, tags = sentences_of(args.subwords, args.batch * args.steps, tokenizer, DATA / "conll2003" / "train.txt")
    tags = [convert(t, "iob2", "bioes") for t in tags]
    labels = span_labels(["LOC", "MISC", "ORG", "PER"], "bioes")
    tagger = Tagger.build(words, labels, encoder="tagpipe.bert.v1", decoder="tagpipe.crf.v1",
                          encoder_config={"pretrained": args.pretrained})
    device = torch.device(args.device)
    tagger.to(device).train()
    if args.checkpointing:
        assert tagger.encoder.enable_grad_checkpointing()
    optimizer = torch.optim.AdamW(tagger.parameters(), lr=5e-5)
    index = {label: i for i, label in enumerate(labels)}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    losses = []
    started = time.perf_counter()
    for step in range(args.steps):
        chunk = slice(step * args.batch, (step + 1) * args.batch)
        features = tagger.featurize(words[chunk])
        assert int(features["attention_mask"].sum(1).max()) == args.subwords, "batches are batch x subwords"
        features = {k: v.to(device) for k, v in features.items()}
        width = max(len(t) for t in tags[chunk])
        gold = torch.tensor([[index[x] for x in t] + [0] * (width - len(t)) for t in tags[chunk]], device=device)
        loss = tagger.loss(features, gold)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    seconds = time.perf_counter() - started
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = peak_rss_mib()
    print(json.dumps({"checkpointing": args.checkpointing, "peak_mib": peak, "losses": losses,
                      "seconds_per_step": seconds / args.steps}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pretrained", default=str(DATA / "minilm"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--subwords", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--allocator", choices=["tagpipe", "default"], default="tagpipe",
                        help="tagpipe: as tagpipe train sets glibc on CPU; default: glibc untouched")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--checkpointing", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    print("uptime:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(), flush=True)
    results = {}
    for checkpointing in (False, True):
        command = [sys.executable, __file__, "--child", "--pretrained", args.pretrained, "--device", args.device,
                   "--batch", str(args.batch), "--subwords", str(args.subwords), "--steps", str(args.steps),
                   "--threads", str(args.threads), "--allocator", args.allocator]
        command += ["--checkpointing"] if checkpointing else []
        done = subprocess.run(command, check=True, capture_output=True, text=True)
        results[checkpointing] = json.loads(done.stdout.strip().splitlines()[-1])
    plain, checked = results[False], results[True]
    drift = max(abs(a - b) for a, b in zip(plain["losses"], checked["losses"], strict=True))
    unit = "max allocated (GPU)" if args.device.startswith("cuda") else "peak RSS"
    print(f"MiniLM + CRF, batch {args.batch} x {args.subwords} subwords, {args.steps} AdamW steps, {args.device}, "
          f"{args.threads} thread(s), allocator {args.allocator}")
    print(f"| | {unit} MiB | s/step | loss at step 1 / {args.steps} |")
    print("| --- | ---: | ---: | --- |")
    for name, r in (("no checkpointing", plain), ("--grad-checkpointing", checked)):
        print(f"| {name} | {r['peak_mib']:.0f} | {r['seconds_per_step']:.2f} | "
              f"{r['losses'][0]:.4f} / {r['losses'][-1]:.4f} |")
    print(f"memory saved: {100 * (1 - checked['peak_mib'] / plain['peak_mib']):.1f}%; "
          f"slower by {checked['seconds_per_step'] / plain['seconds_per_step']:.2f}x; "
          f"largest loss difference over the {args.steps} steps: {drift:.2e}")
    print(json.dumps({"plain": plain, "checkpointing": checked, "max_loss_difference": drift}))


if __name__ == "__main__":
    main()
