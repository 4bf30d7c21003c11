"""The base types of the run configuration: a leaf module (pydantic only) that algorithms,
datasets, models and plugins import, so that `config` may look them up in the registries
without an import circle (`config` -> `registry` <- algorithms, never algorithms -> `config`)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
)
from pydantic_core import PydanticCustomError

INT64_MAX = 2**63 - 1  # SQLite integers and torch seeds are signed 64-bit


def _not_bool(value: Any) -> Any:
    """Refuse true/false for numbers: pydantic would read `shots=true` as one shot."""
    if isinstance(value, bool):
        raise PydanticCustomError("bool_number", "a number is needed, not true or false")
    return value


def _int64(value: int) -> int:
    """Bound seeds to what SQLite stores and torch.manual_seed takes (signed 64-bit), as a
    validator rather than `ge=`/`le=` so that the form's 32-bit spin box keeps its range."""
    if not -INT64_MAX - 1 <= value <= INT64_MAX:
        raise PydanticCustomError("int64", "must be a signed 64-bit integer, -2**63 to 2**63-1")
    return value


Count = Annotated[int, BeforeValidator(_not_bool)]
Real = Annotated[float, BeforeValidator(_not_bool)]
Seed = Annotated[int, BeforeValidator(_not_bool), AfterValidator(_int64)]
LayerSize = Annotated[int, BeforeValidator(_not_bool), Field(ge=1, le=4096)]
Tag = Annotated[str, Field(min_length=1, max_length=100)]
# an inner-loop step size; the validation/test one may be None: the meta-training one's
StepSize = Annotated[float, Field(gt=0, le=100)]
EvalStepSize = Annotated[float | None, Field(gt=0, le=100)]


