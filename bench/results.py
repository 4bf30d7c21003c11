"""Writes benchmark sections into bench/RESULTS.md between markers, so no figure is typed by hand."""

from __future__ import annotations

import os
import platform
import subprocess
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
HEADER = "# Benchmark results\n\nWritten by the scripts in `bench/`; each section says how it was measured.\n"


def machine() -> str:
    import torch

    from workbench.core.devices import cpu_name

    return f"{cpu_name()}, {os.cpu_count()} CPUs, torch {torch.__version__}, Python {platform.python_version()}"


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], capture_output=True, text=True, cwd=RESULTS.parent, timeout=10
    ).stdout.strip()


def commit() -> str:
    try:
        dirty = _git("status", "--porcelain", "--untracked-files=no")
        return _git("rev-parse", "--short", "HEAD") + ("+changes" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def stamp() -> str:
    return f"{time.strftime('%Y-%m-%d %H:%M %Z')}, commit {commit()}, {machine()}"


def write_section(key: str, body: str, path: Path = RESULTS) -> None:
    """Replace (or append) the section between `<!-- key -->` and `<!-- /key -->`."""
    text = path.read_text(encoding="utf-8") if path.exists() else HEADER
    start, end = f"<!-- {key} -->", f"<!-- /{key} -->"
    block = f"{start}\n{body.rstrip()}\n{end}"
    if start in text and end in text:
        a = text.index(start)
        b = text.index(end) + len(end)
        text = text[:a] + block + text[b:]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text, encoding="utf-8")
