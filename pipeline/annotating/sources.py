"""Where ``tagpipe annotate`` reads documents: files, folders and stdin, in any registered format.

Every input document becomes an :class:`Item` holding what the pipeline needs (raw text to
tokenise, pre-split words to keep, or a serialised spaCy ``Doc``), its id and the fields carried
through to the output. Readers stream, so memory does not grow with the input (except DocBin
``.spacy`` files, which spaCy can only read whole). Bad lines go to ``on_error`` as
:class:`CorpusError` (``path:line: reason``); the caller decides whether to skip or stop.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tagpipe.corpora.io import STDIO, display_name, open_lines
from tagpipe.corpora.types import Sentence
from tagpipe.errors import CorpusError, TagpipeError

SPACY_FORMAT = "spacy"  # DocBin files; not a corpus format of the registry (no Sentence records)
Words = tuple[list[str], list[bool] | None]
Content = str | Words | bytes  # text | (words, spaces) | Doc.to_bytes()


@dataclass(slots=True)
class Item:
    """One input document: ``content`` for the pipeline, where it came from, what to carry."""

    id: Any
    content: Content
    source: str
    line: int
    extra: dict[str, Any] = field(default_factory=dict)
    #: what the --resume fingerprint hashes instead of ``content`` when those bytes are not stable
    #: (a serialised Doc lists its strings in set order, which differs between processes)
    stable: str | None = None

    @property
    def length(self) -> int:
        """Characters of raw text (0 for pre-tokenised content, which the tokenizer never sees)."""
        return len(self.content) if isinstance(self.content, str) else 0


@dataclass
class Counts:
    """Lines the readers passed over without an error: blank JSONL lines; files of a folder left
    out, each with the reason (``reasons[path]``)."""

    blank: int = 0
    ignored_files: list[str] = field(default_factory=list)
    reasons: dict[str, str] = field(default_factory=dict)

    def ignore(self, path: str, reason: str) -> None:
        self.ignored_files.append(path)
        self.reasons[path] = reason


def input_files(paths: list[str], fmt: str | None, counts: Counts) -> list[tuple[str, str, str | None]]:
    """``(path, format, label)`` for each input; a folder gives its regular files (sorted, hidden
    ones left out; those of an unknown extension, and FIFOs, sockets and devices, which are never
    opened, go to ``counts.ignored_files``); ``label`` names the file in records when several
    files are read, else None. A FIFO named as an input is read: the user chose it."""
    files: list[tuple[str, str | None]] = []
    for path in paths:
        if path != STDIO and Path(path).is_dir():
            for found in _walk(path):
                kind = _special(found)
                if kind is None:
                    files.append((found, path))
                else:
                    counts.ignore(found, f"{kind}, not a regular file (never opened)")
        elif path != STDIO and not Path(path).exists():
            raise TagpipeError(f"no such file or folder: {path}")
        else:
            files.append((path, None))
    several = len(files) > 1 or any(root is not None for _, root in files)
    out = []
    for path, root in files:
        file_fmt = fmt or format_of(path, strict=root is None)
        if file_fmt is None:
            counts.ignore(path, "no input format claims its extension (use --format)")
            continue
        label = (os.path.relpath(path, root) if root else display_name(path)) if several else None
        out.append((path, file_fmt, label))
    return out


def _walk(folder: str) -> Iterator[str]:
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            if not name.startswith("."):
                yield os.path.join(root, name)


def _special(path: str) -> str | None:
    """What a folder entry is when it is not a regular file (None: a regular file). Only stat is
    used: opening a FIFO would block until something writes to it."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return "a broken link"
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a file"


def format_of(path: str, *, strict: bool = True) -> str | None:
    """The input format of ``path`` from its extension (text for stdin); None for a file of a
    folder whose extension no format claims (``strict=False``), which the caller skips."""
    from tagpipe.data import detect_format

    if path == STDIO:
        return "text"
    if path.lower().endswith(".spacy"):
        return SPACY_FORMAT
    try:
        return detect_format(path)
    except TagpipeError:
        if strict:
            raise
        return None