class StrictModel(BaseModel):
    """Unknown keys are errors, so a typo in `--set` is reported rather than ignored; NaN and
    infinities are refused in every float (a NaN learning rate fails every comparison, so the
    bound it broke would otherwise be reported instead)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class TaskShape(StrictModel):
    """Shape of the tasks in one phase; training and evaluation differ in the papers."""

    ways: Count = Field(
        5, ge=1, le=5000, description="Classes per task (N-way); ignored for regression"
    )
    shots: Count = Field(
        1,
        ge=1,
        le=1000,
        description="Labelled support examples per class (K-shot); K points for regression",
    )
    queries: Count = Field(
        15, ge=1, le=1000, description="Query examples per class the adapted model is scored on"
    )
    meta_batch: Count = Field(
        32,
        ge=1,
        le=1024,
        description="Tasks per meta-update (training only: evaluation draws its episodes in"
        " groups set by the task shape, so every run is scored on the same ones)",
    )
    inner_steps: Count = Field(
        1,
        ge=0,
        le=1000,
        description="Adaptation steps on the support set (MAML, Meta-LSTM, fine-tuning)",
    )


class DatasetConfig(StrictModel):
    """Which task distribution, where its files are, and how its classes are split."""

    name: str = Field(
        "sinusoid",
        description="Registered dataset: sinusoid, glyphs, omniglot, image-folder, cifar-fs, fc100, cub",
    )
    data_dir: str | None = Field(
        None, description="Folder holding the dataset files (default: $WORKBENCH_DATA)"
    )
    split: str = Field(
        "default",
        description="Class split: omniglot 'vinyals' (default) or 'random' (MAML's 1,200 characters); image-folder 'csv' or 'random'; cifar-fs 'bertinetto', fc100 'oreshkin' (TADAM's superclasses), cub 'chen' (Chen et al. 2019); or a folder of train/val/test.txt class lists",
    )
    split_seed: Seed = Field(0, ge=0, description="Seed of a random class split")
    rotations: bool = Field(
        True, description="Omniglot: rotations by 90 degree multiples as extra classes"
    )
    image_size: Count = Field(
        28,
        ge=4,
        le=512,
        description="Images are resized to this square size (papers: 28 Omniglot, 32 CIFAR-FS/FC100, 84 mini-ImageNet/CUB)",
    )
    channels: Annotated[Literal[1, 3], BeforeValidator(_not_bool)] = Field(
        1, description="1 = grayscale, 3 = RGB (CIFAR-FS, FC100, CUB and mini-ImageNet are RGB)"
    )
    download: bool = Field(
        False, description="Download the official archives when missing (checksums verified)"
    )


class ModelConfig(StrictModel):
    """The learner network shared by the algorithms."""

    name: str = Field(
        "auto",
        description="auto: conv4 for images, mlp for regression; or any registered model",
        json_schema_extra={"registry": "model"},  # the form offers auto + the registered names
    )
    width: Count = Field(
        64,
        ge=1,
        le=1024,
        description="Conv-4 filters per layer (64 in MAML/ProtoNet, 32 in Meta-LSTM)",
    )
    downsample: Literal["stride", "maxpool"] = Field(
        "stride",
        description="Conv-4: strided convs (MAML Omniglot) or 2x2 max-pool (ProtoNet, mini-ImageNet)",
    )
    hidden: list[LayerSize] = Field(
        default_factory=lambda: [40, 40],
        max_length=32,
        description="MLP hidden layer sizes, each 1-4096 (MAML sinusoid: 40, 40)",
    )
    channels_last: bool = Field(
        True,
        description="Keep conv weights in channels-last layout (faster convolutions on CPU and CUDA; same results)",
    )
    batch_norm: Literal["batch", "none"] = Field(
        "batch",
        description="batch: batch statistics in training and test, no running statistics (as in the MAML paper); none: no BN",
    )
    resnet_widths: list[LayerSize] = Field(
        default_factory=lambda: [64, 160, 320, 640],
        min_length=4,
        max_length=4,
        description="ResNet-12: channels of its 4 residual blocks (64, 160, 320, 640 in MetaOptNet"
        " and most papers since; smaller ones for quick experiments)",
    )
    resnet_pool: Literal["avg", "flatten"] = Field(
        "avg",
        description="ResNet-12: embedding = global average of the last map (640-d; TADAM, RFS,"
        " FEAT) or the flattened map (MetaOptNet: 640x5x5 = 16,000-d at 84x84)",
    )
    drop_rate: Real = Field(
        0.0,
        ge=0,
        lt=1,
        description="ResNet-12, training only: DropBlock rate in blocks 3-4 and dropout rate in"
        " blocks 1-2 (MetaOptNet: 0.1 mini-ImageNet); 0 = off",
    )
    dropblock_size: Count = Field(
        5,
        ge=1,
        le=64,
        description="ResNet-12: DropBlock's square block side (MetaOptNet: 5 mini-ImageNet, 2"
        " CIFAR-FS); capped at the map size",
    )

    @field_validator("name")
    @classmethod
    def _registered(cls, value: str) -> str:
        """Any model registered by then (built-in or a plugin's), looked up at validation time."""
        from workbench.core.registry import MODELS

        if value != "auto" and value not in MODELS:
            allowed = ", ".join(["auto", *MODELS.names()])
            raise PydanticCustomError(
                "unknown_model",
                "unknown model '{name}'; allowed: {allowed}",
                {"name": value, "allowed": allowed},
            )
        return value


class AlgorithmParams(StrictModel):
    """Hyperparameters every algorithm has; each algorithm subclasses this in its own module."""

    name: str = Field(description="Registered algorithm")
    meta_lr: Real = Field(
        1e-3, gt=0, le=10, description="Adam learning rate of the meta (outer) update"
    )
    lr_halve_every: Count = Field(
        0,
        ge=0,
        le=10_000_000,
        description="Halve the meta learning rate every N steps (0 = never; ProtoNet: 2000)",
    )
    grad_clip: Real = Field(
        0.0, ge=0, description="Clip the meta-gradient norm to this value (0 = no clipping)"
    )
