"""bench/accuracy.py runs end to end on a tiny configuration (the real budgets live in bench/)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "accuracy.py"


@pytest.mark.parametrize("method", ["protonet", "maml-sinusoid"])
def test_accuracy_script_runs_tiny(method: str, tmp_path: Path) -> None:
    db = tmp_path / "bench.db"
    env_cmd = [sys.executable, str(SCRIPT), "--tiny", method, "--db", str(db)]
    r = subprocess.run(env_cmd, capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "training" in r.stdout and "|" in r.stdout  # a result row per test protocol
    again = subprocess.run(
        [*env_cmd, "--report-only"], capture_output=True, text=True, timeout=1800
    )
    assert again.returncode == 0 and "training" not in again.stdout, again.stdout + again.stderr
