"""Tasks: the kinds of model folder that ``train``, ``evaluate`` and ``annotate`` serve.

A model folder's ``config.json`` names its task (``"ner"`` when it names none). Plugins register
a :class:`Task` subclass per task through ``register_tasks(register)``; the builtin ``ner`` and
``tag`` come through the same hook (``plugins/tagging/hooks.py``), the relation-triple and
seq2seq plugins add ``triples`` and ``seq2seq``. The commands ask the task:

- ``tagpipe train --task NAME``: :meth:`Task.train`, with the command's options as
  :class:`Options` (plus any :attr:`Task.train_options` the task adds to ``train``);
- ``tagpipe evaluate``: :meth:`Task.evaluate` and :meth:`Task.format_scores`;
- ``tagpipe annotate`` and ``tagpipe.load``: the spaCy component (:attr:`Task.spacy_factory`,
  :meth:`Task.component_config`) and the fields it adds to each record (:meth:`Task.record_fields`).

Only click is imported here, so registering tasks stays fast.
"""

from __future__ import annotations

import importlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import click
from click.core import ParameterSource

from tagpipe.errors import ModelError, TagpipeError
from tagpipe.model_folder import read_model_config

DEFAULT_TASK = "ner"  # what a config.json without "task" holds
#: where an option's value counts as the user's (else the command's default, which a task may replace)
GIVEN = (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT, ParameterSource.DEFAULT_MAP,
         ParameterSource.PROMPT)


@dataclass(frozen=True)
class Options:
    """A command's option values by parameter name, and which of them the user gave.

    ``values`` holds every option (defaults included); ``given`` those set on the command line or
    in a ``--config`` file, so a task can apply its own defaults to the rest; ``extra`` holds the
    ``--config`` keys that are no option of the command; ``flags`` spells each option for messages.
    """

    values: dict[str, Any]
    given: frozenset[str] = frozenset()
    extra: dict[str, Any] = field(default_factory=dict)
    flags: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_context(cls, ctx: click.Context, values: dict[str, Any]) -> Options:
        """The options of the command running in ``ctx``. A ``device`` among them is checked here
        (:func:`tagpipe.devices.resolve_device`), so every task's ``train`` and ``evaluate`` refuse a bad
        ``--device`` before reading anything."""
        if values.get("device") is not None:
            from tagpipe.devices import resolve_device

            resolve_device(values["device"])
        params = [p for p in ctx.command.get_params(ctx) if p.name and p.expose_value]
        names = {p.name for p in params}
        given = frozenset(n for n in names if n in values and ctx.get_parameter_source(n) in GIVEN)
        extra = {k: v for k, v in (ctx.default_map or {}).items() if k not in names}
        flags = {p.name: max(p.opts, key=len) if p.opts else p.name for p in params}
        return cls(dict(values), given, extra, flags)

    def get(self, name: str, default: Any = None) -> Any:
        """The user's value of ``name``, or ``default`` (the task's) when they gave none."""
        return self.values[name] if name in self.given else default

    def check(self, task: str, allowed: Iterable[str], extra: Iterable[str] = ()) -> None:
        """Refuse options (and ``--config`` keys) given by the user that ``task`` has no use for."""
        allowed = set(allowed)
        refused = sorted(self.flags.get(n, n) for n in self.given - allowed)
        if refused:
            takes = ", ".join(sorted(self.flags.get(n, n) for n in allowed if n in self.flags))
            raise TagpipeError(f"{', '.join(refused)}: not an option of task {task!r} (it takes {takes})")
        unknown = sorted(set(self.extra) - set(extra))
        if unknown:
            raise TagpipeError(f"--config keys {', '.join(unknown)}: not settings of task {task!r}"
                               + (f" (its config-only keys: {', '.join(sorted(extra))})" if extra else ""))


class Task:
    """One kind of model folder. Subclass it, set the class attributes and override the methods."""

    #: the ``"task"`` value of the model folders' config.json, and the ``--task`` name
    name: ClassVar[str] = ""
    #: click options the task adds to ``tagpipe train`` (its own hyper-parameters)
    train_options: ClassVar[tuple[click.Option, ...]] = ()
    #: the spaCy factory ``annotate`` adds per model, and the module that declares it (imported first)
    spacy_factory: ClassVar[str] = ""
    spacy_module: ClassVar[str] = ""

    def train(self, options: Options) -> None:
        """Train and save a model from ``tagpipe train``'s options; print what the user should see."""
        raise TagpipeError(f"task {self.name!r} cannot be trained with `tagpipe train`")

    def evaluate(self, corpus: str, model: Path, options: Options) -> dict[str, Any]:
        """Scores of the model in ``model`` on the labelled ``corpus`` (``evaluate --json`` prints them)."""
        raise TagpipeError(f"task {self.name!r} cannot be scored with `tagpipe evaluate`")

    def format_scores(self, scores: dict[str, Any]) -> str:
        """``scores`` for a reader (``evaluate`` without ``--json``)."""
        return json.dumps(scores, indent=2)

    def component_config(self, model: Path, *, device: str, batch_size: int | None = None, scores: bool = True,
                         existing_ents: str = "overwrite", precision: str = "fp32") -> dict[str, Any]:
        """The spaCy component's config for the model in ``model``, from annotate's settings;
        ``batch_size`` (items per forward pass) None keeps the component's own default."""
        config: dict[str, Any] = {"model": str(model), "device": device}
        if batch_size is not None:
            config["batch_size"] = batch_size
        return config

    def load_model(self, path: Path, *, device: Any = "cpu") -> Any:
        """The model in ``path`` as a Python object, for ``tagpipe.model.Tagger.load`` of a folder of this task
        (a multi-task model); None: ``Tagger.load`` reads it as a tagger (or refuses it)."""
        return None

    def record_fields(self, doc: Any) -> dict[str, Any]:
        """Fields this task's component adds to a document's JSON record; ``{}`` when the doc carries
        nothing of this task (it is asked for every document, whatever the pipeline ran)."""
        return {}


