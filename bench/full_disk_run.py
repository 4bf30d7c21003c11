"""A run on a really full disk: a small tmpfs in a private mount namespace, filled up to
300 kB; the run must pause with "disk full" and the folder, and finish with every point and
complete checkpoints once the user (here: a listener) frees space.

    python bench/full_disk_run.py FOLDER      # inside the mount: the run itself
    full_disk_run(folder)                     # mounts the tmpfs and runs the above (root)

Used by tests/test_crash_safety.py and bench/faults.py.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def full_disk_run(folder: Path, size: str = "8m") -> subprocess.CompletedProcess[str] | None:
    """Run this script on a `size` tmpfs mounted over `folder`; None without namespaces."""
    if subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode != 0:
        return None
    f = shlex.quote(str(folder))
    return subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c",
         f"mount -t tmpfs -o size={size} tmpfs {f} && exec {shlex.quote(sys.executable)} "
         f"{shlex.quote(__file__)} {f}"],
        capture_output=True, text=True, cwd=ROOT, timeout=1800,
    )  # fmt: skip


def main(folder: Path) -> None:
    """The run itself, inside the mount: prints STATUS lines, then RESULT and LISTED."""
    sys.path.insert(0, str(ROOT))
    from workbench.api import trainer_for
    from workbench.catalog import Catalog
    from workbench.core.config import RunConfig, default_config
    from workbench.core.events import Listener

    d = default_config("fomaml", "glyphs").to_dict()
    d.update(steps=6, ckpt_every=1, keep_last=1, val_every=0, test_on_finish=False, seed=1)
    d.update(threads=1)
    d["train"]["meta_batch"] = 2
    cat = Catalog.open(folder / "c.db")
    ballast = folder / "ballast"
    st = os.statvfs(folder)
    ballast.write_bytes(b"0" * (st.f_bavail * st.f_frsize - 300_000))  # no checkpoint fits

    class FreeSpaceWhenPaused(Listener):
        def on_status(self, status: str, reason: str | None = None) -> None:  # type: ignore[override]
            print("STATUS", status, reason, flush=True)
            if reason:
                ballast.unlink(missing_ok=True)  # the user makes room

    trainer, rid = trainer_for(cat, RunConfig.from_dict(d), [FreeSpaceWhenPaused()])
    result = trainer.run()
    for listener in trainer.listeners:
        getattr(listener, "close", lambda: None)()
    print("RESULT", result.status, result.step, cat.metrics(rid, "loss")[0].tolist())
    print("LISTED", all(os.path.getsize(c.path) == c.bytes for c in cat.checkpoints(rid)))


def check(folder: Path) -> str | None:
    """None if the run kept its promises on the full disk, else what broke (skips: None)."""
    proc = full_disk_run(folder)
    if proc is None:
        return None
    out = proc.stdout
    wanted = [
        f"STATUS paused disk full: 0 MB free in {folder}",
        "STATUS running None",
        f"RESULT finished 6 {list(range(1, 7))}",
        "LISTED True",
    ]
    missing = [w for w in wanted if w not in out]
    if proc.returncode != 0 or missing:
        return f"exit {proc.returncode}, missing {missing}: {out[-300:]} {proc.stderr[-300:]}"
    return None


if __name__ == "__main__":
    main(Path(sys.argv[1]))
