"""AdaX: Adam with an exponential long-term memory of squared gradients (Li, Chen, Luo 2020, "AdaX: Adaptive
Gradient Descent with Exponential Long Term Memory"; Su Jianlin's notes on kexue.fm).

Adam's second moment forgets old gradients at rate ``1 - beta2``, so after a run of small gradients the
denominator shrinks and the step grows: the paper shows this can make Adam diverge. AdaX *grows* the sum
instead of decaying it, and divides by the sum's bias-free weight::

    m_t     = beta1 m_{t-1} + (1 - beta1) g_t
    v_t     = (1 + beta2) v_{t-1} + beta2 g_t^2
    v_hat_t = v_t / ((1 + beta2)^t - 1)
    theta_t = theta_{t-1} - lr (m_t / (sqrt(v_hat_t) + eps) + weight_decay theta_{t-1})

``v_hat`` is a weighted mean of all past ``g^2`` whose weights favour recent steps only mildly (beta2 = 1e-4):
a long memory. ``m`` has no bias correction (the paper's choice: its first steps are ``1 - beta1`` as large).
Weight decay is decoupled, as in AdamW. The state is plain tensors and one int, as ``--resume`` requires.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

import torch


class AdaX(torch.optim.Optimizer):
    """AdaX with decoupled weight decay; ``betas = (beta1, beta2)``, beta2 the growth rate of ``v``."""

    lr_scaling: ClassVar[str] = "sqrt"

    def __init__(self, params: Iterable[Any], *, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 1e-4),
                 eps: float = 1e-8, weight_decay: float = 0.0) -> None:
        if not lr > 0 or not math.isfinite(lr):
            raise ValueError(f"AdaX: lr must be a positive number, not {lr}")
        if not 0.0 <= betas[0] < 1.0:
            raise ValueError(f"AdaX: beta1 must be in [0, 1), not {betas[0]}")
        if not betas[1] > 0.0:
            raise ValueError(f"AdaX: beta2 must be above 0, not {betas[1]}")
        if not eps >= 0.0 or not weight_decay >= 0.0:
            raise ValueError(f"AdaX: eps and weight_decay must be at least 0, not {eps} and {weight_decay}")
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, (beta1, beta2), eps, decay = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("AdaX does not support sparse gradients")
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                t = state["step"]
                m, v = state["exp_avg"], state["exp_avg_sq"]  # shape: like p
                m.mul_(beta1).add_(p.grad, alpha=1 - beta1)
                v.mul_(1 + beta2).addcmul_(p.grad, p.grad, value=beta2)
                weight = math.expm1(t * math.log1p(beta2))  # (1 + beta2)^t - 1, exact for small beta2
                if decay:
                    p.mul_(1 - lr * decay)
                denominator = (v / weight).sqrt_().add_(eps)  # shape: like p
                p.addcdiv_(m, denominator, value=-lr)
        return loss
