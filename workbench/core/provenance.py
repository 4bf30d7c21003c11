"""What made a run: the code (git commit, dirty tree and its diff), the command line, package
versions and the data that was verified. The engine adds these to the run's environment so a
record can be traced back to, and reproduced from, exactly what produced it.

Cheap and failure-proof by design: git runs at most three short commands per repository, once
per process (the code a process runs is the code it imported, so later edits of the tree do not
concern it), started in the background as soon as a Trainer is made (`prefetch`), so a run's
start waits for it only if the repository is slow. No git, not a checkout, an error or a
timeout: the field is absent. Untracked files are not part of the diff (only changes to
tracked files, which is what `git stash`/`git apply` round-trips).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

GIT_TIMEOUT_S = 2.0
"""Longest one git command may take (a slow network file system): then no git fields."""
WAIT_S = 2.0
"""Longest `environment()` waits for a prefetch still in progress."""
DIFF_LIMIT = 16 << 20
"""A larger diff is stored cut at this many bytes (and says so)."""
DIFF_FILE = "code.diff"
"""Name of the workbench tree's diff beside a dirty run's checkpoints."""
PACKAGES = ("pydantic", "sqlalchemy")
"""Versions recorded besides torch and numpy (read from metadata: nothing is imported)."""

PACKAGE_DIR = Path(__file__).resolve().parents[1]
"""The `workbench` package folder whose checkout is recorded."""


@dataclass(frozen=True)
class GitState:
    """A git checkout as found: its top folder, HEAD's commit and the diff of tracked files."""

    root: str
    commit: str
    diff: bytes

    @property
    def dirty(self) -> bool:
        return bool(self.diff)

    def describe(self) -> dict[str, Any]:
        return {"root": self.root, "commit": self.commit, "dirty": self.dirty}


_lock = threading.Lock()
_states: dict[str, Future[GitState | None]] = {}
_versions: dict[str, str] | None = None


def _git(folder: str, *args: str) -> bytes:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env["GIT_OPTIONAL_LOCKS"] = "0"  # never take index.lock: a commit elsewhere may need it
    env["LC_ALL"] = "C"
    return subprocess.run(
        ["git", "-C", folder, *args],
        capture_output=True,
        check=True,
        timeout=GIT_TIMEOUT_S,
        env=env,
        stdin=subprocess.DEVNULL,
    ).stdout


def _read_state(file: str) -> GitState | None:
    """The checkout holding `file` as a tracked file, or None (an installed package, a venv
    inside some repository, no git, an error)."""
    folder, name = os.path.split(file)
    try:
        top, commit = _git(folder, "rev-parse", "--show-toplevel", "HEAD").decode().split()[:2]
        _git(folder, "ls-files", "--error-unmatch", "--", name)
        diff = _git(top, "diff", "HEAD", "--no-color", "--no-ext-diff", "--no-textconv")
    except (OSError, subprocess.SubprocessError, ValueError, UnicodeDecodeError):
        return None
    return GitState(top, commit, diff)


def _future(file: str) -> Future[GitState | None]:
    with _lock:
        fut = _states.get(file)
        if fut is None:
            fut = _states[file] = Future()

            def fill() -> None:
                try:
                    fut.set_result(_read_state(file))
                except BaseException:  # never let a thread's error reach the run
                    fut.set_result(None)

            threading.Thread(target=fill, name="workbench-git", daemon=True).start()
        return fut


def prefetch(files: list[str] | None = None) -> None:
    """Start reading the checkouts of `files` (default: the workbench package) in the
    background; `git_state` then returns at once."""
    for f in files or [str(PACKAGE_DIR / "__init__.py")]:
        _future(f)
    if _versions is None:  # a few ms of metadata scanning, off the run's path too
        threading.Thread(target=package_versions, name="workbench-versions", daemon=True).start()


def git_state(file: str, timeout: float = WAIT_S) -> GitState | None:
    """The checkout holding `file` (cached per process), or None."""
    try:
        return _future(file).result(timeout)
    except Exception:
        return None


def module_file(obj: Any) -> str | None:
    """The source file of the module that defines `obj` (a registered algorithm or dataset)
    when it is a plugin's; None for the workbench's own (recorded as `git`)."""
    name = getattr(obj, "__module__", "") or ""
    if name == "workbench" or name.startswith("workbench."):
        return None
    mod = sys.modules.get(name)
    file = getattr(mod, "__file__", None)
    return os.path.abspath(file) if file else None


