"""The two ways of running the BiLSTM (packed sequences, a step loop over distinct rows) agree."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tagpipe.plugins.encoders.lstm_loop import run_bilstm, run_bilstm_rows, uses_step_loop
from tests.test_encoders_bilstm import CORPUS, build

LENGTHS = [3, 0, 1, 17, 9, 30, 2]


def packed(lstm: nn.LSTM, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """run_bilstm as training runs it: one packed sequence (gradients on)."""
    with torch.enable_grad():
        assert not uses_step_loop(lstm, x)
        return run_bilstm(lstm, x, lengths).detach()


def rows(lstm: nn.LSTM, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        assert uses_step_loop(lstm, x)
        return run_bilstm(lstm, x, lengths)


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("run", [packed, rows])
def test_each_row_reads_to_its_own_length(layers, run):
    """Each row's output equals the LSTM run on that row alone (the backward direction starts at
    the row's last token, not at the padding), and rows are zero past their length, empty rows too."""
    torch.manual_seed(1)
    lstm = nn.LSTM(5, 4, num_layers=layers, batch_first=True, bidirectional=True).eval()
    lengths = torch.tensor(LENGTHS)
    x = torch.randn(len(lengths), 30, 5)
    out = run(lstm, x, lengths)
    for row, n in enumerate(lengths.tolist()):
        if n:
            with torch.no_grad():
                alone, _ = lstm(x[row : row + 1, :n])
            torch.testing.assert_close(out[row, :n], alone[0], atol=1e-6, rtol=0)
        assert not out[row, n:].any()


def test_the_step_loop_reads_each_token_from_its_row():
    """Tokens sharing a row share its input: the result equals the per-token input ``rows[index]``."""
    torch.manual_seed(3)
    lstm = nn.LSTM(6, 5, batch_first=True, bidirectional=True).eval()
    distinct = torch.randn(4, 6)
    lengths = torch.tensor([5, 2, 0, 7])
    index = torch.randint(0, 4, (4, 7))
    with torch.no_grad():
        out = run_bilstm_rows(lstm, distinct, index, lengths)
    torch.testing.assert_close(out, packed(lstm, distinct[index], lengths), atol=1e-6, rtol=0)
    assert run_bilstm_rows(lstm, distinct, index[:0], lengths[:0]).shape == (0, 7, 10)


def test_the_step_loop_sees_weights_change():
    """The fused weights are cached, and rebuilt once a parameter is updated in place."""
    torch.manual_seed(4)
    lstm = nn.LSTM(3, 2, batch_first=True, bidirectional=True).eval()
    x, lengths = torch.randn(2, 4, 3), torch.tensor([4, 3])
    before = rows(lstm, x, lengths)
    with torch.no_grad():
        lstm.weight_hh_l0_reverse.mul_(-1.5)
    after = rows(lstm, x, lengths)
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after, packed(lstm, x, lengths), atol=1e-6, rtol=0)


def test_the_step_loop_under_bf16_autocast_stays_close_to_fp32():
    """``--precision bf16``: bf16 matrix products, fp32 gates and cell state; zero past each length."""
    torch.manual_seed(2)
    lstm = nn.LSTM(8, 6, num_layers=2, batch_first=True, bidirectional=True).eval()
    lengths = torch.tensor([5, 2, 0, 7])
    x = torch.randn(4, 7, 8)
    with torch.no_grad():
        exact = run_bilstm(lstm, x, lengths)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert uses_step_loop(lstm, x.bfloat16())
            low = run_bilstm(lstm, x.bfloat16(), lengths)
    assert low.dtype == torch.float32
    torch.testing.assert_close(low, exact, atol=0.03, rtol=0)
    assert (low - exact).abs().max() > 1e-6  # the products really ran in bf16
    assert not low[1, 2:].any() and not low[2].any()


@pytest.mark.parametrize("char_encoder", ["cnn", "lstm"])
@pytest.mark.parametrize("layers", [1, 2])
def test_encoder_inference_over_distinct_words_equals_the_packed_encoder(layers, char_encoder):
    """The encoder's CPU inference (each distinct token's input projected once) against the
    per-token packed path that training uses, on sentences that repeat words."""
    enc = build(layers=layers, char_encoder=char_encoder).eval()
    feats = enc.featurize([CORPUS[0], CORPUS[3], [], CORPUS[0][:4] + CORPUS[1]])
    with torch.no_grad():
        fast = enc(feats)
    with torch.enable_grad():
        slow = enc(feats).detach()
    torch.testing.assert_close(fast, slow, atol=1e-6, rtol=0)
    assert not fast[2].any()
