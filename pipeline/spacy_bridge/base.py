"""What every tagpipe spaCy component shares: lazy loading, serialisation, pickling, training.

A component wraps one :class:`tagpipe.model.Tagger`. It is read lazily (``add_pipe`` stays
cheap, and ``spacy.load`` replaces it in ``from_disk`` anyway), saved as the model folder inside
the pipeline folder (``to_disk``) or as a msgpack dict of that folder's files (``to_bytes``),
and pickled *with* its weights, so ``nlp.pipe(n_process=2)`` under ``spawn`` sends the model to
each worker once instead of re-reading it. ``initialize``/``update``/``finish_update`` let
``spacy train`` build the tagger (registry names from the config) and step it with spaCy's optimizer.
"""

# No ``from __future__ import annotations`` here: spaCy builds a pydantic model from
# ``initialize``'s signature to validate [initialize.components] settings, and string
# annotations would name types that model cannot resolve.
import multiprocessing
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import srsly
from spacy.language import Language
from spacy.tokens import Doc, Span
from spacy.training import Example
from spacy.util import minibatch

from tagpipe.defaults import model_path
from tagpipe.errors import ModelError
from tagpipe.model_folder import model_labels
from tagpipe.names import CONFIG_FILE, PRECISIONS

BYTES_VERSION = 1


def _one_thread_in_worker() -> None:
    """A worker process of ``nlp.pipe(n_process=N)`` runs torch on one thread.

    Forked: GNU OpenMP is not fork-safe, and a child whose parent already ran a parallel torch
    region waits forever in its thread pool (the usual "try one doc, then batch" pattern); with one
    thread torch never enters an OpenMP region. Spawned: N workers x all cores would oversubscribe.
    """
    import torch

    torch.set_num_threads(1)


def _after_fork_in_child() -> None:
    if "torch" in sys.modules:
        _one_thread_in_worker()


os.register_at_fork(after_in_child=_after_fork_in_child)


class ModelComponent:
    """Plumbing shared by our spaCy components: batched ``pipe``, the model folder saved with the
    pipeline, on disk or as bytes, and pickling with the weights. Subclasses give ``loaded()`` (the
    model, read on first use), ``adopt(model)``, ``load_model(path, device)``, ``set_annotations(docs)``
    and ``init_kwargs()``; their constructor is ``(nlp, name, **init_kwargs())``."""

    def __init__(self, name: str, *, model: str | None, batch_size: int, device: str,
                 precision: str = "fp32") -> None:
        """Name, model folder (``None``: none yet), batch size, device; precision checked before any model is read."""
        if precision not in PRECISIONS:
            raise ModelError(f"{name}: precision must be one of {PRECISIONS}, not {precision!r}")
        self.name = name
        self.model_path = model
        self.batch_size = batch_size
        self.device = device
        self.precision = precision

    def loaded(self) -> Any:
        raise NotImplementedError

    def adopt(self, model: Any) -> None:
        raise NotImplementedError

    def load_model(self, path: Path, device: str = "cpu") -> Any:
        raise NotImplementedError

    def set_annotations(self, docs: list[Doc]) -> None:
        raise NotImplementedError

    def init_kwargs(self) -> dict[str, Any]:
        """The constructor's keyword arguments that rebuild this component (its config)."""
        raise NotImplementedError

    def __reduce__(self):
        # Pickled with the weights: a spawned nlp.pipe worker rebuilds us once, without disk reads.
        return (_rebuild, (type(self), self.name, self.init_kwargs(), self.to_bytes()))

    def __call__(self, doc: Doc) -> Doc:
        self.set_annotations([doc])
        return doc

    def pipe(self, docs: Iterable[Doc], batch_size: int | None = None) -> Iterator[Doc]:
        for batch in minibatch(docs, size=batch_size or self.batch_size):
            self.set_annotations(batch)
            yield from batch

    def to_disk(self, path: str | Path, *, exclude: Iterable[str] = ()) -> None:
        self.loaded().save(Path(path))

    def from_disk(self, path: str | Path, *, exclude: Iterable[str] = ()) -> "ModelComponent":
        self.adopt(self.load_model(Path(path), device=self.device))
        return self

    def to_bytes(self, *, exclude: Iterable[str] = ()) -> bytes:
        return srsly.msgpack_dumps({"version": BYTES_VERSION, "model": model_to_files(self.loaded())})

    def from_bytes(self, data: bytes, *, exclude: Iterable[str] = ()) -> "ModelComponent":
        msg = srsly.msgpack_loads(data)
        if msg.get("version") != BYTES_VERSION:
            raise ModelError(f"{self.name}: serialised component version {msg.get('version')!r} is not supported")
        self.adopt(model_from_files(msg["model"], device=self.device, load=self.load_model))
        return self


