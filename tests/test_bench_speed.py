"""bench/speed.py --tiny runs end to end (glyphs, meta-batch 2, no peers venv) and prints its table."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_speed_tiny_prints_the_table() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "speed.py"), "--tiny", "--no-peers", "--threads", "1"],
        capture_output=True, text=True, timeout=1800, cwd=ROOT,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    text = out.stdout
    assert "| configuration | implementation | median ms | IQR ms | ours/impl |" in text
    for title in (
        "MAML 5w1s, 1 query/class, 2nd order",
        "MAML 20w1s, 5 steps, 1st order",
        "ProtoNet 60w5s",
        "Meta-LSTM 5w1s",
    ):
        assert f"| {title}" in text and "| ours |" in text, title
    # the plain peers need no venv: their meta-gradients were checked and they were timed
    assert "| plain |" in text and "aborted" not in text
    assert "higher: skipped (--no-peers)" in text
    assert "% of our step |" in text
