"""What every export checks before it loads a weight, and where it writes (torch-free).

:func:`check_source` reads the model folder's ``config.json`` and refuses, in one line, a model the
target cannot express; :func:`check_out` refuses an ``OUT`` that holds anything; :func:`staged_folder`
fills a folder beside ``OUT`` and renames it into place only when the export succeeded, so a failed
export leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tagpipe.errors import TagpipeError
from tagpipe.model_folder import read_model_config

#: ``--to`` choices: Hugging Face token classification, or an ONNX graph with a torch-free runtime
TARGETS = ("hf", "onnx")
#: ``--labels`` choices of ``--to hf``: ``id2label`` names by their IOB2 meaning, or the model's own tags
LABEL_NAMES = ("iob2", "model")
#: the encoder each target exports, and the decoders whose scores it can carry
ENCODERS = {"hf": "tagpipe.bert.v1", "onnx": "tagpipe.bilstm.v1"}
DECODERS = {
    "hf": ("tagpipe.softmax.v1", "tagpipe.crf.v1"),
    "onnx": ("tagpipe.softmax.v1", "tagpipe.crf.v1", "tagpipe.memm.v1", "tagpipe.bimemm.v1"),
}
#: tasks whose models are taggers (an encoder and a decoder)
TAGGER_TASKS = ("ner", "tag")


class ExportError(TagpipeError):
    """The model cannot be exported to the target, or ``OUT`` cannot take it."""


def check_source(model: Path, target: str) -> dict[str, Any]:
    """``model``'s config.json, if the target can express the model; else one :class:`ExportError` line."""
    config = read_model_config(model)
    task = config.get("task", "ner")
    encoder = (config.get("encoder") or {}).get("name") if isinstance(config.get("encoder"), dict) else None
    decoder = (config.get("decoder") or {}).get("name") if isinstance(config.get("decoder"), dict) else None
    if task not in TAGGER_TASKS or encoder is None or decoder is None:
        raise ExportError(f"{model}: a {task!r} model; only taggers ({', '.join(TAGGER_TASKS)}) export")
    if encoder != ENCODERS[target]:
        other = next((t for t, name in ENCODERS.items() if name == encoder), None)
        hint = f" (it exports with --to {other})" if other else ""
        raise ExportError(f"{model}: --to {target} exports {ENCODERS[target]} models, not this {encoder} model{hint}")
    if decoder not in DECODERS[target]:
        why = {"hf": "its tag scores depend on the previous tag, which HF's token-classification head cannot "
                     "express"}.get(target, "no export for this decoder")
        raise ExportError(f"{model}: --to {target} cannot carry decoder {decoder}: {why}")
    if target == "hf":
        pooling = (config["encoder"].get("config") or {}).get("pooling", "first")
        if pooling != "first":
            raise ExportError(f"{model}: --to hf needs pooling 'first' (HF's head scores each subword and a word "
                              f"takes its first subword's label); this model pools {pooling!r}")
    return config


def check_out(out: Path) -> None:
    """``out`` must not exist, or be an empty folder: an export never overwrites anything."""
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise ExportError(f"{out}: exists and is not a folder; give a new folder for the export")
    if out.is_dir() and any(out.iterdir()):
        raise ExportError(f"{out}: exists and is not empty; give a new or empty folder for the export")


@contextlib.contextmanager
def staged_folder(out: Path) -> Iterator[Path]:
    """A new folder beside ``out`` that becomes ``out`` when the block succeeds (removed if it fails)."""
    check_out(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".export", dir=out.parent))
    try:
        yield staging
        check_out(out)  # nothing appeared there meanwhile
        os.chmod(staging, 0o777 & ~_umask())
        if out.is_dir():
            out.rmdir()
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
