"""What a paper needs from the catalog: a results table (Markdown, LaTeX booktabs, CSV) and a
run's metrics as CSV, with scores written one way everywhere (`format_score`).

Neither Qt nor torch is imported here: `workbench table` and `workbench export` start in a
fraction of a second, and the CLI, `workbench.api` and the app share this one implementation,
so a table, a terminal and a CSV never disagree about a number.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from workbench.catalog import Catalog, EvaluationRecord, RunRecord
from workbench.core.errors import ConfigError

# one documented column set for metric CSVs, from the CLI, the API and the app
METRIC_COLUMNS = ("run_id", "run_name", "step", "metric", "value", "wall_time")
TABLE_FORMATS = ("md", "latex", "csv")
TABLE_CSV_COLUMNS = (
    "run", "run_ids", "algorithm", "dataset", "task", "metric", "mean", "ci95", "n", "interval",
)  # fmt: skip
# keys that do not change what a run computes: runs differing only in these are one seed group
# (the same rule as the app's "Seed group" selection)
IGNORED_IN_GROUP = ("seed", "name", "tags", "notes", "preset")
INTERVALS = {
    "episodes": "95% CI over its test episodes (1.96 standard errors)",
    "seeds": "95% CI over its seeds (Student t, n-1 degrees of freedom: t * s / sqrt(n))",
}


# ---- statistics -------------------------------------------------------------------------
def _t_central(theta: float, df: int) -> float:
    """P(|T| < sqrt(df)·tan(theta)) for Student's t with integer `df`: the finite sums of
    Abramowitz & Stegun 26.7.3-4, exact without scipy (not a dependency)."""
    c2, total = math.cos(theta) ** 2, 0.0
    if df % 2:  # odd: (2/pi) (theta + sin cos (1 + 2/3 cos^2 + 2*4/(3*5) cos^4 + ...))
        term, k = 1.0, 1
        while 2 * k + 1 <= df:
            total += term
            term *= c2 * (2 * k) / (2 * k + 1)
            k += 1
        return 2 / math.pi * (theta + math.sin(theta) * math.cos(theta) * total)
    term, k = 1.0, 1  # even: sin (1 + 1/2 cos^2 + 1*3/(2*4) cos^4 + ...)
    while 2 * k <= df:
        total += term
        term *= c2 * (2 * k - 1) / (2 * k)
        k += 1
    return math.sin(theta) * total


def t_quantile(p: float, df: int) -> float:
    """The `p` quantile (p > 0.5) of Student's t with `df` >= 1 degrees of freedom, by
    bisection on the exact distribution function (t_quantile(0.975, 2) = 4.3027)."""
    if df < 1 or not 0.5 < p < 1:
        raise ValueError(f"need df >= 1 and 0.5 < p < 1, got df={df}, p={p}")
    lo, hi, target = 0.0, math.pi / 2, 2 * p - 1
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _t_central(mid, df) < target else (lo, mid)
    return math.sqrt(df) * math.tan((lo + hi) / 2)


def seed_interval(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean over seeds and the half-width of its Student-t 95% interval (None for one seed):
    with 3-5 seeds t is 4.30-2.78, so 1.96 would claim an interval about half as wide."""
    n = len(values)
    mean = math.fsum(values) / n
    if n < 2:
        return mean, None
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    return mean, t_quantile(0.975, n - 1) * sd / math.sqrt(n)


def episode_interval(scores: Sequence[float]) -> tuple[float, float]:
    """Mean and 95% CI half-width over an evaluation's stored per-episode scores: 1.96 times
    the standard deviation (n - 1) over sqrt(n), 0 for one episode; `core.evaluate.mean_ci`'s
    rule, computed here without torch, so a stored evaluation's CI can be checked against its
    episodes and shown beside their histogram."""
    n = len(scores)
    if n == 0:
        return math.nan, math.nan
    mean = math.fsum(scores) / n
    if n < 2:
        return mean, 0.0
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in scores) / (n - 1))
    return mean, 1.96 * sd / math.sqrt(n)


# ---- one way to write a score -----------------------------------------------------------
def format_score(mean: float | None, ci: float | None, metric: str, latex: bool = False) -> str:
    """A score as the CLI, the app and the exports print it: accuracy in percent with two
    decimals (`98.70 ± 0.40 %`), other metrics (MSE) as plain numbers with the CI's precision
    (`0.512 ± 0.031`); `latex`: the same in LaTeX (`98.70 $\\pm$ 0.40\\,\\%`)."""
    if mean is None or not math.isfinite(mean):
        return "-"
    ci = ci if ci is not None and math.isfinite(ci) else None
    pm, pct = (" $\\pm$ ", "\\,\\%") if latex else (" ± ", " %")
    if metric.endswith("accuracy"):
        return f"{100 * mean:.2f}" + ("" if ci is None else f"{pm}{100 * ci:.2f}") + pct
    if not ci:  # None, or 0 from a single episode
        return f"{mean:.4g}" + ("" if ci is None else f"{pm}0")
    digits = min(8, max(0, 1 - math.floor(math.log10(abs(ci)))))  # the CI to 2 significant digits
    return f"{mean:.{digits}f}{pm}{ci:.{digits}f}"


