"""``--resume`` checkpoints: data only, written whole or not at all, resumed only by the same run.

``OUTPUT/checkpoint/`` holds the last epoch's model (``Tagger.save``: safetensors and JSON),
``trainer_state.pt`` and ``manifest.json``:

- **No code from data.** ``trainer_state.pt`` holds only tensors, numbers, strings, lists, tuples and
  dicts (optimizer, schedule and grad-scaler states, RNG states, history) and is read with
  ``torch.load(weights_only=True)``, whose unpickler builds nothing else: a file that names a function
  to call (a crafted pickle) is refused in one line, never run.
- **Atomic.** A checkpoint is written whole into ``OUTPUT/.checkpoint.new/``, the manifest last (every
  file with its size and sha256), then swapped in with two renames: the old one aside to
  ``.checkpoint.old/``, the new one into place. A run killed at any point leaves one complete
  checkpoint, which ``--resume`` finds (:func:`recover`); the manifest is verified before anything is
  loaded, so weights and trainer state always come from the same epoch.
- **By content.** The manifest records the settings and each corpus's size and sha256; ``--resume``
  refuses other settings (except those ``allow_change`` names) and changed corpora, listing each one.

``TAGPIPE_TEST_KILL_AT=NAME[@N]`` (tests) SIGKILLs the process the N-th time it reaches the write point
``NAME`` (:func:`tagpipe.faults.kill_point`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch

from tagpipe.corpora.io import replacing, write_atomically
from tagpipe.errors import TagpipeError
from tagpipe.faults import kill_point
from tagpipe.model import Tagger
from tagpipe.names import CONFIG_FILE, WEIGHTS_FILE
from tagpipe.training.settings import MAY_CHANGE_ON_RESUME, RUN_PLACE, option_name, upgrade_saved

CHECKPOINT_DIR = "checkpoint"
STATE_FILE = "trainer_state.pt"
MANIFEST_FILE = "manifest.json"
MANIFEST_VERSION = 1
STAGING_DIR = ".checkpoint.new"  # the checkpoint being written
PREVIOUS_DIR = ".checkpoint.old"  # the one it replaces, until the new one is in place
#: what a trainer state must hold
STATE_KEYS = ("epoch", "optimizer", "schedule", "scaler", "history", "best", "top", "python_rng", "torch_rng")

def fingerprint(path: str | None) -> dict[str, Any] | None:
    """A corpus's path, size and sha256 (None without one; stdin, ``-``, has no content to record)."""
    if not path:
        return None
    if str(path) == "-":
        return {"path": "-"}
    try:
        return {"path": str(path), **_file_record(Path(path))}
    except OSError as exc:
        raise TagpipeError(f"{path}: cannot read: {exc.strerror}") from None


def data_fingerprints(train: str, dev: str | None) -> dict[str, Any]:
    return {"train": fingerprint(train), "dev": fingerprint(dev)}


