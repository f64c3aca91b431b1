"""Scores: entity P/R/F1 with seqeval (strict, IOB2), token accuracy for tag tasks, and exact-match
P/R/F1 over sets of items (relation triples). Precision, recall, F1 and accuracy are fractions."""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Iterable, Sequence
from typing import Any


def entity_scores(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]) -> dict[str, Any]:
    """Micro and per-type precision/recall/F1 (fractions in [0, 1]); both sides in IOB2."""
    from seqeval.metrics import classification_report
    from seqeval.scheme import IOB2

    gold = [list(s) for s in gold]
    predicted = [list(s) for s in predicted]
    report = classification_report(gold, predicted, mode="strict", scheme=IOB2, output_dict=True, zero_division=0)
    per_type = {
        label: {"precision": v["precision"], "recall": v["recall"], "f1": v["f1-score"], "support": int(v["support"])}
        for label, v in report.items()
        if not label.endswith(" avg")
    }
    micro = report.get("micro avg", {"precision": 0.0, "recall": 0.0, "f1-score": 0.0, "support": 0})
    return {
        "precision": micro["precision"],
        "recall": micro["recall"],
        "f1": micro["f1-score"],
        "support": int(micro["support"]),
        "per_type": per_type,
    }


def token_accuracy(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]) -> dict[str, Any]:
    """Token accuracy and per-tag accuracy (recall of each gold tag)."""
    total = correct = 0
    seen: Counter[str] = Counter()
    right: Counter[str] = Counter()
    for g_sent, p_sent in zip(gold, predicted, strict=True):
        for g, p in zip(g_sent, p_sent, strict=True):
            total += 1
            seen[g] += 1
            if g == p:
                correct += 1
                right[g] += 1
    return {
        "accuracy": correct / total if total else 0.0,
        "tokens": total,
        "per_tag": {tag: {"accuracy": right[tag] / n, "support": n} for tag, n in sorted(seen.items())},
    }


def exact_match_scores(gold: Sequence[Iterable[Hashable]], predicted: Sequence[Iterable[Hashable]]) -> dict[str, Any]:
    """Micro precision/recall/F1 (fractions) of per-sentence item sets (e.g. ``(subject, relation,
    object)`` triples): an item is right when the same sentence's gold set holds it exactly."""
    correct = n_pred = n_gold = 0
    for g, p in zip(gold, predicted, strict=True):
        g_set, p_set = set(g), set(p)
        correct += len(g_set & p_set)
        n_pred += len(p_set)
        n_gold += len(g_set)
    precision = correct / n_pred if n_pred else 0.0
    recall = correct / n_gold if n_gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "correct": correct, "predicted": n_pred,
            "gold": n_gold}


def format_entity_table(scores: dict[str, Any]) -> str:
    """A plain-text table like seqeval's report, percentages with two decimals."""
    lines = [f"{'type':<12}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>10}"]
    for label, s in sorted(scores["per_type"].items()):
        lines.append(f"{label:<12}{s['precision'] * 100:>10.2f}{s['recall'] * 100:>10.2f}{s['f1'] * 100:>10.2f}"
                     f"{s['support']:>10}")
    lines.append(f"{'micro':<12}{scores['precision'] * 100:>10.2f}{scores['recall'] * 100:>10.2f}"
                 f"{scores['f1'] * 100:>10.2f}{scores['support']:>10}")
    return "\n".join(lines)


def format_accuracy_table(scores: dict[str, Any]) -> str:
    lines = [f"{'tag':<12}{'accuracy':>10}{'support':>10}"]
    for tag, s in scores["per_tag"].items():
        lines.append(f"{tag:<12}{s['accuracy'] * 100:>10.2f}{s['support']:>10}")
    lines.append(f"{'all':<12}{scores['accuracy'] * 100:>10.2f}{scores['tokens']:>10}")
    return "\n".join(lines)
