"""Decode-once cache: decoded images are saved as tensors so a second run starts in milliseconds.

Files live in the user cache dir (the data dir may be read-only), named by a hash of the
source files and the decode options, so a changed archive or image size never reuses a
stale entry. Writes are atomic (temp file, fsync, rename) so an interrupted decode never
leaves a half-written file that a later run would trust.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any, TypeVar

import numpy as np
import torch

log = logging.getLogger(__name__)
T = TypeVar("T")

CACHE_ENV = "WORKBENCH_CACHE"
APP_NAME = "meta-learning-workbench"

# Loaded entries kept for the life of the process: train/val/test share one decoded tensor.
_MEMORY: dict[Path, dict[str, Any]] = {}


def cache_dir() -> Path:
    """$WORKBENCH_CACHE, else the platform's user cache dir."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir(APP_NAME))


def file_digests(path: Path, chunk: int = 1 << 20) -> tuple[str, str]:
    """(sha256, md5) of a file in one read: the cache key and the checksum checks share it."""
    sha, md5 = hashlib.sha256(), hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            sha.update(block)
            md5.update(block)
    return sha.hexdigest(), md5.hexdigest()


def stat_signature(paths: Iterable[Path], root: Path | None = None) -> list[tuple[str, int, int]]:
    """(name, size, mtime_ns) per file: cheap change detection for folders of many small files."""
    out = []
    for p in paths:
        st = p.stat()
        name = str(p.relative_to(root)) if root is not None else str(p)
        out.append((name, st.st_size, st.st_mtime_ns))
    return out


def cache_key(parts: Any) -> str:
    """Stable short hash of JSON-serialisable key parts (sources + decode options + version)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def atomic_write(path: Path, write: Callable[[Any], None]) -> None:
    """Call write(fileobj) on a temp file beside `path`, fsync it and rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def cached(name: str, parts: Any, build: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Return the entry for (name, parts): from memory, else from disk, else build() and save it.

    `build` returns a dict of tensors / lists / str / int (what torch.load(weights_only=True)
    accepts). A cache file that cannot be read is rebuilt; a cache dir that cannot be written
    only costs the decode next time.
    """
    path = cache_dir() / f"{name}-{cache_key(parts)}.pt"
    if path in _MEMORY:
        return _MEMORY[path]
    data: dict[str, Any] | None = None
    if path.is_file():
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # corrupted or from an incompatible torch: decode again
            log.warning("ignoring unreadable cache file %s (%s)", path, exc)
    if data is None:
        data = build()
        try:
            atomic_write(path, lambda f: torch.save(data, f))
        except OSError as exc:
            log.warning(
                "could not write cache file %s (%s); will decode again next time", path, exc
            )
    _MEMORY[path] = data
    return data


def cache_path(name: str, parts: Any) -> Path:
    """Where `cached(name, parts, ...)` stores its entry (for tests and `describe`)."""
    return cache_dir() / f"{name}-{cache_key(parts)}.pt"


def clear_memory() -> None:
    """Forget in-process entries (tests use this to prove the on-disk cache is reused)."""
    _MEMORY.clear()


def decode_images(
    items: Sequence[T],
    open_item: Callable[[T], IO[bytes] | Path],
    size: int,
    channels: int = 1,
    invert: bool = False,
    workers: int | None = None,
) -> torch.Tensor:
    """Decode and resize images to uint8 [N, channels, size, size] on a thread pool.

    Pillow releases the GIL while decoding and resizing, so threads scale without the start-up
    cost and pickling of processes. `open_item` must be safe to call from several threads
    (open a ZipFile per thread, see omniglot.py). Errors name the item that failed.
    """
    from PIL import Image

    from workbench.core.errors import DataError

    mode = "L" if channels == 1 else "RGB"
    out = np.empty((len(items), size, size, channels), dtype=np.uint8)

    def one(i: int) -> None:
        try:
            with Image.open(open_item(items[i])) as im:
                im = im.convert(mode)
                if im.size != (size, size):
                    im = im.resize((size, size), Image.Resampling.LANCZOS)
                out[i] = np.asarray(im).reshape(size, size, channels)
        except Exception as exc:
            raise DataError(f"could not decode image {items[i]}: {exc}") from exc

    def run(chunk: range) -> None:
        for i in chunk:
            one(i)

    n_workers = workers or min(8, os.cpu_count() or 1)
    step = max(1, -(-len(items) // (n_workers * 4)))
    chunks = [range(i, min(i + step, len(items))) for i in range(0, len(items), step)]
    with ThreadPoolExecutor(n_workers) as pool:
        for _ in pool.map(run, chunks):
            pass
    images = torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()
    return 255 - images if invert else images
