"""The Evaluate dialog: everything `workbench eval` takes, for the run selected in the browser.

A checkpoint (best, final, latest or any stored step), the test task shape (ways, shots,
queries), episodes, the inner steps and test-time inner step size where the algorithm has
them (its `inner_step_phases` and `Params` say so: ProtoNet has neither, Meta-LSTM and
Meta-SGD learn their step), and the device. It runs `api.evaluate_checkpoint`, the CLI's
engine, in a QThread (`worker.start_in_thread`) with a progress bar and Cancel; the score is
stored there with its protocol and per-episode scores, or not at all when cancelled. A bad
value is shown under its field (`api.evaluation_config` names the key, as the CLI does), never
as a traceback. The result is printed by `exports.format_score` and its episodes drawn as a
histogram.
"""

from __future__ import annotations

import threading
from typing import Any

from PySide6.QtCore import QObject, QThread, Signal, Slot
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from workbench.catalog import Catalog, CheckpointRecord, RunRecord
from workbench.core.algorithms import ALGORITHMS
from workbench.core.config import RunConfig
from workbench.core.devices import available_devices
from workbench.core.errors import ConfigError
from workbench.core.evaluate import REGRESSION_SHOTS, Score, protocol_of
from workbench.core.params import TaskShape
from workbench.exports import format_score, protocol_text
from workbench.gui.episode_histogram import EpisodeHistogram
from workbench.gui.fields import editor_for
from workbench.gui.worker import start_in_thread

CANCELLED = "evaluation cancelled: nothing was stored"
SHAPE = ("ways", "shots", "queries", "inner_steps")
# the field a ConfigError's key (api.evaluation_config, the CLI's flags) is shown under
FIELD_OF_KEY = {
    **{f"eval.{k}": k for k in SHAPE},
    "test_episodes": "episodes",
    "algorithm.eval_inner_lr": "inner_lr",
    "--checkpoint": "checkpoint",
    "device": "device",
}


class EvaluationJob(QObject):
    """`api.evaluate_checkpoint` on a worker thread. `done(score, None)` once stored;
    `done(None, error)` with a ConfigError (its key names the field), CANCELLED, or text."""

    progress = Signal(int, int)  # episodes scored, episodes in all
    done = Signal(object, object)

    def __init__(
        self, catalog: Catalog, run_id: int, checkpoint: CheckpointRecord, options: dict[str, Any]
    ) -> None:
        super().__init__()
        self.catalog, self.run_id, self.checkpoint, self.options = (
            catalog, run_id, checkpoint, options,
        )  # fmt: skip
        self._stop = threading.Event()
        self._last_answer = False
        self.outcome: tuple[Score | None, Any] | None = None  # what `done` carries, once done

    def cancel(self) -> None:
        self._stop.set()

    def _should_stop(self) -> bool:
        # evaluate_checkpoint asks last just before it stores: the answer then says whether
        # it stored (a Cancel pressed after that is too late, and the result is reported)
        self._last_answer = self._stop.is_set()
        return self._last_answer

    @Slot()
    def run(self) -> None:
        from workbench.api import evaluate_checkpoint

        try:
            score = evaluate_checkpoint(
                self.catalog, self.run_id, self.checkpoint, should_stop=self._should_stop,
                progress=self.progress.emit, **self.options,
            )  # fmt: skip
        except ConfigError as exc:
            self.outcome = (None, exc)
        except Exception as exc:  # a damaged checkpoint, missing data: one line in the dialog
            self.outcome = (None, f"{type(exc).__name__}: {(str(exc) or '?').splitlines()[0]}")
        else:
            stored = score.episodes == self.options["episodes"] and not self._last_answer
            self.outcome = (score, None) if stored else (None, CANCELLED)
        self.done.emit(*self.outcome)


