"""The parts of the transformer encoder: RMSNorm, rotary positions, multi-head and gated attention, DeepNorm.

Each part is a small function or module with the formula in its docstring, so the tests in
``tests/test_encoders_attention_blocks.py`` can pin it against a written-out reference:

- :class:`RMSNorm`: ``x / rms(x)``, with or without a learned gain (RoFormerV2 drops the gain and the biases);
- :func:`rope_tables` / :func:`apply_rope`: rotary position embedding (RoFormer), which makes ``q . k`` a
  function of the two vectors and their *relative* offset only;
- :func:`log_n_scale`: ``log n / log train_length``, the factor GAU-alpha multiplies softmax logits by, so
  attention keeps its entropy on sentences longer (or shorter) than those it was trained on;
- :class:`MultiHeadAttention` and :class:`FeedForward`: the usual transformer sublayers;
- :class:`GatedAttentionUnit`: one head, ``relu^2`` or (log-n-scaled) softmax attention gated by a
  SiLU branch (FLASH, GAU-alpha); one GAU replaces attention + feed-forward;
- :func:`deepnorm_constants`: DeepNet's ``alpha`` (residual up-weighting) and ``beta`` (init scale).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F  # noqa: N812

#: attention choices: multi-head softmax, GAU with relu^2, GAU with the log-n-scaled softmax
ATTENTIONS = ("softmax", "gau_relu2", "gau_softmax")
POSITIONS = ("rope", "learned")
NORMS = ("pre", "post", "deepnorm")


class RMSNorm(nn.Module):
    """``x / sqrt(mean(x^2) + eps)`` over the last dimension, times a learned gain when ``gain`` is set.

    No mean is subtracted and no bias added (Zhang & Sennrich 2019); without a gain the output has unit RMS
    (RoFormerV2's choice: nothing to learn in the norm, so nothing for it to drift).
    """

    def __init__(self, dim: int, gain: bool = True, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim)) if gain else None

    def forward(self, x: Tensor) -> Tensor:
        dtype = x.dtype
        x = x.float()
        out = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)  # shape: [..., D]
        if self.weight is not None:
            out = out * self.weight.float()
        return out.to(dtype)


# -- positions ---------------------------------------------------------------------------------

def rope_tables(seq: int, dim: int, base: float = 10_000.0,
                device: torch.device | None = None) -> tuple[Tensor, Tensor]:
    """``cos`` and ``sin`` ``[T, dim]`` of the angles ``t * base^(-2i/dim)``, each angle twice (half-split).

    Dimension ``i`` and ``i + dim/2`` form a pair rotated by the angle of frequency ``i``: the GPT-NeoX
    layout of RoFormer's interleaved pairs, the same maths with contiguous halves.
    """
    if dim % 2:
        raise ValueError(f"rotary positions need an even head size, got {dim}")
    freqs = base ** (-torch.arange(0, dim, 2, device=device, dtype=torch.float32) / dim)  # shape: [dim / 2]
    angles = torch.arange(seq, device=device, dtype=torch.float32)[:, None] * freqs[None, :]  # shape: [T, dim / 2]
    angles = torch.cat([angles, angles], dim=-1)  # shape: [T, dim]
    return angles.cos(), angles.sin()


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """``x`` ``[..., T, dim]`` with each pair ``(x_i, x_{i+dim/2})`` rotated by its angle at position ``t``.

    ``R_s q . R_t k = q . R_{t-s} k``: a dot product of rotated vectors depends on the offset ``t - s`` only.
    """
    half = x.shape[-1] // 2
    work = torch.promote_types(x.dtype, cos.dtype)  # at least the tables' fp32, also under bf16 autocast
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)  # shape: [..., T, dim]
    return (x.to(work) * cos + rotated.to(work) * sin).to(x.dtype)


def log_n_scale(lengths: Tensor, train_length: int) -> Tensor:
    """``[B]`` factors ``log(n) / log(train_length)`` for sentences of ``n`` tokens (1 at the training length).

    Softmax attention over ``n`` keys spreads thinner as ``n`` grows; multiplying the logits by ``log n``
    keeps its entropy roughly constant (Su 2021, "softmax_plus" of GAU-alpha). Lengths below 2 read as 2.
    """
    return lengths.clamp(min=2).float().log() / math.log(train_length)


def deepnorm_constants(layers: int, sublayers_per_layer: int = 2) -> tuple[float, float]:
    """DeepNet's ``(alpha, beta)`` for an encoder of ``layers`` layers (Wang et al. 2022, encoder-only).

    With ``M = layers * sublayers_per_layer`` residual sublayers: ``alpha = M^(1/4)``, ``beta = (4M)^(-1/4)``;
    for the usual two sublayers per layer that is ``alpha = (2N)^(1/4)``, ``beta = (8N)^(-1/4)``. A GAU layer is
    one sublayer, so a GAU stack passes 1.
    """
    sublayers = layers * sublayers_per_layer
    return sublayers**0.25, (4 * sublayers) ** -0.25


def key_padding_bias(mask: Tensor, dtype: torch.dtype) -> Tensor:
    """``[B, 1, 1, T]`` additive bias: 0 at real keys, the dtype's most negative value at padding.

    A finite value, not ``-inf``: an empty sentence (every key padding) gets a uniform row, not NaN.
    """
    bias = torch.zeros(mask.shape, dtype=dtype, device=mask.device)
    return bias.masked_fill(~mask, torch.finfo(dtype).min)[:, None, None, :]


# -- sublayers ---------------------------------------------------------------------------------

class MultiHeadAttention(nn.Module):
    """Softmax attention with ``heads`` heads; rotary positions when ``rope`` (queries and keys only)."""

    def __init__(self, dim: int, heads: int, bias: bool, dropout: float, rope: bool) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"width {dim} is not a multiple of heads {heads}")
        self.heads, self.head_dim, self.rope, self.dropout = heads, dim // heads, rope, dropout
        self.query = nn.Linear(dim, dim, bias=bias)
        self.key = nn.Linear(dim, dim, bias=bias)
        self.value = nn.Linear(dim, dim, bias=bias)
        self.out = nn.Linear(dim, dim, bias=bias)
        self.reset_parameters()

    def reset_parameters(self, beta: float = 1.0) -> None:
        """Xavier-normal; DeepNorm's ``beta`` scales the value and output projections, not queries and keys."""
        for layer, gain in ((self.query, 1.0), (self.key, 1.0), (self.value, beta), (self.out, beta)):
            init_linear(layer, gain)

    def forward(self, x: Tensor, mask: Tensor, rope: tuple[Tensor, Tensor] | None, scale: Tensor | None) -> Tensor:
        """``x`` ``[B, T, D]``, ``mask`` ``[B, T]``; ``scale`` ``[B]`` multiplies the logits (log-n), or None."""
        batch, seq, dim = x.shape

        def split(t: Tensor) -> Tensor:
            return t.view(batch, seq, self.heads, self.head_dim).transpose(1, 2)  # shape: [B, H, T, d]

        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        if scale is not None:
            q = q * scale.to(q.dtype)[:, None, None, None]
        bias = key_padding_bias(mask, q.dtype)  # shape: [B, 1, 1, T]
        p = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=p)  # shape: [B, H, T, d]
        return self.out(out.transpose(1, 2).reshape(batch, seq, dim))