def read_items(path: str, fmt: str, on_error: Callable[[CorpusError], object], counts: Counts,
               label: str | None = None) -> Iterator[Item]:
    """The documents of one input, in order; ``label`` (several inputs) goes to ``extra["file"]``."""
    if fmt == SPACY_FORMAT:
        items = _docbin_items(path)
    elif fmt == "jsonl":
        items = _jsonl_items(path, on_error, counts)
    else:
        items = _sentence_items(path, fmt, on_error)
    for item in items:
        if label is not None:
            item.extra.setdefault("file", label)
        yield item


def _sentence_items(path: str, fmt: str, on_error: Callable[[CorpusError], object]) -> Iterator[Item]:
    """Any registered format: pre-split tokens are kept, otherwise the text is tokenised."""
    from tagpipe.data import read_corpus

    options: dict[str, Any] = {"on_error": on_error}
    if fmt in ("conll", "conllu"):
        options["tag_column"] = None  # annotate needs words only; gold columns may be absent
    for n, sentence in enumerate(read_corpus(path, fmt, **options), 1):
        line = sentence.line or n
        doc_id = _id(sentence.id) if sentence.id is not None else line
        yield Item(doc_id, _content(sentence), sentence.source or display_name(path), line)


def _content(sentence: Sentence) -> Content:
    if sentence.tokens:
        return (list(sentence.tokens), sentence.spaces)
    return sentence.text or ""


def _id(value: str) -> Any:
    """A line-number-like id read as a string becomes an integer again (``"7"`` -> 7, not ``"07"``)."""
    return int(value) if value.isdigit() and str(int(value)) == value else value


def _jsonl_items(path: str, on_error: Callable[[CorpusError], object], counts: Counts) -> Iterator[Item]:
    """JSON lines, keeping the record's own ``id`` (string or integer) and its other fields."""
    from tagpipe.corpora.jsonl import parse_line, sentence_from_record

    name = display_name(path)
    for number, line in open_lines(path, on_error=on_error):
        if not line.strip():
            counts.blank += 1
            continue
        try:
            record = parse_line(line, name, number)
            sentence = sentence_from_record(record, name, number)
            if "\\u" in line:
                _check_surrogates(record, name, number)
            if "" in sentence.tokens:
                raise CorpusError(name, number, f"token {sentence.tokens.index('') + 1} is an empty string")
        except CorpusError as error:
            on_error(error)
            continue
        extra = {k: v for k, v in record.items() if k not in ("id", "text", "tokens", "spaces")}
        if record.get("tokens") is None:
            content: Content = sentence.text or ""
        else:
            content = (sentence.tokens, sentence.spaces)
        doc_id = record.get("id")
        yield Item(doc_id if doc_id is not None else number, content, name, number, extra)


def _check_surrogates(record: dict[str, Any], name: str, number: int) -> None:
    """A ``\\ud800`` escape decodes to half a character that no output could encode."""
    try:
        json.dumps(record, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise CorpusError(name, number, f"holds an unpaired surrogate \\u{ord(exc.object[exc.start]):04x}, "
                                        "not text") from None


def _docbin_items(path: str) -> Iterator[Item]:
    """The docs of a DocBin file (read whole: the format has no streaming reader), as bytes."""
    import spacy
    from spacy.tokens import DocBin

    name = display_name(path)
    try:
        if path == STDIO:
            import sys

            data = sys.stdin.buffer.read()
        else:
            data = Path(path).read_bytes()
        docbin = DocBin(store_user_data=True).from_bytes(data)
    except OSError as exc:
        raise TagpipeError(f"{name}: cannot read: {exc.strerror or exc}") from None
    except Exception as exc:  # noqa: BLE001 - msgpack/zlib errors have no common base
        raise TagpipeError(f"{name}: not a spaCy DocBin file ({type(exc).__name__}: {exc})") from None
    vocab = spacy.blank("xx").vocab
    for n, doc in enumerate(docbin.get_docs(vocab), 1):
        stable = json.dumps(doc.to_json(), sort_keys=True, ensure_ascii=False)
        yield Item(n, doc.to_bytes(exclude=["user_data"]), name, n, stable=stable)
