"""The peers' virtual environment for bench/speed.py: `higher` and learn2learn's MAML beside torch 2.13.0.

    python bench/peers.py                       # create/complete ~/.cache/meta-learning-workbench/peers
    python bench/peers.py --peers-dir /tmp/p    # somewhere else

Peers live in their own environment in a scratch folder outside the project, never in the
project's venv (their requirements can replace torch; see shared/PEERS.md). That environment
gets torch==2.13.0 plus what our core imports (numpy, pydantic, platformdirs, pillow); our own
code is put on sys.path by bench/speed.py, never pip-installed there. learn2learn 0.2.0 only
ships an sdist whose generated C does not build on Python 3.11: we re-generate it with cython
and install without dependencies, then import only `learn2learn.algorithms.maml` (importing
`learn2learn` itself pulls in torchvision, which does not load beside torch 2.13.0).

Nothing here is vendored or committed: everything is downloaded into the peers folder.
A peer that cannot be installed is reported with the reason and skipped.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tarfile
import types
from collections.abc import Callable
from pathlib import Path

DEFAULT_DIR = Path("~/.cache/meta-learning-workbench/peers").expanduser()
TORCH = "torch==2.13.0"
CORE_DEPS = ["numpy", "pydantic", "platformdirs", "pillow"]
L2L = "learn2learn==0.2.0"
L2L_PYX = ("meta_dataset", "task_dataset", "transforms")

Log = Callable[[str], None]


def venv_dir(peers_dir: Path) -> Path:
    return peers_dir / "venv"


def venv_python(peers_dir: Path) -> Path:
    return venv_dir(peers_dir) / "bin" / "python"


def present(peers_dir: Path) -> bool:
    return venv_python(peers_dir).exists()


def _run(
    cmd: list[str], log: Log, cwd: Path | None = None, timeout: float = 1800
) -> tuple[bool, str]:
    """Run a command; (ok, last lines of its output)."""
    log("  $ " + " ".join(str(c) for c in cmd))
    try:
        p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError) as exc:
        return False, str(exc)
    tail = "\n".join((p.stdout + p.stderr).strip().splitlines()[-6:])
    return p.returncode == 0, tail


def _probe(py: Path, code: str) -> tuple[bool, str]:
    try:
        p = subprocess.run([str(py), "-c", code], capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.SubprocessError) as exc:
        return False, str(exc)
    out = (p.stdout + p.stderr).strip()
    return p.returncode == 0, out.splitlines()[-1] if out else ""


L2L_PROBE = f"import sys; sys.path.insert(0, {str(Path(__file__).resolve().parent)!r}); import peers; peers.import_l2l_maml()"


def ensure(peers_dir: Path = DEFAULT_DIR, log: Log = print) -> dict[str, str]:
    """Create or complete the peers environment; {"base"|"higher"|"learn2learn": "ok" or the reason}."""
    status: dict[str, str] = {}
    peers_dir.mkdir(parents=True, exist_ok=True)
    py = venv_python(peers_dir)
    if not py.exists():
        base = shutil.which("python3") or sys.executable
        ok, out = _run([base, "-m", "venv", str(venv_dir(peers_dir))], log)
        if not ok:
            return {"base": f"python3 -m venv failed: {out}"}
    pip = [str(py), "-m", "pip", "install", "--quiet"]
    ok, out = _probe(
        py, "import torch, numpy, pydantic, platformdirs, PIL; print(torch.__version__)"
    )
    if not ok or not out.startswith("2.13.0"):
        ok, out = _run([*pip, TORCH, *CORE_DEPS], log)
        if not ok:
            return {"base": f"pip install {TORCH} failed: {out}"}
        ok, out = _probe(py, "import torch; print(torch.__version__)")
        if not ok or not out.startswith("2.13.0"):
            return {"base": f"torch in the peers venv is {out!r}, not 2.13.0"}
    status["base"] = "ok"

    ok, out = _probe(py, 'import higher, importlib.metadata as m; print(m.version("higher"))')
    if not ok:
        ok, out = _run(
            [*pip, TORCH, "higher"], log
        )  # torch pinned in the same resolve: never replaced
        if ok:
            ok, out = _probe(
                py, 'import higher, importlib.metadata as m; print(m.version("higher"))'
            )
    status["higher"] = "ok" if ok else f"cannot install higher: {out}"

    ok, out = _probe(py, L2L_PROBE)
    if not ok:
        ok, out = _install_l2l(peers_dir, py, log)
        if ok:
            ok, out = _probe(py, L2L_PROBE)
    status["learn2learn"] = "ok" if ok else f"cannot install learn2learn 0.2.0: {out}"
    (peers_dir / "status.json").write_text(json.dumps(status, indent=1), encoding="utf-8")
    return status


def _install_l2l(peers_dir: Path, py: Path, log: Log) -> tuple[bool, str]:
    """learn2learn 0.2.0 from its sdist: cython the .pyx files anew, install with --no-deps."""
    pip = [str(py), "-m", "pip"]
    ok, out = _run([*pip, "install", "--quiet", TORCH, "cython", "requests", "tqdm", "scipy"], log)
    if not ok:
        return False, f"build requirements: {out}"
    build = peers_dir / "build"
    build.mkdir(exist_ok=True)
    ok, out = _run(
        [*pip, "download", "--quiet", "--no-deps", "--no-binary", ":all:", "-d", str(build), L2L],
        log,
    )
    if not ok:
        return False, f"download: {out}"
    sdists = sorted(build.glob("learn2learn-0.2.0.tar.gz"))
    if not sdists:
        return False, f"no learn2learn-0.2.0.tar.gz in {build}"
    with tarfile.open(sdists[0]) as tar:
        tar.extractall(build, filter="data")
    src = build / "learn2learn-0.2.0"
    cython = venv_dir(peers_dir) / "bin" / "cython"
    for name in L2L_PYX:
        pyx = src / "learn2learn" / "data" / f"{name}.pyx"
        ok, out = _run([str(cython), "-3", str(pyx), "-o", str(pyx.with_suffix(".c"))], log)
        if not ok:
            return False, f"cython {pyx.name}: {out}"
    return _run(
        [*pip, "install", "--quiet", "--no-deps", "--no-build-isolation", "."], log, cwd=src
    )


def import_l2l_maml() -> type:
    """learn2learn's MAML class without importing `learn2learn/__init__.py` (which needs torchvision).

    An empty module object named `learn2learn` carrying the installed package's `__path__`
    stands in for the package, so only the algorithm's own modules load.
    """
    if "learn2learn" not in sys.modules:
        spec = importlib.util.find_spec("learn2learn")
        if spec is None or not spec.submodule_search_locations:
            raise ImportError("learn2learn is not installed")
        shell = types.ModuleType("learn2learn")
        shell.__path__ = list(spec.submodule_search_locations)
        sys.modules["learn2learn"] = shell
    from learn2learn.algorithms.maml import MAML

    return MAML


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--peers-dir", type=Path, default=Path(os.environ.get("WORKBENCH_PEERS_DIR", DEFAULT_DIR))
    )
    args = p.parse_args(argv)
    status = ensure(args.peers_dir.expanduser())
    for name, state in status.items():
        print(f"{name}: {state}")
    return 0 if status.get("base") == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
