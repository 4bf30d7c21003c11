"""The Trainer: resume equivalence, cancel/pause within a step, failures, checkpoints."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch

from workbench.core import episode_stream
from workbench.core.algorithms.maml import MAML
from workbench.core.checkpoint import load_checkpoint, save_checkpoint
from workbench.core.config import RunConfig, default_config
from workbench.core.engine import Trainer
from workbench.core.errors import CheckpointError, ConfigError
from workbench.core.events import Listener


class Recorder(Listener):
    def __init__(self) -> None:
        self.steps: dict[int, dict[str, float]] = {}
        self.evals: list = []
        self.ckpts: list = []
        self.removed: list[str] = []
        self.statuses: list[str] = []
        self.finished = None

    def on_step(self, e):  # type: ignore[override]
        self.steps[e.step] = {
            k: v for k, v in e.values.items() if k not in ("steps_per_s", "step_time")
        }

    def on_eval(self, e):  # type: ignore[override]
        self.evals.append(e)

    def on_checkpoint(self, e):  # type: ignore[override]
        self.ckpts.append(e)

    def on_checkpoint_removed(self, e):  # type: ignore[override]
        self.removed.append(e.path)

    def on_status(self, s):  # type: ignore[override]
        self.statuses.append(s)

    def on_finish(self, e):  # type: ignore[override]
        self.finished = e


def small(algorithm: str = "maml", **extra: object) -> RunConfig:
    base = default_config(algorithm, "sinusoid").to_dict()
    base.update(
        steps=20, val_every=5, val_episodes=10, ckpt_every=10, test_episodes=10, threads=1, seed=3
    )
    base["train"]["meta_batch"] = 4
    base.update(extra)
    return RunConfig.from_dict(base)


@pytest.mark.parametrize("algorithm", ["maml", "meta-lstm"])
def test_resume_at_step_k_reproduces_the_uninterrupted_run_bitwise(
    tmp_path: Path, algorithm: str
) -> None:
    assert_resume_reproduces(small(algorithm), tmp_path)


def test_resume_is_bitwise_too_with_task_threads_and_batches_drawn_ahead(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two threads: the meta-batch's tasks on both, every batch drawn during the step before
    (the checkpoint must hold the generator state from before the batch drawn ahead)."""
    monkeypatch.setattr(episode_stream, "AHEAD_ABOVE_S", 0.0)
    assert_resume_reproduces(small("maml", threads=2), tmp_path)


def assert_resume_reproduces(cfg: RunConfig, tmp_path: Path) -> None:
    full = Recorder()
    Trainer(cfg, [full], tmp_path / "a").run()
    ckpt = next(c for c in full.ckpts if c.step == 10 and c.kind == "periodic")
    resumed = Recorder()
    Trainer(cfg, [resumed], tmp_path / "b", resume_from=ckpt.path, resume_sha256=ckpt.sha256).run()
    assert sorted(resumed.steps) == list(range(11, 21))
    for step in range(11, 21):
        assert resumed.steps[step] == full.steps[step], step  # exact float equality
    assert [e.mean for e in resumed.evals] == [e.mean for e in full.evals if e.step > 10]


def test_cancel_takes_effect_within_one_step_and_writes_a_checkpoint(tmp_path: Path) -> None:
    rec = Recorder()

    class CancelAt5(Listener):
        def on_step(self, e):  # type: ignore[override]
            if e.step == 5:
                trainer.cancel()

    trainer = Trainer(small(steps=1000), [rec, CancelAt5()], tmp_path)
    result = trainer.run()
    assert result.status == "cancelled" and result.step == 5
    assert max(rec.steps) == 5
    stop = [c for c in rec.ckpts if c.kind == "stop"]
    assert stop and stop[0].step == 5 and Path(stop[0].path).is_file()
    assert load_checkpoint(stop[0].path, stop[0].sha256)["step"] == 5


def test_pause_blocks_between_steps_and_resume_continues(tmp_path: Path) -> None:
    rec = Recorder()
    paused_at: list[int] = []

    class PauseAt3(Listener):
        def on_step(self, e):  # type: ignore[override]
            if e.step == 3:
                trainer.pause()
                paused_at.append(e.step)
                threading.Timer(0.3, trainer.resume).start()

        def on_status(self, s):  # type: ignore[override]
            if s == "paused":
                assert max(rec.steps) == 3  # no step ran while paused

    trainer = Trainer(
        small(steps=6, val_every=0, ckpt_every=0, test_on_finish=False), [rec, PauseAt3()], tmp_path
    )
    result = trainer.run()
    assert result.status == "finished" and sorted(rec.steps) == list(range(1, 7))
    assert rec.statuses == ["paused", "running"]


