"""A tagger is a registered encoder composed with a registered decoder; this module builds,
saves and loads one.

The model folder is self-contained and readable::

    config.json        format version, task, language, label set, the encoder's and decoder's
                       registry names and configs, training summary
    model.safetensors  all weights (encoder + decoder), optionally stored as float16
    vocab.json ...     whatever the encoder writes in ``save_assets``

Loading needs no training data, only the plugins that registered the recorded names.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from tagpipe.components import Decoder, Encoder, lengths_to_mask
from tagpipe.corpora.io import replacing, write_atomically
from tagpipe.corpora.schemes import SCHEMES, Constraints, allowed_transitions
from tagpipe.devices import resolve_device
from tagpipe.errors import ConfigValueError, ModelError, UnknownComponentError
from tagpipe.host import get_registry
from tagpipe.model_folder import Field, check_fields, check_weight_shapes, read_model_config, weight_shapes
from tagpipe.names import CONFIG_FILE, PRECISIONS, WEIGHTS_FILE

FORMAT_VERSION = 1
SPAN_TASKS = {"ner"}  # tasks whose tags encode spans, trained internally in BIOES
#: spaCy tokenizer settings recorded for languages tagged per character (``spacy.blank(lang, config=...)``)
CHARACTER_TOKENIZERS = {"zh": {"segmenter": "char"}}
#: a tagger's config.json fields beyond every task's (``tagpipe.model_folder.COMMON_FIELDS``)
TAGGER_FIELDS = {"labels": Field((list,), items=str), "scheme": Field((str, None), choices=SCHEMES),
                 "encoder": Field((dict,)), "decoder": Field((dict,))}
#: the ``encoder`` and ``decoder`` objects of a tagger's config.json
COMPONENT_FIELDS = {"name": Field((str,)), "config": Field((dict,))}


class Tagger(nn.Module):
    """Encoder + decoder + label set: tokens in, tag strings out."""

    def __init__(
        self,
        encoder: Encoder,
        decoder: Decoder,
        *,
        encoder_name: str,
        decoder_name: str,
        labels: Sequence[str],
        task: str = "ner",
        lang: str = "en",
        scheme: str | None = "bioes",
        meta: dict[str, Any] | None = None,
        tokenizer: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.encoder_name = encoder_name
        self.decoder_name = decoder_name
        self.labels = list(labels)
        self.label_ids = {label: i for i, label in enumerate(self.labels)}
        self.task = task
        self.lang = lang
        self.scheme = scheme
        self.meta = dict(meta or {})
        #: settings of the spaCy tokenizer to predict with (``nlp.tokenizer`` config), e.g. Chinese per character
        self.tokenizer = dict(tokenizer) if tokenizer else CHARACTER_TOKENIZERS.get(lang)

    # -- construction --------------------------------------------------------------------
    @classmethod
    def build(
        cls,
        sentences: Sequence[Sequence[str]],
        labels: Sequence[str],
        *,
        encoder: str,
        decoder: str,
        encoder_config: dict[str, Any] | None = None,
        decoder_config: dict[str, Any] | None = None,
        task: str = "ner",
        lang: str = "en",
        scheme: str | None = "bioes",
    ) -> Tagger:
        """A fresh tagger whose encoder vocabularies are fitted on ``sentences``."""
        registry = get_registry()
        encoder_cls = registry.get("encoder", encoder)
        decoder_cls = registry.get("decoder", decoder)
        enc = encoder_cls.from_corpus(sentences, **(encoder_config or {}))
        dec = decoder_cls(enc.output_dim, len(labels), constraints_for(labels, scheme), **(decoder_config or {}))
        return cls(enc, dec, encoder_name=encoder, decoder_name=decoder, labels=labels, task=task,
                   lang=lang, scheme=scheme)

    # -- computation ---------------------------------------------------------------------
    def featurize(self, sentences: Sequence[Sequence[str]]) -> dict[str, Tensor]:
        features = self.encoder.featurize(sentences)
        features["tagpipe_lengths"] = torch.tensor([len(s) for s in sentences], dtype=torch.long)
        return features

    def encode(self, features: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Encoder features ``[B, T, D]`` and the token mask ``[B, T]``."""
        hidden = self.encoder({k: v for k, v in features.items() if k != "tagpipe_lengths"})
        mask = lengths_to_mask(features["tagpipe_lengths"].to(hidden.device), hidden.shape[1])
        return hidden, mask

    def loss(self, features: dict[str, Tensor], tags: Tensor) -> Tensor:
        """Mean negative log-likelihood per sentence; ``tags`` is ``[B, T]`` (any value at padding)."""
        hidden, mask = self.encode(features)
        tags = tags.to(hidden.device).clamp(min=0)
        return self.decoder.loss(hidden, tags, mask).mean()

    @torch.no_grad()  # not inference_mode: CRF marginals take a gradient of log Z inside (enable_grad)
    def predict_ids(self, features: dict[str, Tensor], *, with_scores: bool = False,
                    precision: str = "fp32") -> tuple[Tensor, Tensor | None]:
        """Best tag ids ``[B, T]`` (-1 at padding) and, optionally, their marginal probabilities.

        ``precision`` bf16/fp16 runs the encoder under autocast (on a CPU with AVX512-BF16 the
        BiLSTM encoder runs faster, see docs/benchmarks.md); the decoder always works on float32
        scores, so transition constraints and probabilities keep their precision.
        """
        with inference_autocast(self, precision):
            hidden, mask = self.encode(features)
        hidden = hidden.float()
        ids = self.decoder.decode(hidden, mask)
        scores = None
        if with_scores:
            probs = self.decoder.marginals(hidden, mask)
            scores = probs.gather(-1, ids.clamp(min=0).unsqueeze(-1)).squeeze(-1).masked_fill(~mask, 0.0)
        return ids, scores

    def tag(self, sentences: Sequence[Sequence[str]], *, batch_size: int = 64, with_scores: bool = False,
            precision: str = "fp32"):
        """Tag strings for each sentence (and per-token scores when ``with_scores``).

        Sentences are sorted by length and cut into batches of ``batch_size``, so a batch pads
        little: give it many sentences at once (a whole ``nlp.pipe`` batch), not a few at a time.
        """
        device = next(self.parameters()).device
        was_training = self.training
        self.eval()
        results: list[list[str]] = [[] for _ in sentences]
        scores: list[list[float]] = [[] for _ in sentences]
        order = sorted((i for i, s in enumerate(sentences) if len(s)), key=lambda i: len(sentences[i]))
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            features = to_device(self.featurize([sentences[i] for i in chunk]), device)
            ids, probs = self.predict_ids(features, with_scores=with_scores, precision=precision)
            ids_list = ids.tolist()
            probs_list = probs.tolist() if probs is not None else None
            for row, i in enumerate(chunk):
                n = len(sentences[i])
                results[i] = [self.labels[t] for t in ids_list[row][:n]]
                if probs_list is not None:
                    scores[i] = probs_list[row][:n]
        self.train(was_training)
        return (results, scores) if with_scores else results

    # -- persistence ---------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "task": self.task,
            "lang": self.lang,
            **({"tokenizer": self.tokenizer} if self.tokenizer else {}),
            "scheme": self.scheme,
            "labels": self.labels,
            "encoder": {"name": self.encoder_name, "config": self.encoder.config()},
            "decoder": {"name": self.decoder_name, "config": self.decoder.config()},
            "meta": self.meta,
        }

    def save(self, path: str | Path, *, dtype: torch.dtype | None = None) -> None:
        """Write the model folder. Each file replaces its target atomically (weights, then the
        encoder's assets, config last), so a crash mid-save leaves the previous model loadable.
        Subfolders (a trainer's ``checkpoint/``) are left alone."""
        write_model_folder(self, self.encoder, self.config(), path, dtype=dtype)

    @classmethod
    def load(cls, path: str | Path, *, device: str | torch.device = "cpu") -> Tagger:
        """Load a model folder written by :meth:`save`, checked as a whole before any weight is read:
        ``device``, config.json's fields, the weights file's header, and the tensor shapes that the config
        and the encoder's files build, against the weights' (built first on torch's meta device, so sizes
        that do not fit the weights allocate nothing). Each problem is one :class:`ModelError` naming the file.
        """
        device = resolve_device(device, option="device")
        path = Path(path)
        config = read_model_config(path, format_version=FORMAT_VERSION, required=(WEIGHTS_FILE,))
        if config.get("task", "ner") not in {*SPAN_TASKS, "tag"}:  # a plugin's model (multi-task): its own class
            from tagpipe.tasks import task_of

            loaded = task_of(path, config).load_model(path, device=device)
            if loaded is not None:
                return loaded
        check_tagger_config(path / CONFIG_FILE, config)
        return load_fitting(lambda: cls.from_config(path, config), path, device)

    @classmethod
    def from_config(cls, path: Path, config: dict[str, Any]) -> Tagger:
        """The tagger that ``config`` (``path``'s config.json, checked by :func:`check_tagger_config`) describes,
        with the encoder's files from ``path`` and freshly initialised weights; a component's complaint about
        its config is one :class:`ModelError` naming config.json. Under ``torch.device("meta")`` it sizes a
        model without allocating it (every builtin component builds there)."""
        config_file = path / CONFIG_FILE
        registry = get_registry()
        encoder_name, decoder_name = config["encoder"]["name"], config["decoder"]["name"]
        try:
            encoder_cls = registry.get("encoder", encoder_name)
            decoder_cls = registry.get("decoder", decoder_name)
        except UnknownComponentError as exc:
            raise ModelError(f"{config_file}: {exc}") from None
        labels, scheme = config["labels"], config.get("scheme")
        try:
            constraints = constraints_for(labels, scheme)
        except ValueError as exc:
            raise ModelError(f"{config_file}: the labels do not fit scheme {scheme!r}: {_one_line(exc)}") from None
        try:
            encoder = encoder_cls.from_assets(path, config["encoder"]["config"])
        except (ValueError, TypeError) as exc:
            raise ModelError(f"{config_file}: encoder {encoder_name}: {_one_line(exc)}") from None
        try:
            decoder = decoder_cls(encoder.output_dim, len(labels), constraints, **config["decoder"]["config"])
        except (ValueError, TypeError) as exc:
            raise ModelError(f"{config_file}: decoder {decoder_name}: {_one_line(exc)}") from None
        return cls(encoder, decoder, encoder_name=encoder_name, decoder_name=decoder_name, labels=labels,
                   task=config.get("task", "ner"), lang=config.get("lang", "en"), scheme=scheme,
                   meta=config.get("meta"), tokenizer=config.get("tokenizer"))


