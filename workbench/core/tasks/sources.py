"""Finding, fetching and verifying a dataset's official files, shared by the dataset modules.

Every dataset read from files needs the same things, and they should behave the same for all
of them: where to look (the data dir, else $WORKBENCH_DATA, else the user cache), a download
that never leaves a partial or unverified file where a later run would trust it, checksums
hashed once per process, and a refusal that names the file and the checksum it expected.
Class-list files shipped with the package (workbench/resources/splits/) are read here too.
"""

from __future__ import annotations

import hashlib
import logging
import os
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

from workbench.core.errors import ConfigError, DataError
from workbench.core.params import DatasetConfig
from workbench.core.tasks.cache import atomic_write, cache_dir, file_digests

log = logging.getLogger(__name__)

DATA_ENV = "WORKBENCH_DATA"
SUMS_FILE = "SHA256SUMS"
SPLITS_DIR = Path(__file__).resolve().parents[2] / "resources" / "splits"


# ---- where the files are --------------------------------------------------------------------
def data_base(cfg: DatasetConfig) -> Path | None:
    """dataset.data_dir, else $WORKBENCH_DATA, else None (then downloads go to the cache)."""
    base = cfg.data_dir or os.environ.get(DATA_ENV)
    return Path(base).expanduser() if base else None


def search_dirs(cfg: DatasetConfig, sub: str) -> list[Path]:
    """Folders to look in: the data dir and its `sub` folder (one data dir can hold several
    datasets side by side), or where a download without a data dir went."""
    base = data_base(cfg)
    if base is None:
        return [cache_dir() / "data" / sub]
    return [base, base / sub]


def download_dir(cfg: DatasetConfig, sub: str) -> Path:
    """Where a download goes: <data dir>/<sub> (the data dir itself if it is named `sub`)."""
    base = data_base(cfg)
    if base is None:
        return cache_dir() / "data" / sub
    return base if base.name == sub else base / sub


def where_text(cfg: DatasetConfig, sub: str) -> str:
    """The folders searched, for messages; says when no data dir was set at all."""
    text = " or ".join(str(d) for d in search_dirs(cfg, sub))
    if data_base(cfg) is None:
        text += f" (no data dir set, ${DATA_ENV} unset)"
    return text


def describe_safely(name: str, describe: Callable[[], str]) -> str:
    """A dataset's one-line description for the form; it never raises (the form shows it as
    the user picks the dataset): a known problem is said as itself, anything else as such."""
    try:
        return describe()
    except (ConfigError, DataError, OSError) as exc:
        return f"{name}: {exc}"
    except Exception as exc:  # describe must never raise
        return f"{name}: could not inspect the data ({exc})"


def archive_head(
    name: str, cfg: DatasetConfig, archive: str, sub: str, path: Path | None, size_note: str = ""
) -> str:
    """How a description starts for a one-archive dataset: the archive found (its size, and that
    it is checked when loaded), else where it was looked for and what to do."""
    if path is None:
        action = (
            f"will be downloaded (dataset.download=true{size_note})"
            if cfg.download
            else "set --data-dir or dataset.download=true"
        )
        return f"{name}: no {archive} found in {where_text(cfg, sub)}; {action}"
    mb = path.stat().st_size / 1e6
    return f"{name}: {path} ({mb:,.0f} MB; checked against the published MD5 when loaded)"


def paper_shape_note(cfg: DatasetConfig, paper: tuple[int, int]) -> str:
    """What a description adds when the images asked for are not the papers' (image_size,
    channels): what they are, and the settings that give the papers' ("" when they are)."""
    if (cfg.image_size, cfg.channels) == paper:
        return ""
    size, channels = paper

    def colour(c: int) -> str:
        return "RGB" if c == 3 else "grayscale"

    return (
        f"; images {cfg.image_size}x{cfg.image_size} {colour(cfg.channels)} (the papers use "
        f"{size}x{size} {colour(channels)}: dataset.image_size={size}, dataset.channels={channels})"
    )


# ---- download -------------------------------------------------------------------------------
def fetch(url: str, dest: Path, md5: str | None = None, timeout: float = 60.0) -> None:
    """Stream url to dest atomically; with md5, a mismatch raises and leaves nothing behind,
    so an interrupted or corrupted download is never mistaken for the real file later."""

    def write(f: IO[bytes]) -> None:
        h = hashlib.md5()
        try:
            with urllib.request.urlopen(url, timeout=timeout) as r:
                while block := r.read(1 << 20):
                    h.update(block)
                    f.write(block)
        except OSError as exc:
            raise DataError(f"download of {url} failed: {exc}") from exc
        if md5 is not None and h.hexdigest() != md5:
            raise DataError(
                f"MD5 mismatch for {dest.name} downloaded from {url}: expected {md5}, got "
                f"{h.hexdigest()}; the download is corrupted or the file changed upstream "
                "(nothing was kept)"
            )

    try:
        atomic_write(dest, write)
    except PermissionError as exc:
        raise DataError(
            f"cannot write {dest} ({exc}); set --data-dir to a writable folder"
        ) from exc


# ---- checksums ------------------------------------------------------------------------------
_DIGESTS: dict[tuple[str, int, int], tuple[str, str]] = {}


