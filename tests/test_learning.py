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
    assert test.values["k10_mse_after_10"] < test.values["k5_mse_after_10"]  # more points, better fit


def test_protonet_glyphs_5way_1shot_beats_60_percent() -> None:
    test = train("protonet", "glyphs", "steps=150")
    assert test.mean - test.ci95 > 0.60, test


def test_maml_glyphs_5way_1shot_beats_60_percent() -> None:
    test = train("maml", "glyphs", "steps=100", "train.meta_batch=4")
    assert test.mean - test.ci95 > 0.60, test
