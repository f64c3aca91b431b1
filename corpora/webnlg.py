"""WebNLG (exact-match version) for relation-triple extraction.

A file is one JSON array of ``{"text": ..., "triple_list": [[subject, relation, object], ...]}``;
tokens are the text split on spaces, entities are full strings of those tokens. The reader
locates each entity (its space-split tokens, first occurrence) and gives the triple in word
offsets (exclusive ends). A triple whose entity cannot be found is *not* dropped silently:
it stays in ``Sentence.extra["unlocated"]`` (so evaluation still counts it as a miss) and the
reader counts it (:class:`WebNLGStats`). ``rel2id.json`` is a list holding one name-to-id dict.

Each :class:`~tagpipe.corpora.types.Sentence` has ``tokens``, ``text`` and ``extra``:
``triples`` (``[s_start, s_end, relation, o_start, o_end]`` lists), ``triple_strings`` (the file's
triples, de-duplicated) and ``unlocated``.

For seq2seq, :func:`webnlg_pairs` turns a file into ``{"source", "target"}`` pairs in either
direction, with triples linearised as ``subject | relation | object ; subject | relation | object``
(:func:`linearise`); :func:`parse_linearised` reads such a text back (a generated one included).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tagpipe.corpora.base import CorpusFormat
from tagpipe.corpora.io import display_name
from tagpipe.corpora.types import Sentence
from tagpipe.errors import CorpusError


@dataclass
class WebNLGStats:
    """What a read met: sentences, triples, and triples whose entity was not found."""

    sentences: int = 0
    triples: int = 0
    unlocated: int = 0
    examples: list[str] = field(default_factory=list)  # the first few unlocated triples

    def summary(self) -> str:
        return (f"{self.sentences} sentences, {self.triples} triples, {self.unlocated} with an entity not "
                f"found in the tokens")


def locate(tokens: Sequence[str], entity: str) -> tuple[int, int] | None:
    """``(start, end)`` of the first occurrence of ``entity``'s space-split words, else None."""
    words = entity.split()
    n = len(words)
    if not n:
        return None
    for i in range(len(tokens) - n + 1):
        if list(tokens[i:i + n]) == words:
            return i, i + n
    return None


def sentence_from_item(item: Any, name: str, number: int, stats: WebNLGStats) -> Sentence:
    """One record as a Sentence with located triples; a malformed record raises CorpusError."""
    if not isinstance(item, dict) or not isinstance(item.get("text"), str):
        raise CorpusError(name, number, "expected an object with a 'text' string")
    triple_list = item.get("triple_list", [])
    if not isinstance(triple_list, list) or not all(
            isinstance(t, list) and len(t) == 3 and all(isinstance(x, str) for x in t) for t in triple_list):
        raise CorpusError(name, number, "'triple_list' must be a list of [subject, relation, object] strings")
    tokens = item["text"].split()
    strings: list[list[str]] = []
    located: list[list[Any]] = []
    unlocated: list[list[str]] = []
    for subject, relation, obj in triple_list:
        if [subject, relation, obj] in strings:
            continue
        strings.append([subject, relation, obj])
        s, o = locate(tokens, subject), locate(tokens, obj)
        if s is None or o is None:
            unlocated.append([subject, relation, obj])
            if len(stats.examples) < 5:
                stats.examples.append(f"{name} record {number}: {[subject, relation, obj]}")
            continue
        located.append([s[0], s[1], relation, o[0], o[1]])
    stats.sentences += 1
    stats.triples += len(strings)
    stats.unlocated += len(unlocated)
    extra = {"triples": located, "triple_strings": strings, "unlocated": unlocated}
    return Sentence(tokens=tokens, text=item["text"], source=name, line=number, extra=extra)


def read_webnlg(path: str | Path, stats: WebNLGStats | None = None) -> Iterator[Sentence]:
    """Yield the sentences of one WebNLG file; ``stats`` (when given) is filled as they go."""
    name = display_name(path)
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise CorpusError(name, exc.lineno, f"not valid JSON: {exc.msg} (column {exc.colno})") from None
    if not isinstance(data, list):
        raise CorpusError(name, 1, "expected a JSON array of records")
    stats = stats if stats is not None else WebNLGStats()
    for number, item in enumerate(data, start=1):
        yield sentence_from_item(item, name, number, stats)


def read_relations(path: str | Path) -> list[str]:
    """Relation names in id order from ``rel2id.json`` (a dict, or a list whose first item is one)."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    mapping = data[0] if isinstance(data, list) and data else data
    if not isinstance(mapping, dict):
        raise CorpusError(display_name(path), 1, "expected a name-to-id object (or a list holding one)")
    return [name for name, _ in sorted(mapping.items(), key=lambda kv: int(kv[1]))]


# -- linearised triples, for seq2seq --------------------------------------------------------------
FIELD_SEPARATOR = " | "
TRIPLE_SEPARATOR = " ; "
DIRECTIONS = ("text2triples", "triples2text")


def linearise(triples: Sequence[Sequence[str]]) -> str:
    """``[(s, r, o), ...]`` as ``"s | r | o ; s | r | o"`` (no WebNLG entity holds ``|`` or ``;``)."""
    return TRIPLE_SEPARATOR.join(FIELD_SEPARATOR.join(" ".join(part.split()) for part in t) for t in triples)


def parse_linearised(text: str) -> list[tuple[str, str, str]]:
    """The triples of a linearised text, in order, each once; spaces around the separators are
    optional, and a chunk without exactly three non-empty parts is passed over."""
    triples: list[tuple[str, str, str]] = []
    for chunk in text.split(";"):
        parts = [" ".join(p.split()) for p in chunk.split("|")]
        if len(parts) == 3 and all(parts) and tuple(parts) not in triples:
            triples.append((parts[0], parts[1], parts[2]))
    return triples


def is_linearised(text: str) -> bool:
    """Whether ``text`` is linearised triples through and through (each chunk ``s | r | o``)."""
    chunks = text.split(";")
    return all(len(parts := chunk.split("|")) == 3 and all(p.strip() for p in parts) for chunk in chunks)


def webnlg_pairs(path: str | Path, direction: str) -> list[dict[str, str]]:
    """``{"source", "target"}`` pairs of a WebNLG file: ``text2triples`` (text -> linearised
    triples) or ``triples2text``. Every triple of the file counts, located in the text or not."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {', '.join(DIRECTIONS)}, not {direction!r}")
    pairs = []
    for sentence in read_webnlg(path):
        text, triples = sentence.text, linearise(sentence.extra["triple_strings"])
        pairs.append({"source": text, "target": triples} if direction == "text2triples"
                     else {"source": triples, "target": text})
    return pairs


class WebNLGFormat(CorpusFormat):
    """``--format webnlg``: JSON arrays of ``{"text", "triple_list"}`` (read only)."""

    name = "webnlg"
    extensions = (".json",)

    def read(self, path: str | Path, stats: WebNLGStats | None = None, **_: Any) -> Iterator[Sentence]:
        return read_webnlg(path, stats)
