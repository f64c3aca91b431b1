"""The Hugging Face export of BERT-encoder taggers against the models they came from, word for word.

Each ``--model`` (a ``tagpipe.bert.v1`` tagger with the softmax or CRF decoder) is exported with
``tagpipe.plugins.export.hf`` (IOB2 label names); HF's ``pipeline("token-classification")`` then tags the
test sentences (pre-split words, ``is_split_into_words=True``, no aggregation: each word gets its first
subword's label) and ``Tagger.tag`` tags them too. Printed per model: how many words get the label of our
decoder's scores' argmax (what HF computes), how many get our tag (by its IOB2 name), how many sentences get
the same entities (HF's labels read as IOB2, leniently, as its grouping reads them), entity F1 of both
against the gold tags, and, for the CRF, how often our Viterbi over HF's logits with
``crf_transitions.json`` gives our tags.

    python benchmarks/export_hf.py --model MODEL [MODEL ...] [--data test.txt] [--threads 1] [--limit N]
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
sys.path.insert(0, str(REPO))
DATA = Path(os.environ.get("TAGPIPE_DATA", Path.home() / ".cache" / "tagpipe-data")) / "conll2003" / "test.txt"


def argmax_tags(tagger, sentences, batch_size: int = 64) -> list[list[str]]:
    """Each word's best tag by our decoder's scores alone (no transitions, no constraints): what HF computes."""
    import torch

    tags: list[list[str]] = [[] for _ in sentences]
    order = sorted(range(len(sentences)), key=lambda i: len(sentences[i]))
    for begin in range(0, len(order), batch_size):
        chunk = order[begin : begin + batch_size]
        with torch.no_grad():
            hidden, _ = tagger.encode(tagger.featurize([sentences[i] for i in chunk]))
            best = tagger.decoder.projection(hidden).argmax(-1).tolist()
        for row, i in enumerate(chunk):
            tags[i] = [tagger.labels[t] for t in best[row][: len(sentences[i])]]
    return tags


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", nargs="+", required=True)
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--scheme", default="iob2", help="tagging scheme of --data")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--limit", type=int, default=None)
    args = parser.parse_args()
    print("uptime:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(), flush=True)

    import numpy as np
    import torch
    from transformers import AutoModelForTokenClassification, pipeline
    from transformers.utils import logging as hf_logging

    from tagpipe.corpora.conll import read_conll
    from tagpipe.corpora.schemes import convert, tags_to_spans
    from tagpipe.evaluation import entity_scores
    from tagpipe.model import Tagger
    from tagpipe.plugins.export import chains
    from tagpipe.plugins.export.hf import export_hf, first_subword_logits, iob2_name, pipeline_word_labels

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    torch.set_num_threads(args.threads)
    corpus = list(read_conll(args.data))[: args.limit]
    sentences = [s.tokens for s in corpus]
    gold = [convert(s.tags, args.scheme, "iob2") for s in corpus]
    words = sum(map(len, sentences))
    results = {}
    for model in args.model:
        tagger = Tagger.load(model)
        started = time.perf_counter()
        ours = tagger.tag(sentences)
        ours_seconds = time.perf_counter() - started
        with tempfile.TemporaryDirectory() as folder:
            out = Path(folder) / "hf"
            export_hf(Path(model), out)
            pipe = pipeline("token-classification", model=str(out), device=-1)
            started = time.perf_counter()
            theirs = pipeline_word_labels(pipe, sentences)
            hf_seconds = time.perf_counter() - started
            viterbi_same = None
            if tagger.decoder_name == "tagpipe.crf.v1":
                crf = json.loads((out / "crf_transitions.json").read_text())
                arrays = [chains.from_json(crf[k]) for k in ("transitions", "start", "end")]
                hf = AutoModelForTokenClassification.from_pretrained(out, local_files_only=True).eval()
                viterbi_same = 0
                for sentence, tags in zip(sentences, ours, strict=True):
                    logits = first_subword_logits(tagger, hf, [sentence]).numpy()[None]
                    path = chains.viterbi(logits, np.array([len(sentence)]), *arrays)[0]
                    viterbi_same += [tagger.labels[i] for i in path] == tags
        ours_iob2 = [convert(t, tagger.scheme, "iob2") for t in ours]
        theirs_iob2 = [convert(t, "iob2", "iob2") for t in theirs]  # lenient, as HF's grouping
        same_words = sum(iob2_name(a) == b for s, t in zip(ours, theirs, strict=True)
                         for a, b in zip(s, t, strict=True))
        argmax = argmax_tags(tagger, sentences)
        same_argmax = sum(iob2_name(a) == b for s, t in zip(argmax, theirs, strict=True)
                          for a, b in zip(s, t, strict=True))
        same_entities = sum(tags_to_spans(a, "iob2") == tags_to_spans(b, "iob2")
                            for a, b in zip(ours_iob2, theirs_iob2, strict=True))
        results[model] = {
            "decoder": tagger.decoder_name, "words": words, "same_words": same_words, "same_as_argmax": same_argmax,
            "sentences": len(sentences), "same_entities": same_entities,
            "f1_ours": entity_scores(gold, ours_iob2)["f1"], "f1_hf": entity_scores(gold, theirs_iob2)["f1"],
            "viterbi_over_hf_logits_same_sentences": viterbi_same,
            "seconds_ours": ours_seconds, "seconds_hf": hf_seconds,
        }
        print(json.dumps({model: results[model]}), flush=True)

    print(f"\n{len(sentences)} sentences, {words} words of {args.data}; torch {torch.__version__}, "
          f"{args.threads} thread(s)\n")
    print("| model | decoder | words with HF's label = our argmax | words with HF's label = ours | sentences with "
          "the same entities | test F1 ours / HF | Viterbi over HF's logits = ours |")
    print("| --- | --- | ---: | ---: | ---: | --- | --- |")
    for model, r in results.items():
        viterbi = "" if r["viterbi_over_hf_logits_same_sentences"] is None else \
            f"{r['viterbi_over_hf_logits_same_sentences']} of {r['sentences']} sentences"
        print(f"| {Path(model).name} | {r['decoder']} | {r['same_as_argmax']} of {r['words']} | "
              f"{r['same_words']} of {r['words']} "
              f"({100 * r['same_words'] / r['words']:.2f}%) | {r['same_entities']} of {r['sentences']} "
              f"({100 * r['same_entities'] / r['sentences']:.2f}%) | {100 * r['f1_ours']:.2f} / "
              f"{100 * r['f1_hf']:.2f} | {viterbi} |")


if __name__ == "__main__":
    main()