class TaggerComponent(ModelComponent):
    """Base class of ``tagpipe_ner`` and ``tagpipe_tagger``; subclasses set ``task`` and annotate."""

    task = ""
    #: trainable as spaCy means it: ``finish_update(sgd)`` steps ``update``'s gradients ([training.optimizer])
    is_trainable = True

    def __init__(self, nlp: Language | None, name: str, *, model: str | None, batch_size: int = 128,
                 device: str = "cpu", precision: str = "fp32", encoder: str = "tagpipe.bilstm.v1",
                 decoder: str = "tagpipe.crf.v1", encoder_config: dict[str, Any] | None = None,
                 decoder_config: dict[str, Any] | None = None, lr: float = 2e-3, **options: Any) -> None:
        super().__init__(name, model=model, batch_size=batch_size, device=device, precision=precision)
        self.train_config = {"encoder": encoder, "decoder": decoder, "encoder_config": dict(encoder_config or {}),
                             "decoder_config": dict(decoder_config or {}), "lr": lr}
        self.options = options
        self._meta = nlp.meta if nlp is not None else None  # for the requirements of plugin distributions
        self._tagger: Any = None
        self._added_labels: list[str] = []  # add_label() before initialize()

    # -- the model -----------------------------------------------------------------------
    def default_model(self) -> Path | None:
        """The model used when the config names none (``None``: this component needs one)."""
        return None

    def resolved_model(self) -> Path | None:
        """The folder ``model`` names (an embedded model's name, ``en`` or ``zh``, or a path), else the default."""
        return model_path(self.model_path) if self.model_path else self.default_model()

    @property
    def tagger(self):
        """The loaded :class:`~tagpipe.model.Tagger`, read on first use."""
        if self._tagger is None:
            from tagpipe.model import Tagger

            path = self.resolved_model()
            if path is None:
                raise ModelError(f"{self.name}: no model; pass config={{'model': PATH}} or train it "
                                 f"(nlp.initialize / spacy train)")
            self._set_tagger(Tagger.load(path, device=self.device))
        return self._tagger

    def _set_tagger(self, tagger) -> None:
        if tagger.task != self.task:
            raise ModelError(f"{self.name}: the model was trained for task {tagger.task!r}, this component "
                             f"serves {self.task!r}")
        self._tagger = tagger
        if self._meta is not None:
            add_requirements(self._meta, [("encoder", tagger.encoder_name), ("decoder", tagger.decoder_name)])

    @property
    def model(self) -> Any:
        """The torch model once loaded or initialised (None before): what spaCy's ``nlp.update`` asks
        for before it calls :meth:`finish_update`."""
        return self._tagger

    @property
    def is_loaded(self) -> bool:
        return self._tagger is not None

    def model_labels(self) -> list[str]:
        """The model's tag set, without loading weights (``nlp.meta`` asks for labels while
        ``spacy.load`` is still restoring us); empty when there is no model yet."""
        if self._tagger is not None:
            return list(self._tagger.labels)
        try:
            path = self.resolved_model()
        except ModelError:
            return []
        if path is None or not (Path(path) / CONFIG_FILE).is_file():
            return []
        return model_labels(path)

    # -- running -------------------------------------------------------------------------
    def tag_segments(self, docs: Sequence[Doc]) -> tuple[list[tuple[Doc, int, int]], list[list[str]],
                                                          list[list[float]]]:
        """Tag each sentence (each whole doc when no boundaries are set): segments, tags, scores."""
        segments = [(d, s.start, s.end) for d in docs for s in segments_of(d)]
        sentences = [[t.text for t in d[a:b]] for d, a, b in segments]
        if not getattr(self, "scores", True):  # marginals cost a forward-backward pass: only when asked for
            tags = self.tagger.tag(sentences, batch_size=self.batch_size, precision=self.precision)
            return segments, tags, [[] for _ in segments]
        tags, probs = self.tagger.tag(sentences, batch_size=self.batch_size, with_scores=True,
                                      precision=self.precision)
        return segments, tags, probs

    # -- serialisation (ModelComponent's, through these three) --------------------------
    def loaded(self) -> Any:
        return self.tagger

    def adopt(self, model: Any) -> None:
        self._set_tagger(model)

    def load_model(self, path: Path, device: str = "cpu") -> Any:
        from tagpipe.model import Tagger

        return Tagger.load(path, device=device)

    def init_kwargs(self) -> dict[str, Any]:
        return {"model": self.model_path, "batch_size": self.batch_size, "device": self.device,
                "precision": self.precision, **self.train_config, **self.options}

    # -- training inside spaCy -----------------------------------------------------------
    def gold_tags(self, example: Example) -> list[str | None]:
        """The gold tag of each *predicted* token, in the model's internal scheme (None: unknown)."""
        raise NotImplementedError

    def labels_from_examples(self, examples: Sequence[Example]) -> list[str]:
        raise NotImplementedError

    def label_names(self) -> tuple[str, ...]:
        """The labels a user adds and sees (entity types for NER, tags for a tagger)."""
        raise NotImplementedError

    def add_label(self, label: str) -> int:
        """Add ``label`` for :meth:`initialize` to train (1), or 0 if known. A trained model's decoder has
        a fixed tag set, so adding to it is refused with a clear error: re-initialise to train with it."""
        if not isinstance(label, str) or not label:
            raise ValueError(f"{self.name}: a label must be a non-empty string, not {label!r}")
        if label in self._added_labels or (self._tagger is not None and label in self.label_names()):
            return 0
        if self._tagger is not None or (self.model_path and (self.resolved_model() / CONFIG_FILE).is_file()):
            raise ValueError(f"{self.name}: cannot add label {label!r} to a trained model (its decoder knows "
                             f"{', '.join(self.label_names())}); add it before nlp.initialize() to train a new one")
        self._added_labels.append(label)
        return 1

    def initialize(self, get_examples: Callable[[], Iterable[Example]], *, nlp: Language | None = None,
                   labels: Sequence[str] | None = None) -> None:
        """A fresh tagger whose vocabularies and label set come from the training examples."""
        from tagpipe.model import Tagger

        examples = list(get_examples())
        self._tagger = None  # initialize() starts afresh, whatever was loaded before
        if not examples:
            raise ModelError(f"{self.name}: initialize() got no training examples")
        tag_set = list(labels) if labels is not None else self.labels_from_examples(examples)
        tag_set += [t for t in self.labels_for(self._added_labels) if t not in tag_set]
        sentences = [tokens for tokens, _ in self._training_segments(examples)]
        cfg = self.train_config
        tagger = Tagger.build(sentences, tag_set, encoder=cfg["encoder"], decoder=cfg["decoder"],
                              encoder_config=cfg["encoder_config"], decoder_config=cfg["decoder_config"],
                              task=self.task, lang=nlp.lang if nlp is not None else "en",
                              scheme="bioes" if self.task == "ner" else None)
        tagger.meta.update(self.initialize_meta(examples))
        self._set_tagger(tagger.to(self.device))

    def initialize_meta(self, examples: Sequence[Example]) -> dict[str, Any]:
        return {"trained_with": "spacy"}

    def labels_for(self, names: Sequence[str]) -> list[str]:
        """The model tags that serve user-facing label ``names`` (for NER: every scheme prefix)."""
        return list(names)

    def update(self, examples: Iterable[Example], *, drop: float = 0.0, sgd: Any = None,
               losses: dict[str, float] | None = None) -> dict[str, float]:
        """Gradients of the examples' loss (added to ``losses``); the step is :meth:`finish_update`'s, as in
        spaCy (``nlp.update`` calls it with its optimizer). ``sgd`` given here steps at once."""
        from tagpipe.model import to_device
        from tagpipe.training.loop import pad_tags

        losses = {} if losses is None else losses
        losses.setdefault(self.name, 0.0)
        tagger = self.tagger
        pairs = self._training_segments(list(examples))
        unknown = sorted({t for _, tags in pairs for t in tags if t not in tagger.label_ids})
        if unknown:
            raise ValueError(f"{self.name}: the examples use tags the model does not know: {', '.join(unknown)}; "
                             f"add their labels with add_label() before nlp.initialize()")
        if not pairs:
            return losses
        tagger.train()
        features = to_device(tagger.featurize([tokens for tokens, _ in pairs]), self.device)
        gold = pad_tags([[tagger.label_ids[t] for t in tags] for _, tags in pairs])
        loss = tagger.loss(features, gold)
        loss.backward()
        tagger.eval()
        losses[self.name] += float(loss.item())
        if sgd not in (None, False):
            self.finish_update(sgd)
        return losses

    def finish_update(self, sgd: Any) -> None:
        """One step of spaCy's (thinc) optimizer on every parameter with a gradient, then clear them."""
        import torch

        key = id(self)
        with torch.no_grad():
            for name, param in self.tagger.named_parameters():
                if param.grad is None:
                    continue
                weights = param.detach().to("cpu", torch.float32).numpy().ravel().copy()
                gradient = param.grad.detach().to("cpu", torch.float32).numpy().ravel().copy()
                weights, _ = sgd((key, name), weights, gradient)
                param.copy_(torch.from_numpy(weights).view_as(param))
                param.grad = None

    def _training_segments(self, examples: Sequence[Example]) -> list[tuple[list[str], list[str]]]:
        out = []
        for example in examples:
            gold = self.gold_tags(example)
            for span in segments_of(example.predicted):
                tags = gold[span.start:span.end]
                if tags and all(t is not None for t in tags):
                    out.append(([t.text for t in span], list(tags)))
        return out


