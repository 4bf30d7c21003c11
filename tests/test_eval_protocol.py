"""One test protocol: the Trainer's automatic test and a manual evaluation (api, CLI) call
`core.evaluate.evaluate_protocol`, store the same value names and the same numbers, keep the
per-episode scores the CI is computed from, and store nothing when stopped part-way."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from workbench import api
from workbench.catalog import Catalog
from workbench.core.config import RunConfig, default_config
from workbench.core.errors import ConfigError
from workbench.core.evaluate import mean_ci
from workbench.exports import episode_interval, format_score


def tiny_run(cat: Catalog, algorithm: str, dataset: str, **extra: object) -> int:
    """A few meta-steps, a final checkpoint (no validation: `best` falls back to it) and the
    automatic test on 8 episodes."""
    cfg = default_config(algorithm, dataset).to_dict()
    cfg.update(steps=3, val_every=0, ckpt_every=0, test_episodes=8, threads=1, seed=4, **extra)
    cfg["train"]["meta_batch"] = 2
    trainer, run_id = api.trainer_for(cat, RunConfig.from_dict(cfg), [])
    assert trainer.run().status == "finished"
    return run_id


@pytest.fixture
def cat(tmp_path: Path):
    c = Catalog.open(tmp_path / "e.db")
    yield c
    c.close()


@pytest.mark.parametrize(("algorithm", "dataset"), [("maml", "sinusoid"), ("fomaml", "glyphs")])
def test_automatic_test_and_manual_evaluation_agree(
    cat: Catalog, algorithm: str, dataset: str
) -> None:
    run_id = tiny_run(cat, algorithm, dataset)
    (auto,) = cat.evaluations(run_id)
    score = api.evaluate_checkpoint(cat, run_id, "best")  # the same protocol, by hand
    auto_again, manual = cat.evaluations(run_id)
    assert auto_again == auto and manual.checkpoint_step == auto.checkpoint_step
    assert manual.protocol == auto.protocol
    assert sorted(manual.values) == sorted(auto.values)  # one set of value names
    if dataset == "sinusoid":  # the regression protocol's K = 5 and K = 10 passes, both ways
        assert {"k5_mse_after_10", "k10_mse_after_1"} <= set(manual.values)
    assert manual.values == pytest.approx(auto.values, rel=1e-6)
    assert (manual.mean, manual.ci95) == pytest.approx((auto.mean, auto.ci95), rel=1e-6)
    # the per-episode scores are kept by both, and the CI is theirs
    assert len(auto.episode_scores) == len(manual.episode_scores) == 8
    assert manual.episode_scores == pytest.approx(auto.episode_scores, rel=1e-6)
    assert manual.episode_scores == score.episode_scores.tolist()  # float32 kept exactly
    mean, ci = mean_ci(torch.tensor(manual.episode_scores))
    assert (mean, ci) == pytest.approx((manual.mean, manual.ci95), rel=1e-9)
    assert episode_interval(manual.episode_scores) == pytest.approx((mean, ci), rel=1e-9)


def test_a_stopped_evaluation_stores_nothing_and_progress_counts_episodes(
    cat: Catalog,
) -> None:
    run_id = tiny_run(cat, "maml", "sinusoid", test_on_finish=False)
    seen: list[tuple[int, int]] = []
    score = api.evaluate_checkpoint(
        cat, run_id, "final", episodes=32, progress=lambda d, t: seen.append((d, t)),
        should_stop=lambda: len(seen) >= 1,
    )  # fmt: skip
    assert score.episodes == 16 and seen == [(16, 96)]  # stopped after its first draw
    assert cat.evaluations(run_id) == []
    # a Cancel that comes after the last episode but before the row is written: nothing either
    seen.clear()
    score = api.evaluate_checkpoint(
        cat, run_id, "final", episodes=32, progress=lambda d, t: seen.append((d, t)),
        should_stop=lambda: bool(seen) and seen[-1][0] == 96,
    )  # fmt: skip
    assert score.episodes == 32 and cat.evaluations(run_id) == []
    # three passes (the config's 10 shots, then K = 5 and 10), counted as one progress
    assert seen == [(d, 96) for d in range(16, 97, 16)]


def test_overrides_are_checked_and_named_like_the_cli(cat: Catalog) -> None:
    run_id = tiny_run(cat, "fomaml", "glyphs", test_on_finish=False)
    config = api.run_config(cat, run_id)
    for kwargs, key, words in [
        ({"shape": {"shots": 0}}, "eval.shots", "greater than or equal to 1"),
        ({"shape": {"ways": 3}}, "eval.ways", "5-way output layer"),
        ({"episodes": 0}, "test_episodes", "greater than or equal to 1"),
        ({"inner_lr": -1.0}, "algorithm.eval_inner_lr", "greater than 0"),
    ]:
        with pytest.raises(ConfigError) as err:
            api.evaluation_config(config, **kwargs)  # type: ignore[arg-type]
        assert err.value.key == key and words in err.value.message, err.value
    proto = default_config("protonet", "glyphs")
    with pytest.raises(ConfigError, match="no test-time inner step size") as err:
        api.evaluation_config(proto, inner_lr=0.1)
    assert err.value.key == "algorithm.eval_inner_lr"
    assert api.evaluation_config(proto, shape={"ways": 3}).eval.ways == 3  # no head: any ways


def test_cli_eval_prints_scores_one_way(
    cat: Catalog, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from workbench.cli import main

    run_id = tiny_run(cat, "maml", "sinusoid", test_on_finish=False)
    db = str(tmp_path / "e.db")
    argv = [
        "--db",
        db,
        "eval",
        str(run_id),
        "--episodes",
        "8",
        "--shots",
        "5",
        "--inner-lr",
        "0.02",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    ev = cat.evaluations(run_id)[-1]
    assert ev.protocol["shots"] == 5 and ev.protocol["inner_lr"] == 0.02
    assert f"test mse {format_score(ev.mean, ev.ci95, 'mse')} over 8 episodes" in out
    name = "k5_mse_after_10"
    shown = format_score(ev.values[name], ev.values[f"{name}_ci95"], name)
    assert f", {name} {shown}" in out and "±" in shown
    assert main(["--db", db, "eval", str(run_id), "--inner-lr", "nan"]) == 2
    assert "not a finite number" in capsys.readouterr().err
