"""The sidecar that lets ``tagpipe annotate --resume`` continue an interrupted run.

Beside the first output's partial file, ``.NAME.resume.json`` records the number of input
documents whose results are in the partial files, each partial file's size at that moment
(taken after a flush, so those bytes are in the file even if the process is killed right after),
and a sha256 of those documents as read (:class:`Consumed`): ``--resume`` reads them again and
refuses to go on when the input no longer holds them (an edited, reordered or replaced file would
otherwise give records that match nothing). It is replaced atomically, and written at most once a
second: a killed run loses at most a second of work, never consistency. A last sidecar marks the
partial files complete (``finished``) before they are renamed into place, so a run killed while
renaming is completed by ``--resume`` without annotating again.

``TAGPIPE_TEST_KILL_AT=annotate-POINT[@N]`` (tests only, :mod:`tagpipe.faults`) SIGKILLs the
process at the Nth pass through a write point (:data:`KILL_POINTS`), to prove that every one of
them is safe to die at.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from tagpipe.annotating.outputs import Output
from tagpipe.annotating.sources import Item
from tagpipe.corpora.io import write_atomically
from tagpipe.errors import TagpipeError
from tagpipe.faults import kill_point

VERSION = 2  # 2: the digest of the documents done, the finished mark
#: the engine's write points (``TAGPIPE_TEST_KILL_AT``, :func:`tagpipe.faults.kill_point`): a batch written
#: (not flushed), the outputs flushed (the sidecar not yet written), the sidecar written, one output
#: renamed into place (the others not yet)
KILL_POINTS = ("annotate-write", "annotate-flush", "annotate-sidecar", "annotate-finalize")


@dataclass
class ResumeState:
    """Documents (and their tokens) done, each output's partial size when they were, the digest of
    those documents, and whether the partial files were complete (only renaming was left)."""

    docs: int
    tokens: int
    offsets: list[int] = field(default_factory=list)
    digest: str | None = None
    finished: bool = False


class Consumed:
    """A running sha256 of the documents read, in input order, and its value at each batch end, so
    that the digest of the first N documents is at hand when N of them are written (batches are read
    ahead of the writer: by workers, Ray actors)."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self._count = 0
        self._marks: deque[tuple[int, Any]] = deque()  # (documents read, the hash at that point)
        self.mark()

    def add(self, item: Item) -> None:
        content = item.stable if item.stable is not None else item.content
        self._hash.update(repr((item.id, content, item.extra)).encode("utf-8", "backslashreplace"))
        self._count += 1

    def mark(self) -> None:
        self._marks.append((self._count, self._hash.copy()))

    def track(self, batches: Iterator[list[Item]]) -> Iterator[list[Item]]:
        """``batches``, adding each one's documents as it is read."""
        for batch in batches:
            for item in batch:
                self.add(item)
            self.mark()
            yield batch

    def forget(self, docs: int) -> None:
        """Drop the marks before ``docs`` documents (the writer has passed them; ``docs`` only grows)."""
        while self._marks and self._marks[0][0] < docs:
            self._marks.popleft()

    def digest(self, docs: int) -> str | None:
        """The sha256 of the first ``docs`` documents (None when no batch ended there, as in an
        unordered Ray run)."""
        self.forget(docs)
        if self._marks and self._marks[0][0] == docs:
            return self._marks[0][1].hexdigest()
        return None


class Checkpoints:
    """Reads and writes the sidecar of ``primary`` for all ``outputs`` of one run."""

    def __init__(self, primary: Output, outputs: list[Output], fingerprint: dict[str, Any],
                 interval: float = 1.0) -> None:
        self.path = primary.partial.with_name(primary.partial.name.removesuffix(".partial") + ".resume.json")
        self.outputs = outputs
        self.fingerprint = fingerprint
        self.interval = interval
        self.enabled = all(o.resumable for o in outputs)  # stdout: nothing to record
        self.consumed = Consumed()
        self._last = time.monotonic()

    def load(self) -> ResumeState | None:
        """The recorded state, or None when there is nothing to resume (the run starts afresh)."""
        if not self.enabled or not self.path.is_file():
            return None
        try:
            data = json.loads(self.path.read_text())
            state = ResumeState(int(data["docs"]), int(data["tokens"]), [int(o) for o in data["offsets"]],
                                str(data["digest"]), bool(data.get("finished", False)))
        except (ValueError, KeyError, TypeError):
            raise TagpipeError(f"cannot resume: {self.path} is damaged; run again without --resume") from None
        if data.get("version") != VERSION or data.get("fingerprint") != self.fingerprint:
            raise TagpipeError(f"cannot resume: {self.path} was written by a run with other inputs, models or "
                               "formats; run again without --resume to start over")
        if len(state.offsets) != len(self.outputs):
            raise TagpipeError(f"cannot resume: {self.path} records {len(state.offsets)} outputs, this run has "
                               f"{len(self.outputs)}")
        return state

    def verify(self, state: ResumeState) -> None:
        """After the resumed run has read the ``state.docs`` documents again: are they the ones done?"""
        self.consumed.mark()
        if self.consumed.digest(state.docs) != state.digest:
            raise TagpipeError(f"cannot resume: the input changed since the partial output was written (its "
                               f"first {state.docs} documents are not the ones annotated); run again without "
                               "--resume to start over")

    def maybe_save(self, state: ResumeState) -> None:
        self.consumed.forget(state.docs)
        if time.monotonic() - self._last >= self.interval:
            self.save(state)

    def save(self, state: ResumeState) -> None:
        """Flush every output, then record the state (data first: the sidecar never runs ahead)."""
        offsets = [output.checkpoint() for output in self.outputs]
        kill_point("annotate-flush")
        if not self.enabled:
            return
        data = {"version": VERSION, "fingerprint": self.fingerprint, "docs": state.docs, "tokens": state.tokens,
                "offsets": offsets, "digest": self.consumed.digest(state.docs), "finished": state.finished}
        write_atomically(self.path, json.dumps(data) + "\n")
        kill_point("annotate-sidecar")
        self._last = time.monotonic()

    def remove(self) -> None:
        if self.enabled:
            self.path.unlink(missing_ok=True)
