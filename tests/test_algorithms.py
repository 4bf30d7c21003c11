"""Correctness of the meta-gradients: the tests that catch the usual broken implementations."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.func import functional_call

from workbench.core.algorithms import ALGORITHMS
from workbench.core.algorithms.maml import MAML
from workbench.core.algorithms.meta_lstm import MetaLSTM, preprocess
from workbench.core.algorithms.protonet import ProtoNet, prototype_logits
from workbench.core.config import TaskShape
from workbench.core.tasks.base import EpisodeBatch
from workbench.core.tasks.sinusoid import SinusoidTasks


def tiny_mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(1, 6), nn.Tanh(), nn.Linear(6, 1)).double()


def sinusoid_batch(tasks: int = 2, k: int = 5, seed: int = 1) -> EpisodeBatch:
    b = SinusoidTasks().sample(
        TaskShape(shots=k, queries=k), tasks, torch.Generator().manual_seed(seed)
    )
    return EpisodeBatch(
        b.support_x.double(), b.support_y.double(), b.query_x.double(), b.query_y.double(), 1
    )


def maml(
    model: nn.Module, first_order: bool = False, cls: type[MAML] = MAML, inner_lr: float = 0.3
) -> MAML:
    params = ALGORITHMS.get("maml").Params(inner_lr=inner_lr, first_order=first_order)
    return cls(params, model, "regression")


def meta_loss(algo: MAML, batch: EpisodeBatch, steps: int) -> float:
    """The MAML objective evaluated directly: mean query loss after `steps` inner steps."""
    total = 0.0
    theta = algo.initial_params()
    for i in range(len(batch)):
        adapted = algo.adapt(
            theta, batch.support_x[i], batch.support_y[i], steps, algo.params.inner_lr, True
        )
        out = functional_call(algo.model, adapted, (batch.query_x[i],))
        total += float(nn.functional.mse_loss(out, batch.query_y[i]).detach())
    return total / len(batch)


def finite_difference(
    algo: MAML, batch: EpisodeBatch, steps: int, eps: float = 1e-6
) -> torch.Tensor:
    grads = []
    for p in algo.model.parameters():
        flat = p.data.view(-1)
        for j in range(flat.numel()):
            old = float(flat[j])
            flat[j] = old + eps
            plus = meta_loss(algo, batch, steps)
            flat[j] = old - eps
            minus = meta_loss(algo, batch, steps)
            flat[j] = old
            grads.append((plus - minus) / (2 * eps))
    return torch.tensor(grads, dtype=torch.float64)


def meta_gradient(algo: MAML, batch: EpisodeBatch, steps: int) -> torch.Tensor:
    algo.zero_grad()
    algo.meta_train_step(batch, TaskShape(shots=5, queries=5, inner_steps=steps))
    return torch.cat(
        [
            (p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
            for p in algo.model.parameters()
        ]
    )


class ReloadingMAML(MAML):
    """The circulating bug: the inner loop reloads a state_dict, so theta' no longer depends on theta."""

    def adapt(self, params, x, y, steps, lr, create_graph):  # type: ignore[override]
        for _ in range(steps):
            loss = nn.functional.mse_loss(functional_call(self.model, params, (x,)), y)
            grads = torch.autograd.grad(loss, tuple(params.values()), create_graph=create_graph)
            new = {
                k: (p - lr * g).detach() for (k, p), g in zip(params.items(), grads, strict=True)
            }
            self.model.load_state_dict(new)
            params = dict(self.model.named_parameters())
        return params


class DetachingMAML(MAML):
    """Another bug: the adapted weights are detached copies (no meta-gradient through them)."""

    def adapt(self, params, x, y, steps, lr, create_graph):  # type: ignore[override]
        out = super().adapt(params, x, y, steps, lr, create_graph)
        return {k: v.detach().requires_grad_() for k, v in out.items()}


@pytest.mark.parametrize("steps", [1, 2])
def test_maml_meta_gradient_matches_finite_differences(steps: int) -> None:
    batch = sinusoid_batch()
    algo = maml(tiny_mlp())
    analytic = meta_gradient(algo, batch, steps)
    numeric = finite_difference(algo, batch, steps)
    torch.testing.assert_close(analytic, numeric, rtol=1e-3, atol=1e-7)


@pytest.mark.parametrize("mutant", [ReloadingMAML, DetachingMAML])
def test_broken_maml_fails_the_finite_difference_check(mutant: type[MAML]) -> None:
    batch = sinusoid_batch()
    reference = finite_difference(maml(tiny_mlp()), batch, 1)
    broken = meta_gradient(maml(tiny_mlp(), cls=mutant), batch, 1)
    assert not torch.allclose(broken, reference, rtol=1e-3, atol=1e-7)


