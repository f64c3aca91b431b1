"""The forward algorithm (``log Z``) and forward-backward (per-token marginals), parameter-free.

Shapes and scores are those of :mod:`~tagpipe.plugins.decoders.chain`. Forbidden transitions may
be ``-inf`` for marginals; for :func:`log_partition` gradients use a large negative *finite*
constant instead (a tag that only ``-inf`` leads to makes the gradient NaN).
"""

from __future__ import annotations

import torch
from torch import Tensor

from tagpipe.plugins.decoders.chain import (
    check_inputs,
    choose_method,
    pad_pow2,
    pairwise_steps,
    semiring_identity,
    time_major_steps,
    tree_reduce,
    working_dtype,
)

__all__ = ["log_partition", "marginals"]


def log_partition(
    emissions: Tensor, mask: Tensor, transitions: Tensor, start: Tensor, end: Tensor, method: str = "auto"
) -> Tensor:
    """``log Z`` per sequence ``[B]``: log-sum-exp of the scores of all tag sequences (forward
    algorithm). Differentiable; in float32 at least, float64 when given float64."""
    check_inputs(emissions, mask, transitions, start, end)
    dtype = working_dtype(emissions)
    emissions, transitions = emissions.to(dtype), transitions.to(dtype)
    start, end = start.to(dtype), end.to(dtype)
    # shape: [batch, tags]
    first = start + emissions[:, 0]
    if emissions.shape[1] == 1:
        return torch.logsumexp(first + end, dim=1)
    if choose_method(method, emissions, decoding=False) == "scan":
        identity = semiring_identity(emissions.shape[2], emissions)
        steps = pad_pow2(pairwise_steps(emissions, mask, transitions), identity)
        # shape: [batch, tags, tags]
        total = tree_reduce(steps, "log")
        return torch.logsumexp((first[:, :, None] + total + end).flatten(1), dim=1)
    steps = time_major_steps(emissions, mask, transitions, identity=True)
    floor = torch.finfo(dtype).min
    # shape: [tags, batch]
    alpha = first.T
    for step in steps.unbind(0):
        # log-sum-exp over the previous tag, by hand: torch.logsumexp enters a thread pool
        # at every call, which costs more than the arithmetic at these sizes.
        # shape: [tags_from, tags_to, batch]
        scores = step + alpha[:, None, :]
        # the shift carries no gradient (log-sum-exp does not depend on it)
        shift = scores.detach().amax(0).clamp_(min=floor)
        alpha = (scores - shift).exp().sum(0).log() + shift
    return torch.logsumexp(alpha + end[:, None], dim=0)


def marginals(
    emissions: Tensor, mask: Tensor, transitions: Tensor, start: Tensor, end: Tensor, method: str = "auto"
) -> Tensor:
    """Per-token tag probabilities ``[B, T, C]`` (forward-backward); rows sum to 1, padding
    positions are 0. Not differentiable; works under ``torch.inference_mode``."""
    check_inputs(emissions, mask, transitions, start, end)
    dtype = working_dtype(emissions)
    emissions, transitions = emissions.detach().to(dtype), transitions.detach().to(dtype)
    start, end = start.detach().to(dtype), end.detach().to(dtype)
    if choose_method(method, emissions, decoding=False) == "scan" and not torch.is_inference_mode_enabled():
        # the gradient of log Z with respect to the emissions
        with torch.enable_grad():
            em = emissions.requires_grad_(True)
            (grad,) = torch.autograd.grad(log_partition(em, mask, transitions, start, end, "scan").sum(), em)
        return grad
    with torch.no_grad():
        if transitions.dim() != 2:  # per-step transitions (MEMMs): no shared matrix to factor out
            return _log_forward_backward(emissions, mask, transitions, start, end)
        probs = _scaled_forward_backward(emissions, mask, transitions, start, end)
        if not bool(torch.isfinite(probs).all()):
            # every path of a row underflowed a step (scores ~90 apart in float32): log space
            probs = _log_forward_backward(emissions, mask, transitions, start, end)
        return probs