class FeedForward(nn.Module):
    """``W2 gelu(W1 x)``: the position-wise sublayer after multi-head attention."""

    def __init__(self, dim: int, hidden: int, bias: bool, dropout: float) -> None:
        super().__init__()
        self.up = nn.Linear(dim, hidden, bias=bias)
        self.down = nn.Linear(hidden, dim, bias=bias)
        self.dropout = nn.Dropout(dropout)
        self.reset_parameters()

    def reset_parameters(self, beta: float = 1.0) -> None:
        init_linear(self.up, beta)
        init_linear(self.down, beta)

    def forward(self, x: Tensor, mask: Tensor, rope: tuple[Tensor, Tensor] | None, scale: Tensor | None) -> Tensor:
        return self.down(self.dropout(F.gelu(self.up(x))))  # shape: [B, T, D]


class GatedAttentionUnit(nn.Module):
    """One-head gated attention (Hua et al. 2022, FLASH; Su's GAU-alpha), in place of attention + FFN.

    ``u = silu(x Wu)``, ``v = silu(x Wv)`` ``[B, T, E]``; ``z = silu(x Wz)`` ``[B, T, S]``; per-dimension
    scale and offset make ``q = z * g_q + b_q`` and ``k = z * g_k + b_k`` (rotated by RoPE);
    ``a = q k^T / sqrt(S)``; ``A = relu(a)^2 / n`` (``gau_relu2``, ``n`` the sentence's real tokens) or
    ``softmax(scale * a)`` over real keys (``gau_softmax``, ``scale = log n / log train_length`` or 1);
    the output is ``(u * (A v)) Wo``.
    """

    def __init__(self, dim: int, expand: int, key_size: int, bias: bool, dropout: float, rope: bool,
                 normalization: str) -> None:
        super().__init__()
        if normalization not in ("relu2", "softmax"):
            raise ValueError(f"GAU normalization must be relu2 or softmax, got {normalization!r}")
        self.expand, self.key_size, self.rope, self.normalization = expand, key_size, rope, normalization
        self.uvz = nn.Linear(dim, 2 * expand + key_size, bias=bias)
        self.gamma = nn.Parameter(torch.ones(2, key_size))  # q and k scales
        self.beta = nn.Parameter(torch.zeros(2, key_size))  # q and k offsets
        self.out = nn.Linear(expand, dim, bias=bias)
        self.dropout = nn.Dropout(dropout)
        self.reset_parameters()

    def reset_parameters(self, beta: float = 1.0) -> None:
        """Xavier-normal; DeepNorm's ``beta`` scales the ``u`` and ``v`` rows and the output, not ``z`` (q/k)."""
        init_linear(self.uvz)
        with torch.no_grad():
            self.uvz.weight[: 2 * self.expand] *= beta
        init_linear(self.out, beta)
        nn.init.normal_(self.gamma, mean=1.0, std=0.02)  # FLASH: q and k start as near-copies of z, not equal
        nn.init.zeros_(self.beta)

    def forward(self, x: Tensor, mask: Tensor, rope: tuple[Tensor, Tensor] | None, scale: Tensor | None) -> Tensor:
        """``x`` ``[B, T, D]``, ``mask`` ``[B, T]`` -> ``[B, T, D]``; ``scale`` ``[B]`` is the log-n factor or None."""
        u, v, z = F.silu(self.uvz(x)).split([self.expand, self.expand, self.key_size], dim=-1)
        q = z * self.gamma[0] + self.beta[0]  # shape: [B, T, S]
        k = z * self.gamma[1] + self.beta[1]  # shape: [B, T, S]
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        a = torch.einsum("bms,bns->bmn", q, k) / math.sqrt(self.key_size)  # shape: [B, T, T]
        keys = mask[:, None, :]  # shape: [B, 1, T]
        if self.normalization == "relu2":
            n = mask.sum(-1).clamp(min=1).to(a.dtype)[:, None, None]  # shape: [B, 1, 1]
            attn = F.relu(a).square().masked_fill(~keys, 0.0) / n
        else:
            if scale is not None:
                a = a * scale.to(a.dtype)[:, None, None]
            attn = a.masked_fill(~keys, torch.finfo(a.dtype).min).softmax(-1)
        attn = self.dropout(attn)
        return self.out(u * torch.einsum("bmn,bne->bme", attn, v))  # shape: [B, T, D]


def init_linear(layer: nn.Linear, gain: float = 1.0) -> None:
    """Xavier-normal weights with ``gain`` (DeepNorm's ``beta`` for value-like projections), zero bias."""
    nn.init.xavier_normal_(layer.weight, gain=gain)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)
