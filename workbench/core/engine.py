"""The Trainer: one loop shared by the GUI, the CLI and the tests.

It knows nothing of Qt or SQL. Listeners hear about steps, evaluations, checkpoints and the
end of the run; pause, resume and cancel are flags checked between steps, so each takes effect
within one step. A checkpoint holds everything needed to continue bit-for-bit on CPU, and on
CUDA with `deterministic` (the default): model, optimiser, meta-learner, step, RNG states (CUDA's
too) and the config. Which fast paths run on the device is `device_policy`'s decision.
"""

from __future__ import annotations

import contextlib
import getpass
import math
import os
import platform
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from workbench import __version__
from workbench.core import plugins, provenance
from workbench.core.algorithms import ALGORITHMS, Algorithm
from workbench.core.checkpoint import (
    STORAGE_ERRNOS,
    CheckpointStore,
    FolderCheckpoints,
    load_checkpoint,
    save_two_phase,
    storage_message,
)
from workbench.core.config import RunConfig
from workbench.core.device_policy import deterministic_algorithms, pin_enabled, policy_for
from workbench.core.devices import device_name, out_of_memory_message, resolve_device
from workbench.core.distributed import (
    GO,
    HOLD,
    HOLD_TICK_S,
    STOP,
    Group,
    RankLost,
    check_world,
    rank_device,
)
from workbench.core.episode_stream import EpisodeStream
from workbench.core.errors import CheckpointError, ConfigError, DataError
from workbench.core.evaluate import Score, evaluate, evaluate_protocol, protocol_of
from workbench.core.events import (
    CheckpointRemoved,
    CheckpointSaved,
    EvalResult,
    Listener,
    RunFinished,
    RunStarted,
    StepMetrics,
)
from workbench.core.faults import fault_point
from workbench.core.footprint import check_fits
from workbench.core.memory import reuse_freed_memory
from workbench.core.models import build_model
from workbench.core.tasks import DATASETS, TaskDistribution


class NonFiniteLoss(RuntimeError):
    pass


def load_datasets(
    config: RunConfig, splits: tuple[str, ...] = ("train",)
) -> dict[str, TaskDistribution]:
    """The config's dataset splits, checked against the task shapes (a ConfigError names the key)."""
    spec = DATASETS.get(config.dataset.name)()
    dists = {s: spec.build(config.dataset, s) for s in splits}  # type: ignore[arg-type]
    algo_cls = ALGORITHMS.get(config.algorithm.name)
    if (
        algo_cls.same_ways
        and config.task_kind == "classification"
        and config.eval.ways != config.train.ways
    ):
        raise ConfigError(
            "eval.ways",
            f"{config.algorithm.name} learns a {config.train.ways}-way output layer; eval.ways must equal train.ways",
        )
    for split, dist in dists.items():
        phase = "train" if split == "train" else "eval"
        shape = getattr(config, phase)
        if dist.num_classes is not None and shape.ways > dist.num_classes:
            raise ConfigError(
                f"{phase}.ways",
                f"{shape.ways} ways requested but the {split} split of {config.dataset.name} has only {dist.num_classes} classes",
            )
        # shots + queries against the examples per class, before a run is recorded (sampling
        # would find it only once the run exists, and record a failed run)
        dist.check(shape, phase)
    if "train" in dists and config.memory_check:
        # a configuration that cannot fit is refused before a run exists, naming its driver
        check_fits(config, dists["train"].input_shape)
    return dists


def build_algorithm(
    config: RunConfig, input_shape: tuple[int, ...], device: torch.device
) -> Algorithm:
    """The algorithm with a freshly initialised learner (seed torch first for reproducibility)."""
    algo_cls = ALGORITHMS.get(config.algorithm.name)
    out_dim = (
        (config.train.ways if config.task_kind == "classification" else 1)
        if algo_cls.uses_head
        else 0
    )
    # channels-last where the config asks AND the device's policy has it (off on CUDA until
    # measured there); the layout never changes the numbers, only the kernels that compute them
    channels_last = config.model.channels_last and policy_for(device).channels_last
    model_cfg = config.model.model_copy(update={"channels_last": channels_last})
    model = build_model(model_cfg, input_shape, out_dim, config.task_kind)
    algo = algo_cls(config.algorithm, model, config.task_kind).to(device)  # type: ignore[arg-type]
    if channels_last and len(input_shape) == 3:
        algo.to(memory_format=torch.channels_last)  # 4-d conv weights only; vectors are unaffected
    return algo


