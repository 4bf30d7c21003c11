"""A small public Python API over the catalog and the engine (used by the CLI and the GUI).

from workbench import api
cat = api.open_catalog("experiments.db")
runs = api.list_runs(cat, algorithm="maml")
steps, values = api.load_metric(cat, runs[0].id, "loss")
algo, config = api.load_model(cat, runs[0].id, "best")
score = api.evaluate_checkpoint(cat, runs[0].id, "best", episodes=600, shape={"shots": 5})
print(api.format_score(score.mean, score.ci95, score.metric), score.episode_scores[:5])
path, points = api.write_metrics_csv(cat, runs[0].id)   # run-ID-NAME.csv, api.METRIC_COLUMNS
rows = api.results(cat, [r.id for r in runs], group_seeds=True)
print(api.results_table(rows, "latex"))                  # or "md", "csv"
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from workbench.catalog import Catalog, RunRecord
from workbench.core.algorithms import Algorithm
from workbench.core.checkpoint import load_checkpoint
from workbench.core.config import RunConfig
from workbench.core.devices import resolve_device
from workbench.core.engine import Trainer, build_algorithm, load_datasets
from workbench.core.errors import CheckpointError, ConfigError
from workbench.core.evaluate import Score, autocast_for, evaluate_protocol, protocol_of
from workbench.core.events import Listener
from workbench.exports import (
    METRIC_COLUMNS,
    ResultRow,
    format_score,
    results,
    results_table,
    write_metrics_csv,
)


def open_catalog(path: str | os.PathLike[str] | None = None) -> Catalog:
    return Catalog.open(path)


def list_runs(catalog: Catalog, **filters: Any) -> list[RunRecord]:
    return catalog.list_runs(**filters)


def load_metric(catalog: Catalog, run_id: int, name: str) -> tuple[np.ndarray, np.ndarray]:
    steps, values, _ = catalog.metrics(run_id, name)
    return steps, values


def run_config(catalog: Catalog, run_id: int) -> RunConfig:
    return RunConfig.from_json(catalog.get_run(run_id).config_json)


def resolve_checkpoint(catalog: Catalog, run_id: int, which: Any = "best") -> Any:
    """A checkpoint record by 'best' | 'final' | 'latest' | step (best falls back to final, then
    latest); a record passed in is returned as it is."""
    if hasattr(which, "path") and hasattr(which, "sha256"):
        return which
    if isinstance(which, str) and which.isdigit():
        which = int(which)
    if which not in ("best", "final", "latest") and not isinstance(which, int):
        raise ConfigError(
            "--checkpoint", f"{which!r} is not allowed: use best, final, latest or a step number"
        )
    rec = catalog.checkpoint(run_id, which)  # type: ignore[arg-type]
    if rec is None and which == "best":
        rec = catalog.checkpoint(run_id, "final") or catalog.checkpoint(run_id, "latest")
    if rec is None:
        steps = sorted({c.step for c in catalog.checkpoints(run_id)})
        raise ConfigError(
            "--checkpoint",
            f"run {run_id} has no {which} checkpoint; its checkpoint steps: {steps or 'none'}",
        )
    return rec


def load_model(
    catalog: Catalog, run_id: int, which: Any = "best", device: str = "cpu"
) -> tuple[Algorithm, RunConfig]:
    """The run's algorithm with a checkpoint's weights (sha256 checked, never executes code)."""
    rec = resolve_checkpoint(catalog, run_id, which)
    state = load_checkpoint(rec.path, rec.sha256)
    config = RunConfig.from_json(str(state["config_json"]))
    dists = load_datasets(config, ("test",))
    algo = build_algorithm(config, dists["test"].input_shape, resolve_device(device))
    try:
        algo.load_state_dict(state["algorithm"])
    except RuntimeError as exc:
        raise CheckpointError(
            f"checkpoint {rec.path} does not fit its configuration: {str(exc).splitlines()[0]}"
        ) from None
    return algo, config


SHAPE_KEYS = ("ways", "shots", "queries", "inner_steps")
"""The evaluation task shape's keys a manual evaluation may override (`evaluate_checkpoint`)."""


def evaluation_config(
    config: RunConfig,
    episodes: int | None = None,
    shape: dict[str, int] | None = None,
    inner_lr: float | None = None,
) -> RunConfig:
    """The run's config under a manual evaluation's overrides, validated at once: a bad value
    is a ConfigError naming its key (`eval.shots`, `test_episodes`, `algorithm.eval_inner_lr`,
    `eval.ways` for ways the model's output layer cannot give), as the form and CLI name it.

    `shape`: any of SHAPE_KEYS; `inner_lr`: the test-time inner step size, for algorithms
    that have one (`eval_inner_lr`: MAML, FOMAML, ANIL, fine-tuning)."""
    data = config.to_dict()
    unknown = sorted(set(shape or {}) - set(SHAPE_KEYS))
    if unknown:
        raise ConfigError(
            f"eval.{unknown[0]}", f"not a task-shape key; use {', '.join(SHAPE_KEYS)}"
        )
    if shape:
        data["eval"] = {**data["eval"], **shape}
    if episodes is not None:
        data["test_episodes"] = episodes
    if inner_lr is not None:
        if "eval_inner_lr" not in type(config.algorithm).model_fields:
            raise ConfigError(
                "algorithm.eval_inner_lr",
                f"{config.algorithm.name} has no test-time inner step size to set",
            )
        data["algorithm"] = {**data["algorithm"], "eval_inner_lr": inner_lr}
    out = RunConfig.from_dict(data)
    load_datasets(out, ())  # the rules that need no data: eval.ways against the output layer
    return out


