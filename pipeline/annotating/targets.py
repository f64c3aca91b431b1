"""Where ``tagpipe annotate`` writes: checked before any work, then held by one run at a time.

:func:`check_targets` and :func:`check_not_inputs` run before the model is loaded or an input
is read, so a mistake costs nothing and leaves every file as it was. Refused, one line each:

- ``--output`` a folder, or a FIFO or device (renaming the result over it would replace the
  node), or the same file as an input;
- ``--html`` an existing file that is no HTML page (a name not ending in ``.html`` is a folder of
  pages; one ending in it is a page file, so an existing folder of that name is refused too);
- an output in a folder this process cannot write (tried, not guessed from mode bits: root may
  write anywhere but on a read-only file system), or two outputs on one path.

:func:`locked` then takes an exclusive ``flock`` on ``.NAME.lock`` beside each output file (or
pages folder) for the whole run: the lock covers the target, its partial file and the resume
sidecar, so a second run on the same output (``--resume`` included) fails at once instead of
sharing the partial file. The kernel drops the lock when its holder dies, so a killed run never
leaves a stale one; a finished run removes the file. Without ``fcntl`` (Windows) nothing is locked.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from tagpipe.annotating.outputs import HtmlOutput, Output
from tagpipe.errors import TagpipeError

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]


def _option(output: Output) -> str:
    return "--html" if isinstance(output, HtmlOutput) else "--output"


def _files(outputs: list[Output]) -> list[Output]:
    return [o for o in outputs if o.resumable]  # stdout has no path


def check_targets(outputs: list[Output]) -> None:
    """Refuse outputs that cannot be written (see the module docstring), naming the option."""
    seen: dict[Path, str] = {}
    for output in _files(outputs):
        option, target = _option(output), output.target
        key = Path(os.path.abspath(target))
        if key in seen:
            raise TagpipeError(f"{option} {target}: the same path as {seen[key]}; give each output its own")
        seen[key] = option
        if isinstance(output, HtmlOutput):
            _check_html(output)
            folder = target if not output.is_file else target.parent
        else:
            if target.is_dir():
                raise TagpipeError(f"--output {target}: is a folder; give a file (.jsonl, .conll or .spacy)")
            _check_regular(option, target)
            folder = target.parent
        _check_writable(option, target, folder)


def _check_regular(option: str, target: Path) -> None:
    if target.exists() and not target.is_file():
        raise TagpipeError(f"{option} {target}: not a regular file (a FIFO or a device) and it would be replaced; "
                           "write to a file (or -o - for stdout)")


def _check_html(output: HtmlOutput) -> None:
    target = output.target
    if not output.is_file:
        if target.exists() and not target.is_dir():
            raise TagpipeError(f"--html {target}: an existing file that is not an HTML page (a name not ending "
                               "in .html is a folder of pages); give FILE.html or a folder")
        return
    if target.is_dir():
        raise TagpipeError(f"--html {target}: is a folder, but a name ending in .html is written as a page file; "
                           "give a folder name without .html")
    _check_regular("--html", target)
    if target.exists() and not _looks_like_html(target):
        raise TagpipeError(f"--html {target}: exists and is not an HTML page; refusing to overwrite it")


def _looks_like_html(path: Path) -> bool:
    with open(path, "rb") as stream:
        head = stream.read(512).lstrip(b"\xef\xbb\xbf \t\r\n")
    return not head or head.startswith(b"<")


def _check_writable(option: str, target: Path, folder: Path) -> None:
    """``folder`` (or its nearest existing ancestor, where the missing folders will be made) takes a file."""
    existing = Path(os.path.abspath(folder))
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise TagpipeError(f"{option} {target}: {existing} is not a folder")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        raise TagpipeError(f"{option} {target}: cannot write in {existing} ({exc.strerror or exc})") from None


def check_not_inputs(outputs: list[Output], inputs: list[str]) -> None:
    """Refuse an output that is also one of the ``inputs`` (files, after folders were expanded):
    it would be read while it is replaced, or annotated into itself."""
    targets = {}
    for output in _files(outputs):
        with contextlib.suppress(OSError):
            info = os.stat(output.target)
            targets[(info.st_dev, info.st_ino)] = output
    if not targets:
        return
    for path in inputs:
        try:
            info = os.stat(path)
        except OSError:
            continue  # stdin, or a file gone since it was listed: the reader reports it
        output = targets.get((info.st_dev, info.st_ino))
        if output is not None:
            raise TagpipeError(f"{_option(output)} {output.target}: is also an input ({path}); write the output "
                               "elsewhere")


def lock_path(target: Path) -> Path:
    return target.parent / f".{target.name}.lock"


@contextlib.contextmanager
def locked(outputs: list[Output]) -> Iterator[None]:
    """Hold the lock of every output file for the block; a held one is refused in one line."""
    held: list[tuple[Path, int]] = []
    try:
        if fcntl is not None:
            for output in _files(outputs):
                held.append(_acquire(_option(output), output.target))
        yield
    finally:
        for path, fd in reversed(held):
            path.unlink(missing_ok=True)  # while still locked: a waiting run then finds no file, or a new one
            os.close(fd)


def _acquire(option: str, target: Path) -> tuple[Path, int]:
    path = lock_path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode("ascii", "replace").strip()
            os.close(fd)
            who = f"process {holder}" if holder.isdigit() else "it"
            raise TagpipeError(f"{option} {target}: another tagpipe annotate run is writing it ({who} holds {path}); "
                               f"wait for it to end or give another {option}") from None
        except OSError as exc:
            os.close(fd)
            raise TagpipeError(f"{option} {target}: cannot lock {path} ({exc.strerror or exc})") from None
        # the run that held it may have removed the file between our open and our lock: lock the one on disk
        with contextlib.suppress(FileNotFoundError):
            if os.path.samestat(os.fstat(fd), os.stat(path)):
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode("ascii"))
                return path, fd
        os.close(fd)
