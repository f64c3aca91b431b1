"""Plain text: one document per line, not yet tokenised.

Record ``n`` is line ``n`` (its ``id`` is the line number), and an empty line is an empty
document, so annotations written back line by line stay aligned with the input. A line that
is not UTF-8 is a :class:`CorpusError`; with ``on_error`` it is reported and skipped (the
other records keep their line numbers as ids), rather than guessed at with U+FFFD, since a
silently mangled document would be annotated as if it were real text.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from tagpipe.corpora.base import CorpusFormat
from tagpipe.corpora.io import OnError, display_name, open_lines, open_output
from tagpipe.corpora.types import Sentence


def read_text(path: str | Path, *, on_error: OnError | None = None) -> Iterator[Sentence]:
    """Yield ``Sentence(tokens=[], text=line, id=str(n), line=n)`` for every line ``n``."""
    name = display_name(path)
    for number, line in open_lines(path, on_error=on_error):
        yield Sentence(tokens=[], text=line, id=str(number), source=name, line=number)


def sentence_text(sentence: Sentence) -> str:
    """The sentence's text, else its tokens joined (by ``spaces`` when known)."""
    if sentence.text is not None:
        return sentence.text
    if sentence.spaces is None:
        return " ".join(sentence.tokens)
    return "".join(
        t + (" " if s else "") for t, s in zip(sentence.tokens, sentence.spaces, strict=True)
    ).rstrip()


def write_text(sentences: Iterable[Sentence], path_or_stream: str | Path | IO[str]) -> None:
    """Write one line per sentence (``-`` is stdout; a path is replaced atomically).

    Raises ValueError for a text holding a newline (it would shift every later line) or ending
    in a carriage return (it would be read back as a CRLF ending).
    """
    with open_output(path_or_stream) as out:
        for index, sentence in enumerate(sentences):
            text = sentence_text(sentence)
            if "\n" in text or text.endswith("\r"):
                label = f"sentence {sentence.id!r}" if sentence.id is not None else f"sentence #{index + 1}"
                raise ValueError(
                    f"{label}: the text holds a newline or ends in '\\r'; the text format is one "
                    "document a line"
                )
            out.write(text + "\n")


class TextFormat(CorpusFormat):
    """Plain text, one document per line. CoNLL claims ``.txt`` too; for a ``.txt`` the text format wins
    (``tagpipe.data.detect_format``: a file is never guessed into columns that would drop words)."""

    name = "text"
    extensions = (".txt", ".text")

    def read(self, path: str | Path, on_error: OnError | None = None, **_: Any) -> Iterator[Sentence]:
        return read_text(path, on_error=on_error)

    def write(self, sentences: Iterable[Sentence], path: str | Path, **_: Any) -> None:
        write_text(sentences, path)
