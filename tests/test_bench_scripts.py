"""The benchmark scripts run (`--tiny`, in a subprocess) and name what they measure."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


# only a guard against a hung script: a test must not fail because a busy machine is slow
HANG_GUARD_S = 1800


def run_tiny(script: str, timeout: int = HANG_GUARD_S) -> str:
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    name, *extra = script.split()
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / name), "--tiny", *extra], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=timeout)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc.stdout


@pytest.mark.parametrize(
    ("script", "words"),
    [
        (
            "gui_overhead.py",
            [
                "median steps/s headless",
                "with GUI",
                "sinusoid",
                "glyphs",
                "QTimer lateness",
                "p99",
                "max",
            ],
        ),
        (
            "catalog_scale.py",
            [
                "built a catalog of 200 runs",
                "list the runs",
                "load one run's",
                "metric logging per step",
            ],
        ),
        ("plot_redraw.py", ["redraw of a 10,000-point curve, full view", "zoomed", "paint"]),
        (
            "device_check.py --device cpu",
            [
                "finite-difference MAML meta-gradient check",
                "over random directions (ok)",
                "resume equivalence",
                "final weights identical",
                "| | ours |",
                "ours bf16",
                "higher",
                "learn2learn",
                "| | plain |",
                "short MAML Omniglot 5w1s training",
                "| bf16 |",
                "device check: all checks passed",
            ],
        ),
        ("track_overhead.py", ["caller's time per `log` call", "µs", "writer's commit"]),
        (
            "algorithm_steps.py",
            ["| maml | 1 |", "| reptile |", "| matching |", "| relation |", "20-way 1-shot"],
        ),
        (
            "omp_wait.py",
            [
                "OMP_WAIT_POLICY=unset at torch import",
                "OMP_WAIT_POLICY=PASSIVE at torch import",
                "| MLP 25x40 @ 40x40, 2nd order | quiet | 2 |",
                "| MLP 25x40 @ 40x40, 2nd order | loaded | 2 |",
                "| Conv-4 w8 14x14 5w1s q5 mb2, 2nd order | quiet | 2 |",
                "| Conv-4 w8 14x14 5w1s q5 mb2, 2nd order | loaded | 2 |",
            ],
        ),
        (
            "profile_step.py --write",
            ["| maml-5w1s-q1-so |", "| maml-5w1s-q1-fo |", "| protonet-60w5s |", "convolution"],
        ),
    ],
)
def test_bench_script_tiny(script: str, words: list[str]) -> None:
    out = run_tiny(script)
    for w in words:
        assert w in out, f"{w!r} not in the output of {script}:\n{out}"


def test_overlay_redraw_tiny() -> None:
    """The browser's Curves tab with 10 small runs overlaid: redraw times after pans and zooms."""
    out = run_tiny("overlay_redraw.py")
    for w in ("built a catalog of 10 runs", "redraw after a pan or zoom", "median", "p95",
              "CPU time", "reference, one PlotDataItem per run and panel"):  # fmt: skip
        assert w in out, f"{w!r} not in the output of overlay_redraw.py:\n{out}"
