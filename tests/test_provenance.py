"""A run's record says which code, command, packages and data made it (issue 18): the git
commit of the workbench checkout, whether it was dirty and its diff beside the checkpoints, the
command line, versions and the data's checksums; and reading them never fails or slows a run."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pydantic
import pytest
import sqlalchemy

from workbench.catalog import Catalog
from workbench.cli import main
from workbench.core import provenance
from workbench.core.config import DatasetConfig, RunConfig, default_config
from workbench.core.engine import Trainer, environment
from workbench.core.events import Listener, RunStarted

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")


def _git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@x"}  # fmt: skip
    return subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, check=True, env=env
    ).stdout


@pytest.fixture
def checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A git checkout holding a committed `pkg/__init__.py`, standing in for the workbench
    package (the per-process cache starts empty)."""
    repo = tmp_path / "repo"
    (repo / "pkg").mkdir(parents=True)
    (repo / "pkg" / "__init__.py").write_text("x = 1\n")
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "first")
    monkeypatch.setattr(provenance, "PACKAGE_DIR", repo / "pkg")
    monkeypatch.setattr(provenance, "_states", {})
    return repo


class Started(Listener):
    def __init__(self) -> None:
        self.event: RunStarted | None = None

    def on_start(self, e: RunStarted) -> None:  # type: ignore[override]
        self.event = e


def tiny(**extra: object) -> RunConfig:
    base = default_config("maml", "sinusoid").to_dict()
    base.update(steps=2, val_every=0, ckpt_every=0, test_on_finish=False, threads=1, **extra)
    base["train"]["meta_batch"] = 2
    return RunConfig.from_dict(base)


def _start_env(tmp_path: Path | None) -> dict:
    rec = Started()
    Trainer(tiny(), [rec], checkpoint_dir=tmp_path).run()
    assert rec.event is not None
    return rec.event.environment


# ---- the code --------------------------------------------------------------------------------
def test_a_clean_checkout_is_recorded_by_its_commit(checkout: Path, tmp_path: Path) -> None:
    env = _start_env(tmp_path / "ck")
    head = _git(checkout, "rev-parse", "HEAD").strip()
    assert env["git"] == {"root": str(checkout), "commit": head, "dirty": False}
    assert "plugin_git" not in env  # the built-in algorithm and dataset are the workbench's
    assert not (tmp_path / "ck" / provenance.DIFF_FILE).exists()


def test_a_dirty_checkouts_diff_is_stored_beside_the_checkpoints(
    checkout: Path, tmp_path: Path
) -> None:
    (checkout / "pkg" / "__init__.py").write_text("x = 2  # an edit not committed\n")
    env = _start_env(tmp_path / "ck")
    diff_file = tmp_path / "ck" / "code.diff"
    assert env["git"]["dirty"] is True and env["git"]["diff"] == "code.diff"
    assert diff_file.read_bytes() == _git(checkout, "diff", "HEAD").encode()
    assert env["git"]["diff_sha256"] == hashlib.sha256(diff_file.read_bytes()).hexdigest()
    # the diff restores the run's code on a clean checkout of its commit
    _git(checkout, "stash", "-q")
    _git(checkout, "apply", str(diff_file))
    assert "an edit not committed" in (checkout / "pkg" / "__init__.py").read_text()


def test_without_a_checkpoint_folder_no_diff_is_written(checkout: Path, tmp_path: Path) -> None:
    (checkout / "pkg" / "__init__.py").write_text("x = 3\n")
    env = _start_env(None)
    assert env["git"]["dirty"] is True and "diff" not in env["git"]