# -- finding tasks ---------------------------------------------------------------------------
_cache: dict[str, Any] = {"registry": None}


def _current() -> dict[str, Any]:
    """Task instances and names of the process-wide registry (rebuilt with it: tests, ``plugins.reset``)."""
    from tagpipe.host import get_registry

    registry = get_registry()
    if _cache["registry"] is not registry:
        _cache.update(registry=registry, tasks={}, names=registry.names("task"), options=None, recorders=None)
    return _cache


def get_task(name: str) -> Task:
    """The registered task ``name``; an unknown name lists the tasks available."""
    current = _current()
    if name not in current["tasks"]:
        current["tasks"][name] = current["registry"].get("task", name)()
    return current["tasks"][name]


def task_names() -> list[str]:
    return list(_current()["names"])


def task_of(path: Path, config: dict[str, Any] | None = None) -> Task:
    """The task of the model folder ``path`` (its config.json ``task``)."""
    name = (config if config is not None else read_model_config(path)).get("task", DEFAULT_TASK)
    try:
        return get_task(name)
    except TagpipeError as exc:
        raise ModelError(f"{path}: a model for task {name!r}, which no installed plugin serves: {exc}") from None


def train_options(taken: set[str]) -> list[click.Option]:
    """The options the registered tasks add to ``tagpipe train``, once each; one that clashes with
    ``taken`` (the command's own) or another task's is left out and reported as a plugin problem."""
    current = _current()
    if current["options"] is None:
        errors = current["registry"].errors
        found: list[click.Option] = []
        names = set(taken)
        for name in current["names"]:
            try:
                task = get_task(name)
            except TagpipeError as exc:
                errors.append(str(exc))
                continue
            for option in task.train_options:
                if option.name in names:
                    errors.append(f"task {name!r}: train option {option.opts[0]} refused: its name is taken")
                    continue
                names.add(option.name)
                found.append(option)
        current["options"] = found
    return list(current["options"])


def record_fields(doc: Any) -> dict[str, Any]:
    """The fields every task adds to ``doc``'s record (see :meth:`Task.record_fields`)."""
    fields: dict[str, Any] = {}
    for task in _recorders():
        fields.update(task.record_fields(doc))
    return fields


def _recorders() -> list[Task]:
    """The tasks that add record fields (they override :meth:`Task.record_fields`), found once:
    :func:`record_fields` runs for every annotated document."""
    current = _current()
    if current["recorders"] is None:
        recorders = []
        for name in current["names"]:
            try:
                task = get_task(name)
            except TagpipeError:  # a task whose module cannot be imported ran nothing; `tagpipe plugins` says why
                continue
            if type(task).record_fields is not Task.record_fields:
                recorders.append(task)
        current["recorders"] = recorders
    return current["recorders"]


# -- helpers for tasks -----------------------------------------------------------------------
def add_model_pipe(nlp: Any, path: Path, config: dict[str, Any] | None = None, *, index: int = 0,
                   device: str = "cpu", batch_size: int | None = None, scores: bool = True,
                   existing_ents: str = "overwrite", precision: str = "fp32") -> Any:
    """Add the spaCy component that runs the model in ``path`` to ``nlp`` and, when it has a
    ``loaded()`` method (our ``ModelComponent``), load the model now, so that a bad model (or a bad
    ``device``) fails before any output is written; ``index`` names a second component of a kind."""
    from tagpipe.devices import resolve_device

    resolve_device(device)
    task = task_of(path, config)
    importlib.import_module(task.spacy_module)  # declares the factory, even without entry points
    factory = task.spacy_factory
    name = factory if factory not in nlp.pipe_names else f"{factory}_{index + 1}"
    component = nlp.add_pipe(factory, name=name, config=task.component_config(
        Path(path), device=device, batch_size=batch_size, scores=scores, existing_ents=existing_ents,
        precision=precision))
    if hasattr(component, "loaded"):
        component.loaded()
    return component


def blank_nlp(config: dict[str, Any]) -> Any:
    """``spacy.blank`` of a model's language and tokenizer settings (e.g. Chinese per character)."""
    import spacy

    tokenizer = config.get("tokenizer")  # e.g. {"segmenter": "char"}
    return spacy.blank(config.get("lang", "en"), config={"nlp": {"tokenizer": tokenizer}} if tokenizer else {})


def extension_value(doc: Any, name: str) -> Any:
    """``doc._.NAME``, or None when that extension is not registered (its component never ran here)."""
    return doc._.get(name) if doc.has_extension(name) else None


def single_process(task: str) -> None:
    """Refuse a launch under ``torchrun`` with several processes (only taggers train data-parallel)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise TagpipeError(f"--task {task} trains in one process; run it without torchrun")


def set_threads(threads: int | None) -> None:
    """``--threads N``: torch's CPU threads (None: leave torch's default)."""
    if threads:
        import torch

        torch.set_num_threads(threads)