def check_tagger_config(config_file: Path, config: dict[str, Any]) -> None:
    """A tagger's config.json fields (:data:`TAGGER_FIELDS`), in one :class:`ModelError` naming the file."""
    try:
        check_fields(str(config_file), config, TAGGER_FIELDS, required=("labels", "encoder", "decoder"))
        for part in ("encoder", "decoder"):
            check_fields(f"{config_file}: {part}", config[part], COMPONENT_FIELDS, required=("name",))
    except ConfigValueError as exc:
        raise ModelError(str(exc)) from None
    labels = config["labels"]
    if not labels or len(set(labels)) != len(labels):
        raise ModelError(f"{config_file}: 'labels' must be a non-empty list of distinct tags")
    for part in ("encoder", "decoder"):
        config[part].setdefault("config", {})


class _SkipInPlaceOnMeta(TorchFunctionMode):
    """In-place ops (``normal_``, ``uniform_``, ``zero_``...) on meta tensors become no-ops.

    A meta tensor has no values to initialise, yet torch routes these ops through its Python
    references, whose first use imports torch._dynamo: ~1.5 s of every process that loads a model.
    """

    def __torch_function__(self, func: Any, types: Any, args: Sequence[Any] = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        target = args[0] if args else kwargs.get("tensor", kwargs.get("self"))  # nn.init passes tensor=
        if name.endswith("_") and not name.endswith("__") and isinstance(target, Tensor) and target.is_meta:
            return target
        return func(*args, **kwargs)


@contextlib.contextmanager
def sized_only():  # noqa: ANN201 - a context manager
    """Build modules on torch's meta device, sizes only: nothing is allocated or initialised."""
    with torch.device("meta"), _SkipInPlaceOnMeta():
        yield


M = TypeVar("M", bound=nn.Module)


def build_fitting(build: Callable[[], M], config_file: Path, weights: Path) -> M:
    """``build()`` once its tensor shapes are known to match ``weights``' header: first built sizes-only
    (:func:`sized_only`), so a config asking for sizes the weights lack allocates nothing; a component
    that cannot be built on the meta device is checked once built. A mismatch is one ModelError."""
    shapes = weight_shapes(weights)
    try:
        with sized_only():
            skeleton: M | None = build()
    except (NotImplementedError, RuntimeError) as exc:
        if "meta" not in str(exc).lower():
            raise ModelError(f"{config_file}: its sizes cannot be built ({_one_line(exc)})") from None
        skeleton = None  # a (third-party) component that needs real tensors to be built: checked once built
    if skeleton is not None:
        check_weight_shapes(weights, shapes, _shapes(skeleton))
    model = build()
    if skeleton is None:
        check_weight_shapes(weights, shapes, _shapes(model))
    return model


def load_fitting(build: Callable[[], M], path: Path, device: torch.device) -> M:
    """``build()`` (see :func:`build_fitting`) with the weights of folder ``path`` in it, in eval mode on
    ``device``; each weight keeps the dtype the model declares (a float16 folder loads as float32)."""
    from safetensors.torch import load_file

    weights = path / WEIGHTS_FILE
    model = build_fitting(build, path / CONFIG_FILE, weights)
    try:
        state = load_file(str(weights))
    except Exception as exc:  # noqa: BLE001 - safetensors' error types differ between versions
        raise ModelError(f"{weights}: cannot read the weights ({_one_line(exc)})") from None
    own = model.state_dict()
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()})
    model.eval()
    return model.to(device)


