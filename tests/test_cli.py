"""The headless CLI: runs, bad input (exit 2, one line, catalog untouched), signals, resume."""

from __future__ import annotations

import csv
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from workbench.catalog import Catalog
from workbench.cli import main

QUICK = [
    "--steps",
    "12",
    "--set",
    "val_every=4",
    "--set",
    "val_episodes=5",
    "--set",
    "test_episodes=5",
    "--set",
    "ckpt_every=4",
    "--quiet",
]


@pytest.fixture()
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("WORKBENCH_DB", str(tmp_path / "e.db"))
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "e.db"


def cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 1800
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "workbench", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def test_run_records_a_finished_run_with_test_score(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", "--algorithm", "maml", "--dataset", "sinusoid", *QUICK]) == 0
    out = capsys.readouterr().out
    assert "run 1: finished at step 12" in out and "test mse:" in out
    with Catalog.open(db) as cat:
        run = cat.get_run(1)
        assert run.status == "finished" and run.step == 12
        steps, _, _ = cat.metrics(1, "loss")
        assert steps.tolist() == list(range(1, 13))
        assert [e.split for e in cat.evaluations(1)] == ["test"]
        assert {c.kind for c in cat.checkpoints(1)} >= {"best", "final"}


BAD_INPUTS = [
    (["run", "--algorithm", "nope"], "algorithm.name: unknown algorithm 'nope'; allowed: maml"),
    (["run", "--dataset", "nope"], "dataset.name: unknown dataset 'nope'; allowed: sinusoid"),
    (
        ["run", "--algorithm", "protonet", "--dataset", "sinusoid"],
        "algorithm.name: protonet does not work on regression",
    ),
    (["run", "--dataset", "glyphs", "--ways", "5000"], "ways requested but the"),
    (["run", "--set", "algorithm.inner_lr=-0.1"], "algorithm.inner_lr: -0.1 is not allowed"),
    (["run", "--set", "algorithm.no_such_key=1"], "algorithm.no_such_key: unknown key"),
    (["run", "--set", "nonsense"], "--set: 'nonsense' is not key=value"),
    (
        ["run", "--dataset", "omniglot", "--data-dir", "/no/such/folder"],
        "--data-dir: /no/such/folder is not a folder",
    ),
    (
        ["run", "--device", "cuda:7"],
        "device: 'cuda:7' is not available on this machine; available: auto",
    ),
    (["run", "--preset", "nope"], "--preset: unknown preset 'nope'"),
    (["run", "--steps", "ten"], "argument --steps: invalid int value"),
    (["eval", "99"], "RUN_ID: no run 99"),
]


@pytest.mark.parametrize(("args", "message"), BAD_INPUTS, ids=[" ".join(a) for a, _ in BAD_INPUTS])
def test_bad_input_exits_2_with_one_clear_line_and_touches_nothing(
    db: Path, args: list[str], message: str
) -> None:
    with Catalog.open(db) as cat:
        keep = cat.create_run('{"x": 1}', name="keep", status="finished")
    before = db.read_bytes()
    r = cli(*args)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], r.stderr
    assert "Traceback" not in r.stderr
    with Catalog.open(db) as cat:
        assert [x.id for x in cat.list_runs()] == [keep]
    assert db.read_bytes() == before or Catalog.open(db).get_run(keep).name == "keep"


def test_tampered_checkpoint_is_refused_with_exit_2(db: Path) -> None:
    assert main(["run", *QUICK]) == 0
    with Catalog.open(db) as cat:
        ck = cat.checkpoint(1, "latest")
    with open(ck.path, "r+b") as f:
        f.seek(64)
        f.write(b"tampered")
    for args in (["eval", "1", "--checkpoint", str(ck.step)], ["resume", "1", "--steps", "20"]):
        r = cli(*args)
        assert (
            r.returncode == 2 and "sha256" in r.stderr and len(r.stderr.strip().splitlines()) == 1
        ), r.stderr
    with Catalog.open(db) as cat:
        assert cat.get_run(1).status == "finished" and cat.get_run(1).step == 12


def test_eval_and_export(db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--dataset", "glyphs", "--algorithm", "protonet", *QUICK]) == 0
    assert main(["eval", "1", "--episodes", "7", "--ways", "3"]) == 0
    assert "over 7 episodes" in capsys.readouterr().out
    with Catalog.open(db) as cat:
        evals = cat.evaluations(1)
        assert evals[-1].episodes == 7 and evals[-1].protocol["ways"] == 3
    assert main(["export", "1", "--csv", str(tmp_path / "m.csv")]) == 0
    rows = list(csv.DictReader((tmp_path / "m.csv").open()))
    assert list(rows[0]) == ["run_id", "run_name", "step", "metric", "value", "wall_time"]
    assert sorted(int(r["step"]) for r in rows if r["metric"] == "loss") == list(range(1, 13))


def _wait_for_steps(
    db: Path, run_id: int, n: int, proc: subprocess.Popen[str], timeout: float = 90
) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, proc.communicate()
        if db.exists():
            with Catalog.open(db, stale_s=None) as cat:
                if cat.has_run(run_id) and cat.get_run(run_id).step >= n:
                    return
        time.sleep(0.3)
    raise AssertionError("the run did not start")


def _start(db: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "workbench", "run", "--steps", "100000", "--threads", "1", "--set", "ckpt_every=50", "--quiet", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "WORKBENCH_DB": str(db)},
    )  # fmt: skip