def test_non_finite_loss_fails_the_run_with_its_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = MAML.meta_train_step
    calls = {"n": 0}

    def exploding(self, batch, shape):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        out = real(self, batch, shape)
        return {**out, "loss": float("nan")} if calls["n"] == 4 else out

    monkeypatch.setattr(MAML, "meta_train_step", exploding)
    rec = Recorder()
    result = Trainer(small(), [rec], tmp_path).run()
    assert result.status == "failed" and result.step == 3
    assert "non-finite loss" in (result.error or "") and "step 4" in (result.error or "")
    assert rec.finished is result


def test_retention_keeps_last_k_plus_best_and_final(tmp_path: Path) -> None:
    rec = Recorder()
    Trainer(small(steps=30, ckpt_every=5, keep_last=2, val_every=10), [rec], tmp_path).run()
    files = sorted(p.name for p in tmp_path.glob("*.pt"))
    periodic = [f for f in files if f.startswith("periodic")]
    assert periodic == ["periodic-step0000025.pt", "periodic-step0000030.pt"]
    assert (
        sum(f.startswith("final") for f in files) == 1
        and sum(f.startswith("best") for f in files) == 1
    )
    assert set(rec.removed).isdisjoint(str(tmp_path / f) for f in files)


def test_finished_run_is_tested_on_its_best_checkpoint(tmp_path: Path) -> None:
    rec = Recorder()
    result = Trainer(small(), [rec], tmp_path).run()
    best = [c for c in rec.ckpts if c.kind == "best"][-1]
    assert result.test is not None and result.test.split == "test"
    assert result.test.checkpoint_step == best.step
    assert result.test.episodes == 10 and result.test.ci95 > 0


def test_tampered_checkpoint_is_refused(tmp_path: Path) -> None:
    rec = Recorder()
    Trainer(small(), [rec], tmp_path).run()
    ck = next(c for c in rec.ckpts if c.kind == "final")
    with open(ck.path, "r+b") as f:
        f.seek(100)
        f.write(b"\x00\x01\x02")
    with pytest.raises(CheckpointError, match="sha256"):
        load_checkpoint(ck.path, ck.sha256)
    result = Trainer(
        small(), [], tmp_path / "x", resume_from=ck.path, resume_sha256=ck.sha256
    ).run()
    assert result.status == "failed" and "sha256" in (result.error or "")


class Evil:
    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (Path("/tmp/workbench-pwned").touch, ())


def test_a_checkpoint_from_elsewhere_never_executes_code(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"format": "workbench-checkpoint-1", "payload": Evil()}, path)
    Path("/tmp/workbench-pwned").unlink(missing_ok=True)
    with pytest.raises(CheckpointError, match="cannot be read safely") as err:
        load_checkpoint(path)
    assert not Path("/tmp/workbench-pwned").exists()
    # torch's own text advises weights_only=False, i.e. running the file's code: never repeated
    msg = str(err.value)
    assert "weights_only" not in msg and "can still be loaded" not in msg and "\n" not in msg
    assert "refused" in msg
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "junk.pt")


def test_checkpoint_round_trip_is_atomic(tmp_path: Path) -> None:
    size, sha = save_checkpoint(tmp_path / "c.pt", {"x": torch.arange(3)})
    assert size > 0 and len(sha) == 64
    assert not list(tmp_path.glob(".tmp-*"))
    assert load_checkpoint(tmp_path / "c.pt", sha)["x"].tolist() == [0, 1, 2]


def test_unavailable_device_names_what_exists() -> None:
    from workbench.core.devices import resolve_device

    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in ("cuda", "mps", "cpu")
    with pytest.raises(
        ConfigError, match=r"'cuda:3' is not available on this machine; available: auto, .*cpu"
    ):
        resolve_device("cuda:3")


def test_failed_device_is_reported_as_failed_run() -> None:
    result = Trainer(small(device="cuda:3"), []).run()
    assert result.status == "failed" and "available: auto" in (result.error or "")


def test_a_fresh_run_ignores_checkpoints_left_in_its_folder(tmp_path: Path) -> None:
    """A catalog deleted without its checkpoint folder leaves files under the ids new runs get."""
    save_checkpoint(tmp_path / "best-step0000010.pt", {"algorithm": {"junk": torch.zeros(1)}})
    result = Trainer(small(val_every=0), [], tmp_path).run()
    assert result.status == "finished", result.error
    assert (tmp_path / "best-step0000010.pt").exists()  # not ours to delete either


def test_thread_count_chosen_per_run_and_given_back() -> None:
    """Left empty, `threads` means all cores, except for tasks too small to share a core's
    work (sinusoid: one thread, recorded with the run); either way the caller's count is back
    afterwards, as it is after a run that set its own."""

    class Started(Recorder):
        def on_start(self, e):  # type: ignore[override]
            self.threads = e.environment["threads"]

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        for threads, expected in ((None, 1), (2, 2)):
            rec = Started()
            Trainer(small(steps=2, val_every=0, ckpt_every=0, threads=threads), [rec]).run()
            assert rec.finished.status == "finished"
            assert rec.threads == expected
            assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