def environment(
    device: torch.device,
    config: RunConfig | None = None,
    datasets: dict[str, TaskDistribution] | None = None,
    diff_dir: Path | None = None,
) -> dict[str, Any]:
    """What a run's record says about where it ran and what made it (`core.provenance`): the
    code's git commit (a dirty tree's diff written to `diff_dir` when given), the command line,
    package versions and the data's verification."""
    import numpy

    env: dict[str, Any] = {
        "workbench": __version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        **provenance.package_versions(),
        "platform": platform.platform(),
        "host": socket.gethostname(),
        "user": _user(),
        "threads": torch.get_num_threads(),
        "device": str(device),
        "device_name": device_name(device),
        "command": provenance.command(),
    }
    if device.type == "cuda":
        env["cuda"] = torch.version.cuda
    fields, diffs = provenance.code(_source_files(config))
    env.update(fields)
    if diff_dir is not None and diffs:
        provenance.write_diffs(env, diffs, diff_dir)
    if config is not None:
        env["data"] = provenance.data_record(config.dataset.name, config.dataset, datasets)
    return env


def _source_files(config: RunConfig | None) -> list[str]:
    """The files whose checkouts describe a run's code besides the workbench's: the modules of
    its algorithm and dataset (plugins may live in their own repositories) and a Python
    script that started the process."""
    files = []
    if config is not None:
        for registry, name in (
            (ALGORITHMS, config.algorithm.name),
            (DATASETS, config.dataset.name),
        ):
            try:
                f = provenance.module_file(registry.get(name))
            except ConfigError:
                continue
            if f:
                files.append(f)
    script = sys.argv[0] if sys.argv else ""
    if script.endswith(".py") and os.path.isfile(script):
        files.append(os.path.abspath(script))
    return files


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return ""


