"""An iterated dilated CNN encoder (``tagpipe.idcnn.v1``; Strubell et al. 2017) over the BiLSTM's token features.

Why: a BiLSTM walks the sentence one token at a time; convolutions see every position at once,
so prediction on CPU is several times faster at similar accuracy. A block of width-3 convolutions
with growing dilations (1, 1, 2 by default) sees 9 tokens; the same block applied ``iterations``
times (shared weights: the "iterated" in ID-CNN, few parameters, little overfitting) widens the
view to ``1 + 8 * iterations`` tokens. Padding is zeroed before every convolution, so a sentence
reads the same whatever it is batched with.

Differences from the paper, chosen for a short CPU schedule: each convolution is residual
(``x + relu(conv(x))``), which trains reliably from scratch at the learning rates our BiLSTM
recipe uses, and the decoder reads the last iteration only (no per-iteration loss).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from tagpipe.components import lengths_to_mask
from tagpipe.model_folder import Field
from tagpipe.plugins.encoders.word_features import FeatureConfig, WordFeatureEncoder


@dataclass
class IDCNNConfig(FeatureConfig):
    """The token features' hyper-parameters, and the dilated convolutions'."""

    kind: ClassVar[str] = "idcnn"
    extra_fields: ClassVar[dict[str, Field]] = {
        "filters": Field((int,), low=1, high=16_384),
        "kernel_size": Field((int,), low=1, high=63),
        "dilations": Field((list,), items=int),
        "iterations": Field((int,), low=1, high=64),
    }

    filters: int = 300  # channels of every convolution, and the output size
    kernel_size: int = 3  # odd: centred on the token
    dilations: list[int] = field(default_factory=lambda: [1, 1, 2])
    iterations: int = 4  # times the block runs, with the same weights


class IDCNNEncoder(WordFeatureEncoder):
    """Features -> width-``kernel_size`` projection -> the dilated block, ``iterations`` times: ``[B, T, filters]``."""

    config_class = IDCNNConfig
    cfg: IDCNNConfig

    def __init__(self, cfg: IDCNNConfig, *args: Any, **kwargs: Any) -> None:
        if cfg.kernel_size % 2 == 0:
            raise ValueError(f"idcnn encoder config: kernel_size must be odd, not {cfg.kernel_size}")
        if not cfg.dilations or any(d < 1 or d > 256 for d in cfg.dilations):
            raise ValueError(f"idcnn encoder config: dilations must be 1 to 256, not {cfg.dilations}")
        super().__init__(cfg, *args, **kwargs)
        pad = cfg.kernel_size // 2
        self.project = nn.Conv1d(self.input_dim, cfg.filters, cfg.kernel_size, padding=pad)
        self.block = nn.ModuleList(
            nn.Conv1d(cfg.filters, cfg.filters, cfg.kernel_size, dilation=d, padding=pad * d) for d in cfg.dilations
        )
        self.output_dim = cfg.filters

    def forward(self, features: dict[str, Tensor]) -> Tensor:
        """``[B, T, filters]``; rows are zero past each sentence's length."""
        word_ids, lengths = features["word_ids"], features["lengths"]
        batch, seq = word_ids.shape
        if batch == 0 or seq == 0:
            return self.word_embed.weight.new_zeros(batch, seq, self.output_dim)
        keep = lengths_to_mask(lengths.to(word_ids.device), seq).unsqueeze(1)  # shape: [B, 1, T]
        x = self.embed(features).transpose(1, 2) * keep  # shape: [B, input_dim, T]
        h = torch.relu(self.project(x)) * keep  # shape: [B, filters, T]
        for _ in range(self.cfg.iterations):
            for conv in self.block:
                h = (h + torch.relu(conv(self._dropout_channels(h)))) * keep
        return self._dropout(h.transpose(1, 2))  # shape: [B, T, filters]

    def _dropout_channels(self, h: Tensor) -> Tensor:
        """Dropout inside the block, at a third of the feature dropout (the block runs many times)."""
        return nn.functional.dropout(h, self.cfg.dropout / 3, self.training)
