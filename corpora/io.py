"""File plumbing shared by the corpus readers and writers.

Readers get numbered, decoded lines from :func:`open_lines`, so stdin (``-``), gzip, bad UTF-8
and UTF-16/32 files (told by their byte-order mark) are handled once, with the line number a
:class:`CorpusError` needs. Writers go through
:func:`open_output`, which writes files atomically: a crash mid-write never leaves a truncated
corpus where a good one was.
"""

from __future__ import annotations

import codecs
import contextlib
import gzip
import io
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from tagpipe.errors import CorpusError, TagpipeError

OnError = Callable[[CorpusError], object]
STDIO = "-"
#: byte-order marks of the wide encodings, UTF-32 first (its little-endian mark starts like UTF-16's)
WIDE_BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
             (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))


class CorpusOptionError(TagpipeError, ValueError):
    """A reader or writer option it does not accept (an unknown scheme or column): a ValueError
    to the API, one readable line to the CLI."""


def option_scheme(scheme: str) -> str:
    """``check_scheme`` raising :class:`CorpusOptionError`."""
    from tagpipe.corpora.schemes import SCHEMES, check_scheme

    try:
        return check_scheme(scheme)
    except (ValueError, AttributeError):  # AttributeError: not a string
        raise CorpusOptionError(
            f"unknown tagging scheme {scheme!r}; expected one of {', '.join(SCHEMES)}"
        ) from None


def display_name(path: str | Path) -> str:
    """How error messages name a path (``<stdin>`` for ``-``)."""
    return "<stdin>" if str(path) == STDIO else str(path)


def _open_binary(path: str | Path) -> IO[bytes]:
    if str(path) == STDIO:
        return sys.stdin.buffer
    try:
        if str(path).endswith(".gz"):
            stream = gzip.open(path, "rb")
            try:
                stream.peek(1)  # fail here, not mid-iteration, if it is not gzip
            except BaseException:
                stream.close()
                raise
            return stream  # type: ignore[return-value]
        return open(path, "rb")  # noqa: SIM115 - closed by the caller
    except OSError as exc:  # gzip.BadGzipFile is an OSError too
        raise TagpipeError(f"{path}: cannot read: {exc.strerror or exc}") from None


