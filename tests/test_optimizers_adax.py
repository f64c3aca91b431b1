"""AdaX (plugins/optimizers/adax.py): two steps pinned against the formulas worked out by hand, decoupled
weight decay, a state that --resume can read back (weights_only), and a toy problem it solves."""

from __future__ import annotations

import io
import math

import pytest
import torch

from tagpipe.plugins.optimizers.adax import AdaX


def adax_by_hand(p: float, grads: list[float], lr: float, beta1: float = 0.9, beta2: float = 1e-4,
                 eps: float = 0.0, decay: float = 0.0) -> list[float]:
    """The paper's update for one scalar, written out step by step: the oracle."""
    m = v = 0.0
    trail = []
    for t, g in enumerate(grads, 1):
        m = beta1 * m + (1 - beta1) * g
        v = (1 + beta2) * v + beta2 * g * g
        v_hat = v / ((1 + beta2) ** t - 1)
        p = p - lr * (m / (math.sqrt(v_hat) + eps) + decay * p)
        trail.append(p)
    return trail


def steps(params: list[torch.Tensor], grads: list[list[float]], **options) -> list[list[float]]:
    optimizer = AdaX(params, **options)
    trail = []
    for step_grads in grads:
        for p, g in zip(params, step_grads, strict=True):
            p.grad = torch.tensor([g], dtype=torch.float64)
        optimizer.step()
        trail.append([p.item() for p in params])
    return trail


def test_two_steps_equal_the_hand_computation():
    p = [torch.tensor([1.0], dtype=torch.float64), torch.tensor([-2.0], dtype=torch.float64)]
    trail = steps(p, [[0.5, -1.0], [-0.2, 0.4]], lr=0.1, eps=0.0)
    # step 1: m = 0.1 g, v = 1e-4 g^2, v_hat = v / 1e-4 = g^2: each weight moves lr * 0.1 * sign(g)
    assert trail[0] == pytest.approx([0.99, -1.99], abs=1e-15)
    # step 2, first weight: m = 0.9 * 0.05 + 0.1 * -0.2 = 0.025; v = 1.0001 * 2.5e-5 + 1e-4 * 0.04 = 2.90025e-5;
    # v_hat = v / (1.0001^2 - 1) = 2.90025e-5 / 2.0001e-4 = 0.145005...; step 0.1 * 0.025 / sqrt(v_hat)
    first = 0.99 - 0.1 * 0.025 / math.sqrt(2.90025e-5 / 2.0001e-4)
    second = -1.99 - 0.1 * -0.05 / math.sqrt((1.0001 * 1e-4 + 1e-4 * 0.16) / 2.0001e-4)
    assert trail[1] == pytest.approx([first, second], abs=1e-14)
    assert trail[1] == pytest.approx([0.9834347972, -1.9834347972], abs=1e-10)  # the two weights mirror each other
    assert [t[0] for t in trail] == pytest.approx(adax_by_hand(1.0, [0.5, -0.2], lr=0.1), abs=1e-14)


def test_many_steps_with_eps_and_decoupled_weight_decay_follow_the_formulas():
    grads = [0.3, -0.1, 0.7, 0.0, 2.5, -1.2]
    p = [torch.tensor([0.8], dtype=torch.float64)]
    trail = steps(p, [[g] for g in grads], lr=0.05, eps=1e-3, weight_decay=0.1, betas=(0.8, 0.01))
    assert [t[0] for t in trail] == pytest.approx(adax_by_hand(0.8, grads, lr=0.05, beta1=0.8, beta2=0.01,
                                                               eps=1e-3, decay=0.1), abs=1e-14)


def test_decay_is_decoupled_a_zero_gradient_still_shrinks_the_weight_by_lr_times_decay():
    p = [torch.tensor([2.0], dtype=torch.float64)]
    trail = steps(p, [[1.0], [0.0]], lr=0.1, eps=0.0, weight_decay=0.5)
    after_one = 2.0 * (1 - 0.05) - 0.1 * 0.1  # decay of the weight, then the m / sqrt(v_hat) step
    assert trail[0][0] == pytest.approx(after_one, abs=1e-15)
    m, v_hat = 0.09, 1e-4 * 1.0001 / 2.0001e-4  # the second step's moments: g = 0 adds nothing new
    assert trail[1][0] == pytest.approx(after_one * (1 - 0.05) - 0.1 * m / math.sqrt(v_hat), abs=1e-14)


def test_state_is_plain_data_and_a_reloaded_optimizer_continues_identically():
    torch.manual_seed(0)
    weight = torch.nn.Parameter(torch.randn(3, 4))
    optimizer = AdaX([weight], lr=0.01)
    for _ in range(3):
        weight.grad = torch.randn(3, 4)
        optimizer.step()
    buffer = io.BytesIO()
    torch.save(optimizer.state_dict(), buffer)
    buffer.seek(0)
    twin_weight = torch.nn.Parameter(weight.detach().clone())
    twin = AdaX([twin_weight], lr=0.01)
    twin.load_state_dict(torch.load(buffer, weights_only=True))  # what --resume does
    grad = torch.randn(3, 4)
    for w, opt in ((weight, optimizer), (twin_weight, twin)):
        w.grad = grad.clone()
        opt.step()
    assert torch.equal(weight, twin_weight)
    assert twin.state[twin_weight]["step"] == 4


def test_it_fits_a_toy_regression():
    torch.manual_seed(0)
    x = torch.randn(256, 8)  # shape: [N, D]
    y = x @ torch.randn(8, 1) + 0.5  # shape: [N, 1]
    model = torch.nn.Linear(8, 1)
    optimizer = AdaX(model.parameters(), lr=0.05)
    first = None
    for _ in range(300):
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        first = first if first is not None else loss.item()
        loss.backward()
        optimizer.step()
    assert loss.item() < first / 1000


@pytest.mark.parametrize("options", [{"lr": 0.0}, {"lr": -1.0}, {"betas": (1.0, 1e-4)}, {"betas": (0.9, 0.0)},
                                     {"eps": -1.0}, {"weight_decay": -0.1}])
def test_bad_hyperparameters_are_refused(options):
    with pytest.raises(ValueError, match="AdaX"):
        AdaX([torch.nn.Parameter(torch.zeros(1))], **{"lr": 1e-3, **options})
