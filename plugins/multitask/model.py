"""A multi-task tagger: one registered encoder read by several heads, each a registered decoder with
its own label set (``plugins/multitask/heads.py``), saved as one model folder.

The folder is a tagger's (JSON + safetensors + the encoder's assets); its ``config.json`` holds
``task: "multi"``, the encoder's registry name and config, and ``heads``: for each, its name, corpus
column, kind, labels, decoder (registry name and config), spaCy target and, for a head with layers of
its own (``--private-layers``), ``private`` (an encoder stage's registry name and config). Weights are
named ``encoder.*``, ``private.NAME.*`` and ``heads.NAME.*``. ``tagpipe.model.Tagger.load`` of such a folder returns a
:class:`MultiTagger` (through the task's ``load_model``), as does :meth:`MultiTagger.load`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from tagpipe.components import Decoder, Encoder, lengths_to_mask
from tagpipe.corpora.schemes import convert
from tagpipe.devices import resolve_device
from tagpipe.errors import ConfigValueError, ModelError, UnknownComponentError
from tagpipe.host import get_registry
from tagpipe.model import constraints_for, inference_autocast, load_fitting, to_device, write_model_folder
from tagpipe.model_folder import Field, check_fields, read_model_config
from tagpipe.names import CONFIG_FILE, WEIGHTS_FILE
from tagpipe.plugins.multitask.heads import KINDS, TARGETS, HeadSpec

TASK = "multi"
FORMAT_VERSION = 1
#: config.json fields of a multi-task model beyond every task's
MULTI_FIELDS = {"encoder": Field((dict,)), "heads": Field((list,), items=dict), "main": Field((str,))}
HEAD_FIELDS = {"name": Field((str,)), "column": Field((int, str)), "kind": Field((str,), choices=KINDS),
               "labels": Field((list,), items=str), "decoder": Field((dict,)),
               "spacy": Field((str,), choices=TARGETS), "private": Field((dict,))}
PART_FIELDS = {"name": Field((str,)), "config": Field((dict,))}


class MultiTagger(nn.Module):
    """One encoder, a decoder per head: tokens in, every head's tags out."""

    def __init__(self, encoder: Encoder, heads: Mapping[str, Decoder], specs: Sequence[HeadSpec], *,
                 encoder_name: str, main: str, lang: str = "en", meta: dict[str, Any] | None = None,
                 tokenizer: dict[str, Any] | None = None, private: Mapping[str, Encoder] | None = None) -> None:
        super().__init__()
        self.encoder = encoder
        self.private = nn.ModuleDict(dict(private or {}))  # head -> its own stage over the shared features
        self.heads = nn.ModuleDict(dict(heads))
        self.specs = {spec.name: spec for spec in specs}
        self.encoder_name = encoder_name
        self.main = main
        self.task = TASK
        self.lang = lang
        self.meta = dict(meta or {})
        self.tokenizer = dict(tokenizer) if tokenizer else None
        self.label_ids = {name: {t: i for i, t in enumerate(spec.labels)} for name, spec in self.specs.items()}

    # -- construction --------------------------------------------------------------------
    @classmethod
    def build(cls, sentences: Sequence[Sequence[str]], specs: Sequence[HeadSpec], *, encoder: str,
              encoder_config: dict[str, Any] | None = None, main: str | None = None, lang: str = "en") -> MultiTagger:
        """A fresh model whose encoder vocabularies are fitted on ``sentences``; each spec has its labels."""
        enc = get_registry().get("encoder", encoder).from_corpus(sentences, **(encoder_config or {}))
        private, heads = build_heads(enc.output_dim, specs)
        return cls(enc, heads, specs, encoder_name=encoder, main=main or specs[0].name, lang=lang, private=private)

    # -- computation ---------------------------------------------------------------------
    def featurize(self, sentences: Sequence[Sequence[str]]) -> dict[str, Tensor]:
        features = self.encoder.featurize(sentences)
        features["tagpipe_lengths"] = torch.tensor([len(s) for s in sentences], dtype=torch.long)
        return features

    def encode(self, features: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Shared features ``[B, T, D]`` and the token mask ``[B, T]``: one encoder pass for all heads."""
        hidden = self.encoder({k: v for k, v in features.items() if k != "tagpipe_lengths"})  # shape: [B, T, D]
        mask = lengths_to_mask(features["tagpipe_lengths"].to(hidden.device), hidden.shape[1])  # shape: [B, T]
        return hidden, mask

    def head_input(self, name: str, hidden: Tensor, mask: Tensor) -> Tensor:
        """What head ``name``'s decoder reads: the shared features, through its private stage if it has one."""
        return self.private[name].forward_features(hidden, mask) if name in self.private else hidden

    def head_parameters(self, name: str) -> list[nn.Parameter]:
        """The parameters only head ``name``'s loss reaches: its decoder's and its private stage's."""
        own = self.private[name].parameters() if name in self.private else ()
        return [*own, *self.heads[name].parameters()]

    def losses(self, features: dict[str, Tensor], tags: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Each head's mean negative log-likelihood per sentence; ``tags[head]`` is ``[B, T]``."""
        hidden, mask = self.encode(features)
        return {name: self.heads[name].loss(self.head_input(name, hidden, mask),
                                            tags[name].to(hidden.device).clamp(min=0), mask).mean()
                for name in self.specs if name in tags}

    @torch.no_grad()
    def predict_ids(self, features: dict[str, Tensor], precision: str = "fp32") -> dict[str, Tensor]:
        """Each head's best tag ids ``[B, T]`` (-1 at padding), from one encoder pass."""
        with inference_autocast(self, precision):
            hidden, mask = self.encode(features)
            inputs = {name: self.head_input(name, hidden, mask) for name in self.specs}
        return {name: self.heads[name].decode(inputs[name].float(), mask) for name in self.specs}

    def tag(self, sentences: Sequence[Sequence[str]], *, batch_size: int = 64,
            precision: str = "fp32") -> dict[str, list[list[str]]]:
        """Every head's tags for each sentence: IOB2 for span heads, the tags as trained for tag heads.
        Sentences are sorted by length into batches of ``batch_size`` (little padding)."""
        device = next(self.parameters()).device
        was_training = self.training
        self.eval()
        results: dict[str, list[list[str]]] = {name: [[] for _ in sentences] for name in self.specs}
        order = sorted((i for i, s in enumerate(sentences) if len(s)), key=lambda i: len(sentences[i]))
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            ids = self.predict_ids(to_device(self.featurize([sentences[i] for i in chunk]), device), precision)
            for name, spec in self.specs.items():
                rows = ids[name].tolist()
                for row, i in enumerate(chunk):
                    tags = [spec.labels[t] for t in rows[row][:len(sentences[i])]]
                    results[name][i] = convert(tags, "bioes", "iob2") if spec.kind == "span" else tags
        self.train(was_training)
        return results

    # -- persistence ---------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        return {"format_version": FORMAT_VERSION, "task": TASK, "lang": self.lang,
                **({"tokenizer": self.tokenizer} if self.tokenizer else {}),
                "encoder": {"name": self.encoder_name, "config": self.encoder.config()},
                "heads": [{**spec.to_dict(), "decoder": {"name": spec.decoder, "config": self.heads[name].config()}}
                          for name, spec in self.specs.items()],
                "main": self.main, "meta": self.meta}

    def save(self, path: str | Path, *, dtype: torch.dtype | None = None) -> None:
        """Write the model folder: weights, the encoder's assets, config.json last, each file replaced
        atomically (a crash mid-save leaves the previous model loadable)."""
        write_model_folder(self, self.encoder, self.config(), path, dtype=dtype)

    @classmethod
    def load(cls, path: str | Path, *, device: str | torch.device = "cpu") -> MultiTagger:
        """Load a folder written by :meth:`save`, checked whole before a weight is read (config fields,
        the weights' header, the shapes a meta-device build needs); each problem is one ModelError."""
        device = resolve_device(device, option="device")
        path = Path(path)
        config = read_model_config(path, task=TASK, format_version=FORMAT_VERSION, required=(WEIGHTS_FILE,))
        check_multi_config(path / CONFIG_FILE, config)
        return load_fitting(lambda: cls.from_config(path, config), path, device)

    @classmethod
    def from_config(cls, path: Path, config: dict[str, Any]) -> MultiTagger:
        """The model ``config`` describes, with the encoder's files from ``path`` and fresh weights."""
        config_file = path / CONFIG_FILE
        specs = [HeadSpec.from_dict(h) for h in config["heads"]]
        try:
            encoder = get_registry().get("encoder", config["encoder"]["name"]).from_assets(
                path, config["encoder"].get("config") or {})
            private, heads = build_heads(encoder.output_dim, specs)
        except UnknownComponentError as exc:
            raise ModelError(f"{config_file}: {exc}") from None
        except (ValueError, TypeError, NotImplementedError) as exc:
            raise ModelError(f"{config_file}: {' '.join(str(exc).split())}") from None
        return cls(encoder, heads, specs, encoder_name=config["encoder"]["name"], main=config["main"],
                   lang=config.get("lang", "en"), meta=config.get("meta"), tokenizer=config.get("tokenizer"),
                   private=private)


def build_heads(input_dim: int, specs: Sequence[HeadSpec]) -> tuple[dict[str, Encoder], dict[str, Decoder]]:
    """Each head's private stage (for specs that have one) and decoder, fresh, over ``input_dim`` features."""
    registry = get_registry()
    private: dict[str, Encoder] = {}
    heads: dict[str, Decoder] = {}
    for spec in specs:
        dim = input_dim
        if spec.private:
            stage = registry.get("encoder", spec.private["name"]).from_input(input_dim,
                                                                             **(spec.private.get("config") or {}))
            private[spec.name], dim = stage, stage.output_dim
        heads[spec.name] = registry.get("decoder", spec.decoder)(dim, len(spec.labels),
                                                                constraints_for(spec.labels, spec.scheme),
                                                                **spec.decoder_config)
    return private, heads


def check_multi_config(config_file: Path, config: dict[str, Any]) -> None:
    """A multi-task model's config.json fields, in one ModelError naming the file."""
    try:
        check_fields(str(config_file), config, MULTI_FIELDS, required=("encoder", "heads", "main"))
        check_fields(f"{config_file}: encoder", config["encoder"], PART_FIELDS, required=("name",))
        for i, head in enumerate(config["heads"]):
            check_fields(f"{config_file}: heads[{i}]", head, HEAD_FIELDS,
                         required=tuple(k for k in HEAD_FIELDS if k != "private"))
            for part in ("decoder", "private"):
                if part in head:
                    check_fields(f"{config_file}: heads[{i}].{part}", head[part], PART_FIELDS, required=("name",))
    except ConfigValueError as exc:
        raise ModelError(str(exc)) from None
    names = [h["name"] for h in config["heads"]]
    if len(names) < 1 or len(set(names)) != len(names) or config["main"] not in names:
        raise ModelError(f"{config_file}: 'heads' must have distinct names, 'main' one of them")
    for head in config["heads"]:
        if not head["labels"] or len(set(head["labels"])) != len(head["labels"]):
            raise ModelError(f"{config_file}: head {head['name']!r}: 'labels' must be distinct tags, at least one")
