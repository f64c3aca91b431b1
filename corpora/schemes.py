"""Span tagging schemes (IOB1, IOB2, BIOES/BMES): conversion, validity and allowed transitions.

Models work in BIOES internally (it tells the decoder where an entity ends); files come in any
scheme and evaluation uses IOB2, as seqeval's strict mode expects. Conversion goes through
spans, so it is lossless between schemes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

SCHEMES = ("iob1", "iob2", "bioes", "bmes")
#: the tag prefixes each scheme uses besides ``O``
PREFIXES = {
    "iob1": ("B", "I"),
    "iob2": ("B", "I"),
    "bioes": ("B", "I", "E", "S"),
    "bmes": ("B", "M", "E", "S"),
}
Span = tuple[int, int, str]  # (start token, end token exclusive, label)


def _split(tag: str) -> tuple[str, str]:
    """``"B-PER"`` -> ``("B", "PER")``; ``"O"`` -> ``("O", "")``."""
    if tag == "O" or not tag:
        return "O", ""
    prefix, sep, label = tag.partition("-")
    if not sep or prefix not in {"B", "I", "E", "S", "M"}:
        raise ValueError(f"tag {tag!r} is not of the form B-X / I-X / E-X / S-X / M-X / O")
    return prefix, label


def check_scheme(scheme: str) -> str:
    scheme = scheme.lower()
    if scheme not in SCHEMES:
        raise ValueError(f"unknown tagging scheme {scheme!r}; expected one of {', '.join(SCHEMES)}")
    return scheme


def tags_to_spans(tags: Sequence[str], scheme: str = "iob2") -> list[Span]:
    """The entity spans a tag sequence encodes. Ill-formed runs are read leniently (an I-X that
    follows nothing of type X starts a new span), as most tools do when converting."""
    scheme = check_scheme(scheme)
    spans: list[Span] = []
    start, label = None, ""
    for i, tag in enumerate(tags):
        prefix, lab = _split(tag)
        if prefix == "M":
            prefix = "I"
        begins = prefix in {"B", "S"} or (prefix in {"I", "E"} and (start is None or lab != label))
        if scheme == "iob1" and prefix == "B":
            begins = True
        if prefix == "O" or begins:
            if start is not None:
                spans.append((start, i, label))
            start, label = (None, "") if prefix == "O" else (i, lab)
        if prefix in {"E", "S"} and scheme in {"bioes", "bmes"}:
            spans.append((start, i + 1, label))
            start, label = None, ""
    if start is not None:
        spans.append((start, len(tags), label))
    return spans


def spans_to_tags(spans: Sequence[Span], length: int, scheme: str = "iob2") -> list[str]:
    """A tag sequence of ``length`` tokens encoding ``spans`` (non-overlapping) in ``scheme``."""
    scheme = check_scheme(scheme)
    tags = ["O"] * length
    inside = "M" if scheme == "bmes" else "I"
    for n, (start, end, label) in enumerate(sorted(spans)):
        for i in range(start, end):
            tags[i] = f"{inside}-{label}"
        if scheme == "iob2":
            tags[start] = f"B-{label}"
        elif scheme == "iob1":
            previous = sorted(spans)[n - 1] if n else None
            if previous is not None and previous[1] == start and previous[2] == label:
                tags[start] = f"B-{label}"
        elif end - start == 1:
            tags[start] = f"S-{label}"
        else:
            tags[start], tags[end - 1] = f"B-{label}", f"E-{label}"
    return tags


def convert(tags: Sequence[str], source: str, target: str) -> list[str]:
    """Re-encode ``tags`` from scheme ``source`` to scheme ``target``."""
    return spans_to_tags(tags_to_spans(tags, source), len(tags), target)


def is_valid(tags: Sequence[str], scheme: str) -> bool:
    """True when ``tags`` is a well-formed sequence in ``scheme`` (what constraints enforce)."""
    labels = sorted(set(tags) | {"O"})
    c = allowed_transitions(labels, scheme)
    index = {t: i for i, t in enumerate(labels)}
    ids = [index[t] for t in tags]
    if not ids:
        return True
    if not c.start[ids[0]] or not c.end[ids[-1]]:
        return False
    return all(c.transitions[a][b] for a, b in zip(ids, ids[1:], strict=False))


@dataclass(frozen=True)
class Constraints:
    """Which tags may start a sentence, follow each other, and end a sentence.

    ``transitions[i][j]`` is True when tag ``i`` may be followed by tag ``j``."""

    start: list[bool]
    transitions: list[list[bool]]
    end: list[bool]


def allowed_transitions(labels: Sequence[str], scheme: str) -> Constraints:
    """The transition constraints of ``scheme`` over the tag set ``labels`` (full tags, "O" included)."""
    scheme = check_scheme(scheme)
    parts = [_split(t) for t in labels]
    # a prefix the scheme does not use (E-X in IOB2, I-X in BMES) is never allowed
    foreign = [p != "O" and p not in PREFIXES[scheme] for p, _ in parts]
    if scheme == "bmes":
        parts = [("I" if p == "M" else p, lab) for p, lab in parts]
    n = len(labels)

    def may_follow(a: tuple[str, str], b: tuple[str, str]) -> bool:
        (pa, la), (pb, lb) = a, b
        if scheme == "iob1":
            # I-X may start an entity; B-X only directly after a X entity.
            return pb in {"O", "I"} or (pb == "B" and pa in {"B", "I"} and la == lb)
        if scheme == "iob2":
            return pb != "I" or (pa in {"B", "I"} and la == lb)
        # bioes / bmes: inside an entity only I-X/E-X of the same type; outside only O/B/S.
        if pa in {"B", "I"}:
            return pb in {"I", "E"} and la == lb
        return pb in {"O", "B", "S"}

    start = []
    end = []
    for (p, _), bad in zip(parts, foreign, strict=True):
        if scheme in {"bioes", "bmes"}:
            start.append(p in {"O", "B", "S"} and not bad)
            end.append(p in {"O", "E", "S"} and not bad)
        elif scheme == "iob2":
            start.append(p != "I" and not bad)
            end.append(not bad)
        else:
            start.append(p != "B" and not bad)
            end.append(not bad)
    transitions = [
        [not (foreign[i] or foreign[j]) and may_follow(parts[i], parts[j]) for j in range(n)]
        for i in range(n)
    ]
    return Constraints(start, transitions, end)
