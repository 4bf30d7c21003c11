"""Paper exports: results tables (Markdown, LaTeX booktabs, CSV) with the right intervals, the
one metric CSV column set, and scores written one way (`format_score`) by the CLI too."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from workbench import api, exports
from workbench.catalog import Catalog
from workbench.cli import main
from workbench.core.errors import ConfigError

T_975 = {1: 12.7062, 2: 4.3027, 3: 3.1824, 4: 2.7764, 9: 2.2622, 30: 2.0423, 120: 1.9799}


def config(seed: int, **changes: object) -> str:
    base = {
        "name": f"maml-glyphs-s{seed}",
        "seed": seed,
        "algorithm": {"name": "maml", "inner_lr": 0.4},
        "dataset": {"name": "glyphs"},
        "eval": {"ways": 5, "shots": 1},
    }
    return json.dumps({**base, **changes})


def add_run(
    cat: Catalog,
    seed: int,
    score: float | None,
    ci: float = 0.004,
    name: str | None = None,
    protocol: dict[str, object] | None = None,
    **changes: object,
) -> int:
    run_id = cat.create_run(
        config(seed, **changes), name=name or f"maml-glyphs-5w1s-s{seed}", algorithm="maml",
        dataset="glyphs", seed=seed, status="finished",
    )  # fmt: skip
    if score is not None:
        proto = protocol or {"ways": 5, "shots": 1, "queries": 15, "episodes": 600}
        cat.add_evaluation(run_id, "test", "accuracy", score, ci, 600, protocol=proto)
    return run_id


@pytest.fixture()
def cat(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Catalog]:
    monkeypatch.setenv("WORKBENCH_DB", str(tmp_path / "e.db"))
    with Catalog.open(tmp_path / "e.db") as c:
        yield c


# ---- statistics and formatting ----------------------------------------------------------
def test_t_quantile_matches_the_published_table() -> None:
    for df, t in T_975.items():
        assert exports.t_quantile(0.975, df) == pytest.approx(t, abs=5e-5), df


def test_seed_interval_uses_t_with_n_minus_1_degrees_of_freedom() -> None:
    mean, ci = exports.seed_interval([0.95, 0.96, 0.97])
    # by hand: s = 0.01, t(0.975, 2) = 4.3027, half-width = 4.3027 * 0.01 / sqrt(3)
    assert mean == pytest.approx(0.96)
    assert ci == pytest.approx(4.302653 * 0.01 / math.sqrt(3), rel=1e-5)
    assert ci > 2 * 1.96 * 0.01 / math.sqrt(3)  # not the normal interval
    assert exports.seed_interval([0.5]) == (0.5, None)


def test_scores_are_written_one_way() -> None:
    assert exports.format_score(0.987, 0.004, "accuracy") == "98.70 ± 0.40 %"
    assert exports.format_score(0.987, None, "accuracy") == "98.70 %"
    assert exports.format_score(0.987, 0.004, "accuracy", latex=True) == r"98.70 $\pm$ 0.40\,\%"
    assert exports.format_score(0.5123, 0.0312, "mse") == "0.512 ± 0.031"
    assert exports.format_score(12.345, 2.34, "mse") == "12.3 ± 2.3"
    assert exports.format_score(0.5123, None, "mse") == "0.5123"
    assert exports.format_score(None, None, "accuracy") == "-"
    assert exports.format_score(float("nan"), 0.1, "mse") == "-"


# ---- results ------------------------------------------------------------------------------
def test_a_run_shows_its_test_episodes_interval_from_its_latest_test_evaluation(
    cat: Catalog,
) -> None:
    run = add_run(cat, 0, 0.90, 0.01)
    cat.add_evaluation(run, "val", "accuracy", 0.5, 0.1, 100)
    cat.add_evaluation(run, "test", "accuracy", 0.987, 0.004, 600, protocol={"ways": 5, "shots": 1})
    (row,) = exports.results(cat, [run])
    assert (row.mean, row.ci95, row.n, row.over) == (0.987, 0.004, 600, "episodes")
    assert (row.run_ids, row.task, row.run) == (
        (run,),
        "5-way 1-shot",
        f"maml-glyphs-5w1s-s0 (#{run})",
    )


def test_seed_groups_are_runs_equal_but_for_the_seed_and_tested_alike(cat: Catalog) -> None:
    seeds = [add_run(cat, s, v) for s, v in ((0, 0.95), (1, 0.96), (2, 0.97))]
    other_lr = add_run(cat, 3, 0.80, algorithm={"name": "maml", "inner_lr": 0.1})
    other_shape = add_run(cat, 4, 0.99, protocol={"ways": 5, "shots": 5, "episodes": 600})
    rows = exports.results(cat, [*seeds, other_lr, other_shape], group_seeds=True)
    assert [r.run_ids for r in rows] == [tuple(seeds), (other_lr,), (other_shape,)]
    group = rows[0]
    assert (group.n, group.over, group.mean) == (3, "seeds", pytest.approx(0.96))
    assert group.ci95 == pytest.approx(4.302653 * 0.01 / math.sqrt(3), rel=1e-5)
    assert rows[1].over == rows[2].over == "episodes"
    assert rows[2].task == "5-way 5-shot"
    assert len(exports.results(cat, seeds)) == 3  # without --group-seeds: one row per run


def test_unknown_runs_and_runs_without_a_test_score_are_refused_by_name(cat: Catalog) -> None:
    untested = add_run(cat, 0, None)
    with pytest.raises(ConfigError, match="RUN_ID: no run 99"):
        exports.results(cat, [99])
    with pytest.raises(ConfigError, match=f"run {untested} has no test score.*workbench eval"):
        exports.results(cat, [untested])


# ---- table formats --------------------------------------------------------------------------
def two_rows(cat: Catalog) -> list[exports.ResultRow]:
    seeds = [add_run(cat, s, v) for s, v in ((0, 0.95), (1, 0.96), (2, 0.97))]
    single = add_run(cat, 9, 0.987, name="odd_name & 50%", algorithm={"name": "maml", "x": 1})
    return exports.results(cat, [*seeds, single], group_seeds=True)


def test_markdown_table_says_which_interval_each_row_shows(cat: Catalog) -> None:
    md = exports.results_table(two_rows(cat), "md")
    lines = md.splitlines()
    assert lines[0] == "| run | algorithm | dataset | task | test accuracy | n |"
    assert lines[2] == "| #1, #2, #3 | maml | glyphs | 5-way 1-shot | 96.00 ± 2.48 % | 3 seeds |"
    assert "98.70 ± 0.40 % | 600 test episodes |" in lines[3]
    assert any("seed group" in line and "Student t" in line for line in lines[4:])
    assert any("per run" in line and "1.96" in line for line in lines[4:])


def test_latex_table_is_booktabs_with_escaped_text(cat: Catalog) -> None:
    tex = exports.results_table(two_rows(cat), "latex")
    lines = tex.splitlines()
    rules = [lines.index(r) for r in (r"\toprule", r"\midrule", r"\bottomrule")]
    assert rules == sorted(rules) and lines[0].startswith(r"\begin{tabular}")
    body = lines[rules[1] + 1 : rules[2]]
    assert len(body) == 2 and all(r.endswith(r"\\") and r.count(" & ") == 5 for r in body)
    assert r"96.00 $\pm$ 2.48\,\%" in body[0]
    assert r"odd\_name \& 50\% (\#4)" in body[1]
    assert "Student t" in tex and lines[-1] == r"\end{tabular}"


def test_csv_table_has_numbers_and_its_interval(cat: Catalog) -> None:
    rows = list(csv.DictReader(io.StringIO(exports.results_table(two_rows(cat), "csv"))))
    assert tuple(rows[0]) == exports.TABLE_CSV_COLUMNS
    assert rows[0]["run_ids"] == "1 2 3" and float(rows[0]["mean"]) == pytest.approx(0.96)
    assert float(rows[0]["ci95"]) == pytest.approx(0.024841, rel=1e-4)
    assert "Student t" in rows[0]["interval"] and "1.96" in rows[1]["interval"]


# ---- metric CSV ---------------------------------------------------------------------------
def test_metric_csv_has_the_documented_columns_and_a_name_saying_which_run(
    cat: Catalog, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = add_run(cat, 0, 0.9, name="maml omniglot/5w1s")
    cat.add_metrics(run, [(1, "loss", 2.0, 100.0), (2, "loss", 1.5, 101.0), (2, "lr", 0.1, 101.0)])
    monkeypatch.chdir(tmp_path)
    path, n = api.write_metrics_csv(cat, run)
    assert path == Path(f"run-{run}-maml-omniglot-5w1s.csv") and n == 3
    rows = list(csv.DictReader(path.open(encoding="utf-8")))
    assert tuple(rows[0]) == exports.METRIC_COLUMNS == (
        "run_id", "run_name", "step", "metric", "value", "wall_time",
    )  # fmt: skip
    assert [(r["run_name"], r["step"], r["metric"], r["value"]) for r in rows] == [
        ("maml omniglot/5w1s", "1", "loss", "2.0"),
        ("maml omniglot/5w1s", "2", "loss", "1.5"),
        ("maml omniglot/5w1s", "2", "lr", "0.1"),
    ]


# ---- CLI ------------------------------------------------------------------------------------
def test_cli_export_names_the_file_after_the_run_and_keeps_csv(
    cat: Catalog,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    run = add_run(cat, 0, 0.9, name="maml-omniglot-5w1s")
    cat.add_metrics(run, [(1, "loss", 2.0, 100.0)])
    monkeypatch.chdir(tmp_path)
    assert main(["export", str(run)]) == 0
    assert f"to run-{run}-maml-omniglot-5w1s.csv" in capsys.readouterr().out
    assert main(["export", str(run), "--csv", "mine.csv"]) == 0
    for name in (f"run-{run}-maml-omniglot-5w1s.csv", "mine.csv"):
        header = (tmp_path / name).read_text(encoding="utf-8").splitlines()[0]
        assert header == "run_id,run_name,step,metric,value,wall_time"


def test_cli_table_prints_and_writes_each_format(
    cat: Catalog, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    seeds = [str(add_run(cat, s, v)) for s, v in ((0, 0.95), (1, 0.96), (2, 0.97))]
    assert main(["table", *seeds, "--group-seeds"]) == 0
    assert "| #1, #2, #3 | maml | glyphs | 5-way 1-shot | 96.00 ± 2.48 % | 3 seeds |" in (
        capsys.readouterr().out
    )
    assert main(["table", *seeds, "--out", str(tmp_path / "t.tex")]) == 0
    assert r"\toprule" in (tmp_path / "t.tex").read_text(encoding="utf-8")
    assert main(["table", *seeds, "--out", str(tmp_path / "t.csv")]) == 0
    assert (tmp_path / "t.csv").read_text(encoding="utf-8").startswith("run,run_ids,")
    assert main(["table", "1", "--format", "csv", "--out", str(tmp_path / "t.md")]) == 0
    assert (tmp_path / "t.md").read_text(encoding="utf-8").startswith("run,run_ids,")
    assert "wrote 1 rows (csv)" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["table", "9"], "RUN_ID: no run 9"),
        (["table", "2"], "RUN_ID: run 2 has no test score; evaluate it with: workbench eval 2"),
        (["table", "1", "--format", "pdf"], "argument --format: invalid choice: 'pdf'"),
        (["table", "1", "--out", ""], "--out: empty file name"),
        (["table", "1", "--out", "/no/such/folder/t.md"], "--out: folder /no/such/folder"),
        (["table"], "the following arguments are required: RUN_ID"),
        (["table", "0"], "argument RUN_ID: '0' is out of range"),
        (["export", "9"], "RUN_ID: no run 9"),
        (["export", "1", "--csv", "/no/such/folder/m.csv"], "--csv: folder /no/such/folder"),
    ],
)
def test_cli_bad_table_and_export_input_is_one_line_and_exit_2(
    cat: Catalog,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    message: str,
) -> None:
    add_run(cat, 0, 0.9)
    add_run(cat, 1, None)
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not [p for p in tmp_path.iterdir() if p.suffix in (".csv", ".md", ".tex")]


def test_cli_runs_prints_scores_with_format_score(
    cat: Catalog, capsys: pytest.CaptureFixture[str]
) -> None:
    add_run(cat, 0, 0.987, 0.004)
    assert main(["runs"]) == 0
    assert "98.70 ± 0.40 %" in capsys.readouterr().out


def test_table_imports_neither_torch_nor_qt(cat: Catalog, tmp_path: Path) -> None:
    """`table` and `export` start fast: exports stays free of torch and Qt."""
    add_run(cat, 0, 0.9)
    probe = (
        "import sys\n"
        "from workbench.cli import main\n"
        "rc = main(['table', '1', '--format', 'latex'])\n"
        "heavy = sorted(k for k in sys.modules if k.split('.')[0] in ('torch', 'PySide6'))\n"
        "print(rc, heavy[:3], file=sys.stderr)\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=600,
        env={**os.environ, "WORKBENCH_DB": str(tmp_path / "e.db")}, cwd=Path(__file__).parents[1],
    )  # fmt: skip
    assert r.stderr.strip().splitlines()[-1] == "0 []", r.stderr
    assert r"\toprule" in r.stdout