def _rebuild(cls: "type[ModelComponent]", name: str, kwargs: dict[str, Any], data: bytes) -> "ModelComponent":
    if multiprocessing.parent_process() is not None:  # unpickled in a spawned nlp.pipe worker
        _one_thread_in_worker()
    component = cls(None, name, **kwargs)
    return component.from_bytes(data)


def segments_of(doc: Doc) -> list[Span]:
    """The doc's sentences when boundaries are set, else the whole doc (nothing when empty)."""
    if len(doc) and doc.has_annotation("SENT_START"):
        return list(doc.sents)
    return [doc[:]] if len(doc) else []


def model_to_files(model) -> dict[str, bytes]:
    """A model folder (anything with ``save(path)``) as ``{relative path: bytes}``, what ``to_bytes``
    serialises."""
    tmp = Path(tempfile.mkdtemp(prefix="tagpipe-bytes-"))
    try:
        model.save(tmp)
        return {p.relative_to(tmp).as_posix(): p.read_bytes() for p in sorted(tmp.rglob("*")) if p.is_file()}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def model_from_files(files: dict[str, bytes], *, device: str = "cpu", load: Callable[..., Any] | None = None):
    """The inverse of :func:`model_to_files`: write the files to a temporary folder and load it with
    ``load(folder, device=...)`` (default: ``Tagger.load``)."""
    if load is None:
        from tagpipe.model import Tagger

        load = Tagger.load
    tmp = Path(tempfile.mkdtemp(prefix="tagpipe-bytes-"))
    try:
        for name, content in files.items():
            target = tmp / name
            if tmp.resolve() not in target.resolve().parents:
                raise ModelError(f"serialised model file {name!r} points outside its folder")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
        return load(tmp, device=device)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def add_requirements(meta: dict[str, Any], components: Iterable[tuple[str, str]] = ()) -> None:
    """List tagpipe and the plugin distributions of ``(kind, name)`` components (a model's encoder
    and decoder) in ``meta["requirements"]``, so ``spacy package`` makes a pipeline that installs them."""
    from importlib.metadata import PackageNotFoundError, version

    from tagpipe.host import get_plugin_manager, get_registry

    dists = {"tagpipe"}
    pm, registry = get_plugin_manager(), get_registry()
    for kind, name in components:
        if (kind, name) in registry.entries:
            dists.add(pm.distributions.get(registry.entries[(kind, name)].plugin, "tagpipe"))
    requirements = meta.setdefault("requirements", [])
    present = {_requirement_name(r) for r in requirements}
    for dist in sorted(dists):
        if dist in present or dist in {"?", "tests"}:
            continue
        try:
            requirements.append(f"{dist}>={version(dist)}")
        except PackageNotFoundError:
            continue  # a source checkout or an in-process plugin: nothing installable to name


def _requirement_name(requirement: str) -> str:
    for i, char in enumerate(requirement):
        if char in "<>=!~ [;":
            return requirement[:i].lower()
    return requirement.lower()
