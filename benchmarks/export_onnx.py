"""The ONNX export of a BiLSTM tagger against the torch model it came from: same entities, tokens/s, install size.

Exports ``--model`` (default: the embedded BiLSTM-CRF) with ``tagpipe.plugins.export.onnx_export``, then
tags the same sentences (CoNLL-2003 test: 3,453 sentences) with ``Tagger.tag`` (torch) and with
``OnnxTagger.tag`` (onnxruntime, numpy Viterbi, no torch on its path), both on one thread, in batches of each
of ``--batch-sizes`` sentences sorted by length, alternating the two ``--rounds`` times after an untimed warm-up.
Prints the load (``uptime``) first, the CPU model, the tags and entities that differ, tokens/s of each
round, and the installed size of torch and onnxruntime (bytes of their package folders).

    python benchmarks/export_onnx.py [--model plugins/default_model] [--data test.txt] [--threads 1] [--rounds 2] \
        [--batch-sizes 64 16 256]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
DATA = Path(os.environ.get("TAGPIPE_DATA", Path.home() / ".cache" / "tagpipe-data")) / "conll2003" / "test.txt"


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def package_bytes(name: str) -> int:
    """Bytes of an installed package's folder (what ``du`` counts, apparent sizes)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return 0
    folder = Path(next(iter(spec.submodule_search_locations)))
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(REPO / "plugins" / "default_model"))
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 16, 256],
                        help="sentences per batch (sorted by length); the first is the reference for the tags")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print("uptime:", uptime, flush=True)

    import torch

    from tagpipe.corpora.conll import read_conll
    from tagpipe.corpora.schemes import tags_to_spans
    from tagpipe.model import Tagger
    from tagpipe.plugins.export.onnx_export import export_onnx
    from tagpipe.plugins.export.onnx_runtime import OnnxTagger

    torch.set_num_threads(args.threads)
    sentences = [s.tokens for s in read_conll(args.data)]
    tokens = sum(map(len, sentences))
    tagger = Tagger.load(args.model)
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        export_onnx(Path(args.model), Path(folder) / "onnx")
        export_seconds = time.perf_counter() - started
        onnx = OnnxTagger.load(Path(folder) / "onnx", threads=args.threads)
        graph_bytes = (Path(folder) / "onnx" / "model.onnx").stat().st_size
    systems = {"torch (Tagger.tag)": tagger.tag, "onnxruntime (OnnxTagger.tag)": onnx.tag}
    for run in systems.values():  # warm-up, untimed
        run(sentences[:256])
    seconds: dict[tuple[str, int], list[float]] = {}
    tags: dict[tuple[str, int], list[list[str]]] = {}
    for size in args.batch_sizes:
        for _ in range(args.rounds):
            for name, run in systems.items():
                started = time.perf_counter()
                tags[name, size] = run(sentences, batch_size=size)
                seconds.setdefault((name, size), []).append(time.perf_counter() - started)
                print(f"{name}, batches of {size}: {tokens / seconds[name, size][-1]:,.0f} tokens/s", flush=True)
    scheme = tagger.scheme or "iob2"
    reference = tags["torch (Tagger.tag)", args.batch_sizes[0]]
    gold_spans = [tags_to_spans(s, scheme) for s in reference]
    diffs = {key: (sum(a != b for s, t in zip(reference, got, strict=True) for a, b in zip(s, t, strict=True)),
                   sum(g != tags_to_spans(t, scheme) for g, t in zip(gold_spans, got, strict=True)))
             for key, got in tags.items()}
    sizes = {name: package_bytes(name) for name in ("torch", "onnxruntime", "onnx", "numpy")}
    import onnxruntime

    print(f"\nmodel {args.model}; {len(sentences)} sentences, {tokens} tokens of {args.data}; CPU {cpu_model()}, "
          f"{os.cpu_count()} CPUs; torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, "
          f"{args.threads} thread(s); export took {export_seconds:.1f} s, model.onnx {graph_bytes / 1e6:.1f} MB\n")
    print("| system | batch | seconds per round | tokens/s (best) | vs torch, same batch | tags / sentences' "
          "entities differing from torch's |")
    print("| --- | ---: | --- | ---: | ---: | --- |")
    for (name, size), values in seconds.items():
        ratio = min(seconds["torch (Tagger.tag)", size]) / min(values)
        tag_diffs, entity_diffs = diffs[name, size]
        print(f"| {name} | {size} | {' / '.join(f'{v:.2f}' for v in values)} | {tokens / min(values):,.0f} | "
              f"{ratio:.2f}x | {tag_diffs} / {entity_diffs} |")
    entities = sum(map(len, gold_spans))
    print(f"\n{entities} entities in torch's tags (batches of {args.batch_sizes[0]})")
    print("installed size (MB): " + ", ".join(f"{k} {v / 1e6:.1f}" for k, v in sizes.items()))
    print(json.dumps({"seconds": {f"{n}, {b}": v for (n, b), v in seconds.items()}, "tokens": tokens,
                      "diffs": {f"{n}, {b}": v for (n, b), v in diffs.items()}, "bytes": sizes,
                      "uptime_after": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()}))


if __name__ == "__main__":
    main()
