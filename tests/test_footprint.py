"""The peak-memory estimate follows the settings that drive it, names the one to lower, refuses
what cannot fit and accepts every shipped preset on a 24 GiB machine; `bench/memory_peaks.py
--tiny` checks it against measured peaks."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from workbench.core.config import RunConfig, default_config
from workbench.core.errors import ConfigError
from workbench.core.footprint import (
    Estimate,
    check_fits,
    config_input_shape,
    estimate_peak_bytes,
)
from workbench.core.presets import load_presets

ROOT = Path(__file__).resolve().parents[1]
GIB = 2**30
HANG_GUARD_S = 1800  # only a guard against a hung script, not a speed requirement


def omniglot(algorithm: str = "maml", **train: int) -> RunConfig:
    """Omniglot config on 2 threads; `train` keys set the training task shape (ways: both
    phases', as a MAML head fixes them), evaluation stays 5-way 1-shot."""
    shape = {"ways": 5, "shots": 1, "queries": 1, "meta_batch": 8, "inner_steps": 1, **train}
    steps = 0 if algorithm == "protonet" else 1
    if algorithm == "protonet":
        shape["inner_steps"] = 0
    evaluation = {"ways": shape["ways"], "shots": 1, "queries": 1, "inner_steps": steps}
    return RunConfig.from_dict(
        {
            "algorithm": {"name": algorithm},
            "dataset": {"name": "omniglot"},
            "model": {"name": "conv4", "downsample": "maxpool" if steps == 0 else "stride"},
            "train": shape,
            "eval": evaluation,
            "threads": 2,
            "device": "cpu",
        }
    )


def est(config: RunConfig) -> Estimate:
    return estimate_peak_bytes(config, config_input_shape(config))


@pytest.mark.parametrize(
    ("key", "low", "high"),
    [
        ("meta_batch", 8, 256),
        ("ways", 5, 40),
        ("queries", 1, 19),
    ],
)
def test_estimate_grows_with_the_setting_and_names_it(key: str, low: int, high: int) -> None:
    small, big = est(omniglot(**{key: low})), est(omniglot(**{key: high}))
    assert big.total > small.total
    assert big.driver == f"train.{key}"


def test_second_order_inner_steps_grow_the_estimate_first_order_is_lower() -> None:
    one, five = est(omniglot(inner_steps=1)), est(omniglot(inner_steps=10))
    assert five.total > one.total
    assert five.driver == "train.inner_steps"
    first_order = est(omniglot("fomaml", inner_steps=10))
    assert first_order.total < five.total


def test_protonet_ways_drive_its_estimate() -> None:
    five, sixty = (
        est(omniglot("protonet", ways=5, queries=5)),
        est(omniglot("protonet", ways=60, queries=5)),
    )
    assert sixty.total > five.total
    assert sixty.driver == "train.ways"


def test_breakdown_adds_up_and_counts_the_dataset_and_process() -> None:
    e = est(omniglot())
    assert e.breakdown["dataset"] == 32_460 * 28 * 28  # Omniglot's decoded uint8 cache
    assert e.breakdown["process"] > 0
    assert e.total <= sum(e.breakdown.values())


def test_absurd_meta_batch_is_refused_naming_it() -> None:
    # beyond the config's own bound (1,024): an unvalidated copy, as a programmatic caller might
    cfg = omniglot(ways=20, queries=15)
    absurd = cfg.model_copy(update={"train": cfg.train.model_copy(update={"meta_batch": 100_000})})
    with pytest.raises(ConfigError) as info:
        check_fits(absurd, config_input_shape(absurd), available=24 * GIB)
    assert info.value.key == "train.meta_batch"
    assert "train.meta_batch (100000)" in info.value.message
    assert "GiB is free" in info.value.message and "memory_check=false" in info.value.message


def test_valid_but_too_big_configuration_is_refused() -> None:
    cfg = omniglot("protonet", ways=1000, shots=5, queries=15)
    with pytest.raises(ConfigError) as info:
        check_fits(cfg, config_input_shape(cfg), available=24 * GIB)
    assert info.value.key == "train.ways"


@pytest.mark.parametrize("name", sorted(load_presets()))
def test_every_preset_fits_in_24_gib(name: str) -> None:
    cfg = load_presets()[name].run_config()  # no data read: shapes come from the config
    e = check_fits(cfg, config_input_shape(cfg), available=24 * GIB)
    assert 0 < e.total < 24 * GIB


def test_check_fits_defaults_to_free_memory() -> None:
    cfg = default_config("maml", "sinusoid")
    assert check_fits(cfg, config_input_shape(cfg)).total < 2 * GIB


def test_memory_peaks_tiny_within_2x_of_measured() -> None:
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "memory_peaks.py"), "--tiny"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=HANG_GUARD_S,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    cells = [ln.split("|") for ln in proc.stdout.splitlines() if ln.startswith("| ")]
    ratios = [float(c[4]) for c in cells if re.fullmatch(r" \d+\.\d+ ", c[4])]
    assert len(ratios) == 2, proc.stdout
    for ratio in ratios:
        assert 0.5 <= ratio <= 2.0, proc.stdout