def test_no_git_record_where_there_is_no_checkout(
    tmp_path: Path, checkout: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # an installed package (not a checkout), a package untracked inside some repository (a
    # virtual environment in a project), and no git at all: the field is absent, the run runs
    plain = tmp_path / "site-packages" / "pkg"
    plain.mkdir(parents=True)
    (plain / "__init__.py").write_text("")
    (checkout / "venv" / "pkg").mkdir(parents=True)
    (checkout / "venv" / "pkg" / "__init__.py").write_text("")
    for folder in (plain, checkout / "venv" / "pkg"):
        monkeypatch.setattr(provenance, "PACKAGE_DIR", folder)
        monkeypatch.setattr(provenance, "_states", {})
        assert "git" not in environment(_cpu())
    monkeypatch.setattr(provenance, "PACKAGE_DIR", checkout / "pkg")
    monkeypatch.setattr(provenance, "_states", {})
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    assert "git" not in _start_env(None)


def test_a_hanging_git_costs_the_run_its_timeout_at_most(
    checkout: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "git").write_text("#!/bin/sh\nexec sleep 30\n")
    (bin_dir / "git").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(provenance, "GIT_TIMEOUT_S", 0.3)
    t0 = time.perf_counter()
    assert "git" not in environment(_cpu())
    assert time.perf_counter() - t0 < 5.0


def test_a_plugin_in_its_own_repository_is_recorded_too(
    checkout: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = tmp_path / "plugin"
    other.mkdir()
    (other / "my_algo.py").write_text("A = 1\n")
    _git(other, "init", "-q")
    _git(other, "add", ".")
    _git(other, "commit", "-q", "-m", "p")
    (other / "my_algo.py").write_text("A = 2\n")
    fields, diffs = provenance.code([str(other / "my_algo.py")])
    entry = fields["plugin_git"][str(other / "my_algo.py")]
    assert entry["commit"] == _git(other, "rev-parse", "HEAD").strip() and entry["dirty"]
    assert diffs[entry["diff"]] == _git(other, "diff", "HEAD").encode()
    assert fields["git"]["commit"] == _git(checkout, "rev-parse", "HEAD").strip()


def _cpu():  # noqa: ANN202 - a torch.device
    import torch

    return torch.device("cpu")


# ---- command, packages, data -----------------------------------------------------------------
def test_command_line_and_package_versions_are_recorded() -> None:
    env = environment(_cpu(), tiny())
    assert env["command"]["argv"] == sys.argv and env["command"]["cwd"] == os.getcwd()
    assert env["pydantic"] == pydantic.__version__
    assert env["sqlalchemy"] == sqlalchemy.__version__
    assert env["data"] == {"dataset": "sinusoid", "synthetic": True}


def test_omniglot_archives_are_recorded_by_their_sha256(tmp_path: Path) -> None:
    for part in ("images_background", "images_evaluation"):
        (tmp_path / f"{part}.zip").write_bytes(part.encode() * 100)
    cfg = DatasetConfig(name="omniglot", data_dir=str(tmp_path))
    rec = provenance.data_record("omniglot", cfg, None)
    assert rec["root"] == str(tmp_path)
    assert rec["sha256"] == {
        f"{p}.zip": hashlib.sha256(p.encode() * 100).hexdigest()
        for p in ("images_background", "images_evaluation")
    }
    folder = tmp_path / "folders"
    for part in ("images_background", "images_evaluation"):
        (folder / part).mkdir(parents=True)
    rec = provenance.data_record(
        "omniglot", DatasetConfig(name="omniglot", data_dir=str(folder)), None
    )
    assert rec["verified"] is False and "sha256" not in rec


def test_the_cli_records_its_command_and_names_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "e.db"
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    args = ["run", "--db", str(db), "--steps", "2", "--set", "val_every=0", "--set",
            "test_on_finish=false", "--threads", "1", "--quiet"]  # fmt: skip
    monkeypatch.setattr(sys, "argv", ["workbench", *args])
    assert main(args) == 0
    assert main(args) == 0
    with Catalog.open(db) as cat:
        first, second = cat.get_run(1), cat.get_run(2)
    assert (first.name, second.name) == ("maml-sinusoid-s0", "maml-sinusoid-s0-2")
    assert first.environment["command"]["argv"] == ["workbench", *args]
    assert first.train_seconds is not None and first.duration_s == first.train_seconds


def test_reading_the_provenance_is_cheap(checkout: Path) -> None:
    """What a run's start pays: git's three commands when not prefetched (once per process),
    nothing once prefetched. Generous bounds: the machine may be busy."""
    (checkout / "pkg" / "__init__.py").write_text("x = 4\n")
    t0 = time.perf_counter()
    fields, _ = provenance.code([])
    cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(10):
        provenance.code([])
        provenance.command()
        provenance.package_versions()
    warm = (time.perf_counter() - t0) / 10
    print(f"\nprovenance: cold {cold * 1000:.1f} ms, cached {warm * 1000:.2f} ms")
    assert fields["git"]["dirty"] and cold < 1.0 and warm < 0.01
