"""The one reading of a device name (``--device``, a component's ``device`` setting) for every command.

``auto`` (the CUDA GPU when torch sees one, else the CPU), ``cpu``, ``cuda``, ``cuda:N`` and ``mps``. A name
of another form, or a device this torch cannot use, is a :class:`~tagpipe.errors.ConfigValueError` in one
line, raised before any work: the commands call :func:`resolve_device` first (``train`` and ``evaluate``
through :meth:`tagpipe.tasks.Options.from_context`, ``annotate`` when it adds a model, ``parse`` and
``segment`` before reading the corpus), and :meth:`tagpipe.model.Tagger.load` checks its ``device`` too.
"""

from __future__ import annotations

import re

import torch

from tagpipe.errors import ConfigValueError

#: how a device may be written, for messages and ``--help``
DEVICE_FORMS = ("auto", "cpu", "cuda", "cuda:N", "mps")
_FORM = re.compile(r"(?P<type>auto|cpu|cuda|mps)|cuda:(?P<index>[0-9]+)")


def resolve_device(name: str | torch.device, *, option: str = "--device") -> torch.device:
    """The torch device ``name`` stands for, checked against what this torch sees; ``option`` names the
    setting in the error message."""
    text = str(name).strip()
    match = _FORM.fullmatch(text)
    if match is None:
        raise ConfigValueError(f"{option} {text!r}: not a device; use one of {', '.join(DEVICE_FORMS)} "
                               f"(N: a GPU index)")
    kind = match["type"] or "cuda"
    if kind == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if kind == "mps" and not torch.backends.mps.is_available():
        raise ConfigValueError(f"{option} mps: torch sees no MPS (Apple GPU) device; use cpu")
    if kind == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
            raise ConfigValueError(f"{option} {text}: torch sees no CUDA device (torch {torch.__version__}, {build}); "
                                   f"use cpu or auto")
        index = int(match["index"]) if match["index"] is not None else None
        if index is not None and index >= count:
            seen = "1 CUDA device (cuda:0)" if count == 1 else f"{count} CUDA devices (cuda:0 to cuda:{count - 1})"
            raise ConfigValueError(f"{option} {text}: torch sees {seen}")
        return torch.device("cuda", index) if index is not None else torch.device("cuda")
    return torch.device(kind)
