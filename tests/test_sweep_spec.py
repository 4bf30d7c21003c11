"""Sweep definitions (issue 15, first layer): validation with one-line errors naming the
parameter, grid expansion with conditional parameters, seeded random and TPE searches,
Optuna's pruning and a study rebuilt from recorded trials."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from workbench.core.config import default_config
from workbench.core.errors import ConfigError
from workbench.sweeps.search import make_search
from workbench.sweeps.spec import (
    base_config,
    budget,
    check,
    config_for,
    grid,
    load_spec,
    parse_spec,
)

COMPARE = {
    "parameters": [
        {"key": "algorithm.name", "values": ["maml", "protonet"]},
        {"key": "algorithm.inner_lr", "values": [0.01, 0.1], "when": {"algorithm.name": "maml"}},
        {"key": "algorithm.meta_lr", "values": [0.001, 0.003]},
    ],
    "base": default_config("maml", "glyphs").to_dict(),
    "seeds": [0, 1],
}


def test_grid_crosses_parameters_and_adds_conditional_ones_only_where_they_apply() -> None:
    spec = parse_spec(COMPARE)
    base = base_config(spec)
    points = grid(spec, base)
    assert points == [
        {"algorithm.name": "maml", "algorithm.meta_lr": 0.001, "algorithm.inner_lr": 0.01},
        {"algorithm.name": "maml", "algorithm.meta_lr": 0.001, "algorithm.inner_lr": 0.1},
        {"algorithm.name": "maml", "algorithm.meta_lr": 0.003, "algorithm.inner_lr": 0.01},
        {"algorithm.name": "maml", "algorithm.meta_lr": 0.003, "algorithm.inner_lr": 0.1},
        {"algorithm.name": "protonet", "algorithm.meta_lr": 0.001},
        {"algorithm.name": "protonet", "algorithm.meta_lr": 0.003},
    ]
    assert budget(spec, base) == 6
    assert check(spec, base) == 6
    on_sinusoid = parse_spec({**COMPARE, "base": None})  # ProtoNet cannot regress: refused
    with pytest.raises(ConfigError, match="algorithm.name: protonet does not work on regression"):
        check(on_sinusoid, base_config(on_sinusoid))
    cfg = config_for(base, points[4], seed=1)
    assert (cfg.algorithm.name, cfg.algorithm.meta_lr, cfg.seed) == ("protonet", 0.001, 1)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            {"parameters": [{"key": "algorithm.inner_lr", "values": []}]},
            "algorithm.inner_lr: values is empty",
        ),
        (
            {"parameters": [{"key": "algorithm.inner_lr", "uniform": [0.5, 0.1]}]},
            "low must not exceed high",
        ),
        ({"parameters": [{"key": "algorithm.inner_lr", "uniform": [0.1, 0.1]}]}, "is empty"),
        (
            {
                "parameters": [{"key": "algorithm.inner_lr", "loguniform": [0.0, 1.0]}],
                "method": "random",
                "trials": 3,
            },
            "must lie above 0",
        ),
        (
            {"parameters": [{"key": "algorithm.inner_lr", "uniform": [0.1, 1.0]}]},
            "a grid needs values or an int range",
        ),
        (
            {"parameters": [{"key": "algorithm.inner_lr", "values": [0.1], "uniform": [0.1, 1]}]},
            "exactly one of",
        ),
        ({"parameters": [], "method": "random"}, "trials: the random method needs a trial budget"),
        ({"parameters": [], "colour": "red"}, "colour: unknown key"),
        ({"parameters": [], "seeds": [1, 1]}, "repeats a seed"),
        ({"parameters": [], "pruner": "median"}, "pruning needs the optuna method"),
    ],
)
def test_bad_specs_are_one_line_naming_the_parameter(spec: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_spec(spec)
    assert message in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("param", "message"),
    [
        ({"key": "algorithm.nope", "values": [1]}, "algorithm.nope: unknown key"),
        ({"key": "nosection.x", "values": [1]}, "nosection.x: unknown key"),
        (
            {"key": "algorithm.inner_lr", "values": [0.1, -1]},
            "algorithm.inner_lr: -1 is not allowed",
        ),
        ({"key": "train.ways", "int": [2, 10**9]}, "train.ways"),
    ],
)
def test_every_configuration_is_checked_before_the_first_trial(param: dict, message: str) -> None:
    method = {"method": "random", "trials": 4} if "int" in param else {}
    spec = parse_spec({"parameters": [param], **method})
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        check(spec, base_config(spec))


def test_random_search_is_seeded_and_stays_in_its_ranges(tmp_path: Path) -> None:
    data = {
        "parameters": [
            {"key": "algorithm.inner_lr", "loguniform": [0.001, 1.0]},
            {"key": "train.inner_steps", "int": [1, 5]},
        ],
        "method": "random",
        "trials": 8,
        "sampler_seed": 7,
    }
    (tmp_path / "s.json").write_text(json.dumps(data))
    spec = load_spec(str(tmp_path / "s.json"))
    base = base_config(spec)

    def draws() -> list:
        search = make_search(spec, base)
        return [search.ask() for _ in range(9)]

    first = draws()
    assert first == draws()  # the same seed, the same sweep
    assert first[-1] is None  # the budget
    for _number, point in first[:-1]:  # type: ignore[misc]
        assert 0.001 <= point["algorithm.inner_lr"] <= 1.0
        assert point["train.inner_steps"] in range(1, 6)
    assert len({p["algorithm.inner_lr"] for _, p in first[:-1]}) == 8  # type: ignore[misc]


def test_tpe_is_seeded_learns_from_results_and_rebuilds_from_recorded_trials() -> None:
    pytest.importorskip("optuna")
    spec = parse_spec(
        {
            "parameters": [{"key": "algorithm.inner_lr", "uniform": [0.0, 1.0]}],
            "method": "optuna",
            "trials": 20,
            "sampler_seed": 3,
        }
    )
    base = base_config(spec)

    def run() -> list[float]:
        search = make_search(spec, base, "minimize")
        xs = []
        while (got := search.ask()) is not None:
            number, point = got
            x = point["algorithm.inner_lr"]
            xs.append(x)
            search.tell(number, (x - 0.3) ** 2)
        return xs

    xs = run()
    assert xs == run()  # seeded, one trial at a time: reproducible
    assert min(abs(x - 0.3) for x in xs[10:]) < min(abs(x - 0.3) for x in xs[:5])  # it learns
    again = make_search(spec, base, "minimize")
    for i, x in enumerate(xs[:5]):
        again.adopt(i, {"algorithm.inner_lr": x}, (x - 0.3) ** 2)
    assert again.asked == 5 and len(again.study.trials) == 5  # type: ignore[attr-defined]
    number, _ = again.ask()  # type: ignore[misc]
    assert number == 5


def test_median_pruner_stops_a_trial_worse_than_the_finished_ones() -> None:
    pytest.importorskip("optuna")
    spec = parse_spec(
        {
            "parameters": [{"key": "algorithm.inner_lr", "uniform": [0.1, 1.0]}],
            "method": "optuna",
            "trials": 5,
            "pruner": "median",
        }
    )
    search = make_search(spec, base_config(spec), "maximize")
    for _ in range(3):  # three good trials finish
        number, _point = search.ask()  # type: ignore[misc]
        for step in range(1, 6):
            assert not search.prune(number, step, 0.8 + 0.01 * step)
        search.tell(number, 0.85)
    number, _point = search.ask()  # type: ignore[misc]
    assert search.prune(number, 1, 0.2)  # far below the median at the same step: pruned


def test_a_base_or_config_file_naming_only_what_it_changes_starts_where_the_form_does(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """{"dataset": {"name": "sinusoid"}} means sinusoid's usual shape (10 shots, meta-batch
    25), not the bare field defaults (5-way 1-shot, meta-batch 32); a complete config is kept
    as it is; the CLI's --config reads a file the same way."""
    from workbench.cli import main

    partial = {"algorithm": {"name": "maml", "inner_lr": 0.02}, "dataset": {"name": "sinusoid"},
               "train": {"meta_batch": 4}, "steps": 7}  # fmt: skip
    base = base_config(
        parse_spec({"parameters": [{"key": "seed", "values": [1]}], "base": partial})
    )
    start = default_config("maml", "sinusoid").to_dict()
    assert base["train"] == {**start["train"], "meta_batch": 4}
    assert base["eval"] == start["eval"] and base["algorithm"]["inner_lr"] == 0.02
    assert base["steps"] == 7
    whole = default_config("protonet", "glyphs").to_dict()
    whole["train"]["meta_batch"] = 3
    assert base_config(parse_spec({"parameters": [{"key": "seed", "values": [1]}],
                                   "base": whole})) == whole  # fmt: skip
    path = tmp_path / "partial.json"
    path.write_text(json.dumps(partial))
    assert main(["run", "--config", str(path), "--print-config"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["train"]["shots"] == 10 and printed["train"]["meta_batch"] == 4