def test_sigterm_cancels_after_writing_a_checkpoint(db: Path) -> None:
    proc = _start(db)
    _wait_for_steps(db, 1, 5, proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=1800)
    assert proc.returncode == 130, err
    with Catalog.open(db) as cat:
        run = cat.get_run(1)
        assert run.status == "cancelled"
        stop = cat.checkpoint(1, "latest")
        assert stop is not None and stop.kind == "stop" and stop.step == run.step


def test_sigkill_is_marked_interrupted_and_resumes_the_same_run(db: Path) -> None:
    proc = _start(db)
    _wait_for_steps(db, 1, 60, proc)  # past the first periodic checkpoint at 50
    proc.kill()
    proc.wait(timeout=1800)
    time.sleep(1.5)
    with Catalog.open(db, stale_s=1.0) as cat:
        run = cat.get_run(1)
        assert run.status == "interrupted"
        killed_at = run.step  # the last step the catalog had committed
        ck = cat.checkpoint(1, "latest")
    assert ck is not None and ck.step % 50 == 0 and 50 <= ck.step <= killed_at
    target = ck.step + 20
    r = cli("resume", "1", "--steps", str(target), "--quiet")
    assert r.returncode == 0, r.stderr
    with Catalog.open(db) as cat:
        run = cat.get_run(1)
        assert run.status == "finished" and run.step == target and run.attempt == 2
        steps, _, _ = cat.metrics(1, "loss")
        assert steps.tolist() == list(
            range(1, target + 1)
        )  # the killed attempt's later points are superseded
        all_steps, _, _ = cat.metrics(1, "loss", include_superseded=True)
        assert len(all_steps) >= target + (killed_at - ck.step)  # ... but kept, nothing deleted


def test_resume_from_an_older_checkpoint_creates_a_child_run(db: Path) -> None:
    assert main(["run", *QUICK]) == 0
    assert main(["resume", "1", "--checkpoint", "8", "--steps", "16", "--quiet"]) == 0
    with Catalog.open(db) as cat:
        child = cat.get_run(2)
        assert child.parent_id == 1 and child.status == "finished" and child.step == 16
        assert cat.get_run(1).step == 12


