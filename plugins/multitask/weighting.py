"""Task weighting: how the heads' losses of a multi-task tagger become one gradient (torch only).

Every head reads the same encoder, so the encoder's (*shared*) parameters get a gradient from every
task, while a head's parameters get one from its own task alone. With ``g_i`` the gradient of task
``i``'s loss ``L_i`` on the shared parameters (all of them flattened into one vector) and ``w_i`` its
weight (default 1):

- ``fixed``: ``sum_i w_i L_i`` is back-propagated: ``g = sum_i w_i g_i``;
- ``parallel``: ``g = sum_i w_i g_i / ||g_i||``: each task's gradient counts by its direction only, so
  multiplying a loss by a constant or adding one to it changes nothing (a zero gradient adds nothing);
- ``main-aux``: ``g = w_m g_m + sum_a w_a P(g_a)`` where ``P(g_a) = g_a - (g_a . g_m / ||g_m||^2) g_m``
  when ``g_a . g_m < 0`` (the two make an angle above 90 degrees) and ``g_a`` otherwise: an auxiliary
  task never pushes the update uphill on the main task's loss, to first order.

A head's own parameters always get ``w_i`` times its own loss's gradient, unscaled by the weighting:
the normalisation and the projection are about tasks competing for the shared encoder, and a head
competes with nothing. The formulas are in docs/training.md ("Multi-task").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

WEIGHTINGS = ("fixed", "parallel", "main-aux")
#: a gradient whose norm is below this is treated as zero (parallel: not normalised; main-aux: no projection)
TINY = 1e-12


def flatten(grads: Sequence[Tensor | None], like: Sequence[Tensor]) -> Tensor:
    """One vector of ``grads`` (a missing gradient counts as zeros of its parameter's shape)."""
    # shape: [sum of numel]
    return torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1).float()
                      for g, p in zip(grads, like, strict=True)]) if like else torch.zeros(0)


def unflatten(vector: Tensor, like: Sequence[Tensor]) -> list[Tensor]:
    """The inverse of :func:`flatten`: pieces of ``vector`` shaped (and typed) as ``like``."""
    pieces, start = [], 0
    for p in like:
        pieces.append(vector[start:start + p.numel()].view_as(p).to(p.dtype))
        start += p.numel()
    return pieces


def unit(vector: Tensor) -> Tensor:
    """``vector / ||vector||``; a (near) zero vector stays zero."""
    norm = vector.norm()
    return vector / norm if norm > TINY else torch.zeros_like(vector)


def project_conflicting(aux: Tensor, main: Tensor) -> Tensor:
    """``aux`` without its component against ``main``: projected onto ``main``'s normal plane when
    ``aux . main < 0``, returned unchanged otherwise (or when ``main`` is zero)."""
    dot = torch.dot(aux, main)
    squared = torch.dot(main, main)
    if dot >= 0 or squared <= TINY * TINY:
        return aux
    return aux - (dot / squared) * main


def combine(grads: Mapping[str, Tensor], method: str, weights: Mapping[str, float] | None = None,
            main: str | None = None) -> Tensor:
    """The shared parameters' gradient from each task's flattened gradient ``grads[task]`` (see the
    module docstring); ``weights`` default to 1, ``main`` (main-aux) to the first task."""
    if method not in WEIGHTINGS:
        raise ValueError(f"task weighting must be one of {', '.join(WEIGHTINGS)}, not {method!r}")
    if not grads:
        raise ValueError("no task gradients to combine")
    weights = weights or {}
    names = list(grads)
    total = torch.zeros_like(grads[names[0]])
    if method == "fixed":
        for name in names:
            total = total + weights.get(name, 1.0) * grads[name]
        return total
    if method == "parallel":
        for name in names:
            total = total + weights.get(name, 1.0) * unit(grads[name])
        return total
    main = names[0] if main is None else main
    if main not in grads:
        raise ValueError(f"main task {main!r} is not one of {', '.join(names)}")
    total = weights.get(main, 1.0) * grads[main]
    for name in names:
        if name != main:
            total = total + weights.get(name, 1.0) * project_conflicting(grads[name], grads[main])
    return total


class TaskGradients:
    """Gradients of one optimizer step: :meth:`backward` for each pass (micro-batch) accumulates each
    task's gradient on the shared parameters, :meth:`apply` combines them into ``.grad``.

    ``fixed`` needs no per-task gradients: one backward pass of ``sum_i w_i L_i`` writes ``.grad``
    directly. The other two take one ``torch.autograd.grad`` per task over the shared parameters and
    that task's head, so the encoder's backward pass runs once per task.
    """

    def __init__(self, shared: Sequence[nn.Parameter], heads: Mapping[str, Sequence[nn.Parameter]], method: str,
                 weights: Mapping[str, float] | None = None, main: str | None = None) -> None:
        if method not in WEIGHTINGS:
            raise ValueError(f"task weighting must be one of {', '.join(WEIGHTINGS)}, not {method!r}")
        self.shared = [p for p in shared if p.requires_grad]
        self.heads = {name: [p for p in params if p.requires_grad] for name, params in heads.items()}
        self.method = method
        self.weights = dict(weights or {})
        self.main = main if main is not None else next(iter(self.heads), None)
        self.pending: dict[str, Tensor] = {}  # task -> its flattened shared gradient so far this step
        self.conflicts = 0  # auxiliary gradients projected (main-aux), since the counter was read
        self.combined = 0  # steps combined, likewise

    def backward(self, losses: Mapping[str, Tensor]) -> None:
        """Back-propagate one pass's ``losses`` (each already scaled to its share of the step)."""
        if self.method == "fixed":
            sum(self.weights.get(name, 1.0) * loss for name, loss in losses.items()).backward()
            return
        names = list(losses)
        for k, name in enumerate(names):
            own = self.heads.get(name, [])
            grads = torch.autograd.grad(losses[name], [*self.shared, *own], retain_graph=k < len(names) - 1,
                                        allow_unused=True)
            flat = flatten(grads[:len(self.shared)], self.shared)
            self.pending[name] = self.pending[name] + flat if name in self.pending else flat
            weight = self.weights.get(name, 1.0)
            for param, grad in zip(own, grads[len(self.shared):], strict=True):
                if grad is not None:
                    grad = weight * grad
                    param.grad = grad if param.grad is None else param.grad + grad

    def apply(self) -> None:
        """Write the combined shared gradient into the shared parameters' ``.grad`` (added to what is
        there) and start the next step afresh; nothing to do under ``fixed``."""
        if self.method == "fixed" or not self.pending:
            return
        if self.method == "main-aux" and self.main in self.pending:
            main = self.pending[self.main]
            self.conflicts += sum(1 for name, g in self.pending.items()
                                  if name != self.main and torch.dot(g, main) < 0)
        total = combine(self.pending, self.method, self.weights, self.main)
        for param, grad in zip(self.shared, unflatten(total, self.shared), strict=True):
            param.grad = grad if param.grad is None else param.grad + grad
        self.pending = {}
        self.combined += 1
