"""The maths of the transformer's parts, each against a reference written out here (issue 20)."""

from __future__ import annotations

import math

import pytest
import torch

from tagpipe.plugins.encoders.attention_blocks import (
    GatedAttentionUnit,
    MultiHeadAttention,
    RMSNorm,
    apply_rope,
    deepnorm_constants,
    log_n_scale,
    rope_tables,
)


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def rotated(x: torch.Tensor, position: int, base: float = 10_000.0) -> torch.Tensor:
    """``x`` ``[d]`` rotated pair by pair, written out: pair ``(i, i + d/2)`` turns by ``t * base^(-2i/d)``."""
    d = x.numel()
    out = x.clone()
    for i in range(d // 2):
        angle = position * base ** (-2 * i / d)
        a, b = x[i].item(), x[i + d // 2].item()
        out[i] = a * math.cos(angle) - b * math.sin(angle)
        out[i + d // 2] = a * math.sin(angle) + b * math.cos(angle)
    return out


def test_rope_rotates_each_pair_by_its_angle():
    torch.manual_seed(0)
    x = torch.randn(7, 8, dtype=torch.float64)
    cos, sin = rope_tables(7, 8)
    got = apply_rope(x, cos.double(), sin.double())
    expected = torch.stack([rotated(x[t], t) for t in range(7)])
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(got.norm(dim=-1), x.norm(dim=-1))  # a rotation keeps lengths


@pytest.mark.parametrize("shift", [1, 5, 40, 333])
def test_rope_scores_depend_only_on_the_relative_offset(shift):
    torch.manual_seed(1)
    q, k = torch.randn(16), torch.randn(16)
    cos, sin = rope_tables(400, 16)

    def score(s: int, t: int) -> float:
        return float(apply_rope(q, cos[s], sin[s]) @ apply_rope(k, cos[t], sin[t]))

    for s, t in [(0, 3), (2, 9), (7, 1), (11, 11)]:
        assert score(s + shift, t + shift) == pytest.approx(score(s, t), abs=1e-5)
    assert score(0, 3) != pytest.approx(score(0, 9), abs=1e-3)  # and the offset does matter


def test_rope_needs_an_even_size():
    with pytest.raises(ValueError, match="even"):
        rope_tables(4, 7)


def test_rmsnorm_without_gain_has_unit_rms_and_no_parameters():
    norm = RMSNorm(32, gain=False)
    x = torch.randn(3, 5, 32) * 7 + 2
    rms = norm(x).pow(2).mean(-1).sqrt()
    torch.testing.assert_close(rms, torch.ones(3, 5), atol=1e-4, rtol=0)
    assert list(norm.parameters()) == []
    with_gain = RMSNorm(32, gain=True)
    with torch.no_grad():
        with_gain.weight.fill_(3.0)
    torch.testing.assert_close(with_gain(x), 3 * norm(x))


@pytest.mark.parametrize("layers", [1, 6, 12, 24, 48])
def test_deepnorm_constants_are_deepnets_encoder_values(layers):
    alpha, beta = deepnorm_constants(layers)
    assert alpha == pytest.approx((2 * layers) ** 0.25)
    assert beta == pytest.approx((8 * layers) ** -0.25)
    assert deepnorm_constants(layers, sublayers_per_layer=1) == pytest.approx((layers**0.25, (4 * layers) ** -0.25))


def test_deepnorm_constants_for_a_24_layer_encoder():
    alpha, beta = deepnorm_constants(24)
    assert (round(alpha, 4), round(beta, 4)) == (2.6321, 0.2686)  # 48^(1/4), 192^(-1/4)


def test_log_n_scale_is_one_at_the_training_length_and_grows_beyond():
    scale = log_n_scale(torch.tensor([64, 128, 32, 1]), train_length=64)
    assert scale[0].item() == pytest.approx(1.0)
    assert scale[1].item() == pytest.approx(math.log(128) / math.log(64)) and scale[1] > 1
    assert scale[2] < 1
    assert scale[3].item() == pytest.approx(math.log(2) / math.log(64))  # n < 2 reads as 2: never zero


def gau_reference(gau: GatedAttentionUnit, x: torch.Tensor, length: int, log_n: float | None) -> torch.Tensor:
    """GAU on one sentence ``x`` ``[T, D]`` (its first ``length`` rows real), written out token by token."""
    e, s = gau.expand, gau.key_size
    w, b = gau.uvz.weight, gau.uvz.bias
    x = x[:length]
    h = torch.nn.functional.silu(x @ w.T + (b if b is not None else 0))
    u, v, z = h[:, :e], h[:, e : 2 * e], h[:, 2 * e :]
    q, k = z * gau.gamma[0] + gau.beta[0], z * gau.gamma[1] + gau.beta[1]
    if gau.rope:
        q = torch.stack([rotated(q[t], t) for t in range(length)])
        k = torch.stack([rotated(k[t], t) for t in range(length)])
    out = torch.zeros(length, x.shape[1], dtype=x.dtype)
    for m in range(length):
        logits = torch.stack([q[m] @ k[n] / math.sqrt(s) for n in range(length)])
        if gau.normalization == "relu2":
            weights = torch.relu(logits) ** 2 / length
        else:
            weights = torch.softmax(logits * (log_n if log_n is not None else 1.0), dim=0)
        mixed = sum(weights[n] * v[n] for n in range(length))
        out[m] = (u[m] * mixed) @ gau.out.weight.T + (gau.out.bias if gau.out.bias is not None else 0)
    return out


@pytest.mark.parametrize(("normalization", "rope", "bias", "log_n"), [
    ("relu2", True, False, False), ("relu2", False, True, False), ("softmax", True, False, True),
    ("softmax", False, True, False),
])  # fmt: skip
def test_gau_equals_the_written_out_reference(normalization, rope, bias, log_n):
    torch.manual_seed(2)
    gau = GatedAttentionUnit(12, 10, 8, bias, 0.0, rope, normalization).double().eval()
    with torch.no_grad():
        gau.beta.normal_()  # nonzero offsets, so q and k differ
    x = torch.randn(2, 6, 12, dtype=torch.float64)
    lengths = torch.tensor([6, 4])
    mask = torch.arange(6)[None, :] < lengths[:, None]
    rope_cs = tuple(t.double() for t in rope_tables(6, 8)) if rope else None
    scale = log_n_scale(lengths, 5).double() if log_n else None
    with torch.no_grad():
        got = gau(x, mask, rope_cs, scale)
        for row, length in enumerate(lengths.tolist()):
            factor = math.log(length) / math.log(5) if log_n else None
            torch.testing.assert_close(got[row, :length], gau_reference(gau, x[row], length, factor))


def test_multi_head_attention_equals_per_head_softmax_with_masked_keys():
    torch.manual_seed(3)
    mha = MultiHeadAttention(8, 2, True, 0.0, rope=True).double().eval()
    x = torch.randn(1, 5, 8, dtype=torch.float64)
    mask = torch.tensor([[True, True, True, False, False]])
    with torch.no_grad():
        got = mha(x, mask, tuple(t.double() for t in rope_tables(5, 4)), None)[0, :3]
        q, k, v = mha.query(x[0, :3]), mha.key(x[0, :3]), mha.value(x[0, :3])  # padding never read
        heads = []
        for h in range(2):
            cols = slice(4 * h, 4 * h + 4)
            qh = torch.stack([rotated(q[t, cols], t) for t in range(3)])
            kh = torch.stack([rotated(k[t, cols], t) for t in range(3)])
            heads.append(torch.softmax(qh @ kh.T / 2.0, dim=-1) @ v[:, cols])
        expected = mha.out(torch.cat(heads, dim=-1))
    torch.testing.assert_close(got, expected)