# ---- results table ----------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ResultRow:
    """One line of a results table: a run, or the seed group of several runs."""

    run: str  # "name (#3)" for a run, "#3, #4, #5" for a seed group
    run_ids: tuple[int, ...]
    algorithm: str
    dataset: str
    task: str  # the evaluated task shape, e.g. "5-way 1-shot"
    metric: str
    mean: float
    ci95: float | None
    n: int  # test episodes of a run, seeds of a group
    over: Literal["episodes", "seeds"]


def seed_group_key(config: dict[str, Any]) -> str:
    """Runs whose configs are equal except for the seed (and name, tags, notes, preset) share
    this key."""
    return json.dumps(
        {k: v for k, v in config.items() if k not in IGNORED_IN_GROUP}, sort_keys=True
    )


def known_run(catalog: Catalog, run_id: int) -> RunRecord:
    """The run, or a ConfigError naming RUN_ID (one line from the CLI, exit 2)."""
    if not catalog.has_run(run_id):
        raise ConfigError("RUN_ID", f"no run {run_id} in {catalog.display}")
    return catalog.get_run(run_id)


def latest_test_evaluation(catalog: Catalog, run_id: int) -> EvaluationRecord:
    """The run's latest test evaluation with a score (what `workbench runs` shows); a run that
    has none is a ConfigError naming it."""
    for ev in reversed(catalog.evaluations(run_id)):
        if ev.split == "test" and ev.mean is not None:
            return ev
    raise ConfigError(
        "RUN_ID", f"run {run_id} has no test score; evaluate it with: workbench eval {run_id}"
    )


def _task(protocol: dict[str, Any], metric: str) -> str:
    shots = f"{protocol.get('shots', '?')}-shot"
    return shots if metric == "mse" else f"{protocol.get('ways', '?')}-way {shots}"


def protocol_text(protocol: dict[str, Any], metric: str) -> str:
    """An evaluation's protocol in words, as the app shows it beside the score: `5-way 1-shot,
    15 queries, 3 inner steps, inner LR 0.4, 600 episodes` (regression: `10-shot`...); the
    keys an older row lacks are left out."""
    parts = [_task(protocol, metric)] if "shots" in protocol else []
    for key, word in (("queries", "queries"), ("inner_steps", "inner steps")):
        if key in protocol:
            parts.append(f"{protocol[key]} {word}")
    if "inner_lr" in protocol:
        parts.append(f"inner LR {protocol['inner_lr']:g}")
    if "episodes" in protocol:
        parts.append(f"{protocol['episodes']} episodes")
    return ", ".join(parts)


def results(catalog: Catalog, run_ids: Iterable[int], group_seeds: bool = False) -> list[ResultRow]:
    """Rows in the order the runs are given. With `group_seeds`, runs of one seed group that
    were tested the same way become one row (mean over seeds, Student-t interval); a group of
    one stays a run with its interval over test episodes."""
    picked: list[tuple[RunRecord, EvaluationRecord]] = []
    for run_id in dict.fromkeys(run_ids):
        run = known_run(catalog, run_id)
        picked.append((run, latest_test_evaluation(catalog, run_id)))
    groups: dict[tuple[Any, ...], list[tuple[RunRecord, EvaluationRecord]]] = {}
    for rec, ev in picked:
        key: tuple[Any, ...] = (rec.id,)
        if group_seeds:
            key = (seed_group_key(rec.config), json.dumps(ev.protocol, sort_keys=True), ev.metric)
        groups.setdefault(key, []).append((rec, ev))
    rows = []
    for members in groups.values():
        rec, ev = members[0]
        common = (rec.algorithm, rec.dataset, _task(ev.protocol, ev.metric), ev.metric)
        if len(members) == 1:
            label = f"{rec.name} (#{rec.id})"
            rows.append(
                ResultRow(label, (rec.id,), *common, float(ev.mean or 0), ev.ci95, ev.episodes, "episodes")
            )  # fmt: skip
            continue
        mean, ci = seed_interval([float(e.mean or 0) for _, e in members])
        ids = tuple(r.id for r, _ in members)
        label = ", ".join(f"#{i}" for i in ids)
        rows.append(ResultRow(label, ids, *common, mean, ci, len(ids), "seeds"))
    return rows


