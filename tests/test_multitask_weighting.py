"""The task-weighting maths of plugins/multitask/weighting.py, pinned exactly on toy problems."""

from __future__ import annotations

import pytest
import torch

from tagpipe.plugins.multitask.weighting import TaskGradients, combine, project_conflicting, unit


def test_unit_has_norm_one_and_keeps_zero():
    g = torch.tensor([3.0, 4.0])
    assert torch.allclose(unit(g), torch.tensor([0.6, 0.8]))
    assert torch.equal(unit(torch.zeros(3)), torch.zeros(3))


def test_a_conflicting_auxiliary_gradient_is_projected_orthogonal_to_the_main_one():
    main = torch.tensor([1.0, 0.0])
    aux = torch.tensor([-1.0, 2.0])  # angle with main > 90 degrees
    projected = project_conflicting(aux, main)
    assert torch.allclose(projected, torch.tensor([0.0, 2.0]))
    assert torch.dot(projected, main).abs() < 1e-7
    main = torch.tensor([2.0, -1.0, 0.5])
    aux = torch.tensor([-3.0, 1.0, 4.0])
    assert torch.dot(aux, main) < 0
    projected = project_conflicting(aux, main)
    expected = aux - torch.dot(aux, main) / torch.dot(main, main) * main
    assert torch.allclose(projected, expected)
    assert torch.dot(projected, main).abs() < 1e-6


def test_an_auxiliary_gradient_that_does_not_conflict_is_unchanged():
    main = torch.tensor([1.0, 1.0])
    for aux in (torch.tensor([0.5, 2.0]), torch.tensor([1.0, -1.0])):  # acute, and exactly orthogonal
        assert torch.equal(project_conflicting(aux, main), aux)


def test_combine_fixed_parallel_and_main_aux_by_hand():
    grads = {"ner": torch.tensor([3.0, 0.0]), "pos": torch.tensor([-1.0, 1.0])}
    assert torch.allclose(combine(grads, "fixed", {"ner": 1.0, "pos": 0.5}), torch.tensor([2.5, 0.5]))
    s = 2 ** -0.5
    assert torch.allclose(combine(grads, "parallel"), torch.tensor([1.0 - s, s]))
    # pos conflicts with ner (dot -3): its ner component is removed, leaving [0, 1]
    assert torch.allclose(combine(grads, "main-aux"), torch.tensor([3.0, 1.0]))
    # with pos as the main task, ner conflicts: [3, 0] - (-3 / 2) [-1, 1] = [1.5, 1.5]
    assert torch.allclose(combine(grads, "main-aux", main="pos"), torch.tensor([-1.0 + 1.5, 1.0 + 1.5]))
    with pytest.raises(ValueError):
        combine(grads, "main-aux", main="chunk")
    with pytest.raises(ValueError):
        combine(grads, "mean")


class Toy(torch.nn.Module):
    """A shared linear layer read by two heads: the smallest multi-task model."""

    def __init__(self, relation: str = "other") -> None:
        super().__init__()
        torch.manual_seed(0)
        self.shared = torch.nn.Linear(4, 3)
        self.heads = torch.nn.ModuleDict({"a": torch.nn.Linear(3, 1), "b": torch.nn.Linear(3, 1)})
        #: task b's target: another function of x, or a's target negated (the tasks pull the shared layer
        #: apart) or doubled (they pull it the same way), read by a copy of a's head
        self.relation = relation
        if relation != "other":
            self.heads["b"].load_state_dict(self.heads["a"].state_dict())

    def losses(self, x: torch.Tensor, scale: dict[str, float] | None = None, shift: float = 0.0):
        scale = scale or {}
        hidden = torch.tanh(self.shared(x))  # shape: [N, 3]
        b = {"other": -x[:, 1:2] * 2, "opposite": -x[:, :1], "double": 2 * x[:, :1]}[self.relation]
        targets = {"a": x[:, :1], "b": b}
        return {n: scale.get(n, 1.0) * ((self.heads[n](hidden) - targets[n]) ** 2).mean() + shift for n in self.heads}


def _grads(model: Toy, method: str, **kwargs) -> dict[str, torch.Tensor]:
    x = torch.linspace(-1, 1, 24).view(6, 4)
    model.zero_grad(set_to_none=True)
    gradients = TaskGradients(list(model.shared.parameters()), {n: list(h.parameters()) for n, h in
                                                                model.heads.items()}, method)
    gradients.backward(model.losses(x, **kwargs))
    gradients.apply()
    return {n: p.grad.clone() for n, p in model.named_parameters()}