def package_versions() -> dict[str, str]:
    """Versions of `PACKAGES` that are installed (cached: metadata scans sys.path)."""
    global _versions
    if _versions is None:
        found = {}
        for name in PACKAGES:
            try:
                found[name] = metadata.version(name)
            except Exception:
                continue
        _versions = found
    return dict(_versions)


def command() -> dict[str, Any]:
    """How this process was started: enough to run the same command again (for a CLI run; an
    app's run is reproduced from its stored config)."""
    try:
        cwd = os.getcwd()
    except OSError:
        cwd = None
    return {"argv": list(sys.argv), "cwd": cwd, "executable": sys.executable}


def code(plugin_files: list[str]) -> tuple[dict[str, Any], dict[str, bytes]]:
    """(environment fields, diffs to store by file name). `git`: the workbench checkout;
    `plugin_git`: checkouts of plugins or scripts outside it, by module file."""
    fields: dict[str, Any] = {}
    diffs: dict[str, bytes] = {}
    own = git_state(str(PACKAGE_DIR / "__init__.py"))
    if own is not None:
        fields["git"] = own.describe()
        if own.dirty:
            diffs[DIFF_FILE] = own.diff
    plugins: dict[str, Any] = {}
    for f in dict.fromkeys(plugin_files):
        if Path(f).is_relative_to(PACKAGE_DIR):
            continue
        st = git_state(f)
        if st is None or (own is not None and st.root == own.root):
            continue
        plugins[f] = st.describe()
        if st.dirty:
            name = f"code-{Path(st.root).name}.diff"
            if name not in diffs:
                diffs[name] = st.diff
            plugins[f]["diff"] = name
    if plugins:
        fields["plugin_git"] = plugins
    return fields, diffs


def write_diffs(env: dict[str, Any], diffs: dict[str, bytes], folder: Path) -> None:
    """Store the diffs in the run's checkpoint folder and name them in `env` (with their
    sha256, so a copy can be checked). A failure to write leaves only the note out."""
    for name, diff in diffs.items():
        data = diff
        if len(data) > DIFF_LIMIT:
            data = data[:DIFF_LIMIT] + b"\n# workbench: diff cut at %d bytes\n" % DIFF_LIMIT
        try:
            folder.mkdir(parents=True, exist_ok=True)
            tmp = folder / f".tmp-{name}"
            tmp.write_bytes(data)
            os.replace(tmp, folder / name)
        except OSError:
            continue
        note = {"diff": name, "diff_sha256": hashlib.sha256(data).hexdigest()}
        if name == DIFF_FILE and "git" in env:
            env["git"].update(note)
        for entry in env.get("plugin_git", {}).values():
            if entry.get("diff") == name:
                entry.update(note)


def data_record(dataset: str, cfg: Any, datasets: dict[str, Any] | None) -> dict[str, Any]:
    """What the run's data was checked against. The smaller option: what the loaders already
    verify, no new hashing of whole folders. Omniglot archives: their sha256 (hashed once when
    they were verified, remembered since) and the verification note; unpacked folders and
    image folders have no checksums: the note or `verified: false` says so, with where the
    files were. Synthetic datasets are reproduced by their seeds in the config."""
    out: dict[str, Any] = {"dataset": dataset}
    notes = {getattr(d, "verification", "") for d in (datasets or {}).values()} - {""}
    if notes:
        out["verification"] = "; ".join(sorted(notes))
    try:
        if dataset == "omniglot":
            from workbench.core.tasks import omniglot

            src = omniglot.find_sources(cfg)
            if src is not None:
                out["root"] = str(src.root)
                if src.kind == "zip":
                    out["sha256"] = {p.name: omniglot.digests(p)[0] for p in src.paths.values()}
                else:
                    out["verified"] = False
        elif dataset in ("cifar-fs", "fc100", "cub"):  # one official archive each
            from workbench.core.tasks import cifar100, cub, sources

            found = (cub if dataset == "cub" else cifar100).find_sources(cfg)
            if found is not None:
                out["root"] = str(found.path)
                if found.kind == "archive":
                    out["sha256"] = {found.path.name: sources.digests(found.path)[0]}
                else:
                    out["verified"] = False
        elif dataset == "image-folder":
            from workbench.core.tasks import image_folder

            out["root"] = str(image_folder.data_root(cfg))
            out["verified"] = False
        elif dataset in ("sinusoid", "glyphs"):
            out["synthetic"] = True
    except Exception:  # a record never fails a run
        pass
    return out
