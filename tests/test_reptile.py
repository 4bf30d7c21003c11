"""Reptile: no meta-gradient to check against finite differences, so its update is checked
against hand-worked cases (one SGD step; a quadratic task whose k-step inner loop has a closed
form), its annealing, its inner Adam and minibatches, both evaluation protocols, checkpoints and
resume through the engine's owned outer update, the presets, the CLI and learning on glyphs."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from test_algorithms import sinusoid_batch, tiny_mlp  # noqa: E402  (tests/ is on the path)
from test_engine import Recorder, assert_resume_reproduces, small  # noqa: E402
from test_meta_sgd_anil import conv4_batch, tiny_conv4  # noqa: E402
from torch import nn
from torch.func import functional_call

from workbench.core.algorithms import ALGORITHMS
from workbench.core.algorithms.reptile import (
    ADAM_BETA2,
    ADAM_EPSILON,
    AdamState,
    Reptile,
    minibatches,
)
from workbench.core.checkpoint import load_checkpoint
from workbench.core.config import TaskShape, default_config
from workbench.core.engine import Trainer
from workbench.core.presets import load_presets
from workbench.core.tasks.base import EpisodeBatch


def reptile(model: nn.Module, kind: str = "regression", **params: object) -> Reptile:
    return Reptile(ALGORITHMS.get("reptile").Params(**params), model, kind)  # type: ignore[arg-type]


def outer_step(algo: Reptile, batch: EpisodeBatch, shape: TaskShape, step: int, steps: int) -> None:
    """One meta-update exactly as the engine takes it: zero, the algorithm's step, its own
    optimiser at its own learning rate for this step."""
    opt = algo.outer_optimizer([p for p in algo.parameters() if p.requires_grad])
    opt.zero_grad(set_to_none=True)
    algo.meta_train_step(batch, shape)
    for group in opt.param_groups:
        group["lr"] = algo.outer_lr(step, steps)
    opt.step()


def flat(tensors: object) -> torch.Tensor:
    return torch.cat([t.detach().reshape(-1) for t in tensors])  # type: ignore[attr-defined]


# ---- (a) one inner SGD step: Reptile's update is epsilon * alpha * the support gradient -----
@pytest.mark.parametrize("learner", ["mlp", "conv4"])
def test_one_sgd_inner_step_moves_theta_by_epsilon_alpha_times_the_mean_support_gradient(
    learner: str,
) -> None:
    """k = 1: phi_i = theta - alpha g_i, so theta - mean phi = alpha mean g and the update is
    -epsilon alpha mean_i g_i (the paper's remark: with k = 1 Reptile is joint training)."""
    if learner == "mlp":
        model, kind, batch = tiny_mlp(), "regression", sinusoid_batch(tasks=3)
        shape = TaskShape(shots=5, queries=5, inner_steps=1)
        loss = F.mse_loss
    else:
        model, kind, batch = tiny_conv4(), "classification", conv4_batch(tasks=3, queries=2)
        shape = TaskShape(ways=3, shots=1, queries=2, inner_steps=1)
        loss = F.cross_entropy
    alpha, eps = 0.3, 0.7
    algo = reptile(model, kind, inner_optimizer="sgd", inner_lr=alpha, inner_batch=0, meta_lr=eps)
    theta = dict(model.named_parameters())
    expected = torch.zeros(sum(p.numel() for p in theta.values()), dtype=torch.float64)
    for i in range(len(batch)):
        out = functional_call(model, theta, (batch.support_x[i],))
        expected += flat(torch.autograd.grad(loss(out, batch.support_y[i]), list(theta.values())))
    expected /= len(batch)
    before = flat(model.parameters())

    outer_step(algo, batch, shape, step=0, steps=10)  # epsilon at step 0 is meta_lr
    torch.testing.assert_close(flat(p.grad for p in model.parameters()), alpha * expected,
                               rtol=1e-10, atol=1e-13)  # fmt: skip
    torch.testing.assert_close(flat(model.parameters()) - before, -eps * alpha * expected,
                               rtol=1e-9, atol=1e-13)  # fmt: skip


# ---- (b) a quadratic task: the k-step inner loop in closed form ------------------------
def test_reptile_update_on_quadratic_tasks_matches_the_closed_form_in_float64() -> None:
    """Task i: a linear model w -> X_i w with targets X_i c_i, so the support MSE is
    L_i(phi) = 0.5 (phi - c_i)^T A_i (phi - c_i), A_i = 2 X_i^T X_i / N. k SGD steps give
    phi_k = c_i + (I - alpha A_i)^k (theta - c_i), and Reptile's update is
    theta + epsilon (mean_i phi_k,i - theta), with epsilon annealed from step to step."""
    g = torch.Generator().manual_seed(3)
    tasks, n, d, k, alpha = 3, 6, 4, 4, 0.05
    model = nn.Linear(d, 1, bias=False).double()
    algo = reptile(model, inner_optimizer="sgd", inner_lr=alpha, inner_batch=0,
                   meta_lr=0.8, meta_lr_final=0.1)  # fmt: skip
    shape = TaskShape(shots=n, queries=2, inner_steps=k)
    theta = model.weight.detach().reshape(d).clone()
    for step in range(2):  # two meta-updates, epsilon annealed between them
        x = torch.randn(tasks, n, d, generator=g, dtype=torch.float64)
        c = torch.randn(tasks, d, generator=g, dtype=torch.float64)
        y = (x @ c.unsqueeze(-1)).reshape(tasks, n, 1)
        batch = EpisodeBatch(x, y, x[:, :2], y[:, :2], 1)
        phi = []
        for i in range(tasks):
            a = 2 * x[i].T @ x[i] / n
            phi.append(c[i] + torch.linalg.matrix_power(torch.eye(d).double() - alpha * a, k)
                       @ (theta - c[i]))  # fmt: skip
        eps = (step / 10) * 0.1 + (1 - step / 10) * 0.8
        theta = theta + eps * (torch.stack(phi).mean(0) - theta)
        outer_step(algo, batch, shape, step=step, steps=10)
        assert (model.weight.detach().reshape(d) - theta).abs().max() < 1e-10


# ---- (c) the annealing schedule -------------------------------------------------------
def test_epsilon_anneals_linearly_to_meta_lr_final_as_the_official_code() -> None:
    """cur = frac * final + (1 - frac) * initial with frac = step / steps (train.py)."""
    algo = reptile(tiny_mlp(), meta_lr=1.0)
    assert [algo.outer_lr(s, 4) for s in range(4)] == [1.0, 0.75, 0.5, 0.25]
    algo = reptile(tiny_mlp(), meta_lr=0.5, meta_lr_final=0.1)
    assert [algo.outer_lr(s, 5) for s in range(5)] == pytest.approx([0.5, 0.42, 0.34, 0.26, 0.18])
    halved = reptile(tiny_mlp(), meta_lr=1.0, lr_halve_every=2)  # the shared field still works
    assert [halved.outer_lr(s, 4) for s in range(4)] == [1.0, 0.75, 0.25, 0.125]
    assert isinstance(algo.outer_optimizer(list(algo.parameters())), torch.optim.SGD)


def reptile_run(**extra: object):  # type: ignore[no-untyped-def]
    """A small sinusoid run with Adam's carried state and random inner minibatches (4 of 10)."""
    cfg = small("reptile", **extra)
    return cfg.with_overrides(["algorithm.inner_lr=0.01", "algorithm.inner_batch=4",
                               "train.inner_steps=3", "eval.inner_steps=3"])  # fmt: skip


def test_the_engine_steps_with_reptiles_sgd_at_the_annealed_epsilon(tmp_path: Path) -> None:
    """The run's recorded meta_lr is epsilon step by step, and its checkpoints hold SGD's state,
    the inner Adam's moments and its step count (tasks x inner steps, carried over)."""
    rec = Recorder()
    cfg = reptile_run()
    Trainer(cfg, [rec], tmp_path / "a").run()
    assert [rec.steps[s]["meta_lr"] for s in range(1, 21)] == pytest.approx(
        [1 - s / 20 for s in range(20)]
    )
    ckpt = next(c for c in rec.ckpts if c.step == 10 and c.kind == "periodic")
    state = load_checkpoint(ckpt.path)
    opt = state["optimizer"]
    assert opt["state"] == {}  # plain SGD: nothing beyond its learning rate
    (group,) = opt["param_groups"]
    assert group["momentum"] == 0 and "nesterov" in group and "betas" not in group
    assert group["lr"] == pytest.approx(1 - 9 / 20)  # the last step's epsilon
    algo = state["algorithm"]
    assert int(algo["adam_steps"]) == 10 * cfg.train.meta_batch * cfg.train.inner_steps
    assert algo["adam_v.0__weight"].abs().sum() > 0


# ---- (d) resume continues the outer update and the inner Adam's state --------------------
def test_resume_at_step_k_reproduces_the_uninterrupted_run_bitwise(tmp_path: Path) -> None:
    assert_resume_reproduces(reptile_run(), tmp_path)


# ---- the inner loop ---------------------------------------------------------------------
def test_inner_adam_is_tensorflows_with_beta1_zero() -> None:
    """v = b2 v + (1 - b2) g^2; phi -= lr sqrt(1 - b2^t) g / (sqrt(v) + eps), t from 1."""
    g1, g2 = torch.tensor([0.5, -2.0]).double(), torch.tensor([-1.0, 0.25]).double()
    phi, state = [torch.tensor([1.0, 1.0]).double()], AdamState([torch.zeros(2).double()], 0)
    state.step(phi, [g1], 0.1)
    state.step(phi, [g2], 0.1)
    v1 = (1 - ADAM_BETA2) * g1**2
    p1 = 1 - 0.1 * math.sqrt(1 - ADAM_BETA2) * g1 / (v1.sqrt() + ADAM_EPSILON)
    v2 = ADAM_BETA2 * v1 + (1 - ADAM_BETA2) * g2**2
    p2 = p1 - 0.1 * math.sqrt(1 - ADAM_BETA2**2) * g2 / (v2.sqrt() + ADAM_EPSILON)
    torch.testing.assert_close(phi[0], p2, rtol=1e-14, atol=0)
    torch.testing.assert_close(state.v[0], v2, rtol=1e-14, atol=0)
    assert state.t == 2


def test_minibatches_are_drawn_as_the_official_code_draws_them() -> None:
    """No replacement, reshuffled each pass, a minibatch running on into the next pass; the
    whole set (None) where a minibatch covers every example equally often."""
    batches = minibatches(5, 3, 5, torch.Generator().manual_seed(0))
    order = torch.cat(batches)  # type: ignore[arg-type]
    assert [len(b) for b in batches] == [3] * 5  # type: ignore[arg-type]
    for start in (0, 5, 10):
        assert sorted(order[start : start + 5].tolist()) == [0, 1, 2, 3, 4]
    assert minibatches(5, 0, 3, torch.Generator()) == [None] * 3
    assert minibatches(5, 10, 2, torch.Generator()) == [None] * 2


def test_evaluation_starts_from_trainings_adam_state_and_leaves_it_alone() -> None:
    batch, shape = conv4_batch(tasks=2, queries=2), TaskShape(ways=3, shots=1, queries=2,
                                                              inner_steps=3)  # fmt: skip
    algo = reptile(tiny_conv4(), "classification", inner_lr=0.01, inner_batch=0)
    outer_step(algo, batch, shape, 0, 10)
    saved = {k: v.clone() for k, v in algo.state_dict().items()}
    assert int(algo.adam_steps) == 2 * 3
    torch.manual_seed(0)
    first = algo.evaluate(batch, shape)["accuracy"]
    logits = []
    for carried in (True, False):  # the state it starts from matters to what it predicts
        algo.params = algo.params.model_copy(update={"carry_adam_state": carried})
        phi = algo.adapt(batch.support_x[0], batch.support_y[0], [None] * 3, 0.01,
                         algo.adam_state(carried=False))  # fmt: skip
        logits.append(algo.predict(phi, batch.support_x[0], batch.query_x[0]))
    assert not torch.allclose(logits[0], logits[1])
    algo.params = algo.params.model_copy(update={"carry_adam_state": True})
    torch.manual_seed(0)
    assert torch.equal(algo.evaluate(batch, shape)["accuracy"], first)
    for k, v in algo.state_dict().items():
        assert torch.equal(v, saved[k]), k


def test_non_transductive_queries_see_only_the_support_set_in_batch_norm() -> None:
    """Each query's output is its row in a batch of the support set plus it alone; the
    transductive outputs (all queries in one batch) differ through batch norm."""
    batch = conv4_batch(tasks=1, queries=2)
    algo = reptile(tiny_conv4(), "classification", transductive=False)
    phi = dict(algo.model.named_parameters())
    s, q = batch.support_x[0], batch.query_x[0]
    with torch.no_grad():
        got = algo.predict(phi, s, q)
        by_hand = torch.stack([algo.model(torch.cat([s, q[j : j + 1]]))[-1] for j in range(len(q))])
        torch.testing.assert_close(got, by_hand, rtol=1e-12, atol=1e-12)
        assert not torch.allclose(got, algo.model(q))  # the transductive batch
    mlp = reptile(tiny_mlp(), transductive=False)  # no batch norm: one pass is the same
    b = sinusoid_batch()
    with torch.no_grad():
        torch.testing.assert_close(
            mlp.predict(dict(mlp.model.named_parameters()), b.support_x[0], b.query_x[0]),
            mlp.model(b.query_x[0]),
        )


# ---- the form, presets, CLI ---------------------------------------------------------------
def test_generated_form_fields_are_described_and_defaults_validate() -> None:
    cfg = default_config("reptile", "glyphs")
    assert cfg.algorithm.name == "reptile"
    for key, field in type(cfg.algorithm).model_fields.items():
        assert key == "name" or field.description, key
    assert default_config("reptile", "sinusoid").algorithm.name == "reptile"


def test_presets_quote_the_paper_with_and_without_transduction() -> None:
    presets = load_presets()
    five, twenty = presets["reptile-omniglot-5w1s"], presets["reptile-omniglot-20w1s"]
    assert five.published_value == 0.9768 and "97.68" in five.published
    assert "95.39" in five.published  # the non-transductive row
    assert twenty.published_value == 0.8943 and "89.43" in twenty.published
    assert "88.14" in twenty.published
    for preset, ways, lr, inner in ((five, 5, 0.001, 5), (twenty, 20, 0.0005, 10)):
        cfg = preset.run_config()
        a = cfg.algorithm
        assert a.name == "reptile" and a.transductive and a.inner_optimizer == "adam"
        assert (a.inner_lr, a.meta_lr, a.meta_lr_final) == (lr, 1.0, 0.0)
        assert (cfg.train.ways, cfg.train.shots, cfg.train.meta_batch) == (ways, 10, 5)
        assert (cfg.train.inner_steps, cfg.eval.inner_steps, cfg.eval.shots) == (inner, 50, 1)


def test_cli_run_finishes(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "workbench", "run", "--algorithm", "reptile", "--dataset", "glyphs",
         "--steps", "3", "--db", str(tmp_path / "r.db"), "--set", "train.meta_batch=2",
         "--set", "train.shots=2", "--set", "train.inner_steps=2", "--set", "eval.inner_steps=2",
         "--set", "algorithm.inner_lr=0.001", "--set", "val_every=0", "--set", "test_episodes=4",
         "--set", "ckpt_every=3", "--quiet"],
        capture_output=True, text=True, timeout=1800,
        env={**os.environ, "WORKBENCH_THREADS": "1"},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "finished at step 3" in out.stdout, out.stdout


# ---- learning on glyphs (slow) -----------------------------------------------------------
# Measured here on one thread: 60 steps reach 72.6 +- 4.3 % transductive (67.4 +- 3.8 without
# transduction) in about 15 s of training and 4 s of testing; chance is 20 %.
@pytest.mark.slow
def test_reptile_glyphs_5way_1shot_beats_60_percent() -> None:
    torch.set_num_threads(1)
    cfg = default_config("reptile", "glyphs").with_overrides(
        ["val_every=0", "ckpt_every=0", "test_episodes=100", "seed=1", "threads=1", "steps=60",
         "algorithm.inner_lr=0.001", "algorithm.inner_batch=10", "train.shots=10",
         "train.queries=1", "train.meta_batch=5", "train.inner_steps=5", "eval.queries=1",
         "eval.inner_steps=10"]
    )  # fmt: skip
    result = Trainer(cfg, []).run()
    assert result.status == "finished", result.error
    assert result.test is not None
    assert result.test.mean - result.test.ci95 > 0.60, result.test
