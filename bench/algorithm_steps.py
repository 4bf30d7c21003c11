"""One meta-training step of every registered algorithm beside MAML's, on the same episodes.

    python bench/algorithm_steps.py --write          # Conv-4 Omniglot shapes, 1 thread; RESULTS.md
    python bench/algorithm_steps.py --tiny           # seconds (what the test suite runs)

Why: a new algorithm (Meta-SGD, ANIL, Reptile, Matching and Relation Networks, a plugin's) says
what its step costs against the reference it is usually compared with, MAML's, measured in one
process on one meta-batch so that the machine's load falls on all of them alike.

Method: for each shape (5-way and 20-way 1-shot, 28x28 glyphs images as Omniglot's, Conv-4 width
64, queries as the papers' Omniglot settings), every built-in algorithm with the starting
config the form gives it (`default_config`: its inner steps, its own parameters), the shape set
on top; one meta-batch drawn once; warm-up rounds, then timed rounds that alternate the
algorithms round-robin (the order rotating each round). Reported: the median and IQR of
`zero_grad` + `meta_train_step` (forward, backward, the inner loop; not the outer update,
which is one Adam or SGD step for all), per task, and the ratio to MAML's (second order) step.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from bench.results import stamp, write_section  # noqa: E402
from workbench.core.algorithms.base import Algorithm  # noqa: E402
from workbench.core.config import RunConfig, default_config  # noqa: E402
from workbench.core.engine import build_algorithm, load_datasets  # noqa: E402
from workbench.core.episode_stream import EpisodeStream  # noqa: E402
from workbench.core.registry import ALGORITHMS  # noqa: E402
from workbench.core.tasks.base import EpisodeBatch  # noqa: E402

SHAPES = {  # name -> train shape (Omniglot: MAML's 1 query a class; 15 for the metric family)
    "5-way 1-shot": {"ways": 5, "shots": 1, "queries": 15, "meta_batch": 8},
    "20-way 1-shot": {"ways": 20, "shots": 1, "queries": 5, "meta_batch": 4},
}
SKIP = {"pretrain-finetune"}  # a baseline without episodes' inner loop at training


def config_for(algo: str, shape: dict[str, int], tiny: bool) -> RunConfig:
    cfg = default_config(algo, "glyphs")
    sets = [f"train.{k}={v}" for k, v in shape.items()]
    sets += [f"eval.ways={shape['ways']}", "model.width=" + ("8" if tiny else "64")]
    sets += ["dataset.image_size=" + ("14" if tiny else "28"), "threads=1"]
    return cfg.with_overrides(sets)


def algorithm_and_batch(cfg: RunConfig) -> tuple[Algorithm, EpisodeBatch]:
    """The config's algorithm (seeded) on CPU and one training meta-batch drawn once, so every
    timed step works on the same episodes."""
    dist = load_datasets(cfg)["train"]
    torch.manual_seed(0)
    algo = build_algorithm(cfg, dist.input_shape, torch.device("cpu"))
    stream = EpisodeStream(dist, cfg.train, cfg.train.meta_batch, torch.Generator().manual_seed(0))
    return algo, stream.next()


def measure(shape: dict[str, int], rounds: int, tiny: bool) -> dict[str, tuple[list[float], int]]:
    """Per algorithm: the step times (s) and its training inner steps."""
    algos, batches, inner = {}, {}, {}
    for name in ALGORITHMS.names():
        if name in SKIP:
            continue
        cfg = config_for(name, shape, tiny)
        algo, batches[name] = algorithm_and_batch(cfg)
        algos[name] = (algo, cfg)
        inner[name] = cfg.train.inner_steps
    times: dict[str, list[float]] = {n: [] for n in algos}
    order = list(algos)
    for r in range(rounds + 2):  # two warm-up rounds
        order = order[1:] + order[:1]
        for name in order:
            algo, cfg = algos[name]
            algo.train()
            t0 = time.perf_counter()
            algo.zero_grad(set_to_none=True)
            algo.meta_train_step(batches[name], cfg.train)
            dt = time.perf_counter() - t0
            if r >= 2:
                times[name].append(dt)
    return {n: (times[n], inner[n]) for n in algos}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--tiny", action="store_true", help="small images and widths, 2 rounds")
    p.add_argument("--write", action="store_true", help="write the RESULTS.md section")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    rounds = 2 if args.tiny else args.rounds
    lines = [
        "## Step time of every algorithm beside MAML's (`bench/algorithm_steps.py`)",
        "",
        f"{stamp()}; 1 torch thread, Conv-4 width 64 on 28x28 glyphs images (Omniglot's size), "
        f"median of {rounds} steps each, alternated round-robin; the step is zero_grad + "
        "meta_train_step (not the outer update).",
    ]
    for label, shape in SHAPES.items():
        got = measure(shape, rounds, args.tiny)
        ref = statistics.median(got["maml"][0])
        lines += [
            "",
            f"### {label}, {shape['queries']} queries a class, meta-batch {shape['meta_batch']}",
            "",
            "| algorithm | inner steps | median ms | IQR ms | ms per task | / MAML |",
            "|---|---|---|---|---|---|",
        ]
        for name, (ts, steps) in got.items():
            med = statistics.median(ts)
            q = statistics.quantiles(ts, n=4) if len(ts) > 1 else [med, med, med]
            lines.append(
                f"| {name} | {steps} | {med * 1e3:.1f} | {(q[2] - q[0]) * 1e3:.1f} | "
                f"{med * 1e3 / shape['meta_batch']:.1f} | {med / ref:.2f} |"
            )
    text = "\n".join(lines)
    print(text)
    if args.write and not args.tiny:
        write_section("algorithm-steps", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
