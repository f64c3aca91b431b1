"""Fault injection for tests: die at a named write point, as a power cut or the OOM killer would.

``TAGPIPE_TEST_KILL_AT=NAME[@N]`` makes the N-th (default: first) call of :func:`kill_point` with
``NAME`` in this process SIGKILL it at once (no cleanup, no ``finally``). Without the variable a
call costs one environment lookup. Names are prefixed by their subsystem (``annotate-flush``, ...),
so one variable serves every writer. Torch- and spaCy-free, so any module may call it.
"""

from __future__ import annotations

import os
import signal

KILL_AT_ENV = "TAGPIPE_TEST_KILL_AT"
_passed: dict[str, int] = {}  # write point -> times reached in this process


def kill_point(name: str) -> None:
    """A write point: SIGKILL this process when ``TAGPIPE_TEST_KILL_AT`` names it (and this is the N-th pass)."""
    wanted = os.environ.get(KILL_AT_ENV)
    if not wanted or wanted.partition("@")[0] != name:
        return
    _passed[name] = _passed.get(name, 0) + 1
    if _passed[name] == int(wanted.partition("@")[2] or 1):
        os.kill(os.getpid(), getattr(signal, "SIGKILL", signal.SIGTERM))
