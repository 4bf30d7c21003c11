"""A sweep's definition: a base configuration, the parameters to vary, seeds, a method.

Validated like `RunConfig` (unknown keys are errors, every message names the parameter), and
before any trial starts every configuration it could produce is checked as a `RunConfig`:
each grid point, and for ranges the base with each range's ends, so a bad combination fails
at once with one line instead of as trial 17 an hour later.

A parameter applies everywhere or only `when` other keys have given values, so one sweep can
compare MAML and ProtoNet, each with its own hyperparameters:

    {"parameters": [
        {"key": "algorithm.name", "values": ["maml", "protonet"]},
        {"key": "algorithm.inner_lr", "loguniform": [0.01, 1.0],
         "when": {"algorithm.name": "maml"}}],
     "seeds": [0, 1, 2], "method": "random", "trials": 20}
"""

from __future__ import annotations

import itertools
import json
from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator

from workbench.core.config import (
    RunConfig,
    StrictModel,
    _config_error,
    apply_overrides,
    default_config,
    short_repr,
)
from workbench.core.errors import ConfigError

Point = dict[str, Any]
"""One configuration of a sweep: dotted key -> value, before seeds."""


class Param(StrictModel):
    """One dotted config key and what it takes: a list of values or a range."""

    key: str = Field(min_length=1, description="dotted config key, e.g. algorithm.inner_lr")
    values: list[Any] | None = Field(None, description="the values to try")
    uniform: tuple[float, float] | None = Field(None, description="[low, high], floats")
    loguniform: tuple[float, float] | None = Field(None, description="[low, high], both > 0")
    int_range: tuple[int, int] | None = Field(
        None, alias="int", description="[low, high], integers, both ends included"
    )
    when: dict[str, Any] = Field(
        default_factory=dict, description="applies only where these keys have these values"
    )

    @model_validator(mode="after")
    def _one_domain(self) -> Param:
        given = [
            name
            for name in ("values", "uniform", "loguniform", "int_range")
            if getattr(self, name) is not None
        ]
        if len(given) != 1:
            raise ConfigError(self.key, "give exactly one of values, uniform, loguniform or int")
        if self.values is not None and not self.values:
            raise ConfigError(self.key, "values is empty")
        for name in ("uniform", "loguniform", "int_range"):
            bounds = getattr(self, name)
            if bounds is None:
                continue
            low, high = bounds
            label = "int" if name == "int_range" else name
            if low > high:
                raise ConfigError(
                    self.key, f"{label} range {low} > {high}: low must not exceed high"
                )
            if low == high and name != "int_range":
                raise ConfigError(self.key, f"{label} range [{low}, {high}] is empty")
            if name == "loguniform" and low <= 0:
                raise ConfigError(
                    self.key, f"loguniform range [{low}, {high}] must lie above 0 (log scale)"
                )
        return self

    @property
    def is_range(self) -> bool:
        """Continuous: only random and Optuna can sample it (a grid needs values or int)."""
        return self.uniform is not None or self.loguniform is not None

    def grid_values(self) -> list[Any]:
        if self.values is not None:
            return list(self.values)
        if self.int_range is not None:
            return list(range(self.int_range[0], self.int_range[1] + 1))
        raise ConfigError(self.key, "a grid needs values or an int range, not a float range")

    def ends(self) -> list[Any]:
        """The values that bound what the parameter can take (checked before trial one)."""
        if self.values is not None:
            return list(self.values)
        return list(self.uniform or self.loguniform or self.int_range or ())

    def applies(self, point: Point, base: dict[str, Any]) -> bool:
        return all(_lookup(point, base, k) == v for k, v in self.when.items())


class Objective(StrictModel):
    metric: str = Field("val_score", description="a metric the trials record")
    direction: Literal["maximize", "minimize"] | None = Field(
        None, description="empty: from the metric (losses and errors are minimised)"
    )


class SweepSpec(StrictModel):
    """A sweep: base x parameters x seeds, searched by `method` within a trial budget."""

    name: str = Field("", max_length=200)
    base: dict[str, Any] | None = Field(None, description="a run configuration (its dict)")
    preset: str | None = Field(None, description="start from a paper preset instead")
    base_run: int | None = Field(None, ge=1, description="clone this run's configuration")
    parameters: list[Param] = Field(default_factory=list)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    method: Literal["grid", "random", "optuna"] = "grid"
    trials: int | None = Field(
        None, ge=1, description="configurations to try (grid: all of them; seeds multiply)"
    )
    max_concurrent: int = Field(1, ge=1, le=256)
    threads_per_trial: int | None = Field(None, ge=1, le=512)
    sampler_seed: int = Field(0, description="seeds random and Optuna's TPE")
    pruner: Literal["none", "median", "successive-halving"] = "none"
    objective: Objective = Field(default_factory=Objective)

    @model_validator(mode="after")
    def _consistent(self) -> SweepSpec:
        if sum(x is not None for x in (self.base, self.preset, self.base_run)) > 1:
            raise ConfigError("base", "give one of base, preset or base_run")
        keys = [p.key for p in self.parameters]
        for key in keys:
            if keys.count(key) > 1 and not all(p.when for p in self.parameters if p.key == key):
                raise ConfigError(key, "listed twice (give each its own `when`)")
        if len(set(self.seeds)) != len(self.seeds):
            raise ConfigError("seeds", f"{self.seeds} repeats a seed")
        if self.method in ("random", "optuna") and self.trials is None:
            raise ConfigError("trials", f"the {self.method} method needs a trial budget")
        if self.method == "grid":
            for p in self.parameters:
                p.grid_values()
        if self.pruner != "none" and self.method != "optuna":
            raise ConfigError("pruner", "pruning needs the optuna method")
        return self

    @property
    def reproducible_note(self) -> str:
        """What a user must know about reproducing the search itself."""
        if self.method == "optuna" and self.max_concurrent > 1:
            return "TPE is reproducible only with one trial at a time (max_concurrent 1)"
        return ""


