"""Fuzzed bad input: every invocation of bench/fuzz_corpus.py exits 2 with one line on stderr,
no traceback, and leaves no run in the catalog (the README's promise for bad input).

In-process through `workbench.cli.main`, so that some 350 cases take seconds, not minutes.
"""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.fuzz_corpus import invalid_invocations  # noqa: E402
from workbench import cli  # noqa: E402


def run_rows(db: Path) -> int:
    """Rows of the catalog's runs table (0 when the file or the table does not exist)."""
    if not db.exists():
        return 0
    with sqlite3.connect(db) as con:
        if not con.execute("select 1 from sqlite_master where name = 'runs'").fetchone():
            return 0
        return con.execute("select count(*) from runs").fetchone()[0]


def test_the_corpus_is_large_and_covers_every_command(tmp_path: Path) -> None:
    cases = invalid_invocations(tmp_path / "e.db")
    assert len(cases) >= 150
    commands = {c[2] for c in cases if c[:1] == ["--db"] and len(c) > 2}
    assert {"run", "eval", "resume", "export", "runs"} <= commands


def test_every_invalid_invocation_exits_2_with_one_line_and_no_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("WORKBENCH_THREADS", raising=False)
    monkeypatch.delenv("WORKBENCH_DB", raising=False)

    def no_training(*_: object) -> int:
        raise AssertionError("an invalid invocation started training")

    monkeypatch.setattr(cli, "_train", no_training)
    db = tmp_path / "e.db"
    failures = []
    for argv in invalid_invocations(db):
        shown = " ".join(a if len(a) < 40 else a[:20] + f"...({len(a)} chars)" for a in argv)
        try:
            rc = cli.main(argv)
        except BaseException as exc:  # noqa: BLE001 - any escape is the finding
            capsys.readouterr()
            failures.append(f"{shown!r}: raised {type(exc).__name__}: {str(exc)[:200]}")
        else:
            err = capsys.readouterr().err
            lines = err.strip("\n").splitlines()
            if rc != 2 or len(lines) != 1 or "Traceback" in err:
                failures.append(f"{shown!r}: exit {rc}, stderr {err[:300]!r}")
        if run_rows(db):
            failures.append(f"{shown!r}: a run was recorded")
            db.unlink()
    assert not failures, f"{len(failures)} cases failed:\n" + "\n".join(failures)
