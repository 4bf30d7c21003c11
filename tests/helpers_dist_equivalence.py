"""One rank of the float64 equivalence check (tests/test_distributed.py), started by the test
with torchrun's environment (RANK, WORLD_SIZE, MASTER_ADDR/PORT).

Every configuration trains 20 steps as a rank of the group; rank 0 then trains it again alone
(no group) and writes, per configuration, the largest difference of the step losses, the
validation and test scores and the final weights to the JSON file named by argv[1].
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import torch

# float64 for the test; bench/distributed_cost.py measures float32 with WB_EQ_DTYPE=float32
DTYPE = getattr(torch, os.environ.get("WB_EQ_DTYPE", "float64"))
torch.set_default_dtype(DTYPE)

from workbench.core import distributed  # noqa: E402
from workbench.core.config import RunConfig, default_config  # noqa: E402
from workbench.core.engine import Trainer, load_datasets  # noqa: E402
from workbench.core.events import Listener  # noqa: E402
from workbench.core.tasks.base import EpisodeBatch, TaskDistribution  # noqa: E402


class Float64(TaskDistribution):
    """A split whose episodes come in DTYPE (the datasets draw float32)."""

    def __init__(self, inner: TaskDistribution) -> None:
        self.inner = inner
        self.kind = inner.kind  # type: ignore[misc]

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.inner.input_shape

    def sample(self, shape: Any, batch: int, generator: torch.Generator) -> EpisodeBatch:
        b = self.inner.sample(shape, batch, generator)
        wide = [t.to(DTYPE) if t.is_floating_point() else t
                for t in (b.support_x, b.support_y, b.query_x, b.query_y)]  # fmt: skip
        return EpisodeBatch(*wide, b.ways, b.info)


class Record(Listener):
    def __init__(self) -> None:
        self.losses: list[float] = []
        self.scores: list[float] = []

    def on_step(self, e: Any) -> None:
        self.losses.append(e.values["loss"])

    def on_eval(self, e: Any) -> None:
        self.scores += [e.mean, e.ci95]
        self.scores.extend(v for k, v in sorted(e.values.items()) if not k.endswith("ci95"))


def configs() -> dict[str, RunConfig]:
    common = {"steps": 20, "val_every": 10, "val_episodes": 7, "test_episodes": 9,
              "ckpt_every": 0, "seed": 3, "device": "cpu", "threads": 1}  # fmt: skip
    small_images = {"ways": 3, "shots": 1, "queries": 2, "meta_batch": 3}
    out = {}
    for name, algo, dataset, extra in (
        ("maml-sinusoid-mb3", "maml", "sinusoid", {"train": {"meta_batch": 3}}),
        ("maml-glyphs-mb3", "maml", "glyphs", {"train": small_images}),
        ("fomaml-glyphs-mb5", "fomaml", "glyphs", {"train": {**small_images, "meta_batch": 5}}),
        ("protonet-glyphs-mb3", "protonet", "glyphs", {"train": small_images}),
        ("meta-lstm-glyphs-mb3", "meta-lstm", "glyphs",
         {"train": {**small_images, "inner_steps": 2}, "eval": {"inner_steps": 2},
          "algorithm": {"support_batch": 2}}),
        ("pretrain-sinusoid-mb3", "pretrain-finetune", "sinusoid", {"train": {"meta_batch": 3}}),
    ):  # fmt: skip
        data = default_config(algo, dataset).to_dict()
        data.update(common)
        for section, values in extra.items():
            data[section].update(values)
        if data["dataset"]["name"] == "glyphs":
            data["model"]["width"] = 8
            data["eval"].update(ways=3, shots=1, queries=2)
        out[name] = RunConfig.from_dict(data)
    return out


def train(config: RunConfig, group: distributed.Group | None) -> tuple[Record, Trainer]:
    dists = {k: Float64(v) for k, v in load_datasets(config, ("train", "val", "test")).items()}
    record = Record()
    trainer = Trainer(config, [record], datasets=dists, group=group)  # type: ignore[arg-type]
    result = trainer.run()
    assert result.status == "finished", result.error
    return record, trainer


def moving(trainer: Trainer) -> dict[str, torch.Tensor]:
    """Per parameter, the entries whose meta-gradient is not structurally zero. The bias of a
    convolution that batch norm follows has an exact gradient of zero (the norm subtracts the
    channel mean): what reaches it is rounding noise, which Adam scales up to steps of the
    learning rate's size in one process and in two alike, and which moves nothing the model
    computes (bench/fp32_error.py's STRUCTURAL_ZERO)."""
    algo = trainer.algo
    assert algo is not None and trainer.datasets is not None
    cfg = trainer.config
    batch = trainer.datasets["train"].sample(
        cfg.train, cfg.train.meta_batch, torch.Generator().manual_seed(99)
    )
    algo.zero_grad(set_to_none=True)
    algo.meta_train_step(batch, cfg.train)
    grads = {k: p.grad for k, p in algo.named_parameters() if p.grad is not None}
    top = max(float(g.abs().max()) for g in grads.values())
    # float32 rounds such a cancelling sum to about 1e-7 of the largest entry, not to zero
    floor = 1e-10 if DTYPE == torch.float64 else 1e-5
    return {k: g.abs() > floor * top for k, g in grads.items()}


def weight_gaps(a: Trainer, b: Trainer) -> tuple[float, float]:
    """Largest difference of the weights (parameters' moving entries and buffers), and of the
    structurally still entries (reported, not held to the tolerance)."""
    assert a.algo is not None and b.algo is not None
    mask = moving(b)
    wa, wb = a.algo.state_dict(), b.algo.state_dict()
    held = still = 0.0
    for k, t in wa.items():
        diff = (t - wb[k]).abs().double()
        m = mask.get(k)
        if m is None:
            held = max(held, float(diff.max()))
        else:
            held = max(held, float(diff[m].max()) if bool(m.any()) else 0.0)
            still = max(still, float(diff[~m].max()) if bool((~m).any()) else 0.0)
    return held, still


def gap(a: list[float], b: list[float]) -> float:
    assert len(a) == len(b), (len(a), len(b))
    return max((abs(x - y) for x, y in zip(a, b, strict=True)), default=0.0)


def main() -> None:
    group = distributed.join("cpu")
    out: dict[str, dict[str, float]] = {}
    for name, config in configs().items():
        record, trainer = train(config, group)
        if group.rank == 0:
            alone, single = train(config, None)
            held, still = weight_gaps(trainer, single)
            out[name] = {
                "loss": gap(record.losses, alone.losses),
                "scores": gap(record.scores, alone.scores),
                "weights": held,
                "still_weights": still,
                "steps": len(record.losses),
                "evals": len(record.scores),
            }
    if group.rank == 0:
        with open(sys.argv[1], "w", encoding="utf-8") as f:
            json.dump(out, f, indent=1)
    group.close()


if __name__ == "__main__":
    main()