def test_first_order_differs_by_exactly_the_second_order_term() -> None:
    """One inner step: dJ/dtheta = (I - alpha H_support) g with g the query gradient at theta'.
    First-order MAML keeps only g, so SO - FO must equal -alpha H_support g."""
    batch = sinusoid_batch(tasks=1)
    alpha = 0.3
    so = meta_gradient(maml(tiny_mlp(), inner_lr=alpha), batch, 1)
    fo_algo = maml(tiny_mlp(), first_order=True, inner_lr=alpha)
    fo = meta_gradient(fo_algo, batch, 1)

    theta = fo_algo.initial_params()
    adapted = fo_algo.adapt(theta, batch.support_x[0], batch.support_y[0], 1, alpha, False)
    adapted = {k: v.detach().requires_grad_() for k, v in adapted.items()}
    q_loss = nn.functional.mse_loss(
        functional_call(fo_algo.model, adapted, (batch.query_x[0],)), batch.query_y[0]
    )
    g = torch.autograd.grad(q_loss, tuple(adapted.values()))
    s_loss = nn.functional.mse_loss(
        functional_call(fo_algo.model, theta, (batch.support_x[0],)), batch.support_y[0]
    )
    s_grad = torch.autograd.grad(s_loss, tuple(theta.values()), create_graph=True)
    hvp = torch.autograd.grad(s_grad, tuple(theta.values()), grad_outputs=g)
    second_order_term = -alpha * torch.cat([h.reshape(-1) for h in hvp])

    assert torch.cat([x.reshape(-1) for x in g]).allclose(fo, rtol=1e-9)
    torch.testing.assert_close(so - fo, second_order_term, rtol=1e-6, atol=1e-10)
    assert (so - fo).abs().max() > 1e-4  # the term is not negligible here, so the test can fail


def test_protonet_probabilities_on_a_hand_computed_example() -> None:
    support = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 4.0], [0.0, 2.0]])
    support_y = torch.tensor([0, 0, 1, 1])  # prototypes (1, 0) and (0, 3)
    query = torch.tensor([[1.0, 1.0]])  # squared distances 1 and 5
    probs = prototype_logits(support, support_y, query, 2).softmax(1)
    expected = torch.tensor([[math.exp(-1), math.exp(-5)]]) / (math.exp(-1) + math.exp(-5))
    torch.testing.assert_close(probs, expected)


def test_protonet_step_uses_mean_support_embedding() -> None:
    """With the identity as the embedding, the loss is the cross-entropy of the hand formula."""
    identity = nn.Linear(2, 2)
    with torch.no_grad():
        identity.weight.copy_(torch.eye(2))
        identity.bias.zero_()
    algo = ProtoNet(
        ALGORITHMS.get("protonet").Params(), nn.Sequential(nn.Flatten(), identity), "classification"
    )
    sx = torch.tensor([[[0.0, 0.0]], [[2.0, 0.0]], [[0.0, 4.0]], [[0.0, 2.0]]])[None]
    sy = torch.tensor([[0, 0, 1, 1]])
    qx = torch.tensor([[[1.0, 1.0]], [[0.0, 3.0]]])[None]
    qy = torch.tensor([[0, 1]])
    out = algo.meta_train_step(EpisodeBatch(sx, sy, qx, qy, 2), TaskShape(ways=2))
    p0 = math.exp(-1) / (math.exp(-1) + math.exp(-5))
    p1 = math.exp(0) / (math.exp(0) + math.exp(-10))
    assert out["loss"] == pytest.approx(-(math.log(p0) + math.log(p1)) / 2, rel=1e-5)  # float32
    assert out["accuracy"] == 1.0


def test_preprocessing_matches_andrychowicz() -> None:
    p = 10.0
    x = torch.tensor([1.0, -0.5, 1e-6, -1e-7])
    out = preprocess(x, p)
    assert out[0].tolist() == pytest.approx([0.0, 1.0])
    assert out[1].tolist() == pytest.approx([math.log(0.5) / p, -1.0])
    assert out[2].tolist() == pytest.approx([-1.0, 1e-6 * math.exp(p)])  # |x| < e^-10 = 4.5e-5
    assert out[3].tolist() == pytest.approx([-1.0, -1e-7 * math.exp(p)])


def make_meta_lstm(model: nn.Module | None = None) -> MetaLSTM:
    torch.manual_seed(0)
    model = model or nn.Sequential(nn.Linear(1, 8), nn.ReLU(), nn.Linear(8, 1))
    return MetaLSTM(ALGORITHMS.get("meta-lstm").Params(), model, "regression")


