"""The one typed run configuration: what the form edits, the CLI parses, the catalog stores.

Built on pydantic so that every field carries its default, range and a description the GUI
shows as a tooltip; per-algorithm hyperparameters are a subclass of `AlgorithmParams`
declared in the algorithm's own module and looked up by name in the algorithm registry.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import (
    Field,
    SerializeAsAny,
    ValidationError,
    model_validator,
)

from workbench.core.errors import ConfigError
from workbench.core.params import (  # noqa: F401  (re-exported: the config's one namespace)
    INT64_MAX,
    AlgorithmParams,
    Count,
    DatasetConfig,
    LayerSize,
    ModelConfig,
    Real,
    Seed,
    StrictModel,
    Tag,
    TaskShape,
)
from workbench.core.registry import ALGORITHMS, DATASETS


class RunConfig(StrictModel):
    """A complete, reproducible description of one run."""

    name: str = Field(
        "", max_length=200, description="Run name shown in the browser (empty: generated)"
    )
    algorithm: SerializeAsAny[AlgorithmParams]
    dataset: DatasetConfig = Field(default_factory=DatasetConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TaskShape = Field(
        default_factory=TaskShape, description="Task shape during meta-training"
    )
    eval: TaskShape = Field(
        default_factory=lambda: TaskShape(inner_steps=3),
        description="Task shape for validation and test",
    )
    device: str = Field("auto", description="auto | cpu | cuda | cuda:i | mps")
    precision: Literal["fp32", "bf16"] = Field(
        "fp32",
        description="bf16 autocast for the forward passes (CPU with avx512_bf16, CUDA): pays"
        " on large episodes (ProtoNet 60-way about 1.8x); MAML on 5-image episodes runs"
        " slower, as its batched fp32 passes step aside (bench/RESULTS.md). fp16 is not"
        " offered: it needs a gradient scaler, and a scaler covers only the outer loss, not"
        " MAML's inner-loop gradients, which would underflow unscaled",
    )
    deterministic: bool = Field(
        True,
        description="CUDA: deterministic algorithms (torch.use_deterministic_algorithms,"
        " CUBLAS_WORKSPACE_CONFIG), so a resumed run continues bit-for-bit; costs cuDNN's"
        " autotuning and some slower kernels. CPU kernels are deterministic either way",
    )
    seed: Seed = Field(
        0, description="Seeds weights, task sampling and the validation/test episodes"
    )
    steps: Count = Field(
        1000, ge=1, le=10_000_000, description="Meta-training steps (meta-updates)"
    )
    val_every: Count = Field(
        100, ge=0, le=10_000_000, description="Validate every N steps (0 = never)"
    )
    val_episodes: Count = Field(
        100, ge=1, le=100_000, description="Validation tasks per validation"
    )
    ckpt_every: Count = Field(
        500, ge=0, le=10_000_000, description="Checkpoint every N steps (0 = only best and final)"
    )
    keep_last: Count = Field(
        2, ge=0, le=1000, description="Periodic checkpoints kept besides best and final"
    )
    test_episodes: Count = Field(
        600,
        ge=1,
        le=100_000,
        description="Test tasks evaluated when the run finishes (600 in the papers)",
    )
    test_on_finish: bool = Field(
        True, description="Evaluate the best checkpoint on the test split when the run finishes"
    )
    memory_check: bool = Field(
        True,
        description="Refuse a configuration whose estimated peak memory exceeds the free "
        "memory (workbench.core.footprint); false tries it anyway",
    )
    threads: Count | None = Field(
        None,
        ge=1,
        le=512,
        description="torch CPU threads (empty: all cores, or one where tasks are too small to share)",
    )
    preset: str | None = Field(None, description="Preset this run was made from")
    tags: list[Tag] = Field(default_factory=list, max_length=100)
    notes: str = ""

    @model_validator(mode="before")
    @classmethod
    def _algorithm_by_name(cls, data: Any) -> Any:
        """Validate `algorithm` against the schema of the algorithm it names."""
        if isinstance(data, dict) and isinstance(data.get("algorithm"), dict):
            raw = dict(data["algorithm"])
            raw.setdefault("name", "maml")
            params_cls = ALGORITHMS.get(str(raw["name"])).Params
            try:
                data = {**data, "algorithm": params_cls.model_validate(raw)}
            except ValidationError as exc:
                raise _config_error(exc, prefix="algorithm") from None
        return data

    @model_validator(mode="after")
    def _compatible(self) -> RunConfig:

        algo = ALGORITHMS.get(self.algorithm.name)
        kind = DATASETS.get(self.dataset.name).kind
        if kind not in algo.supports:
            ok = [n for n in DATASETS.names() if DATASETS.get(n).kind in algo.supports]
            raise ConfigError(
                "algorithm.name",
                f"{self.algorithm.name} does not work on {kind} datasets like {self.dataset.name}; "
                f"its datasets: {', '.join(ok)}",
            )
        # a model may declare what it works with (class attributes of its registered builder,
        # e.g. ResNet-12's `supported_algorithms`): refused here in one line, not at build time
        from workbench.core.registry import MODELS

        model = self.model.name
        builder = MODELS.get(model) if model != "auto" else None
        kinds = getattr(builder, "dataset_kinds", None)
        if kinds is not None and kind not in kinds:
            ok = [n for n in DATASETS.names() if DATASETS.get(n).kind in kinds]
            raise ConfigError(
                "model.name",
                f"{model} does not work on {kind} datasets like {self.dataset.name}; "
                f"its datasets: {', '.join(ok)}",
            )
        algorithms = getattr(builder, "supported_algorithms", None)
        if algorithms is not None and self.algorithm.name not in algorithms:
            ok = [n for n in ALGORITHMS.names() if n in algorithms]
            raise ConfigError(
                "model.name",
                f"{model} does not work with {self.algorithm.name}; its algorithms: {', '.join(ok)}",
            )
        for phase in algo.inner_step_phases:
            if getattr(self, phase).inner_steps < 1:
                raise ConfigError(
                    f"{phase}.inner_steps",
                    f"0 is not allowed: {self.algorithm.name} adapts with inner steps "
                    f"({'it would meta-train without an inner loop' if phase == 'train' else 'it would be tested without adapting'}); use 1 or more",
                )
        if kind == "classification":
            for phase in ("train", "eval"):
                ways = getattr(self, phase).ways
                if ways < 2:
                    raise ConfigError(
                        f"{phase}.ways",
                        f"{ways} is not allowed: a classification task needs at least 2 ways",
                    )
        return self

    # ---- construction and round trip -------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        """Validate, turning pydantic's report into one ConfigError naming the key."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise _config_error(exc) from None

    @classmethod
    def from_json(cls, text: str, partial: bool = False) -> RunConfig:
        """From JSON text; `partial`: what it leaves out comes from `from_partial`'s start."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(
                "config", f"not valid JSON ({exc.msg} at line {exc.lineno})"
            ) from None
        except ValueError as exc:  # an integer of more than 4,300 digits
            raise ConfigError("config", f"not valid JSON ({exc})") from None
        except RecursionError:
            raise ConfigError("config", "not valid JSON (nested too deeply)") from None
        if not isinstance(data, dict):
            raise ConfigError("config", "must be a JSON object")
        return cls.from_partial(data) if partial else cls.from_dict(data)

    @classmethod
    def from_partial(cls, data: dict[str, Any]) -> RunConfig:
        """A config file or sweep base that states only what it changes: the rest comes from
        the form's and CLI's starting point for the algorithm and dataset it names
        (`default_config`), not from the bare field defaults, which are Omniglot's (5-way
        1-shot, meta-batch 32) and wrong for sinusoid. A complete config is unchanged."""

        def name(section: str, default: str) -> str:
            value = data.get(section)
            got = value.get("name", default) if isinstance(value, dict) else default
            return got if isinstance(got, str) else default

        try:
            start = default_config(name("algorithm", "maml"), name("dataset", "sinusoid"))
        except ConfigError:  # an unknown name: from_dict says so, naming the key
            return cls.from_dict(data)
        return cls.from_dict(_merged(start.to_dict(), data))

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def with_overrides(self, assignments: list[str]) -> RunConfig:
        return RunConfig.from_dict(apply_overrides(self.to_dict(), assignments))

    @property
    def task_kind(self) -> str:

        return DATASETS.get(self.dataset.name).kind


def _config_error(exc: ValidationError, prefix: str = "") -> ConfigError:
    err = exc.errors()[0]
    key = ".".join(str(p) for p in ((prefix,) if prefix else ()) + tuple(err["loc"]))
    if err["type"] == "extra_forbidden":
        return ConfigError(key, "unknown key")
    if err["type"] == "missing":
        return ConfigError(key, "is required")
    shown = short_repr(err.get("input"))
    if err["type"] == "finite_number":
        return ConfigError(key, f"{shown} is not allowed: it is not a finite number")
    return ConfigError(key, f"{shown} is not allowed: {err['msg'].lower()}")


def short_repr(value: Any, limit: int = 80) -> str:
    """repr() cut to `limit` characters, so that a pasted megabyte is not echoed back whole."""
    try:
        text = repr(value)
    except RecursionError:
        return "(a value nested too deeply)"
    return text if len(text) <= limit else f"{text[: limit - 5]}...{text[-2:]}"


def parse_value(text: str) -> Any:
    """`--set` values are JSON where they parse (numbers, true, null, lists), else strings."""
    try:
        return json.loads(text)
    except ValueError:  # not JSON, or an integer of more than 4,300 digits: keep the text
        return text


def _merged(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """base with over's values, sections merged key by key (lists and values replaced)."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merged(out[key], value)
        else:
            out[key] = value
    return out


