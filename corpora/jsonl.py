"""JSON lines: one JSON object per line, a sentence each.

A record has ``text`` and/or ``tokens``, and optionally ``tags`` (one per token) and ``id``.
``upos``, ``xpos``, ``heads``, ``deprels``, ``spaces`` and ``doc_start`` fill the
:class:`Sentence` fields of the same name (so any sentence survives a write and a read);
every other key is carried in ``extra``. A file whose first character is ``[`` is read as one
JSON array of such records (e.g. WebNLG's ``train.json``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from tagpipe.corpora.base import CorpusFormat
from tagpipe.corpora.io import OnError, display_name, open_lines, open_output
from tagpipe.corpora.types import Sentence
from tagpipe.errors import CorpusError

#: per-token list fields besides ``tokens``, and the type of their items
TOKEN_FIELDS: dict[str, type] = {
    "tags": str,
    "upos": str,
    "xpos": str,
    "heads": int,
    "deprels": str,
    "spaces": bool,
}


def read_jsonl(path: str | Path, *, on_error: OnError | None = None) -> Iterator[Sentence]:
    """Yield one sentence per record; blank lines are skipped.

    A line that is not a JSON object, a record with neither ``text`` nor ``tokens``, or a field
    of the wrong type or length raises :class:`CorpusError` (file, line); with ``on_error`` the
    error is passed to it and reading goes on with the next line. A record with ``text`` but no
    ``tokens`` gets ``tokens=[]``: the caller tokenises.
    """
    name = display_name(path)
    lines = open_lines(path, on_error=on_error)
    first = True
    for number, line in lines:
        if not line.strip():
            continue
        if first and line.lstrip().startswith("["):
            yield from _read_array(name, number, line, lines, on_error)
            return
        first = False
        try:
            yield sentence_from_record(parse_line(line, name, number), name, number)
        except CorpusError as error:
            if on_error is None:
                raise
            on_error(error)


def _read_array(
    name: str, first: int, line: str, rest: Iterator[tuple[int, str]], on_error: OnError | None
) -> Iterator[Sentence]:
    """Records of a file holding one JSON array; line numbers are where each record starts."""
    text = "\n".join([line, *(rest_line for _, rest_line in rest)])
    decoder = json.JSONDecoder()
    position = text.index("[") + 1
    number = first
    while True:
        start = _skip_space(text, position)
        number += text.count("\n", position, start)
        if start < len(text) and text[start] == "]":
            break
        try:
            record, position = decoder.raw_decode(text, start)
        except (json.JSONDecodeError, RecursionError) as exc:
            # the array cannot be resynchronised after a syntax error: report it and stop
            if isinstance(exc, RecursionError):
                error = CorpusError(name, number, "JSON nested too deeply")
            else:
                error = CorpusError(
                    name, first + exc.lineno - 1, f"not valid JSON: {exc.msg} (column {exc.colno})"
                )
            if on_error is None:
                raise error from None
            on_error(error)
            return
        try:
            yield sentence_from_record(record, name, number)
        except CorpusError as error:
            if on_error is None:
                raise
            on_error(error)
        number += text.count("\n", start, position)
        after = _skip_space(text, position)
        number += text.count("\n", position, after)
        if not text.startswith((",", "]"), after):
            error = CorpusError(name, number, "expected ',' or ']' after a record of the JSON array")
            if on_error is None:
                raise error
            on_error(error)
            return
        position = after + 1 if text.startswith(",", after) else after


def _skip_space(text: str, position: int) -> int:
    while position < len(text) and text[position] in " \t\r\n":
        position += 1
    return position


def parse_line(line: str, name: str, number: int) -> Any:
    """One JSON value from ``line``; malformed JSON is a :class:`CorpusError` naming file and line."""
    try:
        return json.loads(line)
    except json.JSONDecodeError as exc:
        raise CorpusError(name, number, f"not valid JSON: {exc.msg} (column {exc.colno})") from None
    except RecursionError:
        raise CorpusError(name, number, "JSON nested too deeply") from None


def sentence_from_record(record: Any, name: str, number: int) -> Sentence:
    """A :class:`Sentence` from one decoded record, or a CorpusError saying what is wrong."""
    if not isinstance(record, dict):
        raise CorpusError(name, number, f"expected a JSON object, found {type(record).__name__}")
    record = dict(record)
    text, tokens = record.pop("text", None), record.pop("tokens", None)
    if text is None and tokens is None:
        raise CorpusError(name, number, "record has neither 'text' nor 'tokens'")
    if text is not None and not isinstance(text, str):
        raise CorpusError(name, number, f"'text' must be a string, not {type(text).__name__}")
    if tokens is not None and not _list_of(tokens, str):
        raise CorpusError(name, number, "'tokens' must be a list of strings")
    sentence = Sentence(tokens=tokens if tokens is not None else [], text=text, source=name, line=number)
    for key, kind in TOKEN_FIELDS.items():
        values = record.pop(key, None)
        if values is None:
            continue
        if tokens is None:
            raise CorpusError(name, number, f"'{key}' given without 'tokens'")
        if not _list_of(values, kind):
            raise CorpusError(name, number, f"'{key}' must be a list of {kind.__name__} values")
        if len(values) != len(tokens):
            raise CorpusError(name, number, f"'{key}' has {len(values)} items but 'tokens' has {len(tokens)}")
        setattr(sentence, key, values)
    record_id = record.pop("id", None)
    if record_id is not None:
        if not isinstance(record_id, (str, int)) or isinstance(record_id, bool):
            raise CorpusError(
                name, number, f"'id' must be a string or an integer, not {type(record_id).__name__}"
            )
        sentence.id = str(record_id)
    doc_start = record.pop("doc_start", False)
    if not isinstance(doc_start, bool):
        raise CorpusError(name, number, "'doc_start' must be true or false")
    sentence.doc_start = doc_start
    sentence.extra = record
    return sentence


def _list_of(values: Any, kind: type) -> bool:
    if not isinstance(values, list):
        return False
    if kind is int:  # bool is an int to Python, not to us
        return all(isinstance(v, int) and not isinstance(v, bool) for v in values)
    return all(isinstance(v, kind) for v in values)


def record_from_sentence(sentence: Sentence) -> dict[str, Any]:
    """The JSON record of a sentence: its set fields, then ``extra``'s keys."""
    record: dict[str, Any] = {}
    if sentence.id is not None:
        record["id"] = sentence.id
    if sentence.text is not None:
        record["text"] = sentence.text
    per_token = any(getattr(sentence, key) is not None for key in TOKEN_FIELDS)
    if sentence.tokens or sentence.text is None or per_token:
        record["tokens"] = list(sentence.tokens)
    for key in TOKEN_FIELDS:
        values = getattr(sentence, key)
        if values is not None:
            if len(values) != len(sentence.tokens):
                raise ValueError(
                    f"sentence {sentence.id!r}: {key} has {len(values)} items for "
                    f"{len(sentence.tokens)} tokens"
                )
            record[key] = list(values)
    if sentence.doc_start:
        record["doc_start"] = True
    clash = sorted(set(sentence.extra) & {"id", "text", "tokens", "doc_start", *TOKEN_FIELDS})
    if clash:
        raise ValueError(f"sentence {sentence.id!r}: extra keys {clash} would shadow the sentence's fields")
    record.update(sentence.extra)
    return record


def write_jsonl(sentences: Iterable[Sentence], path_or_stream: str | Path | IO[str]) -> None:
    """Write one JSON object per line (``-`` is stdout; a path is replaced atomically)."""
    with open_output(path_or_stream) as out:
        for sentence in sentences:
            out.write(json.dumps(record_from_sentence(sentence), ensure_ascii=False) + "\n")


class JsonlFormat(CorpusFormat):
    """JSON lines (or one JSON array) of ``{"text", "tokens", "tags", "id", ...}`` records."""

    name = "jsonl"
    extensions = (".jsonl", ".json")

    def read(self, path: str | Path, on_error: OnError | None = None, **_: Any) -> Iterator[Sentence]:
        return read_jsonl(path, on_error=on_error)

    def write(self, sentences: Iterable[Sentence], path: str | Path, **_: Any) -> None:
        write_jsonl(sentences, path)
