"""The one reader of a model folder's ``config.json``, for every task (torch-free).

Each task's loader asks for what it needs (its task name, its format version, the files that
must be there); every failure is a :class:`ModelError` naming the folder or file and the problem.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tagpipe.errors import ModelError
from tagpipe.names import CONFIG_FILE


def read_model_config(folder: str | Path, *, task: str | None = None, format_version: int | None = None,
                      required: Iterable[str] = ()) -> dict[str, Any]:
    """``folder``'s ``config.json`` as a dict, checked for ``task``, ``format_version`` and ``required`` files
    (paths relative to the folder) when given. A config without ``"task"`` is a tagger (``ner``)."""
    folder = Path(folder)
    config_file = folder / CONFIG_FILE
    if not config_file.is_file():
        raise ModelError(f"{folder} is not a tagpipe model folder (no {CONFIG_FILE})")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelError(f"{config_file}: not valid JSON ({exc})") from None
    if not isinstance(config, dict):
        raise ModelError(f"{config_file}: expected a JSON object")
    if task is not None and config.get("task", "ner") != task:
        raise ModelError(f"{folder}: a model for task {config.get('task', 'ner')!r}, not {task!r}")
    if format_version is not None and config.get("format_version") != format_version:
        raise ModelError(f"{folder}: model format version {config.get('format_version')!r} is not supported "
                         f"(expected {format_version})")
    for name in required:
        if not (folder / name).exists():
            raise ModelError(f"{folder}: incomplete model folder (missing {name})")
    return config


def model_labels(folder: str | Path) -> list[str]:
    """The label set a folder's config declares, without loading weights (empty when it names none)."""
    labels = read_model_config(folder).get("labels", [])
    return [str(label) for label in labels] if isinstance(labels, list) else []
