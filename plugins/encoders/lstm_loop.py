"""Running a bidirectional ``nn.LSTM`` over a batch of sentences of different lengths.

Two ways, one result (zeros past each row's length; the backward direction starts at each row's
own last token), chosen by :func:`run_bilstm`:

- training, GPUs and fp16: one packed sequence (cuDNN on a GPU);
- CPU inference, fp32 or bf16: :func:`run_bilstm_rows`, a step loop that projects each *distinct*
  input row once (a sentence batch repeats most of its words) and runs both directions in one
  batched matrix product per step.
"""

from __future__ import annotations

import weakref

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence


def run_bilstm(lstm: nn.LSTM, x: Tensor, lengths: Tensor) -> Tensor:
    """``lstm`` (bidirectional, batch-first) over ``x`` ``[B, T, D]`` whose rows have ``lengths``:
    ``[B, T, 2H]``, zeros past each row's length.

    CPU inference (fp32, or bf16 autocast) takes :func:`run_bilstm_rows`: faster than packed
    sequences with a row per token, more so with distinct rows (``BiLSTMEncoder`` passes those;
    docs/benchmarks.md has the figures), with the same outputs within 1e-6. Everything else
    (training, GPUs, fp16) runs one packed sequence.
    """
    if uses_step_loop(lstm, x):
        real = _real_steps(lengths.to(x.device), x.shape[1])  # shape: [B, T]
        index = torch.zeros(real.shape, dtype=torch.long, device=x.device)
        index[real] = torch.arange(int(real.sum()), device=x.device)
        return run_bilstm_rows(lstm, x[real], index, lengths)
    packed = pack_padded_sequence(x, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False)
    out, _ = lstm(packed)
    out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
    if bool((lengths == 0).any()):  # an empty row ran one padding step: blank it
        out = out * (lengths.to(out.device) > 0)[:, None, None]
    return out


def uses_step_loop(lstm: nn.LSTM, x: Tensor) -> bool:
    """Whether :func:`run_bilstm` runs :func:`run_bilstm_rows` for input like ``x`` (so a caller
    that knows its distinct rows may call that directly): CPU inference of an fp32 LSTM, in fp32
    or under bf16 autocast."""
    if x.device.type != "cpu" or torch.is_grad_enabled() or lstm.weight_ih_l0.dtype != torch.float32:
        return False
    if torch.is_autocast_enabled("cpu"):
        return torch.get_autocast_dtype("cpu") == torch.bfloat16
    return x.dtype == torch.float32


def run_bilstm_rows(lstm: nn.LSTM, rows: Tensor, index: Tensor, lengths: Tensor) -> Tensor:
    """:func:`run_bilstm` for inference, reading token ``(b, t)``'s input from ``rows[index[b, t]]``.

    ``rows`` ``[R, D]`` may hold each distinct input once: the input projection (nearly half of an
    LSTM's arithmetic) is computed per row, for both directions in one matrix product, and each
    step only gathers its gates. Rows are sorted longest first, so the sentences still running at
    step ``t`` are a prefix and padding is never computed. Both directions advance together
    through one batched product with the recurrent weights, and all four gates go through one
    sigmoid (``tanh z = 2 sigmoid(2z) - 1``, with the cell gate's weights doubled beforehand:
    ``tanh`` is several times slower than ``sigmoid`` on CPUs). Under autocast the matrix products
    run in its dtype while gates and cell state stay fp32. Returns ``[B, T, 2H]``, fp32.
    """
    batch, steps = index.shape
    hidden = lstm.hidden_size
    if batch == 0 or steps == 0:
        return rows.new_zeros(batch, steps, 2 * hidden)
    low = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None  # the products' dtype
    lengths = lengths.to(rows.device).clamp(max=steps)
    real = _real_steps(lengths, steps)  # shape: [B, T]
    with torch.autocast("cpu", enabled=False):
        out = _bilstm_layer(_fused_weights(lstm, 0, low), rows.float(), index, lengths, real)
        every_token = torch.arange(batch * steps, device=rows.device).view(batch, steps)
        for layer in range(1, lstm.num_layers):  # later layers read the previous one's outputs, a row per token
            out = _bilstm_layer(_fused_weights(lstm, layer, low), out.view(batch * steps, 2 * hidden), every_token,
                                lengths, real)
    return out