def evaluate_checkpoint(
    catalog: Catalog,
    run_id: int,
    which: Any = "best",
    episodes: int | None = None,
    shape: dict[str, int] | None = None,
    device: str = "cpu",
    should_stop: Callable[[], bool] = lambda: False,
    store: bool = True,
    inner_lr: float | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Score:
    """Evaluate a checkpoint on the test split's fixed episodes with the run's test protocol
    (`core.evaluate.evaluate_protocol`, the automatic test's), under `evaluation_config`'s
    overrides, and store the score with its protocol and per-episode scores.

    Nothing is stored unless every episode was scored and `should_stop`, asked once more
    (last) just before storing, still says no: a cancelled evaluation leaves no row, and a
    caller can tell from that last answer whether it was stored. `progress(done, total)`
    hears the episodes scored over all the protocol's passes (on the calling thread)."""
    rec = resolve_checkpoint(catalog, run_id, which)
    algo, config = load_model(catalog, run_id, rec, device)
    config = evaluation_config(config, episodes, shape, inner_lr)
    if inner_lr is not None:  # fine-tuning step size at test (the pretrain baseline's 0.02 at K=10)
        algo.params = config.algorithm
    dists = load_datasets(config, ("test",))
    dev = resolve_device(device)
    score = evaluate_protocol(
        algo, dists["test"], config.eval, config.test_episodes, dev,
        autocast_for(config.precision, dev), should_stop=should_stop, progress=progress,
    )  # fmt: skip
    if store and score.episodes == config.test_episodes and not should_stop():
        catalog.add_evaluation(
            run_id, "test", score.metric, score.mean, score.ci95, score.episodes, score.values,
            protocol_of(config), checkpoint_step=rec.step, checkpoint_id=rec.id,
            episode_scores=score.episode_scores.tolist(),
        )  # fmt: skip
    return score


def resume_target(
    catalog: Catalog, run_id: int, checkpoint: Any, config: RunConfig, owner: str | None = None
) -> int:
    """The run a resume writes to: from the run's latest checkpoint (or from scratch, when it
    has none) the same run continues (a new attempt); from an older one a new child run linked
    to its parent is created (queued, owned by `owner`)."""
    latest = catalog.checkpoint(run_id, "latest")
    if checkpoint is not None and latest is not None and checkpoint.step < latest.step:
        return catalog.create_run_from_config(config, parent_id=run_id, owner=owner)
    return run_id


def trainer_for(
    catalog: Catalog,
    config: RunConfig,
    listeners: list[Listener],
    run_id: int | None = None,
    resume: Any = None,
    datasets: Any = None,
    owner: str | None = None,
    group: Any = None,
) -> tuple[Trainer, int]:
    """A Trainer wired to the catalog: a new run (or `run_id`), resumed from a checkpoint record
    (None with `run_id`: started again from step 0, for a run that has no checkpoint).

    Resuming from the run's latest checkpoint continues the same run (a new attempt); from an
    older one, it creates a child run linked to its parent. `group`: this process is rank 0 of
    a multi-process run (`core.distributed`). The run is leased to this process
    (`owner`, made here if not given) before anything else: a run another live process owns
    is refused with RunBusyError, and the new run's row is owned from its creation, so a
    process killed while starting leaves it to be marked interrupted.
    """
    from workbench.catalog import CatalogListener
    from workbench.catalog.store import new_owner
    from workbench.core.faults import fault_point

    owner = owner or new_owner()
    catalog.check_checkpoint_folder()  # refused before a run exists, not paused after
    prior = None
    if run_id is None:
        run_id = catalog.create_run_from_config(config, owner=owner)
        fault_point("run.created")
    else:
        target = resume_target(catalog, run_id, resume, config, owner)
        if target == run_id:  # queued under this lease at once: a second resume is refused
            prior = catalog.claim(run_id, owner, queue=True)
        run_id = target
    writer = CatalogListener(catalog, run_id, owner=owner, prior_status=prior)
    ckpt_dir = catalog.checkpoint_dir(run_id, create=True)
    trainer = Trainer(
        config, [writer, *listeners], ckpt_dir,
        resume_from=Path(resume.path) if resume is not None else None,
        resume_sha256=resume.sha256 if resume is not None else None, datasets=datasets,
        checkpoints=writer, group=group,
    )  # fmt: skip
    return trainer, run_id


__all__ = [
    "SHAPE_KEYS", "evaluate_checkpoint", "evaluation_config", "list_runs", "load_metric",
    "load_model", "open_catalog", "resolve_checkpoint", "resume_target", "run_config", "trainer_for",
    # paper exports (workbench.exports): the CLI's `table` and `export` call the same
    "METRIC_COLUMNS", "ResultRow", "format_score", "results", "results_table", "write_metrics_csv",
]  # fmt: skip
