"""CoNLL-U (Universal Dependencies): ten tab-separated columns, comments, a blank line after
each sentence.

Words (integer IDs) become the token list. Multiword-token lines (``1-2``) and empty nodes
(``5.1``) are not tokens, but they are kept in ``extra`` with the LEMMA, FEATS, DEPS and MISC
columns and the other comments, so a read followed by a write reproduces the file.
``spaces`` comes from ``SpaceAfter=No``; for the words of a multiword token only the last can
have a space after it, and it is the multiword line's MISC that says so.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from tagpipe.corpora.base import CorpusFormat
from tagpipe.corpora.io import CorpusOptionError, OnError, display_name, open_lines, open_output
from tagpipe.corpora.types import Sentence
from tagpipe.errors import CorpusError

COLUMNS = ("id", "form", "lemma", "upos", "xpos", "feats", "head", "deprel", "deps", "misc")
#: columns ``tag_column`` may name, and their index
TAG_COLUMNS = {"form": 1, "lemma": 2, "upos": 3, "xpos": 4, "feats": 5, "deprel": 7, "deps": 8, "misc": 9}
NO_SPACE = "SpaceAfter=No"


def read_conllu(
    path: str | Path, *, tag_column: str | None = "upos", on_error: OnError | None = None
) -> Iterator[Sentence]:
    """Yield the sentences of a CoNLL-U file; ``tags`` is a copy of ``tag_column`` (None: no tags).

    A malformed sentence raises :class:`CorpusError` (file and line); with ``on_error`` the
    error is passed to it and reading goes on with the next sentence.
    """
    if tag_column is not None and tag_column not in TAG_COLUMNS:
        raise CorpusOptionError(
            f"unknown CoNLL-U tag column {tag_column!r}; expected one of {', '.join(TAG_COLUMNS)}"
        )
    # options are checked now, the file is opened on the first next()
    return _read(path, tag_column, on_error)


def _read(path: str | Path, tag_column: str | None, on_error: OnError | None) -> Iterator[Sentence]:
    name = display_name(path)
    broken = False  # a line of the current block could not be decoded (already reported)

    def undecodable(error: CorpusError) -> None:
        nonlocal broken
        broken = True
        on_error(error)  # type: ignore[misc] - only installed when on_error is given

    block: list[tuple[int, str]] = []
    lines = open_lines(path, on_error=undecodable if on_error else None)
    for number, line in _with_end(lines):
        if line is not None and line.strip():
            block.append((number, line))
            continue
        if block and not broken:
            try:
                yield _parse_block(block, name, tag_column)
            except CorpusError as error:
                if on_error is None:
                    raise
                on_error(error)
        block, broken = [], False


def _with_end(lines: Iterator[tuple[int, str]]) -> Iterator[tuple[int, str | None]]:
    """The lines, then a ``None`` line so the last block is flushed like the others."""
    number = 0
    for number, line in lines:
        yield number, line
    yield number + 1, None


def _parse_block(block: list[tuple[int, str]], name: str, tag_column: str | None) -> Sentence:
    """One sentence from its comment and word lines; raises CorpusError on the first bad line."""
    comments: list[str] = []
    after_text: list[str] = []  # comments that follow ``# text``, written back after it
    sent_id = text = None
    doc_start = False
    words: list[list[str]] = []
    head_lines: list[int] = []
    spaces: list[bool] = []
    multiword: list[str] = []
    empty_nodes: list[str] = []
    mwt_end, mwt_space = 0, True
    for number, line in block:
        if line.startswith("#"):
            if words:
                raise CorpusError(name, number, "comment line after the words of a sentence")
            body = line[1:].strip()
            key, sep, value = body.partition("=")
            key = key.strip()
            if sep and key == "sent_id":
                sent_id = value.strip()
            elif sep and key == "text":
                text = value.strip()
            else:
                doc_start = doc_start or _is_newdoc(body)
                (comments if text is None else after_text).append(body)
            continue
        fields = line.split("\t")
        if len(fields) != 10:
            raise CorpusError(name, number, f"expected 10 tab-separated fields, found {len(fields)}")
        if "" in fields:
            raise CorpusError(name, number, f"the {COLUMNS[fields.index('')].upper()} field is empty")
        word_id = fields[0]
        position = len(words) + 1  # the ID the next word must have
        if "-" in word_id:
            start, end = _range(word_id, name, number)
            if start != position or end <= start:
                raise CorpusError(name, number, f"multiword token {word_id!r} must span words {position}-N")
            multiword.append(line)
            mwt_end, mwt_space = end, NO_SPACE not in fields[9].split("|")
        elif "." in word_id:
            if _range(word_id, name, number, ".")[0] != position - 1:
                raise CorpusError(name, number, f"empty node {word_id!r} must follow word {position - 1}")
            empty_nodes.append(line)
        elif word_id != str(position):
            raise CorpusError(name, number, f"expected word ID {position}, found {word_id!r}")
        else:
            words.append(fields)
            head_lines.append(number)
            if position < mwt_end:
                spaces.append(False)
            elif position == mwt_end:
                spaces.append(mwt_space)
            else:
                spaces.append(NO_SPACE not in fields[9].split("|"))
    first = block[0][0]
    if not words:
        raise CorpusError(name, first, "sentence has no word lines")
    if mwt_end > len(words):
        raise CorpusError(name, first, f"a multiword token ends at word {mwt_end}, after the last word")
    columns = list(zip(*words, strict=True))
    heads = _heads(columns[6], head_lines, name)
    extra: dict[str, Any] = {
        "lemmas": list(columns[2]),
        "feats": list(columns[5]),
        "deps": list(columns[8]),
        "misc": list(columns[9]),
    }
    for key, value in (
        ("comments", comments),
        ("comments_after_text", after_text),
        ("multiword", multiword),
        ("empty_nodes", empty_nodes),
    ):
        if value:
            extra[key] = value
    return Sentence(
        tokens=list(columns[1]),
        tags=list(columns[TAG_COLUMNS[tag_column]]) if tag_column else None,
        upos=list(columns[3]),
        xpos=list(columns[4]),
        heads=heads,
        deprels=list(columns[7]),
        spaces=spaces,
        text=text,
        id=sent_id,
        doc_start=doc_start,
        source=name,
        line=first,
        extra=extra,
    )


def _range(word_id: str, name: str, number: int, sep: str = "-") -> tuple[int, int]:
    start, _, end = word_id.partition(sep)
    if not (start.isdecimal() and end.isdecimal()):
        raise CorpusError(name, number, f"invalid ID {word_id!r}")
    return int(start), int(end)


def _heads(values: tuple[str, ...], lines: list[int], name: str) -> list[int] | None:
    """HEAD as integers; None when no word has one (``_``), an error when only some lack one."""
    if all(v == "_" for v in values):
        return None
    heads = []
    for value, number in zip(values, lines, strict=True):
        if not value.isdecimal():
            raise CorpusError(name, number, f"HEAD must be a word number (0 for the root), found {value!r}")
        head = int(value)
        if head > len(values):
            raise CorpusError(name, number, f"HEAD {head} is past the sentence's last word ({len(values)})")
        heads.append(head)
    return heads


def _is_newdoc(comment: str) -> bool:
    words = comment.split("=", 1)[0].split()
    return bool(words) and words[0] == "newdoc"


def write_conllu(
    sentences: Iterable[Sentence], path_or_stream: str | Path | IO[str], *, tag_column: str | None = None
) -> None:
    """Write ``sentences`` as CoNLL-U (``-`` is stdout; a path is replaced atomically).

    Columns a sentence lacks are written as ``_``; ``tag_column`` (e.g. ``"upos"``) also writes
    ``tags`` into that column. Raises ValueError for a value a CoNLL-U line cannot hold.
    """
    if tag_column is not None and tag_column not in TAG_COLUMNS:
        raise CorpusOptionError(
            f"unknown CoNLL-U tag column {tag_column!r}; expected one of {', '.join(TAG_COLUMNS)}"
        )
    with open_output(path_or_stream) as out:
        for index, sentence in enumerate(sentences):
            out.write(format_sentence(sentence, tag_column=tag_column, index=index))


def format_sentence(sentence: Sentence, *, tag_column: str | None = None, index: int = 0) -> str:
    """One sentence as CoNLL-U lines, the blank line after it included."""
    label = f"sentence {sentence.id!r}" if sentence.id is not None else f"sentence #{index + 1}"
    n = len(sentence.tokens)
    extra = sentence.extra

    def column(values: Any, what: str) -> list[str]:
        if values is None:
            return ["_"] * n
        if len(values) != n:
            raise ValueError(f"{label}: {what} has {len(values)} items for {n} tokens")
        return [str(v) for v in values]

    cols = [
        [str(i) for i in range(1, n + 1)],
        column(sentence.tokens, "tokens"),
        column(extra.get("lemmas"), "extra['lemmas']"),
        column(sentence.upos, "upos"),
        column(sentence.xpos, "xpos"),
        column(extra.get("feats"), "extra['feats']"),
        column(sentence.heads, "heads"),
        column(sentence.deprels, "deprels"),
        column(extra.get("deps"), "extra['deps']"),
        column(extra.get("misc"), "extra['misc']"),
    ]
    if tag_column is not None:
        cols[TAG_COLUMNS[tag_column]] = column(sentence.tags, "tags")
    multiword = {int(line.split("-", 1)[0]): line for line in extra.get("multiword", ())}
    empty: dict[int, list[str]] = {}
    for line in extra.get("empty_nodes", ()):
        empty.setdefault(int(line.split(".", 1)[0]), []).append(line)
    spaces = sentence.spaces
    if spaces is not None and len(spaces) != n:
        raise ValueError(f"{label}: spaces has {len(spaces)} items for {n} tokens")

    comments = list(extra.get("comments", ()))
    after_text = list(extra.get("comments_after_text", ()))
    lines = []
    if sentence.doc_start:
        lines += [f"# {c}" for c in comments + after_text if _is_newdoc(c)] or ["# newdoc"]
    if sentence.id is not None:
        lines.append(f"# sent_id = {sentence.id}")
    lines += [f"# {c}" for c in comments if not _is_newdoc(c)]
    if sentence.text is not None:
        lines.append(f"# text = {sentence.text}")
    lines += [f"# {c}" for c in after_text if not _is_newdoc(c)]
    for line in lines:
        if "\n" in line or "\r" in line:
            raise ValueError(f"{label}: comment {line!r} contains a line break")
    lines += empty.get(0, [])
    mwt_end = 0
    for i in range(n):
        if i + 1 in multiword:
            fields = multiword[i + 1].split("\t")
            mwt_end = int(fields[0].split("-", 1)[1])
            if spaces is not None:
                fields[9] = _misc_with_space(fields[9], spaces[min(mwt_end, n) - 1])
            lines.append("\t".join(fields))
        row = [c[i] for c in cols]
        if spaces is not None and i + 1 > mwt_end:
            row[9] = _misc_with_space(row[9], spaces[i])
        for value in row:
            if not value or "\t" in value or "\n" in value or "\r" in value:
                raise ValueError(
                    f"{label}: token {i + 1} has a field {value!r} that is empty or holds a tab or line break"
                )
        lines.append("\t".join(row))
        lines += empty.get(i + 1, [])
    return "\n".join(lines) + "\n\n"


def _misc_with_space(misc: str, space: bool) -> str:
    """MISC with ``SpaceAfter=No`` present exactly when ``space`` is False (others kept in place)."""
    items = [] if misc == "_" else misc.split("|")
    if space and NO_SPACE in items:
        items.remove(NO_SPACE)
    elif not space and NO_SPACE not in items:
        items.append(NO_SPACE)
    return "|".join(items) or "_"


class ConlluFormat(CorpusFormat):
    """Universal Dependencies CoNLL-U; ``tags`` is the ``tag_column`` column (UPOS by default)."""

    name = "conllu"
    extensions = (".conllu",)

    def read(
        self, path: str | Path, tag_column: str | None = "upos", on_error: OnError | None = None, **_: Any
    ) -> Iterator[Sentence]:
        return read_conllu(path, tag_column=tag_column, on_error=on_error)

    def write(
        self, sentences: Iterable[Sentence], path: str | Path, tag_column: str | None = None, **_: Any
    ) -> None:
        write_conllu(sentences, path, tag_column=tag_column)