# -- writing -------------------------------------------------------------------------------------
def save(output: Path, model: Tagger, state: dict[str, Any], *, settings: dict[str, Any],
         data: dict[str, Any]) -> None:
    """Write the checkpoint of ``model`` and ``state`` (plain data: see the module docstring) whole, then
    swap it in for ``OUTPUT/checkpoint``. ``settings`` and ``data`` (:func:`data_fingerprints`) go into
    the manifest, for ``--resume`` to compare."""
    staging, final, previous = output / STAGING_DIR, output / CHECKPOINT_DIR, output / PREVIOUS_DIR
    _remove(staging)  # what a killed save left
    model.save(staging)
    kill_point("checkpoint-model")
    with replacing(staging / STATE_FILE) as tmp:
        torch.save(plain(state), tmp)
    kill_point("checkpoint-state")
    files = {p.relative_to(staging).as_posix(): _file_record(p) for p in sorted(staging.rglob("*")) if p.is_file()}
    manifest = {"version": MANIFEST_VERSION, "epoch": state["epoch"], "settings": settings, "data": data,
                "files": files}
    write_atomically(staging / MANIFEST_FILE, json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    _sync_folder(staging)
    kill_point("checkpoint-manifest")
    if final.exists():
        _remove(previous)
        os.replace(final, previous)
        kill_point("checkpoint-swap")
    os.replace(staging, final)
    _sync_folder(output)
    kill_point("checkpoint-done")
    _remove(previous)


# -- reading -------------------------------------------------------------------------------------
def recover(output: Path, log: Callable[[str], None] = print) -> Path | None:
    """``OUTPUT/checkpoint``, put back from a save killed between its two renames when needed (the new
    checkpoint when complete, else the old one), what the killed save left removed; None when there is
    no checkpoint at all. (A complete new checkpoint beside the old one is dropped: resuming from the old
    one repeats an epoch and ends the same.)"""
    final = output / CHECKPOINT_DIR
    leftovers = [output / STAGING_DIR, output / PREVIOUS_DIR]
    if not final.is_dir():
        for candidate in leftovers:
            if candidate.is_dir():
                try:
                    read_manifest(candidate)
                except TagpipeError:
                    continue
                os.replace(candidate, final)
                log(f"--resume: {final} restored from {candidate.name} (a save was interrupted)")
                break
    if final.is_dir():
        for folder in leftovers:
            _remove(folder)
        return final
    return None


def read_manifest(folder: Path) -> dict[str, Any]:
    """``folder``'s manifest, once every file it lists is there with its size and sha256 and no other file is."""
    path = folder / MANIFEST_FILE
    if not path.is_file():
        raise TagpipeError(f"--resume: {folder} has no {MANIFEST_FILE} (written in part, or by a tagpipe "
                           "before checkpoints had one): train without --resume")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TagpipeError(f"--resume: {path}: not a readable manifest ({_one_line(exc)})") from None
    if not _well_formed(manifest):
        raise TagpipeError(f"--resume: {path}: not a tagpipe checkpoint manifest (version {MANIFEST_VERSION})")
    files = manifest["files"]
    for name, expected in files.items():
        file = folder / name
        inside = not Path(name).is_absolute() and ".." not in Path(name).parts
        if not inside or not file.is_file():
            raise TagpipeError(f"--resume: {folder}: {name}, listed in {MANIFEST_FILE}, is missing")
        if _file_record(file) != expected:
            raise TagpipeError(f"--resume: {file} does not match {MANIFEST_FILE} (size and sha256): the checkpoint "
                               "was changed or written in part; train without --resume")
    extra = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                   if p.is_file() and p.relative_to(folder).as_posix() not in {*files, MANIFEST_FILE})
    if extra:
        raise TagpipeError(f"--resume: {folder / extra[0]}: not part of the checkpoint ({MANIFEST_FILE} does not "
                           "list it); remove it, or train without --resume")
    return manifest


def changes(manifest: dict[str, Any], settings: dict[str, Any], data: dict[str, Any],
            allow: Iterable[str] = ()) -> tuple[dict[str, list[Any]], dict[str, str]]:
    """What differs between the checkpoint's run and this one: ``(accepted, refused)``. ``accepted`` maps a
    setting to ``[checkpoint's, now]`` (``allow`` names it, it is where the run goes, or a corpus moved with
    the same content); ``refused`` maps every other difference to its description, e.g. ``--lr: 0.002
    (checkpoint) vs 0.01 (now)``."""
    then, now = _json(upgrade_saved(manifest.get("settings", {}))), _json(settings)  # an older run's as now
    accepted: dict[str, list[Any]] = {}
    refused: dict[str, str] = {}
    for key in sorted((then.keys() | now.keys()) - {"train", "dev"}):
        before, after = then.get(key), now.get(key)
        if before == after:
            continue
        if key in RUN_PLACE or key in allow:
            accepted[key] = [before, after]
        else:
            refused[key] = f"{option_name(key)}: {_show(before)} (checkpoint) vs {_show(after)} (now)"
    for role in ("train", "dev"):
        before, after = (manifest.get("data") or {}).get(role), data.get(role)
        flag = f"--{role}"
        if before == after:
            continue
        if before is None or after is None:
            refused[role] = (f"{flag}: {_show(before and before['path'])} (checkpoint) vs "
                             f"{_show(after and after['path'])} (now)")
        elif "-" in (before.get("path"), after.get("path")):
            refused[role] = f"{flag} -: the content of stdin cannot be checked on --resume"
        elif (before.get("size"), before.get("sha256")) == (after["size"], after["sha256"]):
            accepted[role] = [before["path"], after["path"]]  # the same corpus, moved
        else:
            where = f" {after['path']}" if before.get("path") == after["path"] else (
                f": {before.get('path')} (checkpoint) vs {after['path']} (now),")
            refused[role] = (f"{flag}{where} other content (size {before.get('size')} -> {after['size']}, sha256 "
                             f"{str(before.get('sha256'))[:12]} -> {after['sha256'][:12]})")
    return accepted, refused


