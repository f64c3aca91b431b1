"""The options every command spells the same way, and the progress bar they share.

One definition each, so ``--device``, ``--threads``, ``--json`` and ``--quiet`` have the same default,
meaning and help in every builtin and plugin command (plugins import this module; it is public core):

- ``--device`` defaults to ``auto`` (the CUDA GPU when torch sees one, else the CPU), checked by
  :func:`tagpipe.devices.resolve_device` before any work;
- ``--threads N`` sets torch's CPU threads per process; by default torch keeps its own (one per core);
- ``--json`` prints one JSON object on stdout, scores as fractions in [0, 1] (tables may show percent);
- ``--quiet`` / ``-q`` turns off the progress bar (on stderr, never on stdout, so ``--json`` stays clean).

Only click is imported here: ``tagpipe --help`` must not load torch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import click

from tagpipe.errors import TagpipeError

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

#: ``--device`` of every command
DEVICE_DEFAULT = "auto"
DEVICE_HELP = "auto (the CUDA GPU when torch sees one, else the CPU), cpu, cuda, cuda:N or mps."
THREADS_HELP = "torch CPU threads per process [default: torch's own, one per core]."
JSON_HELP = "Print one JSON object on stdout (scores as fractions in [0, 1])."
QUIET_HELP = "No progress bar (warnings still show)."


def device_option(func: F) -> F:
    """``--device``, default ``auto``."""
    return click.option("--device", default=DEVICE_DEFAULT, show_default=True, help=DEVICE_HELP)(func)


def _check_threads(_ctx: click.Context, _param: click.Parameter, value: int | None) -> int | None:
    if value is not None and value < 1:
        raise TagpipeError(f"--threads {value}: must be at least 1")
    return value


def threads_option(func: F) -> F:
    """``--threads N`` (None: torch's default); below 1 is one line, before any work."""
    return click.option("--threads", type=int, default=None, callback=_check_threads, help=THREADS_HELP)(func)


def json_option(func: F) -> F:
    """``--json`` (parameter ``as_json``)."""
    return click.option("--json", "as_json", is_flag=True, help=JSON_HELP)(func)


def quiet_option(func: F) -> F:
    """``--quiet`` / ``-q``."""
    return click.option("--quiet", "-q", is_flag=True, help=QUIET_HELP)(func)


def progress(items: Iterable[T], *, quiet: bool, desc: str, total: int | None = None, unit: str = "sentence",
             size: Callable[[T], int] | None = None) -> Iterator[T]:
    """``items`` through a tqdm bar on stderr, or unchanged when ``quiet``. With ``size``, the bar counts
    ``size(item)`` per item (e.g. the sentences of a batch) up to ``total``."""
    if quiet:
        yield from items
        return
    import sys

    from tqdm import tqdm

    with tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True, leave=False,
              mininterval=0.5) as bar:
        for item in items:
            yield item
            bar.update(size(item) if size is not None else 1)