def _shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def inference_autocast(model: nn.Module, precision: str):
    """Autocast for ``precision`` on the model's device (a no-op context for fp32)."""
    if precision not in PRECISIONS:
        raise ModelError(f"precision must be one of {PRECISIONS}, not {precision!r}")
    if precision == "fp32":
        return contextlib.nullcontext()
    device = next(model.parameters()).device.type
    return torch.autocast(device, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def constraints_for(labels: Sequence[str], scheme: str | None) -> Constraints | None:
    return allowed_transitions(labels, scheme) if scheme else None


def to_device(features: dict[str, Tensor], device: torch.device | str) -> dict[str, Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in features.items()}


def span_labels(entity_types: Sequence[str], scheme: str) -> list[str]:
    """The full tag set of ``scheme`` for these entity types, "O" first."""
    prefixes = {"bioes": "BIES", "bmes": "BMES", "iob2": "BI", "iob1": "BI"}[scheme]
    return ["O"] + [f"{p}-{t}" for t in sorted(entity_types) for p in prefixes]


def write_model_folder(
    model: nn.Module, encoder: Encoder, config: dict[str, Any], path: str | Path, *, dtype: torch.dtype | None = None
) -> None:
    """Write a model folder: the weights, then the encoder's assets (it names its own files), config.json last;
    each file replaces its target atomically, so a crash mid-save leaves the previous model loadable. Shared by
    every model class whose folder holds one encoder (taggers, multi-task taggers)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    with replacing(path / WEIGHTS_FILE) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt"})
    with tempfile.TemporaryDirectory(prefix=".assets-", dir=path) as staging:
        encoder.save_assets(Path(staging))
        for item in sorted(Path(staging).iterdir()):
            target = path / item.name
            if item.is_dir():
                if target.exists():
                    shutil.rmtree(target)
                os.replace(item, target)
            else:
                with replacing(target) as tmp:
                    os.replace(item, tmp)
    write_atomically(path / CONFIG_FILE, json.dumps(config, indent=2, ensure_ascii=False) + "\n")
