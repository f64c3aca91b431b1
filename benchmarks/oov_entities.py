"""Entity F1 on the test entities that contain a word never seen in training, model by model.

What pretrained vectors are for: a training corpus of 200k tokens misses most names, and a model
without vectors reads those words as UNK (only characters and casing help). This scores each model
on all entities, and on the entities with at least one word (lowercased, digits zeroed) absent from
the training file: gold ones for recall, predicted ones for precision.

    python benchmarks/oov_entities.py --model plugins/default_model --model models/conll-glove
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("TAGPIPE_DATA", Path.home() / ".cache" / "tagpipe-data")) / "conll2003"
_DIGITS = str.maketrans("123456789", "000000000")


def key(word: str) -> str:
    return word.lower().translate(_DIGITS)


def f1(gold: set, predicted: set) -> dict[str, float]:
    hits = len(gold & predicted)
    p = hits / len(predicted) if predicted else 0.0
    r = hits / len(gold) if gold else 0.0
    return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0, "gold": len(gold)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", required=True, help="model folder or embedded name; repeat")
    parser.add_argument("--train", default=str(DATA / "train.txt"))
    parser.add_argument("--test", default=str(DATA / "test.txt"))
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from tagpipe.corpora.conll import read_conll
    from tagpipe.corpora.schemes import convert, tags_to_spans
    from tagpipe.defaults import model_path
    from tagpipe.model import Tagger

    seen = {key(t) for s in read_conll(args.train) for t in s.tokens}
    test = list(read_conll(args.test))
    sentences = [s.tokens for s in test]

    def entities(tag_lists, scheme):
        spans = set()
        for i, tags in enumerate(tag_lists):
            spans |= {(i, a, b, label) for a, b, label in tags_to_spans(convert(tags, scheme, "iob2"), "iob2")}
        return spans

    def unseen(spans):
        return {s for s in spans if any(key(t) not in seen for t in sentences[s[0]][s[1]:s[2]])}

    gold = entities([s.tags for s in test], "iob2")
    report = {"test_entities": len(gold), "with_unseen_word": len(unseen(gold))}
    for name in args.model:
        model = Tagger.load(model_path(name))
        predicted = entities(model.tag(sentences, batch_size=128), model.scheme or "iob2")
        report[name] = {"all": f1(gold, predicted), "unseen": f1(unseen(gold), unseen(predicted))}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