class Trainer:
    """Meta-trains one run. `run()` blocks; call pause/resume/cancel from any thread."""

    def __init__(
        self,
        config: RunConfig,
        listeners: list[Listener] | None = None,
        checkpoint_dir: str | Path | None = None,
        resume_from: str | Path | None = None,
        resume_sha256: str | None = None,
        datasets: dict[str, TaskDistribution] | None = None,
        checkpoints: CheckpointStore | None = None,
        group: Group | None = None,
    ) -> None:
        """`datasets` (train/val/test) may be passed when the caller already loaded them.
        `checkpoints` records and retires the checkpoint files (the catalog's listener does,
        in two phases); without it a `FolderCheckpoints` keeps them in `checkpoint_dir`.
        `group`: this process is one rank of a multi-process run (`core.distributed`); only
        rank 0 gets listeners, a checkpoint folder and the resume checkpoint."""
        self.config = config
        self.group = group
        self.datasets = datasets
        self.listeners = list(listeners or [])
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else None
        self.resume_from = Path(resume_from) if resume_from else None
        self.resume_sha256 = resume_sha256
        self._cancel = threading.Event()
        self._running = threading.Event()
        self._running.set()
        self._holds: dict[str, str] = {}  # who paused the run -> why ("user", "catalog", ...)
        self._hold_lock = threading.Lock()
        self._announced = False  # a hold other than the user's said "paused"
        self.aborted: str | None = None
        self.step = 0
        self._storage_fault = ""
        self.best: tuple[float, int] | None = None  # (score, step)
        if checkpoints is None and self.checkpoint_dir is not None:
            # no catalog: the folder is the record (a resumed run adopts what it finds there)
            checkpoints = FolderCheckpoints(self.checkpoint_dir, adopt=self.resume_from is not None)
        self.checkpoints = checkpoints
        self.algo: Algorithm | None = None
        self.device: torch.device | None = None
        self._scope = contextlib.ExitStack()
        self._share: int | None = None  # threads the machine's other runs leave this one
        self._threads_fixed = bool(config.threads)  # set by the config (or one: small tasks)
        # the record's git state is read in the background while the run loads its data
        provenance.prefetch([str(provenance.PACKAGE_DIR / "__init__.py"), *_source_files(config)])

    # ---- control (thread-safe) ---------------------------------------------------------
    def hold(self, key: str, reason: str) -> None:
        """Pause the run after the current step until `release(key)`; the run trains only
        while nobody holds it (the user's pause and a full disk are separate holds). A hold
        other than the user's is announced at once (`on_status("paused", reason)`), from the
        caller's thread: the training thread may be the one that waits for the storage."""
        with self._hold_lock:
            new = self._holds.get(key) != reason
            self._holds[key] = reason
            self._running.clear()
            announce = new and key != "user"
            if announce:
                self._announced = True
        if announce:
            self._emit_status("paused", reason)

    def release(self, key: str) -> None:
        with self._hold_lock:
            if self._holds.pop(key, None) is None:
                return
            done = not self._holds
            if done:
                self._running.set()
            announce = done and self._announced
            if announce:
                self._announced = False
        if announce:
            self._emit_status("running", None)

    def pause(self) -> None:
        self.hold("user", "paused by the user")

    def resume(self) -> None:
        self.release("user")

    def cancel(self) -> None:
        self._cancel.set()
        self._running.set()

    def abort(self, reason: str) -> None:
        """Stop at once without a stop checkpoint and end the run failed with `reason` (the
        run's records can no longer be written: lease lost, catalog gone)."""
        self.aborted = reason
        self.cancel()

    def share_threads(self, threads: int) -> None:
        """This run's share of the machine's cores (`core.cores.thread_share`, from the
        catalog's count of runs training here); taken between steps, unless the config
        fixes the thread count."""
        self._share = threads

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    # ---- events ------------------------------------------------------------------------
    def _emit(self, method: str, *args: Any) -> None:
        for listener in self.listeners:
            getattr(listener, method)(*args)

    # ---- the run -----------------------------------------------------------------------
    def run(self) -> RunFinished:
        """Train to the step budget (or until cancelled/failed); always ends with on_finish.
        The torch thread count is the caller's again afterwards, whatever the run used."""
        threads = torch.get_num_threads()
        for listener in self.listeners:
            getattr(listener, "attach", lambda _c: None)(self)
        oom = False
        try:
            # settings the run makes for its device (deterministic algorithms) end with it
            with contextlib.ExitStack() as self._scope:
                finished = self._run()
        except (ConfigError, DataError, CheckpointError, NonFiniteLoss, RankLost) as exc:
            finished = RunFinished("failed", self.step, str(exc))
        except torch.OutOfMemoryError as exc:  # the device's memory, not a bug: say what to change
            oom = True
            finished = RunFinished(
                "failed", self.step, out_of_memory_message(str(exc), self.device, self.config)
            )
        except (
            Exception
        ) as exc:  # an unexpected error still ends the run as failed, with its reason
            tb = traceback.format_exc(limit=-3)
            hint = ""
            if "does not have a deterministic implementation" in str(exc):
                hint = "\nset deterministic=false to train with CUDA's non-deterministic kernels"
            finished = RunFinished("failed", self.step, f"{type(exc).__name__}: {exc}{hint}\n{tb}")
        finally:
            torch.set_num_threads(threads)
        if oom:  # the failed step's tensors are gone with its frames: give their cache back
            release_device_memory(self.device)
        if self.aborted is not None:
            finished = RunFinished("failed", self.step, self.aborted)
        self._emit("on_finish", finished)
        return finished

    def _autocast(self) -> contextlib.AbstractContextManager[None]:
        assert self.device is not None
        if self.config.precision != "bf16":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def _run(self) -> RunFinished:
        cfg = self.config
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        group = self.group
        self.device = device = rank_device(resolve_device(cfg.device), group)
        if group is not None:
            check_world(cfg.train.meta_batch, group.world)
            if not cfg.threads and device.type == "cpu":  # the machine's cores, shared out
                torch.set_num_threads(max(1, (os.cpu_count() or 1) // group.local_world))
            self._threads_fixed = True
        policy = policy_for(device)
        if device.type == "cuda":  # the status bar's peak is this run's
            torch.cuda.reset_peak_memory_stats(device)
        if policy.keep_heap:
            reuse_freed_memory()  # large activations stop being page-faulted in every step
        # CUDA: exact resume needs deterministic kernels (`deterministic_algorithms`: their cost)
        self._scope.enter_context(
            deterministic_algorithms(policy.deterministic and cfg.deterministic)
        )
        torch.manual_seed(cfg.seed)
        dists = self.datasets or load_datasets(cfg, ("train", "val", "test"))
        self.algo = algo = build_algorithm(cfg, dists["train"].input_shape, device)
        if not cfg.threads and policy.small_tasks_one_thread and algo.small_tasks(cfg.train):
            # every op touches one tiny task: a second intra-op thread only adds its hand-over
            # (sinusoid MAML: 420 steps/s on one thread, 300-350 on two)
            torch.set_num_threads(1)
            self._threads_fixed = True
        train = dists["train"]
        params = [p for p in algo.parameters() if p.requires_grad]
        opt = algo.outer_optimizer(params)  # Adam unless the algorithm owns its update
        # the next meta-batch is drawn on a background thread while a step trains
        # pinned on the drawing thread (CUDA), so the step's one copy to the device is asynchronous
        tasks = EpisodeStream(
            train,
            cfg.train,
            cfg.train.meta_batch,
            torch.Generator().manual_seed(cfg.seed),
            pin=pin_enabled(device),
        )
        state = load_checkpoint(self.resume_from, self.resume_sha256) if self.resume_from else None
        if group is not None:
            # a checkpoint does not depend on the world size: rank 0 reads it, every rank
            # continues from it; a fresh run starts from rank 0's initial weights
            state = group.share(state)
        if state is not None:
            self._restore(state, opt, tasks)
        if group is not None:
            group.sync_parameters(t for t in algo.state_dict().values() if t.is_floating_point())
        env = environment(device, cfg, dists, self.checkpoint_dir)
        if group is not None:
            env.update(group.describe(device))
        # which code made the run: each plugin's file hash or version ("plugin": the algorithm's)
        for kind, name in (
            ("algorithm", cfg.algorithm.name),
            ("model", cfg.model.name),
            ("dataset", cfg.dataset.name),
        ):
            plugin = plugins.provenance(kind, name)
            if plugin is not None:
                env["plugin" if kind == "algorithm" else f"{kind}_plugin"] = plugin
        self._emit(
            "on_start",
            RunStarted(
                cfg.to_json(),
                self.step,
                cfg.steps,
                str(device),
                device_name(device),
                env,
            ),
        )

        t_last = time.perf_counter()
        rate = 0.0
        agreed = GO  # a multi-process run's control code, as rank 0 sent it with the last step
        while self.step < cfg.steps:
            if group is not None:
                if agreed == HOLD:
                    agreed = self._held_together(group)
                    t_last = time.perf_counter()
                if agreed == STOP:
                    return self._stop(opt, tasks)
            elif not self._running.is_set():
                self._wait_while_held()
                t_last = time.perf_counter()
            if group is None and self._cancel.is_set():
                return self._stop(opt, tasks)
            share, self._share = self._share, None
            if share is not None and not self._threads_fixed and device.type == "cpu":
                torch.set_num_threads(share)
            lr = self._lr()
            for param_group in opt.param_groups:
                param_group["lr"] = lr
            batch = tasks.next().to(device)  # the meta-batch's one transfer (non-blocking)
            opt.zero_grad(set_to_none=True)
            algo.train()
            part = batch if group is None else batch.tasks(group.shard(len(batch)))
            with self._autocast():
                values = algo.meta_train_step(part, cfg.train)
            if group is not None:  # the meta-gradient of the whole meta-batch, on every rank
                agreed = group.combine(params, values, len(part) / len(batch), self._code())
            if not math.isfinite(values["loss"]):
                raise NonFiniteLoss(f"non-finite loss ({values['loss']}) at step {self.step + 1}")
            if cfg.algorithm.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, cfg.algorithm.grad_clip)
            opt.step()
            self.step += 1
            dt = time.perf_counter() - t_last
            rate = 1.0 / dt if rate == 0.0 else 0.9 * rate + 0.1 / dt
            values.update(meta_lr=lr, steps_per_s=rate, step_time=dt)
            self._emit("on_step", StepMetrics(self.step, values, time.time()))
            if cfg.val_every and self.step % cfg.val_every == 0:
                self._validate(dists["val"], opt, tasks)
            if cfg.ckpt_every and self.step % cfg.ckpt_every == 0:
                self._checkpoint("periodic", opt, tasks)
            t_last = time.perf_counter()  # steps/s counts training only, not validation or I/O
        if not self._checkpoint("final", opt, tasks):
            return self._stop(opt, tasks)
        test = self._test(dists.get("test")) if cfg.test_on_finish else None
        fault_point("run.finishing")
        return RunFinished("finished", self.step, None, test)

    def _code(self) -> int:
        """Rank 0's control code for the step just taken (the other ranks' is ignored)."""
        if self._cancel.is_set():
            return STOP
        return GO if self._running.is_set() else HOLD

    def _held_together(self, group: Group) -> int:
        """All ranks wait while rank 0 is held, rank 0 saying HOLD every HOLD_TICK_S (no
        collective runs into its timeout however long the pause), then GO or STOP."""
        if group.rank != 0:
            code = HOLD
            while code == HOLD:
                code = group.say(HOLD)
            return code
        self._wait_while_held(lambda: group.say(HOLD))
        return group.say(STOP if self._cancel.is_set() else GO)

    def _wait_while_held(self, tick: Callable[[], object] | None = None) -> None:
        """Wait, paused, until nobody holds the run. The user's pause is announced here,
        between steps (other holds announce themselves). `tick` is called every HOLD_TICK_S
        while waiting."""
        user = False
        last = time.monotonic()
        while not self._running.wait(0.05):
            if tick is not None and time.monotonic() - last >= HOLD_TICK_S:
                tick()
                last = time.monotonic()
            with self._hold_lock:
                mine = "user" in self._holds and not user
            if mine:
                self._emit_status("paused", None)
                user = True
        if user:
            self._emit_status("running", None)

    def _emit_status(self, status: str, reason: str | None) -> None:
        for listener in self.listeners:
            if reason is None:
                listener.on_status(status)  # type: ignore[arg-type]
            else:
                listener.on_status(status, reason)  # type: ignore[arg-type,call-arg]

    def _lr(self) -> float:
        assert self.algo is not None
        return self.algo.outer_lr(self.step, self.config.steps)

    def _score(self, dist: TaskDistribution, split: str, episodes: int) -> Score:
        assert self.algo is not None and self.device is not None
        return evaluate(
            self.algo, dist, self.config.eval, episodes, self.device, split, self._autocast,
            group=self.group,
        )  # fmt: skip

    def _validate(
        self, dist: TaskDistribution, opt: torch.optim.Optimizer, tasks: EpisodeStream
    ) -> None:
        s = self._score(dist, "val", self.config.val_episodes)
        self._emit(
            "on_eval", EvalResult(self.step, "val", s.mean, s.ci95, s.episodes, s.metric, s.values)
        )
        better = self.best is None or (
            s.mean > self.best[0] if s.metric == "accuracy" else s.mean < self.best[0]
        )
        if better and math.isfinite(s.mean):
            self.best = (s.mean, self.step)
            self._checkpoint(
                "best", opt, tasks, {f"val_{s.metric}": s.mean, f"val_{s.metric}_ci95": s.ci95}
            )

    def _test(self, dist: TaskDistribution | None) -> EvalResult | None:
        """Score the best-validation checkpoint (else the final weights) on the test split."""
        if dist is None:
            return None
        assert self.algo is not None
        ckpt_step = self.step
        best = self.checkpoints.newest("best") if self.checkpoints is not None else None
        picked = None
        if best is not None:
            state = load_checkpoint(best.path, best.sha256)
            picked = (state["algorithm"], int(state["step"]))
        if self.group is not None:  # rank 0's checkpoint is every rank's
            picked = self.group.share(picked)
        if picked is not None:
            self.algo.load_state_dict(picked[0])
            ckpt_step = picked[1]
        s = evaluate_protocol(
            self.algo, dist, self.config.eval, self.config.test_episodes, self.device,
            self._autocast, group=self.group,
        )  # fmt: skip
        result = EvalResult(
            self.step, "test", s.mean, s.ci95, s.episodes, s.metric, s.values, ckpt_step,
            protocol_of(self.config), s.episode_scores.tolist(),
        )  # fmt: skip
        self._emit("on_eval", result)
        return result

    def _stop(self, opt: torch.optim.Optimizer, tasks: EpisodeStream) -> RunFinished:
        if self.aborted is not None:
            return RunFinished("failed", self.step, self.aborted)
        if not self._checkpoint("stop", opt, tasks):
            why = f"; no stop checkpoint could be written ({self._storage_fault})"
            return RunFinished("cancelled", self.step, "stopped by the user" + why)
        return RunFinished("cancelled", self.step, "stopped by the user")

    # ---- checkpoints -------------------------------------------------------------------
    def _state(self, opt: torch.optim.Optimizer, tasks: EpisodeStream) -> dict[str, Any]:
        assert self.algo is not None
        rng = {"torch": torch.get_rng_state(), "tasks": tasks.get_state()}
        if self.device is not None and self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return {
            "config_json": self.config.to_json(),
            "step": self.step,
            "algorithm": self.algo.state_dict(),
            "optimizer": opt.state_dict(),
            "rng": rng,
            "best_score": self.best[0] if self.best else float("nan"),
            "best_step": self.best[1] if self.best else -1,
        }

    def _restore(
        self, state: dict[str, Any], opt: torch.optim.Optimizer, tasks: EpisodeStream
    ) -> None:
        assert self.algo is not None
        try:
            self.algo.load_state_dict(state["algorithm"])
            opt.load_state_dict(state["optimizer"])
            self.step = int(state["step"])
            torch.set_rng_state(state["rng"]["torch"])
            tasks.set_state(state["rng"]["tasks"])
            if "cuda" in state["rng"] and self.device is not None and self.device.type == "cuda":
                torch.cuda.set_rng_state(state["rng"]["cuda"], self.device)
        except (KeyError, RuntimeError, ValueError) as exc:
            raise CheckpointError(
                f"checkpoint does not fit this run's configuration: {str(exc).splitlines()[0]}"
            ) from None
        if state.get("best_step", -1) >= 0:
            self.best = (float(state["best_score"]), int(state["best_step"]))

    def _checkpoint(
        self,
        kind: str,
        opt: torch.optim.Optimizer,
        tasks: EpisodeStream,
        metrics: dict[str, float] | None = None,
    ) -> bool:
        """Write a checkpoint; False only if the run was stopped while the storage could not
        take it. A full or read-only disk pauses the run with the reason and the folder and
        tries again every few seconds: the run goes on once there is room."""
        if self.checkpoint_dir is None or self.checkpoints is None:
            return True
        said = False
        while True:
            try:
                self._save(kind, opt, tasks, metrics or {})
                if said:
                    self._emit_status("running", None)
                return True
            except OSError as exc:
                if exc.errno not in STORAGE_ERRNOS:
                    raise
                self._storage_fault = storage_message(exc, self.checkpoint_dir)
                if not said:
                    self._emit_status("paused", self._storage_fault)
                    said = True
                if self._cancel.wait(STORAGE_RETRY_S):
                    return False

    def _save(
        self, kind: str, opt: torch.optim.Optimizer, tasks: EpisodeStream, metrics: dict[str, float]
    ) -> None:
        """One checkpoint through the two-phase sequence (`save_two_phase`: a kill at any point
        leaves either the old usable checkpoints or the new one)."""
        assert self.checkpoint_dir is not None and self.checkpoints is not None
        keep = self.config.keep_last if kind == "periodic" else 1
        saved = save_two_phase(
            self.checkpoint_dir, self.checkpoints, kind, self.step, self._state(opt, tasks),
            metrics, keep,
        )  # fmt: skip
        self._emit(
            "on_checkpoint",
            CheckpointSaved(self.step, kind, str(saved.path), saved.size, saved.sha256, metrics),  # type: ignore[arg-type]
        )
        for old in saved.retired:
            self._emit("on_checkpoint_removed", CheckpointRemoved(old))


def release_device_memory(device: torch.device | None) -> None:
    """Hand CUDA's cached blocks back after an out-of-memory failure, so the app (which lives
    on) and the next run start from an empty cache."""
    import gc

    gc.collect()
    if device is not None and device.type == "cuda" and torch.cuda.is_available():
        torch.cuda.empty_cache()


STORAGE_RETRY_S = 5.0
"""How often a run paused by a full or read-only checkpoint folder tries again."""