def _task_grad(model: Toy, name: str) -> torch.Tensor:
    x = torch.linspace(-1, 1, 24).view(6, 4)
    grads = torch.autograd.grad(model.losses(x)[name], list(model.shared.parameters()))
    return torch.cat([g.reshape(-1) for g in grads])


def _shared(grads: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([grads["shared.weight"].reshape(-1), grads["shared.bias"].reshape(-1)])


def test_parallel_sums_unit_norm_task_gradients_on_the_shared_parameters():
    model = Toy()
    g_a, g_b = _task_grad(model, "a"), _task_grad(model, "b")
    assert abs(g_a.norm() - g_b.norm()) > 1e-3  # the tasks' gradients differ in scale
    combined = _shared(_grads(model, "parallel"))
    assert torch.allclose(combined, g_a / g_a.norm() + g_b / g_b.norm(), atol=1e-6)
    # each task's part has unit norm: removing one leaves a vector of norm 1
    assert torch.allclose((combined - g_b / g_b.norm()).norm(), torch.tensor(1.0), atol=1e-6)


def test_parallel_is_scale_and_shift_invariant_heads_keep_their_own_gradient():
    model = Toy()
    plain = _grads(model, "parallel")
    scaled = _grads(model, "parallel", scale={"a": 10.0}, shift=3.0)
    assert torch.allclose(_shared(plain), _shared(scaled), atol=1e-6)
    # a head's gradient is its own loss's, unnormalised: x10 there
    assert torch.allclose(scaled["heads.a.weight"], 10 * plain["heads.a.weight"], atol=1e-5)
    assert torch.allclose(scaled["heads.b.weight"], plain["heads.b.weight"], atol=1e-6)
    fixed, fixed_scaled = _grads(model, "fixed"), _grads(model, "fixed", scale={"a": 10.0})
    assert not torch.allclose(_shared(fixed), _shared(fixed_scaled), atol=1e-3)  # fixed is not invariant


def test_fixed_is_the_gradient_of_the_summed_losses():
    model = Toy()
    g_a, g_b = _task_grad(model, "a"), _task_grad(model, "b")
    assert torch.allclose(_shared(_grads(model, "fixed")), g_a + g_b, atol=1e-6)


def test_main_aux_projects_only_when_the_auxiliary_gradient_conflicts():
    model = Toy()
    g_a, g_b = _task_grad(model, "a"), _task_grad(model, "b")
    combined = _shared(_grads(model, "main-aux"))
    expected = g_a + project_conflicting(g_b, g_a)
    assert torch.allclose(combined, expected, atol=1e-6)
    # to first order the main loss never goes up: the update -combined has a non-positive dot with g_a
    assert torch.dot(combined, g_a) >= torch.dot(g_a, g_a) - 1e-6


def test_main_aux_on_the_toy_conflicts_and_the_projection_is_orthogonal():
    model = Toy("opposite")
    g_a, g_b = _task_grad(model, "a"), _task_grad(model, "b")
    assert torch.dot(g_a, g_b) < 0
    aux_part = _shared(_grads(model, "main-aux")) - g_a
    assert torch.dot(aux_part, g_a).abs() < 1e-5
    assert not torch.allclose(aux_part, g_b, atol=1e-3)
    assert torch.allclose(aux_part, g_b - torch.dot(g_b, g_a) / torch.dot(g_a, g_a) * g_a, atol=1e-6)


def test_main_aux_leaves_an_agreeing_auxiliary_gradient_alone():
    model = Toy("double")
    g_a, g_b = _task_grad(model, "a"), _task_grad(model, "b")
    assert torch.dot(g_a, g_b) > 0  # this toy's tasks agree
    assert torch.allclose(_shared(_grads(model, "main-aux")), g_a + g_b, atol=1e-6)


def test_per_task_gradients_accumulate_over_passes_before_combining():
    model = Toy()
    x = torch.linspace(-1, 1, 24).view(6, 4)
    gradients = TaskGradients(list(model.shared.parameters()),
                              {n: list(h.parameters()) for n, h in model.heads.items()}, "parallel")
    model.zero_grad(set_to_none=True)
    for part in (x[:3], x[3:]):  # two halves, each half the step's loss
        gradients.backward({n: loss * 0.5 for n, loss in model.losses(part).items()})
    gradients.apply()
    two_passes = _shared({n: p.grad for n, p in model.named_parameters()})
    assert torch.allclose(two_passes, _shared(_grads(model, "parallel")), atol=1e-6)