def test_meta_lstm_gradients_reach_both_lstms_and_the_initialisation() -> None:
    algo = make_meta_lstm()
    b = SinusoidTasks().sample(TaskShape(shots=10, queries=10), 2, torch.Generator().manual_seed(0))
    algo.meta_train_step(b, TaskShape(shots=10, queries=10, inner_steps=3))
    for name in [
        "lstm.weight_ih",
        "lstm.weight_hh",
        "lstm.bias_ih",
        "cell.W_f",
        "cell.W_i",
        "cell.b_f",
        "cell.b_i",
        "cell.theta0",
    ]:
        grad = dict(algo.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name
    assert all(not p.requires_grad for p in algo.model.parameters())  # the template is not trained


def test_meta_lstm_update_rule_and_initial_gates() -> None:
    """With the gate weights zeroed the gates are sigmoid(bias): theta_1 = f theta_0 - i grad,
    with f = sigmoid(U(4, 6)) near 1 and i = sigmoid(U(-5, -4)) small: close to plain SGD."""
    algo = make_meta_lstm()
    assert 4 <= algo.cell.b_f.item() <= 6 and -5 <= algo.cell.b_i.item() <= -4
    with torch.no_grad():
        algo.cell.W_f.zero_()
        algo.cell.W_i.zero_()
    b = SinusoidTasks().sample(TaskShape(shots=10, queries=10), 1, torch.Generator().manual_seed(0))
    with torch.no_grad():
        theta1 = algo.run_episode(b.support_x[0], b.support_y[0], 1)
    theta0 = algo.cell.theta0.detach().clone().requires_grad_()
    loss, _ = algo.learner_loss(theta0, b.support_x[0], b.support_y[0])
    (grad,) = torch.autograd.grad(loss, theta0)
    f, i = torch.sigmoid(algo.cell.b_f.detach()), torch.sigmoid(algo.cell.b_i.detach())
    torch.testing.assert_close(theta1, f * theta0.detach() - i * grad)


def test_meta_lstm_second_order_terms_are_dropped_but_theta_path_kept() -> None:
    """The meta-gradient w.r.t. theta0 equals the derivative through f*theta (and the gates),
    with the learner gradient held constant: checked against finite differences of that rule."""
    algo = make_meta_lstm(nn.Sequential(nn.Linear(1, 3), nn.Tanh(), nn.Linear(3, 1)))
    algo.double()
    b = SinusoidTasks().sample(TaskShape(shots=6, queries=6), 1, torch.Generator().manual_seed(3))
    sx, sy, qx, qy = (t[0].double() for t in (b.support_x, b.support_y, b.query_x, b.query_y))

    def objective_with_frozen_grads(
        theta0: torch.Tensor, grads: list[torch.Tensor], losses: list[torch.Tensor]
    ) -> torch.Tensor:
        theta = theta0
        n = theta.numel()
        hx = theta.new_zeros(n, algo.params.hidden)
        cx = theta.new_zeros(n, algo.params.hidden)
        f = theta.new_zeros(n, 1)
        i = theta.new_zeros(n, 1)
        for g, loss in zip(grads, losses, strict=True):
            inp = torch.cat([preprocess(g, 10.0), preprocess(loss.expand(n), 10.0)], 1)
            hx, cx = algo.lstm(inp, (hx, cx))
            theta, f, i = algo.cell(hx, g, theta, f, i)
        return algo.learner_loss(theta, qx, qy)[0]

    # record the learner gradients along the unrolled trajectory
    grads, losses = [], []
    with torch.no_grad():
        theta = algo.cell.theta0.clone()
        n = theta.numel()
        hx, cx = theta.new_zeros(n, 20), theta.new_zeros(n, 20)
        f, i = theta.new_zeros(n, 1), theta.new_zeros(n, 1)
        for _ in range(2):
            probe = theta.clone().requires_grad_()
            with torch.enable_grad():
                loss, _ = algo.learner_loss(probe, sx, sy)
                (g,) = torch.autograd.grad(loss, probe)
            grads.append(g)
            losses.append(loss.detach())
            inp = torch.cat([preprocess(g, 10.0), preprocess(loss.expand(n), 10.0)], 1)
            hx, cx = algo.lstm(inp, (hx, cx))
            theta, f, i = algo.cell(hx, g, theta, f, i)

    algo.zero_grad()
    algo.meta_train_step(
        EpisodeBatch(sx[None], sy[None], qx[None], qy[None], 1),
        TaskShape(shots=6, queries=6, inner_steps=2),
    )
    analytic = algo.cell.theta0.grad.clone()
    base = algo.cell.theta0.detach().clone()
    eps = 1e-6
    numeric = torch.zeros_like(base)
    with torch.no_grad():
        for j in range(base.numel()):
            e = torch.zeros_like(base)
            e[j] = eps
            numeric[j] = (
                objective_with_frozen_grads(base + e, grads, losses)
                - objective_with_frozen_grads(base - e, grads, losses)
            ) / (2 * eps)
    torch.testing.assert_close(analytic, numeric, rtol=1e-4, atol=1e-9)
