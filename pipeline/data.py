"""Reading corpora through the registered formats: which format a file is in, and labelled sentences for a task."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tagpipe.corpora.io import STDIO, looks_like_conll
from tagpipe.corpora.schemes import check_scheme, convert, is_valid, tags_to_spans
from tagpipe.corpora.types import Sentence
from tagpipe.errors import CorpusError, TagpipeError
from tagpipe.host import get_registry

TASKS = ("ner", "tag")


def detect_format(path: str | Path) -> str:
    """The registered format whose extensions match ``path`` (a ``.gz`` suffix is ignored).

    The extension decides whenever a format claims it: ``.txt``, claimed by both ``conll`` and
    ``text``, is plain text (sniffing it garbled text whose lines end in tag-like words,
    ``Vitamin B-12``; ``--format conll`` reads a ``.txt`` as columns). Only a regular file whose
    extension no format claims (none, ``eng.testa``, ``data.gz``) is looked at: CoNLL when its
    first lines look like tagged columns (:func:`tagpipe.corpora.io.looks_like_conll`); a FIFO is
    never looked at (what is read from it is gone). Raises :class:`TagpipeError` when no format fits.
    """
    name = str(path)
    stem = name[:-3] if name.endswith(".gz") else name
    suffix = Path(stem).suffix.lower()
    registry = get_registry()
    candidates = []
    for fmt in registry.names("format"):
        try:
            extensions = registry.get("format", fmt).extensions
        except TagpipeError:
            continue  # a broken plugin is reported by `tagpipe plugins`; it cannot match here
        if suffix and suffix in extensions:
            candidates.append(fmt)
    if len(candidates) > 1 and "text" in candidates:
        candidates = ["text"]
    if not candidates and name != STDIO and Path(name).is_file() and looks_like_conll(path):
        candidates = ["conll"]
    if not candidates:
        available = ", ".join(registry.names("format")) or "none"
        raise TagpipeError(
            f"cannot tell the format of {name!r} from its extension {suffix or '(none)'!r}; "
            f"name one of: {available}"
        )
    return candidates[0]


def read_corpus(path: str | Path, fmt: str, **options: Any) -> Iterator[Sentence]:
    """Sentences of ``path`` read by the format registered as ``fmt``."""
    if path != "-" and not Path(path).exists():
        raise TagpipeError(f"no such file: {path}")
    reader = get_registry().get("format", fmt)()
    return reader.read(path, **options)


def labelled_sentences(path: str | Path, fmt: str, *, task: str, scheme: str = "iob2",
                       tag_column: int | str | None = None, invalid: str = "repair",
                       counts: dict[str, int] | None = None) -> list[Sentence]:
    """The sentences of a training/evaluation corpus, checked to carry one tag per token.

    For ``ner`` the tags are normalised to IOB2 (what evaluation uses); for ``tag`` they are
    kept as read. Empty sentences are dropped. NER sentences whose tags break ``scheme`` (a
    segment cut mid-entity: ``M-PER`` after ``O``, ``B-LOC`` never closed) are repaired (read
    leniently as spans: an orphan inside tag starts an entity, an unclosed one ends at its last
    tag) or dropped (``invalid``); ``counts["repaired"]`` / ``counts["dropped"]`` count them.
    """
    if invalid not in {"repair", "drop"}:
        raise TagpipeError(f"invalid must be 'repair' or 'drop', not {invalid!r}")
    counts = {} if counts is None else counts
    counts.setdefault("repaired", 0)
    counts.setdefault("dropped", 0)
    if task not in TASKS:
        raise TagpipeError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    options: dict[str, Any] = {} if tag_column is None else {"tag_column": tag_column}
    if fmt == "conll":
        options["scheme"] = scheme if task == "ner" else None  # POS-like tag columns are in no span scheme
    sentences = []
    for sentence in read_corpus(path, fmt, **options):
        if not sentence.tokens:
            continue
        if sentence.tags is None or len(sentence.tags) != len(sentence.tokens):
            raise CorpusError(str(sentence.source or path), sentence.line or 0, "sentence has no tag for every token")
        if task == "ner":
            try:
                if not is_valid(sentence.tags, check_scheme(scheme)):
                    counts["dropped" if invalid == "drop" else "repaired"] += 1
                    if invalid == "drop":
                        continue
                sentence.tags = convert(sentence.tags, check_scheme(scheme), "iob2")
            except ValueError as exc:
                raise CorpusError(str(sentence.source or path), sentence.line or 0, str(exc)) from None
        sentences.append(sentence)
    if not sentences:
        raise TagpipeError(f"{path}: no labelled sentences found (format {fmt!r})")
    return sentences


def entity_types(sentences: list[Sentence]) -> list[str]:
    return sorted({label for s in sentences for _, _, label in tags_to_spans(s.tags or [], "iob2")})


def parse_column(value: str | None) -> int | str | None:
    """``--tag-column``: an integer index for CoNLL columns, a field name for CoNLL-U."""
    if value is None:
        return None
    return int(value) if value.lstrip("-").isdigit() else value