def parse_spec(data: Any, where: str = "sweep") -> SweepSpec:
    """A SweepSpec from its dict; every error is a ConfigError naming the parameter."""
    if not isinstance(data, dict):
        raise ConfigError(where, f"{short_repr(data)} is not a JSON object")
    try:
        return SweepSpec.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        cause = err.get("ctx", {}).get("error")
        if isinstance(cause, ConfigError):
            raise cause from None
        raise _config_error(exc) from None


def load_spec(path: str) -> SweepSpec:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError("SPEC", f"{path} cannot be read: {exc}") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ConfigError("SPEC", f"{path} is not JSON: {exc}") from None
    return parse_spec(data)


def _lookup(point: Point, base: dict[str, Any], key: str) -> Any:
    if key in point:
        return point[key]
    node: Any = base
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def base_config(spec: SweepSpec, catalog: Any = None) -> dict[str, Any]:
    """The base configuration's dict: given (what it leaves out as the form starts its
    algorithm and dataset), a preset's, a run's (needs the catalog), or the default (MAML on
    sinusoid)."""
    if spec.base is not None:
        return RunConfig.from_partial(spec.base).to_dict()
    if spec.preset is not None:
        from workbench.core.presets import get_preset

        return get_preset(spec.preset).run_config().to_dict()
    if spec.base_run is not None:
        if catalog is None:
            raise ConfigError("base_run", "cloning a run needs the catalog")
        if not catalog.has_run(spec.base_run):
            raise ConfigError("base_run", f"no run {spec.base_run} in {catalog.display}")
        return RunConfig.from_json(catalog.get_run(spec.base_run).config_json).to_dict()
    return default_config().to_dict()


def complete(spec: SweepSpec, point: Point, base: dict[str, Any]) -> Point:
    """`point` with the conditional parameters that do not apply to it removed, so that
    a point never carries a value its configuration ignores."""
    return {
        k: v
        for k, v in point.items()
        if all(p.applies(point, base) for p in spec.parameters if p.key == k and p.when)
    }


def config_for(base: dict[str, Any], point: Point, seed: int) -> RunConfig:
    """The trial's RunConfig: base, the point's values (algorithm.name first, since switching
    the algorithm resets its section), the seed. A ConfigError names the sweep parameter."""
    order = sorted(point, key=lambda k: k != "algorithm.name")
    data = base
    for key in order:
        try:
            data = apply_overrides(data, [f"{key}={json.dumps(point[key])}"])
        except ConfigError as exc:
            raise ConfigError(key, exc.message) from None
    data = {**data, "seed": seed}
    try:
        return RunConfig.from_dict(data)
    except ConfigError as exc:
        raise ConfigError(exc.key, f"{exc.message} (in the sweep point {_shown(point)})") from None


def _shown(point: Point) -> str:
    return ", ".join(f"{k}={short_repr(v, 30)}" for k, v in point.items()) or "the base"


def grid(spec: SweepSpec, base: dict[str, Any]) -> list[Point]:
    """Every grid point, conditional parameters only where their `when` holds, no repeats."""
    plain = [p for p in spec.parameters if not p.when]
    cond = [p for p in spec.parameters if p.when]
    points: list[Point] = [
        dict(zip([p.key for p in plain], combo, strict=True))
        for combo in itertools.product(*(p.grid_values() for p in plain))
    ]
    for p in cond:
        grown: list[Point] = []
        for point in points:
            if p.applies(point, base):
                grown += [{**point, p.key: v} for v in p.grid_values()]
            else:
                grown.append(point)
        points = grown
    seen: set[str] = set()
    unique = []
    for point in points:
        tag = json.dumps(point, sort_keys=True)
        if tag not in seen:
            seen.add(tag)
            unique.append(point)
    return unique


def check(spec: SweepSpec, base: dict[str, Any]) -> int:
    """Check before the first trial that every configuration the sweep can make is a valid
    RunConfig: each grid point, or (random, Optuna) each parameter's ends on the base and on
    each choice of the parameters it depends on. Returns the number of configurations
    checked; the first bad one raises a ConfigError naming the parameter."""
    if spec.method == "grid":
        points = grid(spec, base)
    else:
        choices = [p for p in spec.parameters if p.values is not None and not p.is_range]
        anchors = [
            dict(zip([p.key for p in choices], combo, strict=True))
            for combo in itertools.product(*(p.values or [] for p in choices))
        ] or [{}]
        points = []
        for anchor in anchors:
            points.append(anchor)
            for p in spec.parameters:
                if p.applies(anchor, base) and p.key not in anchor:
                    points += [{**anchor, p.key: v} for v in p.ends()]
    for point in points:
        config_for(base, complete(spec, point, base), spec.seeds[0])
    return len(points)


def budget(spec: SweepSpec, base: dict[str, Any]) -> int:
    """Configurations the sweep tries (each once per seed)."""
    if spec.method == "grid":
        n = len(grid(spec, base))
        return min(n, spec.trials) if spec.trials else n
    return int(spec.trials or 0)