def _scaled_forward_backward(
    emissions: Tensor, mask: Tensor, transitions: Tensor, start: Tensor, end: Tensor
) -> Tensor:
    """Forward-backward in probability space, rescaled at every step (the scaled HMM recursion).

    A step's matrix ``exp(transitions[i, j] + emissions[t, j])`` factors into ``exp(transitions)``
    (one ``[C, C]`` matrix) times ``exp(emissions[t])``, so each step is a small matrix product,
    a multiply and a normalisation, with no ``[T, C, C, B]`` temporaries and no log/exp in the
    loop: much faster than a log-space loop at NER sizes, and more accurate in float32.
    Both factors are shifted by their maximum and ``alpha``/``beta`` renormalised to sum 1, so
    nothing overflows; their unknown scales cancel in the per-position normalisation. A step
    where every path underflows gives non-finite marginals (:func:`marginals` then falls back).
    """
    batch, seq, c = emissions.shape
    floor = torch.finfo(emissions.dtype).min
    trans = (transitions - transitions.amax().clamp(min=floor)).exp()  # shape: [from, to]
    trans_t = trans.T.contiguous()
    # shape: [seq, tags, batch]
    emit = emissions.permute(1, 2, 0)
    emit = (emit - emit.amax(1, keepdim=True).clamp_(min=floor)).exp_()
    valid = mask.T[:, None, :]  # shape: [seq, 1, batch]; padded steps carry alpha and beta through
    first = start[:, None] + emissions[:, 0].T
    alpha = (first - first.amax(0).clamp_(min=floor)).exp_()
    alphas = [alpha / alpha.sum(0)]
    for t in range(1, seq):
        alpha = torch.mm(trans_t, alphas[-1]).mul_(emit[t])
        alphas.append(torch.where(valid[t], alpha.div_(alpha.sum(0)), alphas[-1]))
    betas = [(end - end.amax().clamp(min=floor)).exp()[:, None].expand(c, batch)]
    for t in range(seq - 1, 0, -1):
        beta = torch.mm(trans, emit[t] * betas[-1])
        betas.append(torch.where(valid[t], beta.div_(beta.sum(0)), betas[-1]))
    betas.reverse()
    both = torch.stack(alphas).mul_(torch.stack(betas))
    both = both.div_(both.sum(1, keepdim=True))
    return both.permute(2, 0, 1) * mask[:, :, None]


def _log_forward_backward(
    emissions: Tensor, mask: Tensor, transitions: Tensor, start: Tensor, end: Tensor
) -> Tensor:
    """The same marginals in log space: slower, but no step can underflow."""
    floor = torch.finfo(emissions.dtype).min
    steps = time_major_steps(emissions, mask, transitions, identity=True)
    # shape: [tags, batch]
    alphas = [(start + emissions[:, 0]).T.contiguous()]
    for step in steps.unbind(0):
        alphas.append(_logsumexp(step + alphas[-1][:, None, :], 0, floor))
    # identity steps past each row's end carry `end` back to its last token
    betas = [end[:, None].expand(-1, emissions.shape[0])]
    for step in reversed(steps.unbind(0)):
        betas.append(_logsumexp(step + betas[-1][None, :, :], 1, floor))
    betas.reverse()
    # shape: [seq, tags, batch]
    both = torch.stack(alphas) + torch.stack(betas)
    log_z = torch.logsumexp(both[0], dim=0)
    return (both - log_z).exp_().permute(2, 0, 1) * mask[:, :, None]


def _logsumexp(scores: Tensor, dim: int, floor: float) -> Tensor:
    """``torch.logsumexp`` without autograd, by hand: the builtin enters the thread pool at
    every call, which costs more than the arithmetic at these sizes."""
    shift = scores.amax(dim).clamp_(min=floor)
    return (scores - shift.unsqueeze(dim)).exp_().sum(dim).log_().add_(shift)