def load(output: Path, *, settings: dict[str, Any], data: dict[str, Any], allow: Iterable[str],
         device: torch.device) -> tuple[Tagger, dict[str, Any], dict[str, Any]]:
    """The checkpoint's model, trainer state and accepted changes, after checking that it is whole and that
    this run (``settings``, ``data``) is the one it belongs to; otherwise one line saying what is wrong.
    Reads only: :func:`recover` first puts back the checkpoint of an interrupted save."""
    folder = output / CHECKPOINT_DIR
    if not folder.is_dir():
        raise TagpipeError(f"--resume: no checkpoint in {folder}")
    manifest = read_manifest(folder)
    allow = tuple(allow)
    accepted, refused = changes(manifest, settings, data, allow)
    if refused:
        changeable = [k.replace("_", "-") for k in refused if k in MAY_CHANGE_ON_RESUME]
        hint = f" (or name {','.join(changeable)} in --allow-change)" if changeable else ""
        raise TagpipeError(f"--resume: {folder} belongs to another run: {'; '.join(refused.values())}. Resume with "
                           f"the checkpoint's settings and data{hint}, or train without --resume")
    state = read_state(folder / STATE_FILE)
    if state.get("epoch") != manifest.get("epoch"):
        raise TagpipeError(f"--resume: {folder / STATE_FILE} is of epoch {state.get('epoch')}, {MANIFEST_FILE} "
                           f"of epoch {manifest.get('epoch')}")
    try:
        model = Tagger.load(folder, device=device)
    except TagpipeError as exc:
        raise TagpipeError(f"--resume: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - a damaged weights or vocabulary file: one line, not a traceback
        raise TagpipeError(f"--resume: cannot load the model in {folder}: {_one_line(exc)}") from None
    return model, state, accepted


def restore(state: dict[str, Any], optimizer: Any, schedule: Any, scaler: Any, rng: Any, rank: int = 0,
            world_size: int = 1) -> tuple[list[Any], dict[str, Any], list[Any]]:
    """Put a trainer state back into the optimizer, schedule, grad scaler and RNGs (this rank's torch RNG
    when the state holds one per rank); returns its history, best score and top checkpoints."""
    try:
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        scaler.load_state_dict(state["scaler"])
        rng.setstate(state["python_rng"])
        ranks = state.get("torch_rng_ranks") or []
        torch.set_rng_state(ranks[rank] if len(ranks) == world_size else state["torch_rng"])
        return list(state["history"]), dict(state["best"]), list(state["top"])
    except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as exc:
        raise TagpipeError(f"--resume: {STATE_FILE} does not fit this model and optimizer "
                           f"({_one_line(exc)})") from None


def read_state(path: Path) -> dict[str, Any]:
    """A trainer state as plain data: ``torch.load(weights_only=True)`` refuses whatever would run code."""
    try:
        with warnings.catch_warnings():  # the unpickler warns about protocols before refusing
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - an UnpicklingError, a zip or EOF error: one line each
        called = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        if called or "Weights only load failed" in str(exc):
            what = f"it would call {called.group(1)}" if called else "it holds more than plain data"
            raise TagpipeError(f"--resume: {path}: refused, not a trainer state of plain data ({what}); tagpipe "
                               "never runs code from a checkpoint") from None
        raise TagpipeError(f"--resume: {path}: not a trainer state ({_one_line(exc)})") from None
    missing = [k for k in STATE_KEYS if k not in state] if isinstance(state, dict) else list(STATE_KEYS)
    if missing:
        raise TagpipeError(f"--resume: {path}: not a trainer state (no {', '.join(missing)})")
    return state


def plain(value: Any) -> Any:
    """``value`` with numpy scalars (seqeval's scores) as Python numbers: what ``weights_only`` reads back."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(plain(v) for v in value)
    if isinstance(value, (int, float)) and type(value) not in (int, float, bool) and hasattr(value, "item"):
        return value.item()
    return value


def _well_formed(manifest: Any) -> bool:
    """The manifest's shape: version, the files (weights, config and trainer state among them), the settings
    and each corpus as ``{"path", "size", "sha256"}`` (or None)."""
    if not isinstance(manifest, dict) or manifest.get("version") != MANIFEST_VERSION:
        return False
    files, settings, data = manifest.get("files"), manifest.get("settings"), manifest.get("data")
    if not isinstance(files, dict) or not {STATE_FILE, WEIGHTS_FILE, CONFIG_FILE} <= set(files):
        return False
    if not isinstance(settings, dict) or not isinstance(data, dict) or not isinstance(manifest.get("epoch"), int):
        return False
    return all(v is None or (isinstance(v, dict) and isinstance(v.get("path"), str)
                             and (v["path"] == "-" or {"size", "sha256"} <= set(v))) for v in data.values())


# -- helpers -------------------------------------------------------------------------------------
def _file_record(path: Path) -> dict[str, Any]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return {"size": size, "sha256": digest.hexdigest()}


def _remove(folder: Path) -> None:
    if folder.is_dir():
        shutil.rmtree(folder)


def _sync_folder(folder: Path) -> None:
    """Make renames and new names in ``folder`` durable (POSIX; elsewhere a no-op)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _json(values: Any) -> Any:
    """Values as JSON gives them back (tuples as lists), so a manifest compares with the settings now."""
    return json.loads(json.dumps(values, default=str))


def _show(value: Any) -> str:
    if value is None:
        return "none"
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."
