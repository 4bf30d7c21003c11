"""File helpers shared by the core (checkpoints) and the catalog (their repair), which import
nothing of each other: durable renames and content hashes."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path


def fsync_dir(folder: str | os.PathLike[str]) -> None:
    """Make a rename in `folder` durable (best effort: some filesystems refuse)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def free_space(folder: str | os.PathLike[str]) -> str:
    """ "N MB free in FOLDER" (or just the folder if it cannot be measured): what a user who
    sees "disk full" needs to know first."""
    try:
        return f"{shutil.disk_usage(folder).free / 2**20:.0f} MB free in {folder}"
    except OSError:
        return str(folder)


def sha256_file(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def complete(path: str | os.PathLike[str], sha256: str | None) -> bool:
    """Whether the file exists with the recorded sha256 (any content when none was recorded)."""
    try:
        return sha256 is None and Path(path).is_file() or sha256_file(path) == sha256
    except OSError:
        return False