def _bilstm_layer(weights: tuple[Tensor, Tensor, Tensor], rows: Tensor, index: Tensor, lengths: Tensor,
                  real: Tensor) -> Tensor:
    """One layer of :func:`run_bilstm_rows`, both directions: ``[B, T, 2H]``."""
    w_ih, bias, w_hh = weights  # shapes: [D, 8H], [8H], [2, H, 4H]; the matrices fp32 or bf16
    low = w_hh.dtype if w_hh.dtype != torch.float32 else None
    hidden = w_hh.shape[1]
    batch, steps = index.shape
    order = torch.argsort(lengths, descending=True, stable=True)  # shape: [B]
    rank = torch.empty_like(order)
    rank[order] = torch.arange(batch, device=order.device)  # shape: [B]; a row's place in ``order``
    flip = _flip_within_length(lengths, real)  # shape: [B, T]
    if low is None:
        gates = torch.addmm(bias, rows, w_ih)  # shape: [R, 8H]
    else:
        gates = torch.mm(rows.to(low), w_ih).float().add_(bias)
    gates = gates.view(-1, 4 * hidden)  # shape: [2R, 4H]; row r: 2r forward, 2r+1 backward
    sorted_index, sorted_flip = index[order], flip[order]
    gate_rows = torch.stack([sorted_index * 2, sorted_index.gather(1, sorted_flip) * 2 + 1])  # shape: [2, B, T]
    gate_rows = gate_rows.permute(2, 0, 1).contiguous()  # shape: [T, 2, B]
    running = (lengths[None, :] > torch.arange(steps, device=rows.device)[:, None]).sum(1).tolist()  # per step

    out = rows.new_empty(steps * 2 * batch + 1, hidden)  # every step's h; the last row stays 0 for padding
    out[-1] = 0.0
    h = out[:-1].view(steps, 2, batch, hidden)
    cell = rows.new_zeros(2, batch, hidden)
    step_gates = rows.new_empty(2 * batch, 4 * hidden)
    scratch = rows.new_empty(2, batch, hidden)
    for t, n in enumerate(running):
        if n == 0:
            break
        g = torch.index_select(gates, 0, gate_rows[t, :, :n].reshape(-1), out=step_gates[: 2 * n])
        g = g.view(2, n, 4 * hidden)
        if t and low is None:
            g.baddbmm_(h[t - 1, :, :n], w_hh)
        elif t:  # bf16 products, fp32 gates and cell: the state keeps its precision
            g.add_(torch.bmm(h[t - 1, :, :n].to(low), w_hh))
        g.sigmoid_()  # gate order i, f, o, g (see _fused_weights)
        candidate = g[..., 3 * hidden :].mul_(2).sub_(1)  # tanh of the cell input
        c = cell[:, :n]
        c.mul_(g[..., hidden : 2 * hidden]).addcmul_(g[..., :hidden], candidate)
        tanh_c = torch.mul(c, 2, out=scratch[:, :n]).sigmoid_().mul_(2).sub_(1)
        torch.mul(g[..., 2 * hidden : 3 * hidden], tanh_c, out=h[t, :, :n])

    position = torch.arange(steps, device=rows.device)[None, :]
    forward = position * (2 * batch) + rank[:, None]  # shape: [B, T]
    backward = flip * (2 * batch) + batch + rank[:, None]  # shape: [B, T]
    padding = out.shape[0] - 1
    where = torch.stack([forward.masked_fill(~real, padding), backward.masked_fill(~real, padding)], 2)
    return out.index_select(0, where.view(-1)).view(batch, steps, 2 * hidden)


_FUSED: weakref.WeakKeyDictionary[nn.LSTM, dict] = weakref.WeakKeyDictionary()


def _fused_weights(lstm: nn.LSTM, layer: int, low: torch.dtype | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Layer ``layer``'s weights as :func:`_bilstm_layer` reads them, cached until a parameter changes.

    ``w_ih`` ``[D, 8H]`` (forward then backward), the two biases summed ``[8H]``, ``w_hh`` ``[2, H, 4H]``;
    gates reordered to i, f, o, g and the cell gate's rows doubled (its tanh comes from a sigmoid).
    With ``low`` the two matrices are cast to it; the bias stays fp32.
    """
    params = [getattr(lstm, f"{name}_l{layer}{suffix}") for suffix in ("", "_reverse")
              for name in ("weight_ih", "weight_hh", *(("bias_ih", "bias_hh") if lstm.bias else ()))]
    key = tuple((p.data_ptr(), p._version) for p in params)
    cache = _FUSED.setdefault(lstm, {})
    if cache.get((layer, low), (None,))[0] != key:
        with torch.no_grad():
            w_ih, bias, w_hh = _fuse(lstm, layer)
            cache[(layer, low)] = (key, (w_ih.to(low), bias, w_hh.to(low)) if low else (w_ih, bias, w_hh))
    return cache[(layer, low)][1]


def _fuse(lstm: nn.LSTM, layer: int) -> tuple[Tensor, Tensor, Tensor]:
    hidden, device = lstm.hidden_size, lstm.weight_ih_l0.device
    gate = torch.arange(4 * hidden, device=device)
    order = torch.cat([gate[: 2 * hidden], gate[3 * hidden :], gate[2 * hidden : 3 * hidden]])  # i f g o -> i f o g
    scale = torch.ones(4 * hidden, device=device)
    scale[3 * hidden :] = 2.0
    w_ih, w_hh, bias = [], [], []
    for suffix in ("", "_reverse"):
        weights = _direction_weights(lstm, layer, suffix)
        w_ih.append(weights[0][order] * scale[:, None])
        w_hh.append((weights[1][order] * scale[:, None]).t())
        summed = weights[2] + weights[3] if lstm.bias else torch.zeros_like(scale)
        bias.append(summed[order] * scale)
    return torch.cat(w_ih).t().contiguous(), torch.cat(bias), torch.stack(w_hh).contiguous()


def _real_steps(lengths: Tensor, steps: int) -> Tensor:
    """``[B, T]``: True at each row's tokens."""
    return torch.arange(steps, device=lengths.device)[None, :] < lengths[:, None]


def _flip_within_length(lengths: Tensor, real: Tensor) -> Tensor:
    """``[B, T]``: step ``t`` of a row read backwards within its length (padding stays in place)."""
    position = torch.arange(real.shape[1], device=real.device)[None, :]
    return torch.where(real, lengths[:, None] - 1 - position, position)


def _direction_weights(lstm: nn.LSTM, layer: int, suffix: str) -> list[Tensor]:
    names = ["weight_ih", "weight_hh"] + (["bias_ih", "bias_hh"] if lstm.bias else [])
    return [getattr(lstm, f"{name}_l{layer}{suffix}") for name in names]