def open_lines(path: str | Path, *, on_error: OnError | None = None) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, text)`` for each line of ``path`` (1-based, newline removed).

    ``-`` is stdin and a ``.gz`` name is decompressed. A line that is not UTF-8 is a
    :class:`CorpusError` naming it; with ``on_error`` the error is passed
    to it and the line skipped (numbering stays aligned with the file). A BOM is dropped; a
    UTF-16 or UTF-32 byte-order mark decodes the whole file in that encoding (read as UTF-8, its
    text would be NUL-interleaved garbage).
    """
    name = display_name(path)
    stream = _open_binary(path)
    try:
        wide = _wide_encoding(stream)
        lines = _wide_lines(stream, wide, name) if wide else _utf8_lines(stream, name, on_error)
        yield from lines
    except (OSError, EOFError) as exc:  # truncated or corrupt gzip stream
        raise TagpipeError(f"{name}: cannot read: {exc}") from None
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()


def _wide_encoding(stream: IO[bytes]) -> str | None:
    """``utf-16`` / ``utf-32`` when the stream starts with that byte-order mark (looked at without
    consuming it; a stream that cannot peek, such as an in-memory stdin, is read as UTF-8)."""
    peek = getattr(stream, "peek", None)
    if peek is None:
        return None
    head = peek(4)[:4]
    return next((encoding for bom, encoding in WIDE_BOMS if head.startswith(bom)), None)


def _utf8_lines(stream: IO[bytes], name: str, on_error: OnError | None) -> Iterator[tuple[int, str]]:
    number = 0
    while batch := stream.readlines(1 << 16):  # a batch decodes faster than its lines
        try:
            text = b"".join(batch).decode("utf-8")
        except UnicodeDecodeError:
            yield from _decode_each(batch, number, name, on_error)
            number += len(batch)
            continue
        lines = text.split("\n")
        if text.endswith("\n"):
            lines.pop()
        clean = number == 0 or "\r" in text
        for line in lines:
            number += 1
            yield number, _clean(line, number) if clean else line


def _wide_lines(stream: IO[bytes], encoding: str, name: str) -> Iterator[tuple[int, str]]:
    """The lines of a UTF-16/32 stream (the codec reads the mark and drops it). Its lines cannot be
    told apart without decoding, so a decoding error stops the file instead of skipping a line."""
    text = io.TextIOWrapper(stream, encoding=encoding, newline="\n")  # lines end at "\n" only, as in UTF-8
    try:
        for number, line in enumerate(text, 1):
            yield number, _clean(line.removesuffix("\n"), number)
    except UnicodeDecodeError as exc:
        raise TagpipeError(f"{name}: not valid {encoding.upper()} text, though it starts with a "
                           f"{encoding.upper()} byte-order mark ({exc.reason})") from None
    finally:
        text.detach()  # the caller closes the stream (never stdin)


def _decode_each(
    batch: list[bytes], before: int, name: str, on_error: OnError | None
) -> Iterator[tuple[int, str]]:
    """The lines of a batch that failed to decode, one by one, reporting the bad ones."""
    for number, raw in enumerate(batch, before + 1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            error = CorpusError(name, number, f"invalid UTF-8 at byte {exc.start + 1} of the line")
            if on_error is None:
                raise error from None
            on_error(error)
            continue
        yield number, _clean(line.removesuffix("\n"), number)


def _clean(line: str, number: int) -> str:
    """Drop the ``\\r`` of a CRLF ending, and a BOM on the first line."""
    if line.endswith("\r"):
        line = line[:-1]
    if number == 1 and line.startswith("\ufeff"):
        line = line[1:]
    return line


def _default_mode() -> int:
    """Permissions a plainly created file would get (0o666 minus the umask)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def replacing(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` that replaces it only when the block succeeds.

    The one atomic-replace helper: every writer of a file that must never be seen half-written
    (corpora, model weights and configs, checkpoints, outputs) writes the yielded path, which is
    then fsynced, given the permissions ``path`` has (or a new file would get) and renamed over
    ``path`` (``os.replace`` is atomic within a directory). On an exception the temporary file is
    removed and ``path`` is left as it was.
    """
    path = Path(path)
    try:
        mode = path.stat().st_mode & 0o7777
    except FileNotFoundError:
        mode = _default_mode()
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as written:
            os.fsync(written.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_atomically(path: str | Path, data: str | bytes) -> None:
    """Replace ``path`` with ``data`` (text is written as UTF-8) through :func:`replacing`."""
    with replacing(path) as tmp:
        if isinstance(data, str):
            tmp.write_text(data, encoding="utf-8")
        else:
            tmp.write_bytes(data)


@contextlib.contextmanager
def atomic_write(path: str | Path, *, encoding: str = "utf-8") -> Iterator[IO[str]]:
    """A text stream whose content replaces ``path`` only when the block succeeds (:func:`replacing`).

    A ``.gz`` name is gzip-compressed; ``-`` is stdout (nothing to replace).
    """
    if str(path) == STDIO:
        yield sys.stdout
        sys.stdout.flush()
        return
    path = Path(path)
    with replacing(path) as tmp, open(tmp, "wb") as raw:
        binary: IO[bytes] = gzip.GzipFile(fileobj=raw, mode="wb") if path.suffix == ".gz" else raw
        text = io.TextIOWrapper(binary, encoding=encoding, newline="\n")
        try:
            yield text
            text.flush()
        finally:
            with contextlib.suppress(ValueError):
                text.detach()  # so the wrapper's finaliser does not flush into a closed file
        if binary is not raw:
            binary.close()  # writes the gzip trailer; leaves ``raw`` open


@contextlib.contextmanager
def open_output(path_or_stream: str | Path | IO[str]) -> Iterator[IO[str]]:
    """A text stream for a writer: an open stream as is, ``-`` as stdout, a path atomically."""
    if hasattr(path_or_stream, "write"):
        yield path_or_stream  # type: ignore[misc]
    else:
        with atomic_write(path_or_stream) as stream:  # type: ignore[arg-type]
            yield stream


def looks_like_conll(path: str | Path, sample: int = 50, limit: int = 1 << 16) -> bool:
    """True when the first ``sample`` non-blank lines (within the first ``limit`` bytes) look like
    tagged CoNLL columns: the same number (two or more) of whitespace-separated fields on each, the
    last one a tag (``O``, ``B-X``, ...). Plain text rarely passes both tests. Only ``limit`` bytes
    are read, so a large binary file costs no more than a small one."""
    counts = set()
    seen = 0
    try:
        lines = _head_lines(path, limit)
    except (TagpipeError, OSError, EOFError):
        return False
    for line in lines:
        fields = line.split()
        if not fields or fields[0] == "-DOCSTART-":
            continue
        last = fields[-1]
        if not (last == "O" or (last[:1] in "BIESM" and last[1:2] == "-" and len(last) > 2)):
            return False
        counts.add(len(fields))
        seen += 1
        if seen >= sample or len(counts) > 1:
            break
    return len(counts) == 1 and min(counts) >= 2


def _head_lines(path: str | Path, limit: int) -> list[str]:
    """The complete lines within the first ``limit`` (decompressed) bytes of ``path``, decoded
    leniently (a sample to look at, not records to keep)."""
    stream = _open_binary(path)
    try:
        encoding = _wide_encoding(stream) or "utf-8-sig"
        head = stream.read(limit)
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()
    lines = head.decode(encoding, errors="replace").split("\n")
    if len(head) == limit or not lines[-1]:
        lines.pop()  # cut off by the limit, or the empty string after the last newline
    return [line.removesuffix("\r") for line in lines]
