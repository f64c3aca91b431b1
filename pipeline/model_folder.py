"""The one reader of a model folder's ``config.json`` and of its weights file's header, for every task
(torch-free).

Each task's loader asks for what it needs (its task name, its format version, the files that
must be there); every failure is a :class:`ModelError` naming the folder or file and the problem.
:func:`check_fields` checks a config's values against a small schema (:class:`Field`: kinds and
ranges), so a component refuses ``"hidden": "big"`` or ``-5`` in one line before it builds anything;
:func:`weight_shapes` reads a safetensors header (checked against the file's size, the data left unread)
and :func:`check_weight_shapes` compares it with the shapes a config builds.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tagpipe.errors import ConfigValueError, ModelError
from tagpipe.names import CONFIG_FILE

#: keys of a HuggingFace ``config.json`` that no tagpipe model folder has
HF_CONFIG_KEYS = ("model_type", "architectures", "transformers_version")
#: bytes per element of each safetensors dtype
SAFETENSORS_DTYPES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2,
                      "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}
_HEADER_LIMIT = 100_000_000  # safetensors' own limit on the JSON header


@dataclass(frozen=True)
class Field:
    """What one config value may be: one of ``kinds`` (``bool`` is not an ``int``; an ``int`` is a ``float``;
    ``None`` allows null), within ``[low, high]`` when numeric, one of ``choices`` when given, and
    for a list, items of kind ``items``."""

    kinds: tuple[type | None, ...]
    low: float | None = None
    high: float | None = None
    choices: tuple[Any, ...] = ()
    items: type | None = None

    def accepts(self, value: Any) -> bool:
        if not any(_is_kind(value, kind) for kind in self.kinds):
            return False
        if value is None:
            return True
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                return False
            if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
                return False
        if self.choices and value not in self.choices:
            return False
        return not (self.items is not None and isinstance(value, list)
                    and not all(_is_kind(item, self.items) for item in value))

    def describe(self) -> str:
        """``an integer in [1, 4096]``, ``a list of strings``, ``one of cnn, lstm``: for messages."""
        if self.choices:
            return f"one of {', '.join(map(str, self.choices))}" + (" or null" if None in self.kinds else "")
        kinds = [_KIND_NAMES.get(kind, getattr(kind, "__name__", "?")) for kind in self.kinds if kind is not None]
        if self.items is not None:
            kinds = [f"a list of {_KIND_NAMES.get(self.items, '?')[2:].lstrip()}s" if k == "a list" else k
                     for k in kinds]
        text = " or ".join(kinds)
        if self.low is not None and self.high is not None:
            text += f" in [{self.low:g}, {self.high:g}]"
        elif self.low is not None:
            text += f" >= {self.low:g}"
        return text + (" or null" if None in self.kinds else "")


_KIND_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string", list: "a list",
               dict: "an object", None: "null"}


def _is_kind(value: Any, kind: type | None) -> bool:
    if kind is None:
        return value is None
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def check_fields(what: str, config: Mapping[str, Any], fields: Mapping[str, Field],
                 required: Iterable[str] = ()) -> None:
    """Refuse the first value of ``config`` that its :class:`Field` does not accept, or a ``required`` key
    that is missing, in one :class:`ConfigValueError` naming ``what`` (a file, a component) and the key.
    Keys without a field are left to the caller (``check_config_keys``)."""
    for key in required:
        if key not in config:
            raise ConfigValueError(f"{what}: {key!r} is missing")
    for key, field in fields.items():
        if key in config and not field.accepts(config[key]):
            shown = repr(config[key])
            shown = shown if len(shown) <= 60 else shown[:57] + "..."
            raise ConfigValueError(f"{what}: {key!r} must be {field.describe()}, not {shown}")


#: what every task's config.json may hold (other keys are the task's own)
COMMON_FIELDS = {
    "format_version": Field((int,), low=1),
    "task": Field((str,)),
    "lang": Field((str,)),
    "tokenizer": Field((dict, None)),
    "meta": Field((dict, None)),
}


def read_model_config(folder: str | Path, *, task: str | None = None, format_version: int | None = None,
                      required: Iterable[str] = ()) -> dict[str, Any]:
    """``folder``'s ``config.json`` as a dict, checked for ``task``, ``format_version`` and ``required`` files
    (paths relative to the folder) when given, and its common fields' kinds (:data:`COMMON_FIELDS`).
    A config without ``"task"`` is a tagger (``ner``)."""
    folder = Path(folder)
    config_file = folder / CONFIG_FILE
    if not config_file.is_file():
        raise ModelError(f"{folder} is not a tagpipe model folder (no {CONFIG_FILE})")
    try:
        config = json.loads(config_file.read_bytes().decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelError(f"{config_file}: not valid JSON ({exc})") from None
    except OSError as exc:
        raise ModelError(f"{config_file}: cannot read it ({exc.strerror or exc})") from None
    if not isinstance(config, dict):
        raise ModelError(f"{config_file}: expected a JSON object")
    if "format_version" not in config and any(key in config for key in HF_CONFIG_KEYS):
        raise ModelError(f"{folder} looks like a HuggingFace model folder, not a tagpipe model: use --pretrained "
                         "with `train --encoder bert`")
    try:
        check_fields(str(config_file), config, COMMON_FIELDS)
    except ConfigValueError as exc:
        raise ModelError(str(exc)) from None
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


# -- the weights file ----------------------------------------------------------------------------
def weight_shapes(path: str | Path) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape from the header of the safetensors file ``path``, the tensor data left unread.

    The header is checked against the file: its length, its JSON, each tensor's dtype, shape and byte
    range, and that the ranges fill the file exactly, so a truncated, empty or random file is one
    :class:`ModelError` naming it (and the shapes returned are backed by real bytes)."""
    path = Path(path)
    bad = f"{path}: not a safetensors weights file"
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise ModelError(f"{bad} ({'empty' if size == 0 else f'only {size} bytes'})")
            length = int.from_bytes(head, "little")
            if length > min(size - 8, _HEADER_LIMIT):
                raise ModelError(f"{bad} (its header claims {length} bytes, the file has {size}): truncated or "
                                 "not safetensors")
            raw = f.read(length)
    except OSError as exc:
        raise ModelError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ModelError(f"{bad} (its header is not JSON)") from None
    if not isinstance(header, dict):
        raise ModelError(f"{bad} (its header is not a JSON object)")
    shapes: dict[str, tuple[int, ...]] = {}
    end = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        shape = entry.get("shape") if isinstance(entry, dict) else None
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        dtype = entry.get("dtype") if isinstance(entry, dict) else None
        if (dtype not in SAFETENSORS_DTYPES or not _ints(shape) or not _ints(offsets) or len(offsets) != 2
                or offsets[1] - offsets[0] != math.prod(shape) * SAFETENSORS_DTYPES[dtype]):
            raise ModelError(f"{bad} (tensor {name!r}: bad dtype, shape or byte range in the header)")
        shapes[name] = tuple(shape)
        end = max(end, offsets[1])
    if 8 + length + end != size:
        raise ModelError(f"{path}: truncated or damaged weights file ({size} bytes; its header describes "
                         f"{8 + length + end})")
    return shapes


def _ints(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value)


def check_weight_shapes(path: str | Path, found: Mapping[str, tuple[int, ...]],
                        expected: Mapping[str, tuple[int, ...]]) -> None:
    """Refuse weights (``found``, from :func:`weight_shapes`) that are not the tensors and shapes the model
    built from its config and assets needs (``expected``, in the model's order), naming the first difference."""
    missing = [name for name in expected if name not in found]
    if missing:
        raise ModelError(f"{path}: no tensor {missing[0]!r} ({len(missing)} missing): the weights do not belong "
                         f"to this {CONFIG_FILE}")
    unexpected = sorted(name for name in found if name not in expected)
    if unexpected:
        raise ModelError(f"{path}: tensor {unexpected[0]!r} is not part of the model {CONFIG_FILE} describes "
                         f"({len(unexpected)} such)")
    for name in expected:
        if tuple(found[name]) != tuple(expected[name]):
            raise ModelError(f"{path}: tensor {name!r} is {list(found[name])} but {CONFIG_FILE} and the model's "
                             f"files make it {list(expected[name])} (labels or sizes changed?)")
