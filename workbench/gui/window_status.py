"""The status bar and the run list's texts: state, step, speed, ETA, device, memory, and how
many runs are live.

A part of `MainWindow` (`gui/main_window.py`), which mixes it in: the attributes it uses are
the window's."""

from __future__ import annotations

import time

from PySide6.QtWidgets import (
    QLabel,
)

# a run in one of these states can still be paused or stopped ("starting": its thread or
# process is getting ready; "stopping": asked to stop, not stopped yet)
LIVE_STATES = ("queued", "starting", "running", "paused", "stopping")
SETTING_DETACHED = "run/detached_default"
LABELS_EVERY_S = 2.0  # the run list's step counts refresh this often


def device_text(device: str, name: str | None) -> str:
    """A run's device for the status bar: "cpu (AMD EPYC ...)", "cuda:0 (NVIDIA H200)"."""
    return f"{device} ({name})" if name and name != device else device or ""


def fmt_eta(seconds: float) -> str:
    if seconds != seconds or seconds < 0 or seconds > 1e7:
        return "–"
    s = int(seconds)
    return (
        f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"
    )


class StatusMixin:
    def _build_status_bar(self) -> None:
        sb = self.statusBar()
        self.sb_state = QLabel("idle")
        self.sb_step = QLabel("")
        self.sb_speed = QLabel("")
        self.sb_eta = QLabel("")
        self.sb_device = QLabel("")
        self.sb_memory = QLabel("")
        for w in (self.sb_state, self.sb_step, self.sb_speed, self.sb_eta, self.sb_device):
            w.setMinimumWidth(70)
            sb.addWidget(w)
        self.sb_state.setMinimumWidth(130)  # "#123 interrupted" must not be cut off
        self.sb_count = QLabel("")
        self.sb_count.setToolTip("Live runs: in the app's thread and in their own processes")
        sb.addPermanentWidget(self.sb_count)
        sb.addPermanentWidget(self.sb_memory)

    def _run_label(self, run_id: int) -> str:
        r = self.runs.get(run_id, {})
        ranks = r.get("ranks", 1)
        where = (
            f"{ranks} processes" if ranks > 1 else "own process" if r.get("detached") else "in app"
        )
        total = r.get("total") or "?"
        return (
            f"#{run_id} {r.get('name') or ''}\n"
            f"{r.get('state', '')} {r.get('step', 0)}/{total} · {where}"
        )

    def _set_text(self, label: QLabel, text: str) -> None:
        """setText only on a change: an unchanged label costs no relayout or repaint."""
        if self._sb_texts.get(id(label)) != text:
            self._sb_texts[id(label)] = text
            label.setText(text)

    def _state_changed(self) -> None:
        """A run's state changed: the list and the status bar say so now."""
        self._update_run_labels()
        self.update_status_bar()

    def _update_run_labels(self) -> None:
        """The run list's texts (state, step): every LABELS_EVERY_S and on state changes; each
        text change repaints the list, on the GUI thread an in-app run shares the GIL with."""
        for run_id, run in self.runs.items():
            ranks = run.get("ranks", 1)
            where = (
                f"trains on {ranks} processes, data-parallel (rank 0: pid {run.get('pid')})"
                if ranks > 1
                else f"trains in its own process (pid {run.get('pid')})"
                if run.get("detached")
                else "trains in the app's thread"
            )
            self.live.set_run_text(run_id, self._run_label(run_id), f"#{run_id} {where}")

    def update_status_bar(self, force: bool = False) -> None:
        running, paused = self.live_count()
        parts = [f"{running} running"] if running else []
        parts += [f"{paused} paused"] if paused else []
        self._set_text(self.sb_count, ", ".join(parts))
        now = time.monotonic()
        if force or now - self._labels_at >= LABELS_EVERY_S:
            self._labels_at = now
            self._update_run_labels()
        r = self._run
        if r:
            state = r.get("state", "")
            self._set_text(self.sb_state, f"#{r['id']} {state}")
            self._set_text(self.sb_step, f"step {r.get('step', 0)}/{r.get('total') or '?'}")
            rate = r.get("rate") or 0.0
            self._set_text(self.sb_speed, f"{rate:.1f} steps/s" if rate else "")
            live = state in ("running", "starting")
            self._set_text(
                self.sb_eta,
                f"ETA {fmt_eta(((r.get('total') or 0) - r.get('step', 0)) / rate)}"
                if rate and live and r.get("total")
                else "",
            )
            self._set_text(self.sb_device, str(r.get("device_text") or r.get("device", "")))
        now = time.monotonic()
        if not force and now - self._mem_at < 2.0:
            return
        self._mem_at = now
        mem = f"RSS {self._process.memory_info().rss / 2**20:.0f} MiB"
        dev = r.get("device", "") if r else ""
        if dev.startswith(("cuda", "mps")):
            try:
                import torch

                from workbench.core.devices import device_memory_text

                mem += device_memory_text(torch.device(dev))
            except Exception:
                pass
        self._set_text(self.sb_memory, mem)

    def live_count(self) -> tuple[int, int]:
        """(running, paused) among the runs in the live view."""
        states = [r.get("state") for r in self.runs.values()]
        paused = states.count("paused")
        return sum(1 for s in states if s in LIVE_STATES) - paused, paused