def digests(path: Path) -> tuple[str, str]:
    """(sha256, md5), remembered per (path, size, mtime) so train/val/test hash once."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        _DIGESTS[key] = file_digests(path)
    return _DIGESTS[key]


def read_sums(path: Path) -> dict[str, str]:
    """file name -> checksum from `sha256sum` output (`HASH  name` or `HASH *name` lines)."""
    sums = {}
    for line in path.read_text().splitlines():
        fields = line.split()
        if len(fields) == 2:
            sums[fields[1].lstrip("*")] = fields[0].lower()
    return sums


def verify_archive(path: Path, official_md5: str, dataset: str) -> str:
    """Check an archive against a SHA256SUMS entry beside it, else its published MD5.

    Unlike Omniglot (whose archives are often re-zipped), these archives have exactly one
    official form, so a mismatch is refused: a DataError naming the file and the expected
    checksum. SHA256SUMS is the way to vouch for a file on purpose (a mirror, a test archive).
    Returns the note the engine records.
    """
    sums_file = path.parent / SUMS_FILE
    sums = read_sums(sums_file) if sums_file.is_file() else {}
    sha, md5 = digests(path)
    if path.name in sums:
        if sha != sums[path.name]:
            raise DataError(
                f"SHA256 mismatch for {path}: {sums_file} expects {sums[path.name]}, the file has "
                f"{sha}; the file is corrupted or was modified"
            )
        note = f"{path.name}: SHA256 verified ({SUMS_FILE})"
    elif md5 == official_md5:
        note = f"{path.name}: official MD5 verified"
    else:
        raise DataError(
            f"{path} is not the official {dataset} archive: expected MD5 {official_md5} (the "
            f"published checksum), the file has {md5}; it is corrupted or incomplete: delete it "
            "(dataset.download=true fetches it again) or vouch for it with a SHA256SUMS file "
            "beside it"
        )
    log.info("%s %s", dataset, note)
    return note


# ---- a dataset published as one archive -----------------------------------------------------
@dataclass
class ArchiveSource:
    """Where a one-archive dataset's files are: the archive, or the folder it unpacks to."""

    kind: Literal["archive", "folder"]
    path: Path


@dataclass
class OfficialArchive:
    """A dataset published as one archive with an MD5 (CIFAR-100's binary version, CUB): where
    it is looked for, where it is downloaded from, and how it is checked. Not frozen: the tests
    set `md5` to that of the small archive they build."""

    label: str  # the dataset in verification notes and errors ("CIFAR-100 binary")
    archive: str  # the archive's file name
    folder: str  # the folder it unpacks to
    sub: str  # the data dir's sub-folder for it
    url: str
    url_env: str  # an environment variable that overrides url (a mirror)
    md5: str  # the published checksum
    unpacked: Callable[[Path], bool]  # whether a folder holds the unpacked files
    needs: str = ""  # locate's message starts "<dataset> needs <needs>: " when set
    folder_note: str = ""  # what an unpacked folder holds, for locate's message
    never_read: tuple[str, str] | None = None  # (a folder, why it is not read), a hint

    def find(self, cfg: DatasetConfig) -> ArchiveSource | None:
        """The archive, else an unpacked folder, in the first search dir that has either."""
        for d in search_dirs(cfg, self.sub):
            if (d / self.archive).is_file():
                return ArchiveSource("archive", d / self.archive)
            for folder in (d / self.folder, d):
                if self.unpacked(folder):
                    return ArchiveSource("folder", folder)
        return None

    def download(self, dest: Path, url: str | None = None) -> ArchiveSource:
        """Fetch the archive into dest, kept only if its MD5 is the published one."""
        url = url or os.environ.get(self.url_env) or self.url
        log.info("downloading %s to %s", url, dest)
        fetch(url, dest / self.archive, self.md5)
        return ArchiveSource("archive", dest / self.archive)

    def locate(self, cfg: DatasetConfig, dataset: str) -> ArchiveSource:
        """The archive or folder, downloading when allowed; a ConfigError says where we looked."""
        found = self.find(cfg)
        if found is not None:
            return found
        if cfg.download:
            return self.download(download_dir(cfg, self.sub))
        lead = f"{dataset} needs {self.needs}: " if self.needs else ""
        hint = ""
        if self.never_read is not None:
            name, why = self.never_read
            for d in search_dirs(cfg, self.sub):
                if (d / name).exists():
                    hint = f"; {d / name} is {why}"
        raise ConfigError(
            "dataset.data_dir",
            f"{lead}no {self.archive} or unpacked {self.folder}/{self.folder_note} found in "
            f"{where_text(cfg, self.sub)}{hint}; set --data-dir or dataset.download=true",
        )

    def verify(self, src: ArchiveSource, dataset: str) -> str:
        """Refuse an archive that is not the official one; say what was (not) checked."""
        if src.kind == "archive":
            return verify_archive(src.path, self.md5, self.label)
        note = f"unpacked folder {src.path}: not verified (no checksums for unpacked files)"
        log.info("%s: %s", dataset, note)
        return note


# ---- class lists ----------------------------------------------------------------------------
def read_names(path: Path) -> list[str]:
    """One name a line; blank lines and `#` comments (the files cite their sources) skipped."""
    if not path.is_file():
        raise DataError(f"class list {path} not found")
    names = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.append(line)
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise DataError(f"class list {path} names {dup!r} twice")
    return names


def class_list(cfg: DatasetConfig, dataset: str, named: tuple[str, ...], split: str) -> Path:
    """The class-list file of `split`: the paper's (shipped in resources/splits/<dataset>/) when
    dataset.split is "default" or one of `named`, else dataset.split as a folder holding
    train.txt / val.txt / test.txt in the same format, so another published split needs no code."""
    if cfg.split == "default" or cfg.split in named:
        return SPLITS_DIR / dataset / f"{split}.txt"
    folder = Path(cfg.split).expanduser()
    if not folder.is_dir():
        allowed = ", ".join(["default", *named])
        raise ConfigError(
            "dataset.split",
            f"unknown {dataset} split {cfg.split!r}; allowed: {allowed}, or a folder holding "
            "train.txt, val.txt and test.txt (one class name a line)",
        )
    path = folder / f"{split}.txt"
    if not path.is_file():
        raise ConfigError("dataset.split", f"{path} not found")
    return path
