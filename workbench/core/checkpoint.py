"""Checkpoint files: atomic writes, sha256, and loading that can never execute code.

Everything is stored as tensors, numbers and strings (RNG states as uint8 tensors, the config
as a JSON string), so `torch.load(..., weights_only=True)` reads it; a file from elsewhere
cannot run code and a corrupted or tampered one is a CheckpointError, not a crash.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from workbench.core.errors import CheckpointError
from workbench.files import free_space, fsync_dir, sha256_file

FORMAT = "workbench-checkpoint-1"


STORAGE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO)
"""Errors that mean the checkpoint folder cannot take a file now: the run pauses, not fails."""


def storage_message(exc: OSError, folder: str | os.PathLike[str]) -> str:
    """One line naming the fault and the folder, e.g. "disk full: 3 MB free in /data/ckpt"."""
    free = free_space(folder)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"disk full: {free}"
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return f"checkpoint folder {folder} is not writable ({exc.strerror})"
    return f"storage error writing checkpoints ({exc.strerror}): {free}"


def _nearly_full(folder: Path) -> bool:
    try:
        return shutil.disk_usage(folder).free < 16 * 2**20
    except OSError:
        return False


def write_temp(folder: str | Path, state: dict[str, Any]) -> tuple[Path, int, str]:
    """Write `state` to a new `.tmp-*.pt` file in `folder`, fsynced; returns (path, bytes,
    sha256). The file is removed again if writing fails."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".pt")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"format": FORMAT, **state}, f)
            f.flush()
            os.fsync(f.fileno())
    except RuntimeError as exc:
        Path(tmp).unlink(missing_ok=True)
        # torch's zip writer reports a short write as "unexpected pos N vs M", not as ENOSPC
        if "unexpected pos" in str(exc) or "write" in str(exc).lower() or _nearly_full(folder):
            raise OSError(
                errno.ENOSPC, f"No space left on device ({str(exc).strip()[:80]})"
            ) from None
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp), os.path.getsize(tmp), sha256_file(tmp)


def put_in_place(temp: str | Path, path: str | Path) -> None:
    """Rename a complete temporary file to its name, durably."""
    os.replace(temp, path)
    fsync_dir(Path(path).parent)


def unused_path(path: Path) -> Path:
    """`path`, or `name-2.pt`, `name-3.pt`... if a file is there already: a new checkpoint
    never replaces a file that a record may still list."""
    if not path.exists():
        return path
    n = 2
    while (candidate := path.with_name(f"{path.stem}-{n}{path.suffix}")).exists():
        n += 1
    return candidate


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> tuple[int, str]:
    """Write atomically (temporary file, fsync, rename); returns (bytes, sha256)."""
    path = Path(path)
    temp, size, sha = write_temp(path.parent, state)
    try:
        put_in_place(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return size, sha


@dataclass(frozen=True)
class StoredCheckpoint:
    path: str
    sha256: str | None
    step: int


class CheckpointStore(Protocol):
    """Records checkpoint files for the Trainer and decides which to retire. The catalog's
    listener is one (two-phase rows); `FolderCheckpoints` is the one without a catalog."""

    def prepare(
        self, step: int, kind: str, path: str, temp_path: str, size: int, sha256: str,
        metrics: dict[str, float],
    ) -> Any: ...  # fmt: skip

    def commit(self, token: Any, keep: int) -> list[str]:
        """The file is in place; returns the paths retired (their files already deleted)."""
        ...

    def newest(self, kind: str) -> Any:
        """The newest usable checkpoint of `kind` (with .path and .sha256), or None."""
        ...


@dataclass(frozen=True)
class Saved:
    path: Path
    size: int
    sha256: str
    retired: list[str]


def save_two_phase(
    folder: Path,
    store: CheckpointStore,
    kind: str,
    step: int,
    state: dict[str, Any],
    metrics: dict[str, float],
    keep: int,
) -> Saved:
    """The checkpoint sequence: temporary file (fsynced) -> pending record -> rename -> ready
    record, older ones of its kind retired (record first, file after). A kill at any point
    leaves either the old usable checkpoints or the new one, never a listed file that is
    missing (the catalog's repair finishes or undoes a cut sequence). The Trainer and tracked
    scripts (`workbench.track`) both save through it."""
    from workbench.core.faults import fault_point

    path = unused_path(folder / f"{kind}-step{step:07d}.pt")
    temp, size, sha = write_temp(folder, state)
    try:
        fault_point("ckpt.written")
        token = store.prepare(step, kind, str(path), str(temp), size, sha, metrics)
        fault_point("ckpt.prepared")
        put_in_place(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    fault_point("ckpt.renamed")
    return Saved(path, size, sha, store.commit(token, keep))


_STEP = re.compile(r"^(periodic|best|final|stop)-step(\d+)(?:-\d+)?\.pt$")


class FolderCheckpoints:
    """The checkpoint record of a run without a catalog: a list per kind, kept in memory.
    A resumed run (`adopt`) takes over the files its earlier attempts left in the folder; a
    fresh one never does (they may belong to a deleted catalog's run)."""

    def __init__(self, folder: Path, adopt: bool = False) -> None:
        self.folder = folder
        self.files: dict[str, list[StoredCheckpoint]] = {}
        if adopt and folder.is_dir():
            for p in sorted(folder.glob("*-step*.pt")):
                m = _STEP.match(p.name)
                if m:
                    self.files.setdefault(m[1], []).append(
                        StoredCheckpoint(str(p), None, int(m[2]))
                    )
            for lst in self.files.values():
                lst.sort(key=lambda c: c.step)

    def prepare(
        self, step: int, kind: str, path: str, temp_path: str, size: int, sha256: str,
        metrics: dict[str, float],
    ) -> tuple[str, StoredCheckpoint]:  # fmt: skip
        return kind, StoredCheckpoint(path, sha256, step)

    def commit(self, token: tuple[str, StoredCheckpoint], keep: int) -> list[str]:
        kind, ck = token
        files = self.files.setdefault(kind, [])
        files[:] = [c for c in files if c.path != ck.path] + [ck]
        removed = []
        while len(files) > max(keep, 1):
            old = files.pop(0)
            Path(old.path).unlink(missing_ok=True)
            removed.append(old.path)
        return removed

    def newest(self, kind: str) -> StoredCheckpoint | None:
        files = self.files.get(kind)
        return files[-1] if files else None


def load_checkpoint(path: str | Path, expected_sha256: str | None = None) -> dict[str, Any]:
    """Load with weights_only=True after checking the sha256 the catalog recorded."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if expected_sha256 is not None and sha256_file(path) != expected_sha256:
        raise CheckpointError(
            f"checkpoint {path} does not match its recorded sha256 (modified or corrupted)"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors come in many types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "weights_only" in str(exc) or "Weights only load failed" in first:
            # torch's own text advises weights_only=False, i.e. running the file's code: never
            first = "it holds objects other than tensors, numbers and strings (refused: loading it could run code)"
        raise CheckpointError(f"checkpoint {path} cannot be read safely: {first}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path} is not a workbench checkpoint")
    return state