class Field(QWidget):
    """An editor with its message line under it: a bad value is explained where it is typed."""

    def __init__(self, editor: Any) -> None:
        super().__init__()
        self.editor = editor
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(1)
        lay.addWidget(editor)
        self.message = QLabel()
        self.message.setWordWrap(True)
        self.message.setStyleSheet("color: #c02020;")
        self.message.hide()
        lay.addWidget(self.message)

    def set_error(self, text: str | None) -> None:
        if hasattr(self.editor, "set_error"):
            self.editor.set_error(text)
        else:  # a plain combo box: the fields' red frame
            self.editor.setStyleSheet("border: 1px solid #d03030;" if text else "")
        self.message.setText(text or "")
        self.message.setVisible(bool(text))


class EvaluateDialog(QDialog):
    """Evaluate one run's checkpoint; `finished_evaluation(run_id, score | None, error | None)`
    when a job ends (the browser logs it and refreshes the run)."""

    finished_evaluation = Signal(int, object, object)

    def __init__(
        self,
        catalog: Catalog,
        run: RunRecord,
        checkpoint: CheckpointRecord | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.catalog, self.run = catalog, run
        self.config = RunConfig.from_dict(run.config)
        self.algorithm = ALGORITHMS.get(self.config.algorithm.name)
        self.job: EvaluationJob | None = None
        self.thread: QThread | None = None
        self.last_score: Score | None = None
        self._close_when_done = False
        self._step = 0  # the step of the checkpoint being evaluated
        self.setWindowTitle(f"Evaluate run #{run.id} {run.name}".rstrip())
        self.resize(560, 640)
        lay = QVBoxLayout(self)
        lay.addWidget(QLabel(self._heading()))
        form = QFormLayout()
        lay.addLayout(form)
        self.fields: dict[str, Field] = {}
        self._checkpoints = self._checkpoint_choices()
        combo = QComboBox()
        for label, _rec in self._checkpoints:
            combo.addItem(label)
        self._pick_checkpoint(combo, checkpoint)
        combo.setToolTip("The checkpoint to score: best validation, final, latest or a step")
        form.addRow("Checkpoint", self._add("checkpoint", combo))
        regression = self.config.task_kind == "regression"
        for key in ("ways", "shots", "queries"):
            editor = editor_for(f"eval.{key}", TaskShape.model_fields[key])
            editor.set_value(getattr(self.config.eval, key))
            form.addRow(key.capitalize(), self._add(key, editor))
        form.setRowVisible(self.fields["ways"], not regression)  # K points, no classes
        self.active = {"checkpoint", "shots", "queries", "episodes", "device"}  # fields read
        self.active |= set() if regression else {"ways"}
        episodes = editor_for("test_episodes", RunConfig.model_fields["test_episodes"])
        episodes.set_value(self.config.test_episodes)
        form.addRow("Episodes", self._add("episodes", episodes))
        steps = editor_for("eval.inner_steps", TaskShape.model_fields["inner_steps"])
        steps.set_value(self.config.eval.inner_steps)
        form.addRow("Inner steps", self._add("inner_steps", steps))
        adapts = "eval" in self.algorithm.inner_step_phases  # ProtoNet: no adaptation steps
        form.setRowVisible(self.fields["inner_steps"], adapts)
        self.active |= {"inner_steps"} if adapts else set()
        params = type(self.config.algorithm).model_fields
        if "eval_inner_lr" in params:
            lr = editor_for("algorithm.eval_inner_lr", params["eval_inner_lr"])
            lr.set_value(self.config.algorithm.eval_inner_lr)  # type: ignore[attr-defined]
            lr.setPlaceholderText(f"empty = {self.config.algorithm.inner_lr:g}, the run's")  # type: ignore[attr-defined]
            form.addRow("Inner LR", self._add("inner_lr", lr))
            self.active.add("inner_lr")
        device = QComboBox()
        device.addItem("auto (cuda, mps, cpu)", "auto")
        for d in available_devices():
            device.addItem(d.label, d.id)
        form.addRow("Device", self._add("device", device))
        if regression:
            form.addRow(QLabel(f"Regression also scores K = {', '.join(map(str, REGRESSION_SHOTS))}"
                               " shots (the MAML paper's protocol)."))  # fmt: skip
        self.progress = QProgressBar()
        self.progress.setFormat("%v / %m episodes")
        self.progress.setTextVisible(False)  # no count before an evaluation starts
        self.progress.setValue(0)
        lay.addWidget(self.progress)
        self.status = QLabel()
        self.status.setWordWrap(True)
        lay.addWidget(self.status)
        self.histogram = EpisodeHistogram()  # always there: the dialog keeps its size
        self.histogram.setTitle(
            "each episode's score is drawn here after an evaluation", size="9pt"
        )
        lay.addWidget(self.histogram, 1)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        self.evaluate_button = QPushButton("Evaluate")
        self.evaluate_button.setDefault(True)
        self.evaluate_button.clicked.connect(lambda _=False: self.start())
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop the evaluation; nothing is stored")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(lambda _=False: self.cancel())
        self.close_button = QPushButton("Close")
        self.close_button.clicked.connect(lambda _=False: self.close())
        for b in (self.evaluate_button, self.cancel_button, self.close_button):
            buttons.addWidget(b)
        lay.addLayout(buttons)
        if not self._checkpoints:
            self.evaluate_button.setEnabled(False)
            self._say(f"run #{run.id} has no checkpoint to evaluate", error=True)

    # ---- building ------------------------------------------------------------------------
    def _heading(self) -> str:
        c = self.config
        return (
            f"<b>{c.algorithm.name}</b> on <b>{c.dataset.name}</b>; its test protocol: "
            + protocol_text(protocol_of(c), "mse" if c.task_kind == "regression" else "")
        )

    def _add(self, key: str, editor: Any) -> Field:
        self.fields[key] = Field(editor)
        return self.fields[key]

    def _checkpoint_choices(self) -> list[tuple[str, CheckpointRecord]]:
        """best / final / latest (those the run has), then every stored step."""
        out = []
        for which in ("best", "final", "latest"):
            rec = self.catalog.checkpoint(self.run.id, which)  # type: ignore[arg-type]
            if rec is not None:
                out.append((f"{which} (step {rec.step})", rec))
        out += [(f"step {c.step} ({c.kind})", c) for c in self.catalog.checkpoints(self.run.id)]
        return out

    def _pick_checkpoint(self, combo: QComboBox, chosen: CheckpointRecord | None) -> None:
        """The checkpoint chosen in the browser's Checkpoints tab, else the first (best)."""
        for i, (label, rec) in enumerate(self._checkpoints):
            if chosen is not None and rec.id == chosen.id and label.startswith("step"):
                combo.setCurrentIndex(i)

    def editor(self, key: str) -> Any:
        return self.fields[key].editor

    # ---- reading and checking ------------------------------------------------------------
    def options(self) -> dict[str, Any] | None:
        """The typed options for `api.evaluate_checkpoint`, checked as the CLI checks its
        flags (and the task shape against the dataset, where that is cheap); None with each
        bad field's message shown under it."""
        for f in self.fields.values():
            f.set_error(None)
        self._say("")
        bad = False
        visible = [k for k in ("ways", "shots", "queries", "episodes", "inner_steps", "inner_lr")
                   if k in self.active]  # fmt: skip
        for key in visible:
            error = self.editor(key).value_error()
            if error:
                self.fields[key].set_error(error)
                bad = True
        if bad:
            return None
        shape = {k: self.editor(k).value() for k in SHAPE if k in visible}
        opts: dict[str, Any] = {
            "episodes": self.editor("episodes").value(),
            "shape": shape,
            "inner_lr": self.editor("inner_lr").value() if "inner_lr" in visible else None,
            "device": self.editor("device").currentData(),
        }
        try:
            from workbench.api import evaluation_config
            from workbench.gui.shape_check import ShapeChecker

            config = evaluation_config(self.config, opts["episodes"], shape, opts["inner_lr"])
            ShapeChecker().check(config)  # a generated dataset: shots + queries per class
        except ConfigError as exc:
            self.show_error(exc)
            return None
        return opts

    def show_error(self, error: ConfigError | str) -> None:
        """A ConfigError under the field its key names (else below the form)."""
        key = FIELD_OF_KEY.get(error.key) if isinstance(error, ConfigError) else None
        if key in self.active:
            self.fields[key].set_error(error.message)  # type: ignore[union-attr]
            self._say("")
        else:
            self._say(str(error), error=True)

    def _say(self, text: str, error: bool = False) -> None:
        self.status.setStyleSheet("color: #c02020;" if error else "")
        self.status.setText(text)

    # ---- running -------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.thread is not None

    def start(self) -> bool:
        """Check the fields and start the evaluation; False (nothing started) if a field is
        wrong, or an evaluation is running."""
        if self.running or not self._checkpoints:
            return False
        opts = self.options()
        if opts is None:
            return False
        checkpoint = self._checkpoints[self.editor("checkpoint").currentIndex()][1]
        self._step = checkpoint.step
        passes = 1 + (len(REGRESSION_SHOTS) if self.config.task_kind == "regression" else 0)
        self.progress.setRange(0, opts["episodes"] * passes)
        self.progress.setValue(0)
        self.progress.setTextVisible(True)
        self.histogram.show_scores([], "accuracy")
        self.histogram.setTitle("")
        self._say(f"evaluating step {checkpoint.step} on {opts['episodes']} test episodes…")
        self.job = EvaluationJob(self.catalog, self.run.id, checkpoint, opts)
        self.job.progress.connect(self._progress)
        self.job.done.connect(self._done)
        self.thread = start_in_thread(self.job, f"evaluate-run-{self.run.id}")
        self._set_running(True)
        return True

    def cancel(self) -> None:
        if self.job is not None:
            self.job.cancel()
            self._say("cancelling after the current draw of episodes…")

    def _set_running(self, on: bool) -> None:
        self.evaluate_button.setEnabled(not on)
        self.cancel_button.setEnabled(on)
        for f in self.fields.values():
            f.editor.setEnabled(not on)

    def _progress(self, done: int, total: int) -> None:
        self.progress.setMaximum(total)
        self.progress.setValue(done)

    def _done(self, score: Score | None, error: Any) -> None:
        if self.job is None:  # already taken by `shutdown`
            return
        if self.thread is not None:
            self.thread.wait()
        for obj in (self.job, self.thread):
            if obj is not None:
                obj.deleteLater()
        self.job = self.thread = None
        self._set_running(False)
        if score is not None:
            self.last_score = score
            self._say(
                f"<b>test {score.metric} {format_score(score.mean, score.ci95, score.metric)}"
                f"</b> over {score.episodes} episodes, checkpoint of step {self._step} (stored)"
            )
            self.histogram.show_scores(score.episode_scores.tolist(), score.metric)
        else:
            self.show_error(error)
        self.finished_evaluation.emit(self.run.id, score, error)
        if self._close_when_done:
            self.close()

    def shutdown(self) -> None:
        """Cancel a running evaluation and wait for it (the app is closing)."""
        if self.job is not None and self.thread is not None:
            self.job.cancel()
            self.thread.wait()
            self._done(*(self.job.outcome or (None, CANCELLED)))

    def reject(self) -> None:
        """Escape, Close or the window's close button (QDialog's closeEvent asks this): while
        it runs, the evaluation is cancelled and the dialog goes once it has stopped (within a
        draw of episodes), leaving nothing stored."""
        if self.running:
            self._close_when_done = True
            self.cancel()
            return
        super().reject()
