"""The contracts of the component families. Plugins subclass these.

(``CorpusFormat`` lives in ``tagpipe.corpora.base``, free of torch, and is re-exported here.)

A tagger is an :class:`Encoder` (tokens -> features ``[batch, seq, dim]``) composed with a
:class:`Decoder` (features -> tag sequence). Any registered encoder works with any registered
decoder; the model folder records both registry names with their configs.

Weights of both go into the model's ``model.safetensors`` via ``state_dict()``; anything else
an encoder needs to rebuild itself (vocabularies, a tokenizer) it writes in ``save_assets``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from tagpipe.corpora.base import CorpusFormat
from tagpipe.corpora.schemes import Constraints

__all__ = ["CorpusFormat", "Decoder", "Encoder", "lengths_to_mask"]


class Encoder(nn.Module):
    """Turns a batch of tokenised sentences into per-token features."""

    #: size of the last dimension of ``forward``'s output
    output_dim: int

    @classmethod
    def from_corpus(cls, sentences: Sequence[Sequence[str]], **config: Any) -> Encoder:
        """A fresh, untrained encoder whose vocabularies are fitted on the training tokens."""
        raise NotImplementedError

    @classmethod
    def from_assets(cls, path: Path, config: dict[str, Any]) -> Encoder:
        """Rebuild the architecture from ``config()`` and ``save_assets`` output (no weights)."""
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        """JSON-serialisable hyper-parameters; ``from_assets(path, config())`` rebuilds us."""
        raise NotImplementedError

    def save_assets(self, path: Path) -> None:
        """Write what ``from_assets`` needs besides weights (vocabularies, tokenizer files)."""

    def featurize(self, sentences: Sequence[Sequence[str]]) -> dict[str, Tensor]:
        """CPU tensors for one batch (ids, lengths, ...); cheap enough to run in a DataLoader."""
        raise NotImplementedError

    def forward(self, features: dict[str, Tensor]) -> Tensor:
        """``[batch, seq, output_dim]`` features, one row per token (``seq`` = longest sentence)."""
        raise NotImplementedError

    # -- optional hooks (the defaults suit an encoder trained from scratch) -------------------
    def parameter_groups(self, lr: float, pretrained_lr: float | None = None) -> list[dict[str, Any]]:
        """Optimizer parameter groups: ``lr`` for weights trained from scratch, ``pretrained_lr``
        (``None``: ``lr``) for pretrained ones (a transformer's body). Default: one group."""
        return [{"params": list(self.parameters()), "lr": lr}]

    def enable_grad_checkpointing(self) -> bool:
        """Recompute activations in the backward pass to save memory; False when unsupported."""
        return False

    @classmethod
    def from_input(cls, input_dim: int, **config: Any) -> Encoder:
        """An encoder over another encoder's features (a later stage of ``tagpipe.stack.v1``)."""
        raise NotImplementedError(f"{cls.__name__} cannot run on another encoder's features")

    def forward_features(self, inputs: Tensor, mask: Tensor) -> Tensor:
        """Stage mode: ``[batch, seq, input_dim]`` features + ``[batch, seq]`` mask -> ``[batch, seq, output_dim]``."""
        raise NotImplementedError


class Decoder(nn.Module):
    """Scores tag sequences from encoder features: a loss to train, a best sequence to predict.

    ``constraints`` (from :func:`tagpipe.corpora.schemes.allowed_transitions`) forbid invalid sequences;
    a decoder must never output one when they are given.
    """

    def __init__(self, input_dim: int, num_tags: int, constraints: Constraints | None = None, **config: Any):
        super().__init__()
        self.input_dim = input_dim
        self.num_tags = num_tags

    def config(self) -> dict[str, Any]:
        """JSON-serialisable hyper-parameters besides ``input_dim``/``num_tags``/``constraints``."""
        return {}

    def loss(self, features: Tensor, tags: Tensor, mask: Tensor) -> Tensor:
        """Negative log-likelihood per sequence ``[batch]``.

        features: ``[batch, seq, input_dim]``; tags: ``[batch, seq]`` long; mask: ``[batch, seq]``
        bool whose ones are a prefix of each row.
        """
        raise NotImplementedError

    def decode(self, features: Tensor, mask: Tensor) -> Tensor:
        """Best tag ids ``[batch, seq]``, ``-1`` at padding positions."""
        raise NotImplementedError

    def marginals(self, features: Tensor, mask: Tensor) -> Tensor:
        """Per-token tag probabilities ``[batch, seq, num_tags]`` (confidence scores)."""
        raise NotImplementedError


def lengths_to_mask(lengths: Tensor, max_len: int | None = None) -> Tensor:
    """``[batch]`` lengths -> ``[batch, max_len]`` bool mask whose ones are a prefix."""
    max_len = int(lengths.max()) if max_len is None and len(lengths) else (max_len or 0)
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]
