"""Short real meta-training runs on CPU must learn (each well under a minute here)."""

from __future__ import annotations

import pytest
import torch

from workbench.core.config import default_config
from workbench.core.engine import Trainer

pytestmark = pytest.mark.slow


def train(algorithm: str, dataset: str, *overrides: str):  # type: ignore[no-untyped-def]
    torch.set_num_threads(2)
    cfg = default_config(algorithm, dataset).with_overrides(
        ["val_every=0", "ckpt_every=0", "test_episodes=100", "seed=1", *overrides]
    )
    result = Trainer(cfg, []).run()
    assert result.status == "finished", result.error
    assert result.test is not None
    return result.test


def test_maml_sinusoid_halves_the_mse_by_adapting() -> None:
    test = train("maml", "sinusoid", "steps=800", "algorithm.meta_lr=0.005", "eval.shots=5")
    pre, post = test.values["mse_after_0"], test.values["mse_after_1"]
    assert post <= 0.5 * pre, (pre, post)
    assert test.values["mse_after_10"] < post
    for k in (5, 10):  # the paper's fine-tuning protocol is reported at K = 5 and K = 10
        assert {f"k{k}_mse_after_{s}" for s in (1, 5, 10)} <= test.values.keys()
    assert (
        test.values["k10_mse_after_10"] < test.values["k5_mse_after_10"]
    )  # more points, better fit


def test_protonet_glyphs_5way_1shot_beats_60_percent() -> None:
    test = train("protonet", "glyphs", "steps=150")
    assert test.mean - test.ci95 > 0.60, test


def test_maml_glyphs_5way_1shot_beats_60_percent() -> None:
    test = train("maml", "glyphs", "steps=100", "train.meta_batch=4")
    assert test.mean - test.ci95 > 0.60, test


def test_meta_lstm_beats_tuned_sgd_from_the_same_initialisation() -> None:
    """After a short meta-training on sinusoid, the learned update rule beats plain SGD started
    from the same learned theta_0 with the same number of steps, SGD's learning rate being the
    best of a grid chosen on the very test tasks (which favours SGD), by at least 5%."""
    from workbench.core.engine import load_datasets
    from workbench.core.evaluate import episode_generator

    torch.set_num_threads(2)
    cfg = default_config("meta-lstm", "sinusoid").with_overrides([
        "steps=400", "val_every=0", "ckpt_every=0", "test_on_finish=false", "seed=0", "algorithm.meta_lr=0.002",
        "train.meta_batch=4", "train.inner_steps=5", "eval.inner_steps=5", "eval.shots=10",
    ])  # fmt: skip
    trainer = Trainer(cfg, [])
    assert trainer.run().status == "finished"
    algo = trainer.algo
    assert algo is not None
    batch = load_datasets(cfg, ("test",))["test"].sample(cfg.eval, 200, episode_generator("test"))
    with torch.no_grad():
        learned = float(algo.evaluate(batch, cfg.eval)["mse"].mean())

    def sgd(lr: float) -> float:
        losses = []
        for i in range(len(batch)):
            theta = algo.cell.theta0.detach().clone().requires_grad_()
            for _ in range(cfg.eval.inner_steps):
                loss, _ = algo.learner_loss(theta, batch.support_x[i], batch.support_y[i])
                (grad,) = torch.autograd.grad(loss, theta)
                theta = (theta - lr * grad).detach().requires_grad_()
            with torch.no_grad():
                losses.append(
                    float(algo.learner_loss(theta, batch.query_x[i], batch.query_y[i])[0])
                )
        mse = sum(losses) / len(losses)
        return mse if mse == mse else float("inf")  # a diverging rate counts as infinitely bad

    best_sgd = min(sgd(lr) for lr in (0.001, 0.003, 0.01, 0.03, 0.1))
    assert learned < 0.95 * best_sgd, (learned, best_sgd)