def apply_overrides(data: dict[str, Any], assignments: list[str]) -> dict[str, Any]:
    """Apply `key.sub=value` assignments to a config dict (a deep copy is returned)."""
    out = json.loads(json.dumps(data))
    for item in assignments:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(
                "--set", f"{item!r} is not key=value (for example algorithm.inner_lr=0.4)"
            )
        parts = key.strip().split(".")
        node = out
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if not isinstance(child, dict):
                raise ConfigError(".".join(parts[: i + 1]), "unknown key (not a section)")
            node = child
        try:
            parsed = parse_value(value)
        except RecursionError:
            raise ConfigError(key.strip(), "the value is nested too deeply") from None
        if parts == ["algorithm", "name"]:
            out["algorithm"] = switch_algorithm(node, str(parsed))
        else:
            node[parts[-1]] = parsed
    return out


def switch_algorithm(section: dict[str, Any], name: str) -> dict[str, Any]:
    """The algorithm section for another algorithm, keeping the settings the new one shares."""
    if section.get("name") == name:
        return section

    fields = ALGORITHMS.get(name).Params.model_fields
    return {
        **{k: v for k, v in section.items() if k in fields and k not in ("name", "first_order")},
        "name": name,
    }


# Starting points by task kind and algorithm, so that a fresh form or a bare `workbench run`
# is sensible (the papers' full settings are presets in workbench/resources/presets).
_START: dict[str, dict[str, Any]] = {
    "regression": {
        "train": {"ways": 1, "shots": 10, "queries": 10, "meta_batch": 25, "inner_steps": 1},
        "eval": {"ways": 1, "shots": 10, "queries": 100, "meta_batch": 25, "inner_steps": 10},
        "algorithm": {"inner_lr": 0.01},
    },
    "classification": {
        "train": {"ways": 5, "shots": 1, "queries": 15, "meta_batch": 8, "inner_steps": 1},
        "eval": {"ways": 5, "shots": 1, "queries": 15, "meta_batch": 25, "inner_steps": 3},
        "algorithm": {"inner_lr": 0.4},
    },
}
_ALGO_START: dict[str, dict[str, Any]] = {
    "meta-lstm": {"train": {"inner_steps": 5, "meta_batch": 1}, "eval": {"inner_steps": 5}},
    "protonet": {"train": {"inner_steps": 0, "meta_batch": 1}, "eval": {"inner_steps": 0}},
    "pretrain-finetune": {"algorithm": {"inner_lr": 0.01}, "train": {"inner_steps": 0}},
    # Meta-SGD adapts in one step, at training and at test (Li et al. 2017, Sec. 3)
    "meta-sgd": {"train": {"inner_steps": 1}, "eval": {"inner_steps": 1}},
    # Reptile: the official Omniglot 5-way settings (Adam 0.001 on minibatches of 10 from 10
    # shots a class, 5 inner steps, meta-batch 5, one query a class for the step's score; 50
    # inner steps at test)
    "reptile": {
        "algorithm": {"inner_lr": 0.001},
        "train": {"shots": 10, "queries": 1, "meta_batch": 5, "inner_steps": 5},
        "eval": {"inner_steps": 50},
    },
    # metric-based: no inner loop, one episode a step (as ProtoNet)
    "matching": {"train": {"inner_steps": 0, "meta_batch": 1}, "eval": {"inner_steps": 0}},
    "relation": {"train": {"inner_steps": 0, "meta_batch": 1}, "eval": {"inner_steps": 0}},
}


def default_config(algorithm: str = "maml", dataset: str = "sinusoid") -> RunConfig:
    """A sensible small starting point for an algorithm and dataset (the form's and CLI's defaults)."""

    kind = DATASETS.get(dataset).kind
    start = json.loads(json.dumps(_START[kind]))
    for section, values in _ALGO_START.get(algorithm, {}).items():
        start[section].update(values)
    fields = ALGORITHMS.get(algorithm).Params.model_fields
    algo = {"name": algorithm, **{k: v for k, v in start.pop("algorithm").items() if k in fields}}
    # a dataset's own starting image size and channels (CIFAR-FS 32 RGB, CUB 84 RGB)
    section = {"name": dataset, **getattr(DATASETS.get(dataset), "defaults", {})}
    return RunConfig.from_dict({"algorithm": algo, "dataset": section, **start})
