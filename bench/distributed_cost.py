"""What a second rank costs: the meta-gradient all-reduce of a multi-process run, per step.

On this 2-core CPU a second rank cannot speed anything up (one process already uses both
cores); what is measured is the price of the data-parallel machinery, for MAML Omniglot 5-way
1-shot (meta-batch 32, second order) and ProtoNet Omniglot (60-way training episodes,
meta-batch 4):

- step time: 1 process with 2 threads, and 2 gloo ranks with 1 thread each;
- the time a step spends in the all-reduce (`Group.combine`) on 2 ranks, which includes waiting
  for the slower rank, in ms and as a share of the step;
- the all-reduce of the same buffer alone, both ranks ready (after a barrier): the
  communication itself;
- float32 equivalence: 2 ranks against one process after 20 steps (the float64 check, to
  1e-10, is tests/test_distributed.py).

    .venv/bin/python bench/distributed_cost.py [--steps 12] [--write]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data" / "omniglot"
WARM = 3
EQUIVALENCE = ROOT / "tests" / "helpers_dist_equivalence.py"


def configs() -> dict[str, Any]:
    from workbench.core.presets import get_preset

    maml = get_preset("maml-omniglot-5w1s").run_config()
    proto = get_preset("protonet-omniglot-5w1s").run_config()
    out = {}
    for name, cfg, mb in (
        ("MAML 5w1s, meta-batch 32", maml, 32),
        ("ProtoNet, meta-batch 4", proto, 4),
    ):
        out[name] = cfg.with_overrides(
            [f"dataset.data_dir={DATA}", f"train.meta_batch={mb}", "val_every=0", "ckpt_every=0",
             "test_on_finish=false", "device=cpu"]
        )  # fmt: skip
    return out


def worker(name: str, steps: int, out: str) -> None:
    """One rank (or the only process): train `steps` steps, record each step's time and the
    time it spent in the all-reduce, then time the bare all-reduce of the same buffer."""
    import torch
    import torch.distributed as dist

    from workbench.core import distributed
    from workbench.core.engine import Trainer
    from workbench.core.events import Listener

    config = configs()[name].with_overrides([f"steps={steps + WARM}"])
    world = int(os.environ.get("WORLD_SIZE", "1"))
    group = distributed.join("cpu") if world > 1 else None
    if group is None:
        config = config.with_overrides(["threads=2"])
    spent: list[float] = []
    reduce: list[float] = []

    class Timer(Listener):
        def __init__(self) -> None:
            self.before = 0.0

        def on_step(self, e: Any) -> None:
            spent.append(e.values["step_time"])
            now = group.reduce_s if group is not None else 0.0
            reduce.append(now - self.before)
            self.before = now

    trainer = Trainer(config, [Timer()], group=group)
    result = trainer.run()
    assert result.status == "finished", result.error
    bare: list[float] = []
    size = sum(p.numel() for p in trainer.algo.parameters() if p.requires_grad)  # type: ignore[union-attr]
    if group is not None:
        flat = torch.zeros(size + 3)
        for _ in range(30):
            dist.barrier()
            t0 = time.perf_counter()
            dist.all_reduce(flat)
            bare.append(time.perf_counter() - t0)
        group.close()
    if group is None or group.rank == 0:
        Path(out).write_text(json.dumps({
            "step_ms": 1e3 * statistics.median(spent[WARM:]),
            "reduce_ms": 1e3 * statistics.median(reduce[WARM:]),
            "bare_ms": 1e3 * statistics.median(bare) if bare else 0.0,
            "params": size, "threads": torch.get_num_threads(),
        }))  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ranks(argv: list[str], world: int, extra_env: dict[str, str] | None = None) -> None:
    """Start `python <argv>` as `world` ranks with torchrun's environment and wait."""
    port = str(free_port())
    procs = []
    for r in range(world):
        env = {**os.environ, **(extra_env or {}), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port,
               "WORLD_SIZE": str(world), "LOCAL_WORLD_SIZE": str(world), "RANK": str(r),
               "LOCAL_RANK": str(r)}  # fmt: skip
        if world == 1:
            for k in ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "LOCAL_RANK"):
                env.pop(k)
        procs.append(subprocess.Popen([sys.executable, *argv], env=env, cwd=ROOT))
    codes = [p.wait() for p in procs]
    if any(codes):
        raise SystemExit(f"a rank failed: exit statuses {codes}")


def measure(steps: int) -> dict[str, dict[str, dict[str, float]]]:
    out: dict[str, dict[str, dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in configs():
            out[name] = {}
            for world in (1, 2):
                path = Path(tmp) / f"{world}.json"
                ranks(
                    [__file__, "--worker", name, "--steps", str(steps), "--out", str(path)], world
                )
                out[name][str(world)] = json.loads(path.read_text())
                print(name, world, out[name][str(world)], flush=True)
    return out


def float32_gaps() -> dict[str, dict[str, float]]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "gaps.json"
        ranks([str(EQUIVALENCE), str(path)], 2, {"WB_EQ_DTYPE": "float32"})
        return json.loads(path.read_text())


def report(cost: dict[str, Any], gaps: dict[str, Any]) -> str:
    from bench.results import stamp

    lines = [
        f"Measured {stamp()}. `bench/distributed_cost.py`: median over the steps after {WARM} "
        "warm-up steps; 1 process with 2 threads against 2 gloo ranks with 1 thread each "
        "(torchrun's default), Omniglot 28x28.",
        "",
        "| configuration | weights | 1 process: step | 2 ranks: step | all-reduce in the step | share of the step | bare all-reduce |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, by_world in cost.items():
        one, two = by_world["1"], by_world["2"]
        lines.append(
            f"| {name} | {two['params']:,} | {one['step_ms']:.1f} ms | {two['step_ms']:.1f} ms | "
            f"{two['reduce_ms']:.2f} ms | {100 * two['reduce_ms'] / two['step_ms']:.1f} % | "
            f"{two['bare_ms']:.3f} ms |"
        )
    lines += [
        "",
        "The all-reduce in the step includes waiting for the slower rank; the bare all-reduce "
        "is the same buffer summed once both ranks are ready.",
        "",
        "Equivalence, 2 ranks against 1 process after 20 steps (largest difference of the step "
        "losses / the validation and test scores / the weights). float64 is held to 1e-10 by "
        "tests/test_distributed.py; float32:",
        "",
        "| configuration | losses | scores | weights | weights with a structurally zero gradient |",
        "|---|---|---|---|---|",
    ]
    for name, g in gaps.items():
        lines.append(
            f"| {name} | {g['loss']:.1e} | {g['scores']:.1e} | {g['weights']:.1e} | "
            f"{g['still_weights']:.1e} |"
        )
    lines += [
        "",
        "The last column: biases of convolutions that batch norm follows. Their exact gradient is "
        "zero; what reaches them is rounding noise, which Adam scales up to steps of the learning "
        "rate's size, differently in each summation order. They move nothing the model computes.",
    ]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--write", action="store_true")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args.worker, args.steps, args.out)
        return
    if not DATA.is_dir():
        raise SystemExit(f"needs Omniglot in {DATA}")
    cost = measure(args.steps)
    gaps = float32_gaps()
    text = report(cost, gaps)
    print(text)
    if args.write:
        from bench.results import write_section

        write_section("distributed-cost", "## Distributed runs: the all-reduce's cost\n\n" + text)


if __name__ == "__main__":
    main()
