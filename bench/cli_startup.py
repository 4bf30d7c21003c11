"""How long does a `workbench` command take before it does anything?

Every CLI command used to import torch (about 3-4 s on a small machine) even to print help,
list the runs or refuse a typo. This measures the wall time of a fresh process per command
(median of `--repeats` runs, one untimed warm-up first so the OS file cache is warm) and, in
one extra untimed run per command, which of torch and PySide6 it loaded.

    .venv/bin/python bench/cli_startup.py [--repeats 5] [--write]
    .venv/bin/python bench/cli_startup.py --tiny
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# Runs main() in-process and reports the heavy packages it left loaded (on stderr, last line).
_PROBE = (
    "import sys\n"
    "from workbench.cli import main\n"
    "try:\n"
    "    main(sys.argv[1:])\n"
    "except SystemExit:\n"
    "    pass\n"
    "print(sorted({k.split('.')[0] for k in sys.modules if k.split('.')[0] in ('torch', 'PySide6')}),"
    " file=sys.stderr)\n"
)


def commands(db: Path, csv: Path) -> list[tuple[str, list[str]]]:
    """(label, argv) of the measured commands; `export` reads a run created beforehand."""
    return [
        ("workbench --help", ["--help"]),
        ("workbench run --help", ["run", "--help"]),
        ("workbench runs (empty catalog)", ["--db", str(db.with_name("empty.db")), "runs"]),
        ("workbench runs (one run)", ["--db", str(db), "runs"]),
        ("workbench export 1 --csv", ["--db", str(db), "export", "1", "--csv", str(csv)]),
        ("workbench run --steps ten (argument error)", ["run", "--steps", "ten"]),
        ("workbench run --print-config", ["run", "--print-config"]),
    ]


def time_command(argv: list[str], repeats: int, env: dict[str, str]) -> tuple[float, int]:
    """Median wall seconds of `python -m workbench ARGV` and its exit status."""
    cmd = [sys.executable, "-m", "workbench", *argv]
    rc = subprocess.run(cmd, capture_output=True, env=env, cwd=ROOT, timeout=120).returncode
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run(cmd, capture_output=True, env=env, cwd=ROOT, timeout=120)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), rc


def heavy_imports(argv: list[str], env: dict[str, str]) -> str:
    """Which of torch / PySide6 the command imported (from one in-process run of main())."""
    proc = subprocess.run([sys.executable, "-c", _PROBE, *argv], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=120)  # fmt: skip
    last = proc.stderr.strip().splitlines()[-1:] or ["?"]
    found = last[0].strip("[]").replace("'", "")
    return found or "none"


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--repeats", type=int, default=5, help="timed runs per command (median)")
    p.add_argument("--tiny", action="store_true", help="one timed run each (a smoke test)")
    p.add_argument("--write", action="store_true", help="write the section of bench/RESULTS.md")
    args = p.parse_args()
    repeats = 1 if args.tiny else args.repeats

    from workbench.catalog import Catalog

    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "e.db"
        with Catalog.open(db) as cat:
            cat.create_run('{"x": 1}', name="bench", status="finished")
        env = {**os.environ, "WORKBENCH_DB": str(db), "QT_QPA_PLATFORM": "offscreen"}
        rows = []
        for label, argv in commands(db, Path(tmp) / "m.csv"):
            median, rc = time_command(argv, repeats, env)
            rows.append((label, median, rc, heavy_imports(argv, env)))
            print(f"{label}: {median:.2f} s (exit {rc})", flush=True)

    table = [
        "| command | median wall time | exit status | torch / PySide6 imported |",
        "|---|---:|---:|---|",
        *(f"| `{label}` | {t:.2f} s | {rc} | {heavy} |" for label, t, rc, heavy in rows),
    ]
    print("\n".join(table))
    if args.write:
        from bench.results import stamp, write_section

        lines = [
            "## CLI start-up",
            "",
            f"{stamp()}; `bench/cli_startup.py --repeats {repeats}`.",
            "",
            f"Wall time of a fresh `python -m workbench ...` process per command, median of {repeats}"
            " runs after one untimed warm-up; the last column comes from one more run of `main()`"
            " in a child process that lists the heavy packages left in `sys.modules`.",
            "",
            *table,
        ]
        write_section("cli-startup", "\n".join(lines))
        print("wrote the cli-startup section of bench/RESULTS.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
