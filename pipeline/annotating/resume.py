"""The sidecar that lets ``tagpipe annotate --resume`` continue an interrupted run.

Beside the first output's partial file, ``.NAME.resume.json`` records the number of input
documents whose results are in the partial files, and each partial file's size at that moment
(taken after a flush, so those bytes are in the file even if the process is killed right after).
It is replaced atomically, and written at most once a second: a killed run loses at most a
second of work, never consistency.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from tagpipe.annotating.outputs import Output
from tagpipe.corpora.io import write_atomically
from tagpipe.errors import TagpipeError

VERSION = 1


@dataclass
class ResumeState:
    """Documents (and their tokens) done, and each output's partial size when they were."""

    docs: int
    tokens: int
    offsets: list[int] = field(default_factory=list)


class Checkpoints:
    """Reads and writes the sidecar of ``primary`` for all ``outputs`` of one run."""

    def __init__(self, primary: Output, outputs: list[Output], fingerprint: dict[str, Any],
                 interval: float = 1.0) -> None:
        self.path = primary.partial.with_name(primary.partial.name.removesuffix(".partial") + ".resume.json")
        self.outputs = outputs
        self.fingerprint = fingerprint
        self.interval = interval
        self.enabled = all(o.resumable for o in outputs)  # stdout: nothing to record
        self._last = time.monotonic()

    def load(self) -> ResumeState | None:
        """The recorded state, or None when there is nothing to resume (the run starts afresh)."""
        if not self.enabled or not self.path.is_file():
            return None
        try:
            data = json.loads(self.path.read_text())
            state = ResumeState(int(data["docs"]), int(data["tokens"]), [int(o) for o in data["offsets"]])
        except (ValueError, KeyError, TypeError):
            raise TagpipeError(f"cannot resume: {self.path} is damaged; run again without --resume") from None
        if data.get("version") != VERSION or data.get("fingerprint") != self.fingerprint:
            raise TagpipeError(f"cannot resume: {self.path} was written by a run with other inputs, models or "
                               "formats; run again without --resume to start over")
        if len(state.offsets) != len(self.outputs):
            raise TagpipeError(f"cannot resume: {self.path} records {len(state.offsets)} outputs, this run has "
                               f"{len(self.outputs)}")
        return state

    def maybe_save(self, state: ResumeState) -> None:
        if time.monotonic() - self._last >= self.interval:
            self.save(state)

    def save(self, state: ResumeState) -> None:
        """Flush every output, then record the state (data first: the sidecar never runs ahead)."""
        offsets = [output.checkpoint() for output in self.outputs]
        if not self.enabled:
            return
        data = {"version": VERSION, "fingerprint": self.fingerprint, "docs": state.docs, "tokens": state.tokens,
                "offsets": offsets}
        write_atomically(self.path, json.dumps(data) + "\n")
        self._last = time.monotonic()

    def remove(self) -> None:
        if self.enabled:
            self.path.unlink(missing_ok=True)