def test_runs_table_and_presets(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", *QUICK, "--tag", "demo"]) == 0
    capsys.readouterr()
    assert main(["runs", "--tag", "demo"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:3] == ["id", "name", "status"] and "finished" in table[1]
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    assert "maml-omniglot-5w1s" in out and "98.7" in out and "protonet-omniglot-20w1s" in out


# ---- issue 11: bad input found by fuzzing, validation before the catalog, start-up --------
UNDECODABLE = os.fsdecode(b"a\xffb")  # argv bytes that are not UTF-8, as Python passes them
HUGE = "9" * 20  # beyond 64 bits: SQLite and torch overflow


def _refused(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    """main(argv) returns 2 with one line holding `message`, no traceback."""
    rc = main(argv)
    err = capsys.readouterr().err
    lines = err.strip("\n").splitlines()
    assert rc == 2 and len(lines) == 1 and message in lines[0], err
    assert "Traceback" not in err


def _run_ids(db: Path) -> list[int]:
    with Catalog.open(db) as cat:
        return [r.id for r in cat.list_runs()]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "--seed", HUGE], "argument --seed: '99999999999999999999' is out of range"),
        (["run", "--seed", str(-(2**63) - 1)], "argument --seed: '-9223372036854775809' is out"),
        (["run", "--set", f"seed={HUGE}"], "seed: 99999999999999999999 is not allowed"),
        (["eval", HUGE], "argument run_id: '99999999999999999999' is out of range"),
        (["resume", HUGE], "argument run_id"),
        (["export", HUGE, "--csv", "x.csv"], "argument run_id"),
        (["eval", "1", "--checkpoint", HUGE], "argument --checkpoint"),
        (["resume", "1", "--checkpoint", HUGE], "argument --checkpoint"),
        (["eval", "1", "--checkpoint", "١٢"], "argument --checkpoint"),
        (["run", "--name", UNDECODABLE], "argument --name: 'a\\udcffb' is not valid UTF-8"),
        (["run", "--tag", UNDECODABLE], "argument --tag: 'a\\udcffb' is not valid UTF-8"),
        (["run", "--name", "a\nb"], "argument --name: 'a\\nb' holds control characters"),
        (["runs", "--tag", UNDECODABLE], "argument --tag"),
        (["run", "--algorithm", ""], "argument --algorithm: empty value"),
        (["export", "1", "--csv", ""], "--csv: empty file name"),
        (["runs", "--status", ""], "argument --status: empty value"),
    ],
)
def test_fuzzer_findings_are_one_line_and_exit_2(
    db: Path, argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with Catalog.open(db) as cat:  # a run 1 exists, so the run id alone is not what is refused
        cat.create_run('{"x": 1}', name="keep", status="finished")
    _refused(argv, message, capsys)
    assert _run_ids(db) == [1]


def test_bad_config_files_csv_folders_and_env_are_one_line(
    db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with Catalog.open(db) as cat:
        cat.create_run('{"x": 1}', name="keep", status="finished")
    (tmp_path / "latin1.json").write_bytes('{"name": "caf\xe9"}'.encode("latin-1"))
    (tmp_path / "deep.json").write_text("[" * 100_000)
    (tmp_path / "deep-value.json").write_text('{"tags": ' + "[" * 100_000 + "}")
    (tmp_path / "huge.json").write_text('{"seed": ' + "9" * 5000 + "}")
    _refused(["run", "--config", str(tmp_path / "latin1.json")], "is not UTF-8 text", capsys)
    _refused(["run", "--config", str(tmp_path / "deep.json")], "nested too deeply", capsys)
    _refused(["run", "--config", str(tmp_path / "deep-value.json")], "nested too deeply", capsys)
    _refused(["run", "--config", str(tmp_path / "huge.json")], "config: not valid JSON", capsys)
    _refused(["run", "--config", str(tmp_path)], "--config: cannot read", capsys)
    _refused(["run", "--set", "tags=" + "[" * 100_000], "tags: the value is nested", capsys)
    _refused(["run", "--set", "seed=" + "9" * 5000], "seed: '999", capsys)
    _refused(["export", "1", "--csv", str(tmp_path)], "is a folder", capsys)
    _refused(["run", "--data-dir", "x" * 5000], "--data-dir: xxx", capsys)
    _refused(["--db", str(tmp_path), "runs"], "--db: ", capsys)
    monkeypatch.setenv("WORKBENCH_THREADS", "many")
    _refused(["run", "--print-config"], "WORKBENCH_THREADS: invalid int value: 'many'", capsys)
    assert _run_ids(db) == [1]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--set", "model.hidden=[-5]"], "model.hidden.0: -5 is not allowed"),
        (["--set", "model.hidden=[0]"], "model.hidden.0: 0 is not allowed"),
        (["--set", "model.hidden=[40, 0]"], "model.hidden.1: 0 is not allowed"),
        (["--set", "algorithm.meta_lr=nan"], "algorithm.meta_lr: 'nan' is not allowed: it is not a finite number"),
        (["--set", "algorithm.meta_lr=NaN"], "it is not a finite number"),
        (["--set", "algorithm.inner_lr=Infinity"], "algorithm.inner_lr: inf is not allowed: it is not a finite number"),
        (["--set", "algorithm.grad_clip=-Infinity"], "it is not a finite number"),
        (["--set", "train.shots=true"], "train.shots: True is not allowed: a number is needed"),
        (["--set", "dataset.channels=true"], "dataset.channels: True is not allowed"),
        (["--set", f"seed=-{HUGE}"], "seed: -99999999999999999999 is not allowed"),
        (["--set", "dataset.split_seed=-1"], "dataset.split_seed: -1 is not allowed"),
        (["--set", 'tags=[""]'], "tags.0: '' is not allowed"),
        (["--dataset", "glyphs", "--ways", "1"], "train.ways: 1 is not allowed: a classification task needs at least 2 ways"),
        (["--dataset", "glyphs", "--set", "eval.ways=1"], "eval.ways: 1 is not allowed"),
    ],
)  # fmt: skip
def test_nonsense_config_is_refused_before_the_catalog_is_opened(
    db: Path, flags: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _refused(["run", "--steps", "2", "--set", "test_on_finish=false", *flags], message, capsys)
    assert not db.exists()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--set", "eval.queries=30"], "eval.queries: 1 shots + 30 queries = 31 images per class requested but a class of the val split of glyphs has only 20"),
        (["--shots", "10", "--queries", "15"], "train.queries: 10 shots + 15 queries = 25 images"),
        (["--set", "train.queries=20"], "train.queries: 1 shots + 20 queries"),
    ],
)  # fmt: skip
def test_task_shapes_the_dataset_cannot_serve_create_no_run(
    db: Path, flags: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["run", "--dataset", "glyphs", "--steps", "2", "--set", "test_on_finish=false"]
    _refused([*argv, *flags], message, capsys)
    assert not db.exists() or _run_ids(db) == []


def test_a_closed_pipe_ends_quietly(db: Path) -> None:
    """`workbench runs | head -1`: the reader is gone; no BrokenPipeError traceback."""
    with Catalog.open(db) as cat:
        cat.create_run('{"x": 1}', name="keep", status="finished")
    read, write = os.pipe()
    os.close(read)  # every write to `write` now fails with EPIPE
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "workbench", "runs"], stdout=write, stderr=subprocess.PIPE,
            text=True, timeout=1800, env={**os.environ, "WORKBENCH_DB": str(db)},
        )  # fmt: skip
    finally:
        os.close(write)
    assert proc.returncode == 1 and proc.stderr == "", proc.stderr


