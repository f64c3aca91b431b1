"""A transformer encoder trained from scratch over the BiLSTM's token features (``tagpipe.transformer.v1``).

Why: the posts we build on argue for a few transformer designs that no downloadable checkpoint
gives us here: rotary positions (RoFormer), RoFormerV2's simplifications (no biases, RMSNorm
without a gain, post-norm), the single-head Gated Attention Unit with ``relu^2`` or a
``log n``-scaled softmax (GAU-alpha), and DeepNet's DeepNorm for deep post-norm stacks. Each is a
config switch here, so they can be compared with the BiLSTM and ID-CNN on the same features
(:mod:`~tagpipe.plugins.encoders.word_features`). The parts live in
:mod:`~tagpipe.plugins.encoders.attention_blocks`; docs/encoders.md explains the options.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from tagpipe.components import lengths_to_mask
from tagpipe.errors import ConfigValueError
from tagpipe.model_folder import Field
from tagpipe.plugins.encoders.attention_blocks import (
    ATTENTIONS,
    NORMS,
    POSITIONS,
    FeedForward,
    GatedAttentionUnit,
    MultiHeadAttention,
    RMSNorm,
    deepnorm_constants,
    init_linear,
    log_n_scale,
    rope_tables,
)
from tagpipe.plugins.encoders.word_features import FeatureConfig, WordFeatureEncoder


@dataclass
class TransformerConfig(FeatureConfig):
    """The token features' hyper-parameters, and the transformer's (docs/encoders.md)."""

    kind: ClassVar[str] = "transformer"
    extra_fields: ClassVar[dict[str, Field]] = {
        "attention": Field((str,), choices=ATTENTIONS),
        "log_n": Field((bool,)),
        "train_length": Field((int,), low=2, high=1_000_000),
        "positions": Field((str,), choices=POSITIONS),
        "max_positions": Field((int,), low=1, high=1_000_000),
        "rope_base": Field((float,), low=1),
        "norm": Field((str,), choices=NORMS),
        "norm_gain": Field((bool,)),
        "bias": Field((bool,)),
        "layers": Field((int,), low=1, high=256),
        "width": Field((int,), low=2, high=16_384),
        "heads": Field((int,), low=1, high=256),
        "ffn": Field((int, None), low=1, high=65_536),
        "key_size": Field((int,), low=2, high=4096),
        "layer_dropout": Field((float,), low=0, high=0.99),
    }

    attention: str = "softmax"  # softmax (multi-head) | gau_relu2 | gau_softmax (one head each GAU)
    log_n: bool = False  # softmax logits times log(n) / log(train_length) (GAU-alpha's length scaling)
    train_length: int = 64  # the sentence length where the log-n factor is 1
    positions: str = "rope"  # rope (rotary, relative) | learned (absolute rows added to the input)
    max_positions: int = 512  # learned rows; later positions reuse the last row (rope has no limit)
    rope_base: float = 10_000.0
    norm: str = "pre"  # pre | post | deepnorm (post-norm with alpha-weighted residuals, beta-scaled init)
    norm_gain: bool = True  # RMSNorm's learned gain; false: RoFormerV2's parameter-free norm
    bias: bool = True  # biases of every projection; false: RoFormerV2
    layers: int = 2
    width: int = 256  # model dimension; output_dim
    heads: int = 4  # softmax attention heads (a GAU has one)
    ffn: int | None = None  # feed-forward size (None: 4 * width); a GAU's expanded size (None: 2 * width)
    key_size: int = 64  # a GAU's query/key size
    layer_dropout: float = 0.1  # on attention weights and each sublayer's output

    def check(self) -> None:
        """Combinations the field ranges cannot express, as one ``ConfigValueError`` line."""
        what = "transformer encoder config"
        if self.attention == "softmax" and self.width % self.heads:
            raise ConfigValueError(f"{what}: width {self.width} must be a multiple of heads {self.heads}")
        head = self.width // self.heads if self.attention == "softmax" else self.key_size
        if self.positions == "rope" and head % 2:
            raise ConfigValueError(f"{what}: rope needs an even head size (width / heads or key_size), not {head}")
        if self.log_n and self.attention == "gau_relu2":
            raise ConfigValueError(f"{what}: log_n scales softmax logits; attention gau_relu2 has none "
                                   "(it divides by n instead)")


class Residual(nn.Module):
    """A sublayer with its norm and residual: pre ``x + f(N(x))``, post ``N(x + f(x))``, deepnorm ``N(a x + f(x))``."""

    def __init__(self, sublayer: nn.Module, width: int, norm: str, gain: bool, alpha: float, dropout: float) -> None:
        super().__init__()
        self.sublayer, self.mode, self.alpha = sublayer, norm, alpha
        self.norm = RMSNorm(width, gain)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor, rope: tuple[Tensor, Tensor] | None, scale: Tensor | None) -> Tensor:
        if self.mode == "pre":
            return x + self.dropout(self.sublayer(self.norm(x), mask, rope, scale))
        residual = x * self.alpha if self.mode == "deepnorm" else x
        return self.norm(residual + self.dropout(self.sublayer(x, mask, rope, scale)))  # shape: [B, T, D]


class TransformerEncoder(WordFeatureEncoder):
    """Features -> projection (+ learned positions) -> ``layers`` blocks -> dropout: ``[B, T, width]``.

    Padding keys are masked in every attention and ``n`` (relu^2's divisor, the log-n factor) is each
    sentence's own length, so a sentence's outputs do not depend on what it is batched with; rows past
    a sentence's length are zero.
    """

    config_class = TransformerConfig
    cfg: TransformerConfig

    def __init__(self, cfg: TransformerConfig, *args: Any, **kwargs: Any) -> None:
        cfg.check()
        super().__init__(cfg, *args, **kwargs)
        width = cfg.width
        self.project = nn.Linear(self.input_dim, width, bias=cfg.bias)
        init_linear(self.project)
        self.position_embed = None
        if cfg.positions == "learned":
            self.position_embed = nn.Embedding(cfg.max_positions, width)
            nn.init.normal_(self.position_embed.weight, std=0.02)
        gau = cfg.attention != "softmax"
        alpha, beta = deepnorm_constants(cfg.layers, 1 if gau else 2) if cfg.norm == "deepnorm" else (1.0, 1.0)
        blocks: list[Residual] = []
        for _ in range(cfg.layers):
            if gau:
                sublayers: list[nn.Module] = [GatedAttentionUnit(
                    width, cfg.ffn or 2 * width, cfg.key_size, cfg.bias, cfg.layer_dropout,
                    rope=cfg.positions == "rope", normalization=cfg.attention.removeprefix("gau_"))]
            else:
                sublayers = [MultiHeadAttention(width, cfg.heads, cfg.bias, cfg.layer_dropout, cfg.positions == "rope"),
                             FeedForward(width, cfg.ffn or 4 * width, cfg.bias, cfg.layer_dropout)]
            for sublayer in sublayers:
                sublayer.reset_parameters(beta)
                blocks.append(Residual(sublayer, width, cfg.norm, cfg.norm_gain, alpha, cfg.layer_dropout))
        self.blocks = nn.ModuleList(blocks)
        self.final_norm = RMSNorm(width, cfg.norm_gain) if cfg.norm == "pre" else None  # post-norm ends normed
        self.output_dim = width
        self._rope_dim = cfg.key_size if gau else width // cfg.heads
        self._checkpointing = False

    def enable_grad_checkpointing(self) -> bool:
        """Recompute each block's activations in the backward pass (non-reentrant checkpoints)."""
        self._checkpointing = True
        return True

    def forward(self, features: dict[str, Tensor]) -> Tensor:
        """``[B, T, width]``; rows are zero past each sentence's length."""
        word_ids, lengths = features["word_ids"], features["lengths"]
        batch, seq = word_ids.shape
        if batch == 0 or seq == 0:
            return self.word_embed.weight.new_zeros(batch, seq, self.output_dim)
        lengths = lengths.to(word_ids.device)
        mask = lengths_to_mask(lengths, seq)  # shape: [B, T]
        x = self.project(self.embed(features))  # shape: [B, T, width]
        if self.position_embed is not None:
            positions = torch.arange(seq, device=x.device).clamp(max=self.cfg.max_positions - 1)
            x = x + self.position_embed(positions)[None]
        rope = None
        if self.cfg.positions == "rope":
            rope = rope_tables(seq, self._rope_dim, self.cfg.rope_base, x.device)  # shapes: [T, d], [T, d]
        scale = log_n_scale(lengths, self.cfg.train_length) if self.cfg.log_n else None  # shape: [B]
        for block in self.blocks:
            if self._checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(block, x, mask, rope, scale, use_reentrant=False)
            else:
                x = block(x, mask, rope, scale)
        if self.final_norm is not None:
            x = self.final_norm(x)
        return self._dropout(x).masked_fill(~mask[:, :, None], 0.0)  # shape: [B, T, width]
