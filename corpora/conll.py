"""CoNLL column files: one token per line, a blank line between sentences, ``-DOCSTART-``
lines between documents.

Columns are separated by runs of ASCII whitespace (space, tab, ...), so a token may hold a
no-break or ideographic space but never a plain one. This covers CoNLL-2003 (word POS chunk
NER) and two-column files such as MSRA (character and BMES tag). The tag column is read in
the file's ``scheme`` and may be converted on the way in (``target_scheme``) or out
(``source_scheme``). Columns other than the token and the tag are kept in
``extra["columns"]`` so that writing reproduces the file.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from tagpipe.corpora.base import CorpusFormat
from tagpipe.corpora.io import CorpusOptionError, OnError, display_name, open_lines, open_output, option_scheme
from tagpipe.corpora.schemes import PREFIXES, convert
from tagpipe.corpora.types import Sentence
from tagpipe.errors import CorpusError

DOCSTART = "-DOCSTART-"
# Columns are separated by ASCII whitespace (what str.split() splits ASCII text on); a no-break
# or ideographic space is part of a token.
_non_ascii_fields = re.compile(r"[^ \t\r\x0b\x0c\x1c-\x1f]+").findall
_BAD_FIELD = re.compile(r"[ \t\n\r\x0b\x0c\x1c-\x1f]")
DEFAULT_COLUMNS = ("tokens", "extra", "tags")


def tag_problem(tag: str, scheme: str) -> str | None:
    """Why ``tag`` is not a tag of ``scheme`` (``O`` or PREFIX-LABEL), or None when it is."""
    prefix, sep, label = tag.partition("-")
    if tag == "O" or (sep and label and prefix in PREFIXES[scheme]):
        return None
    forms = ", ".join(f"{p}-TYPE" for p in PREFIXES[scheme])
    return f"tag {tag!r} is not valid in {scheme.upper()} (expected O, {forms})"


def read_conll(
    path: str | Path,
    *,
    tag_column: int | None = -1,
    scheme: str | None = "iob2",
    target_scheme: str | None = None,
    on_error: OnError | None = None,
) -> Iterator[Sentence]:
    """Yield the sentences of a CoNLL column file; the token is column 0.

    ``tag_column`` is the tags' column index (negative counts from the end; None: no tags),
    ``scheme`` the file's tagging scheme and ``target_scheme`` the one ``tags`` is converted
    to. A line whose column count differs from its sentence's first line, or a tag that is not
    a ``scheme`` tag, raises :class:`CorpusError` (file, line); with ``on_error`` the error is
    passed to it and reading goes on with the next sentence. Tag sequences are not checked
    for well-formedness (an ``I-X`` after ``O`` is read as most tools read it).
    """
    if tag_column is not None and not isinstance(tag_column, int):
        raise CorpusOptionError(f"tag_column must be a column number or None, not {tag_column!r}")
    # options are checked now, the file is opened on the first next()
    scheme = option_scheme(scheme) if scheme is not None else None  # None: not span tags (POS), unchecked
    target = option_scheme(target_scheme) if target_scheme else scheme
    return _read(path, tag_column, scheme, target, on_error)


def _read(
    path: str | Path, tag_column: int | None, scheme: str, target: str, on_error: OnError | None
) -> Iterator[Sentence]:
    name = display_name(path)
    valid: set[str] = set()  # tags already checked
    rows: list[list[str]] = []
    first = 0  # line number of rows[0]
    doc_start = broken = False

    def undecodable(error: CorpusError) -> None:
        nonlocal broken
        broken = True
        on_error(error)  # type: ignore[misc] - only installed when on_error is given

    def flush() -> Sentence | None:
        """The sentence in ``rows`` (None if it was skipped after an error)."""
        nonlocal doc_start
        if broken:
            return None
        try:
            sentence = _sentence(rows, first, name, tag_column, scheme, target, valid)
        except CorpusError as error:
            if on_error is None:
                raise
            on_error(error)
            return None
        sentence.doc_start, doc_start = doc_start, False
        return sentence

    for number, line in open_lines(path, on_error=undecodable if on_error else None):
        fields = line.split() if line.isascii() else _non_ascii_fields(line)
        if fields and fields[0] != DOCSTART:
            if not rows:
                first = number
            elif len(fields) != len(rows[0]) and not broken:
                error = CorpusError(
                    name,
                    number,
                    f"{len(fields)} columns, but the sentence's first line ({first}) has {len(rows[0])}",
                )
                if on_error is None:
                    raise error
                on_error(error)
                broken = True
            rows.append(fields)
            continue
        if rows:
            sentence = flush()
            if sentence is not None:
                yield sentence
        rows, broken = [], False
        if fields:  # -DOCSTART-
            doc_start = True
    if rows:
        sentence = flush()
        if sentence is not None:
            yield sentence


def _sentence(
    rows: list[list[str]],
    first: int,
    name: str,
    tag_column: int | None,
    scheme: str,
    target: str,
    valid: set[str],
) -> Sentence:
    columns = [list(c) for c in zip(*rows, strict=True)]
    tags = None
    if tag_column is not None:
        index = tag_column + len(columns) if tag_column < 0 else tag_column
        if index == 0:
            raise CorpusError(
                name,
                first,
                f"tag column {tag_column} is the token column ({len(columns)} column(s) per line); "
                "pass tag_column=None to read tokens only",
            )
        if not 0 < index < len(columns):
            raise CorpusError(
                name, first, f"no tag column {tag_column}: the lines have {len(columns)} columns"
            )
        tags = columns[index]
        for offset, tag in enumerate(tags):
            if scheme is not None and tag not in valid:
                problem = tag_problem(tag, scheme)
                if problem is not None:
                    raise CorpusError(name, first + offset, problem)
                valid.add(tag)
        if target != scheme:
            tags = convert(tags, scheme, target)
        del columns[index]
    sentence = Sentence(tokens=columns[0], tags=tags, source=name, line=first)
    if len(columns) > 1:
        sentence.extra["columns"] = columns[1:]
    return sentence


def write_conll(
    sentences: Iterable[Sentence],
    path_or_stream: str | Path | IO[str],
    *,
    scheme: str = "iob2",
    columns: Sequence[str] = DEFAULT_COLUMNS,
    source_scheme: str | None = None,
    delimiter: str = " ",
) -> None:
    """Write ``sentences`` as CoNLL columns (``-`` is stdout; a path is replaced atomically).

    ``columns`` names what each column holds: ``tokens``, ``tags``, ``upos``, ``xpos``,
    ``heads``, ``deprels``, or ``extra`` for the columns a reader kept (none if it kept none).
    Tags are written in ``scheme``, converted from ``source_scheme`` when that is given (else
    they must already be ``scheme`` tags). A sentence with ``doc_start`` is preceded by a
    ``-DOCSTART-`` line. Raises ValueError for a value a column cannot hold.
    """
    scheme = option_scheme(scheme)
    source = option_scheme(source_scheme) if source_scheme else scheme
    unknown = [c for c in columns if c not in {"tokens", "tags", "upos", "xpos", "heads", "deprels", "extra"}]
    if unknown:
        raise CorpusOptionError(
            f"unknown CoNLL column name(s) {unknown}; expected tokens, tags, upos, xpos, heads, "
            "deprels or extra"
        )
    valid: set[str] = set()
    with open_output(path_or_stream) as out:
        for index, sentence in enumerate(sentences):
            label = f"sentence {sentence.id!r}" if sentence.id is not None else f"sentence #{index + 1}"
            table = _columns(sentence, columns, scheme, source, label, valid)
            if sentence.doc_start:
                filler = ["-X-"] * (len(table) - 2) + ["O"] if len(table) > 1 else []
                out.write(delimiter.join([DOCSTART, *filler]) + "\n\n")
            if table and table[0]:
                out.write("\n".join(delimiter.join(row) for row in zip(*table, strict=True)) + "\n\n")


def _columns(
    sentence: Sentence, names: Sequence[str], scheme: str, source: str, label: str, valid: set[str]
) -> list[list[str]]:
    """The columns to write for one sentence, checked."""
    n = len(sentence.tokens)
    table: list[list[str]] = []
    for name in names:
        if name == "extra":
            table += [[str(v) for v in c] for c in sentence.extra.get("columns", ())]
            continue
        values = getattr(sentence, name)
        if values is None:
            raise ValueError(f"{label} has no {name} to write")
        values = [str(v) for v in values]
        if name == "tags":
            if source != scheme:
                values = convert(values, source, scheme)
            for tag in values:
                if tag not in valid:
                    problem = tag_problem(tag, scheme)
                    if problem is not None:
                        raise ValueError(f"{label}: {problem}")
                    valid.add(tag)
        table.append(values)
    for values in table:
        if len(values) != n:
            raise ValueError(f"{label}: a column has {len(values)} values for {n} tokens")
    if DOCSTART in sentence.tokens:
        raise ValueError(f"{label}: the token {DOCSTART!r} would be read back as a document boundary")
    for values in table:
        for value in values:
            if not value or _BAD_FIELD.search(value):
                raise ValueError(f"{label}: {value!r} cannot be a CoNLL field (empty, or holds whitespace)")
    return table


class ConllFormat(CorpusFormat):
    """CoNLL column files (CoNLL-2003 NER, MSRA); see :func:`read_conll` for the options."""

    name = "conll"
    extensions = (".conll", ".txt", ".bio", ".iob")

    def read(
        self,
        path: str | Path,
        tag_column: int | None = -1,
        scheme: str = "iob2",
        target_scheme: str | None = None,
        on_error: OnError | None = None,
        **_: Any,
    ) -> Iterator[Sentence]:
        return read_conll(
            path, tag_column=tag_column, scheme=scheme, target_scheme=target_scheme, on_error=on_error
        )

    def write(
        self,
        sentences: Iterable[Sentence],
        path: str | Path,
        scheme: str = "iob2",
        columns: Sequence[str] = DEFAULT_COLUMNS,
        source_scheme: str | None = None,
        **_: Any,
    ) -> None:
        write_conll(sentences, path, scheme=scheme, columns=columns, source_scheme=source_scheme)