def test_help_runs_export_and_argument_errors_import_neither_torch_nor_qt(
    db: Path, tmp_path: Path
) -> None:
    """Start-up time without a clock: torch and Qt take seconds to import, so the commands
    that need neither must not import them (checked in a fresh interpreter)."""
    with Catalog.open(db) as cat:
        cat.create_run('{"x": 1}', name="keep", status="finished")
    commands = [
        ["--help"],
        ["run", "--help"],
        ["runs"],
        ["runs", "--status", "finished"],
        ["export", "1", "--csv", str(tmp_path / "m.csv")],
        ["run", "--steps", "ten"],
        ["eval", HUGE],
        ["export", "2", "--csv", str(tmp_path / "m.csv")],
    ]
    probe = (
        "import json, sys\n"
        "from workbench.cli import main\n"
        "for argv in json.loads(sys.argv[1]):\n"
        "    rc = main(argv)\n"
        "    heavy = sorted(k for k in sys.modules if k.split('.')[0] in ('torch', 'PySide6'))\n"
        "    print(json.dumps([argv, rc, heavy[:5]]), file=sys.stderr)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe, json.dumps(commands)], capture_output=True, text=True,
        timeout=1800, env={**os.environ, "WORKBENCH_DB": str(db)}, cwd=Path(__file__).parents[1],
    )  # fmt: skip
    report = [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("[")]
    assert [r[0] for r in report] == commands, proc.stderr
    assert [r[1] for r in report] == [0, 0, 0, 0, 0, 2, 2, 2], report
    assert all(r[2] == [] for r in report), report


def test_an_unusable_catalog_file_is_one_line_and_left_as_it_was(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """CatalogError (not a catalog, newer, damaged, read-only) is a user error like the rest."""
    path = tmp_path / "notes.txt"
    path.write_bytes(b"not a catalog, just notes\n" * 100)
    for argv in (["runs"], ["export", "1", "--csv", str(tmp_path / "m.csv")], ["eval", "1"]):
        _refused(["--db", str(path), *argv], f"workbench {argv[0]}: error: ", capsys)
    assert path.read_bytes() == b"not a catalog, just notes\n" * 100


def test_a_configuration_that_cannot_fit_is_refused_before_the_run_exists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The peak-memory estimate (workbench.core.footprint) refuses a run that would not fit in
    the free memory, naming the setting that drives it; memory_check=false tries anyway."""
    import workbench.core.footprint as footprint

    monkeypatch.setattr(footprint, "available_bytes", lambda *a, **k: 64 * 2**20)
    db = tmp_path / "m.db"
    argv = ["--db", str(db), "run", "--algorithm", "fomaml", "--dataset", "glyphs", "--quiet"]
    argv += ["--steps", "1", "--set", "train.meta_batch=256", "--set", "test_on_finish=false"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "train.meta_batch" in err[0] and "GiB at its peak" in err[0]
    assert not db.exists() or not sqlite3.connect(db).execute("SELECT * FROM runs").fetchall()
    assert main([*argv, "--set", "memory_check=false", "--set", "val_every=0"]) == 0


@pytest.mark.parametrize("algorithm", ["maml", "fomaml", "meta-lstm"])
def test_maml_family_with_zero_training_inner_steps_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], algorithm: str
) -> None:
    """It would meta-train without an inner loop (the form refuses it too)."""
    db = tmp_path / "z.db"
    dataset = "sinusoid" if algorithm != "meta-lstm" else "glyphs"
    argv = ["--db", str(db), "run", "--algorithm", algorithm, "--dataset", dataset]
    assert main([*argv, "--set", "train.inner_steps=0", "--print-config"]) == 2
    err = capsys.readouterr().err
    assert "train.inner_steps: 0 is not allowed" in err and "without an inner loop" in err
    assert not db.exists()
