"""Relation-triple extraction: a transformer encoder and a triple head (``pointer`` or ``gplinker``).

:class:`TripleModel` runs :class:`tagpipe.plugins.encoders.bert.BertEncoder` (local folders only, windows for long
sentences, first-subword pooling) to get word features ``[B, W, H]`` and hands them to a head of
:mod:`tagpipe.plugins.triples.heads`. Predictions are :class:`SpanTriple` records in word offsets with
*exclusive* ends (``tokens[s_start:s_end]`` is the subject).

The model folder is self-contained:

| file | content |
| --- | --- |
| ``config.json`` | ``format_version``, ``task: "triples"``, ``head`` + config, ``relations``, encoder, ``meta`` |
| ``encoder/`` | the HF config and the tokenizer (the architecture is rebuilt with ``AutoModel.from_config``) |
| ``model.safetensors`` | all weights (encoder and head) |
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from tagpipe.corpora.io import replacing, write_atomically
from tagpipe.errors import ModelError
from tagpipe.model_folder import read_model_config
from tagpipe.names import CONFIG_FILE, WEIGHTS_FILE
from tagpipe.plugins.encoders.bert import BertEncoder
from tagpipe.plugins.triples.heads import HEADS, Triple, build_head

FORMAT_VERSION = 1
TASK = "triples"


class SpanTriple(NamedTuple):
    """``(subject [s_start, s_end), relation name, object [o_start, o_end))`` in word offsets."""

    s_start: int
    s_end: int
    relation: str
    o_start: int
    o_end: int

    def strings(self, tokens: Sequence[str]) -> tuple[str, str, str]:
        """``(subject, relation, object)`` with the entities' words joined by single spaces."""
        return (" ".join(tokens[self.s_start:self.s_end]), self.relation, " ".join(tokens[self.o_start:self.o_end]))


class TripleModel(nn.Module):
    """Encoder + triple head; ``loss`` for training, ``predict`` for pre-split sentences."""

    def __init__(self, encoder: BertEncoder, relations: Sequence[str], head: str = "pointer",
                 head_config: dict[str, Any] | None = None, meta: dict[str, Any] | None = None) -> None:
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"unknown triple head {head!r}; expected one of {', '.join(HEADS)}")
        if not relations or len(set(relations)) != len(relations):
            raise ValueError("relations must be a non-empty list of distinct names")
        self.encoder = encoder
        self.relations = list(relations)
        self.relation_ids = {r: i for i, r in enumerate(self.relations)}
        self.head_name = head
        self.head_config = dict(head_config or {})
        self.head = build_head(head, encoder.output_dim, len(self.relations), **self.head_config)
        self.meta: dict[str, Any] = dict(meta or {})

    @classmethod
    def build(cls, pretrained: str | Path, relations: Sequence[str], head: str = "pointer",
              head_config: dict[str, Any] | None = None, **encoder_config: Any) -> TripleModel:
        """A fresh model over the pretrained encoder in the local folder ``pretrained``."""
        encoder = BertEncoder.from_corpus([], pretrained=str(pretrained), **encoder_config)
        return cls(encoder, relations, head, head_config)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # -- batches ---------------------------------------------------------------------------------
    def featurize(self, sentences: Sequence[Sequence[str]]) -> dict[str, Tensor]:
        """The encoder's CPU tensors (subword windows; ``lengths`` ``[B]`` words)."""
        return self.encoder.featurize(sentences)

    def words(self, features: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Word features ``[B, W, H]`` and their mask ``[B, W]``."""
        features = {k: v.to(self.device) for k, v in features.items()}
        words = self.encoder(features)
        lengths = features["lengths"]
        mask = torch.arange(words.shape[1], device=words.device)[None, :] < lengths[:, None]
        return words, mask

    def loss(self, features: dict[str, Tensor], gold: Sequence[Sequence[SpanTriple]]) -> Tensor:
        """The head's training loss (a scalar) for a batch with gold triples per sentence."""
        words, mask = self.words(features)
        return self.head.loss(words, mask, [self.to_internal(t) for t in gold])

    def to_internal(self, triples: Sequence[SpanTriple]) -> list[Triple]:
        """Gold triples as head targets (relation ids, inclusive ends); unknown relations raise."""
        out = []
        for t in triples:
            if t.relation not in self.relation_ids:
                raise ModelError(f"relation {t.relation!r} is not one of the model's {len(self.relations)}")
            out.append(Triple(t.s_start, t.s_end - 1, self.relation_ids[t.relation], t.o_start, t.o_end - 1))
        return out

    @torch.no_grad()
    def predict(self, sentences: Sequence[Sequence[str]], batch_size: int = 32,
                threshold: float = 0.0) -> list[list[SpanTriple]]:
        """Triples of each pre-split sentence (empty sentences give none)."""
        was_training = self.training
        self.eval()
        out: list[list[SpanTriple]] = []
        try:
            for i in range(0, len(sentences), batch_size):
                batch = [list(s) for s in sentences[i:i + batch_size]]
                if not any(batch):
                    out.extend([] for _ in batch)
                    continue
                words, _ = self.words(self.featurize(batch))
                found = self.head.decode(words, [len(s) for s in batch], threshold)
                out.extend([SpanTriple(t.s_start, t.s_end + 1, self.relations[t.relation], t.o_start, t.o_end + 1)
                            for t in triples] for triples in found)
        finally:
            self.train(was_training)
        return out

    # -- saving and loading ------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        return {"format_version": FORMAT_VERSION, "task": TASK, "head": self.head_name,
                "head_config": self.head_config, "relations": self.relations,
                "encoder": {"name": "tagpipe.bert.v1", "config": self.encoder.config()}, "meta": self.meta}

    def save(self, path: str | Path) -> None:
        """Write the model folder; each file is written beside its target and renamed (config last)."""
        from safetensors.torch import save_file

        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        self.encoder.save_assets(folder)
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        with replacing(folder / WEIGHTS_FILE) as tmp:
            save_file(state, str(tmp))
        write_atomically(folder / CONFIG_FILE, json.dumps(self.config(), indent=2, ensure_ascii=False))

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu") -> TripleModel:
        """Rebuild a saved model (no reference to the folder it was fine-tuned from)."""
        from safetensors.torch import load_file

        folder = Path(path)
        config = read_model_config(folder, task=TASK, format_version=FORMAT_VERSION, required=(WEIGHTS_FILE,))
        encoder = BertEncoder.from_assets(folder, config["encoder"]["config"])
        model = cls(encoder, config["relations"], config["head"], config.get("head_config"), config.get("meta"))
        state = load_file(str(folder / WEIGHTS_FILE))
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ModelError(f"{folder}: weights do not fit the config (missing {missing[:3]}, "
                             f"unexpected {unexpected[:3]})")
        return model.to(device).eval()