def _score_header(rows: Sequence[ResultRow]) -> str:
    metrics = {r.metric for r in rows}
    return {frozenset({"accuracy"}): "test accuracy", frozenset({"mse"}): "test MSE"}.get(
        frozenset(metrics), "test score"
    )


def _notes(rows: Sequence[ResultRow], latex: bool) -> list[str]:
    """What ± means in this table: one line per kind of interval in it."""
    lines = []
    for kind, text in INTERVALS.items():
        if any(r.over == kind for r in rows):
            line = f"per {'run' if kind == 'episodes' else 'seed group'}: {text}"
            lines.append(
                rf"\multicolumn{{6}}{{l}}{{\footnotesize $\pm$ {_latex(line)}}} \\"
                if latex
                else f"± {line}"
            )
    return lines


_LATEX_SPECIAL = {c: "\\" + c for c in "&%$#_{}"} | {
    "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "\\": r"\textbackslash{}",
}  # fmt: skip


def _latex(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(c, c) for c in text)


def results_table(rows: Sequence[ResultRow], fmt: str = "md") -> str:
    """The rows as Markdown, LaTeX (booktabs: \\toprule, \\midrule, \\bottomrule) or CSV
    (numbers unformatted, accuracy as a fraction as stored); each says which interval ± is."""
    if fmt not in TABLE_FORMATS:
        raise ConfigError(
            "--format", f"{fmt!r} is not allowed; allowed: {', '.join(TABLE_FORMATS)}"
        )
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(TABLE_CSV_COLUMNS)
        for r in rows:
            w.writerow([
                r.run, " ".join(map(str, r.run_ids)), r.algorithm, r.dataset, r.task, r.metric,
                repr(r.mean), "" if r.ci95 is None else repr(r.ci95), r.n, INTERVALS[r.over],
            ])  # fmt: skip
        return buf.getvalue()
    header = ["run", "algorithm", "dataset", "task", _score_header(rows), "n"]
    latex = fmt == "latex"
    body = [
        [r.run, r.algorithm, r.dataset, r.task, format_score(r.mean, r.ci95, r.metric, latex),
         f"{r.n} {'test episodes' if r.over == 'episodes' else 'seeds'}"]
        for r in rows
    ]  # fmt: skip
    if not latex:
        lines = ["| " + " | ".join(header) + " |", "|:--|:--|:--|:--|--:|--:|"]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in body]
        return "\n".join([*lines, "", *_notes(rows, latex)]) + "\n"
    lines = [
        r"\begin{tabular}{llllrr}", r"\toprule",
        " & ".join(_latex(h[:1].upper() + h[1:]) for h in header[:-1]) + r" & $n$ \\",
        r"\midrule",
        *(" & ".join(_latex(c) for c in row[:4]) + f" & {row[4]} & {_latex(row[5])} \\\\"
          for row in body),
        r"\bottomrule",
        *_notes(rows, latex),
        r"\end{tabular}",
    ]  # fmt: skip
    return "\n".join(lines) + "\n"


# ---- metrics CSV --------------------------------------------------------------------------
def metrics_csv_name(run: RunRecord) -> str:
    """The default file name of a run's metrics, saying which run: run-12-maml-omniglot-5w1s.csv."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", run.name).strip("-.")[:80]
    return f"run-{run.id}-{slug}.csv" if slug else f"run-{run.id}.csv"


def write_metrics_csv(
    catalog: Catalog, run_id: int | Sequence[int], path: str | os.PathLike[str] | None = None
) -> tuple[Path, int]:
    """Every stored point of the run's (or runs') current attempt, by run, metric and step,
    with METRIC_COLUMNS (wall_time in Unix seconds) to `path` (default for one run:
    `metrics_csv_name` in the working folder); returns the file and the number of points.
    The CLI's `export`, the API and the app's "Export CSV" all write through it."""
    ids = [run_id] if isinstance(run_id, int) else list(run_id)
    runs = [known_run(catalog, i) for i in ids]
    out = Path(path) if path is not None else Path(metrics_csv_name(runs[0]))
    n = 0
    with out.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(METRIC_COLUMNS)
        for run in runs:
            for name in catalog.metric_names(run.id):
                steps, values, walls = catalog.metrics(run.id, name)
                for s, v, t in zip(steps, values, walls, strict=True):
                    w.writerow([run.id, run.name, int(s), name, repr(float(v)), f"{t:.3f}"])
                    n += 1
    return out, n
