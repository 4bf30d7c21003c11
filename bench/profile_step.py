"""Profile one meta-training step of our second-order MAML (Omniglot 5-way 1-shot) with torch.profiler.

    python bench/profile_step.py                     # meta-batch 32, 1 query/class, 2 threads
    python bench/profile_step.py --queries 15 --threads 1 --rows 25
    python bench/profile_step.py --tiny              # glyphs, meta-batch 2

Prints the operators sorted by self CPU time over `--steps` profiled steps (after warm-up).
Same setup as bench/speed.py: the preset's config, `build_algorithm`, one meta-batch sampled
with a fixed generator, `algo.meta_train_step(batch, shape)`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

from bench.speed import CASES, case_config, distribution  # noqa: E402
from workbench.core.engine import build_algorithm  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--case", default="maml-5w1s-q1-so", choices=[c.key for c in CASES])
    p.add_argument("--queries", type=int, help="override train.queries")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=3, help="profiled steps (after 2 warm-up steps)")
    p.add_argument("--rows", type=int, default=20)
    p.add_argument("--tiny", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    case = next(c for c in CASES if c.key == args.case)
    cfg = case_config(case, args.tiny)
    if args.queries:
        cfg = cfg.with_overrides([f"train.queries={args.queries}"])
    dist = distribution(cfg)
    batch = dist.sample(cfg.train, cfg.train.meta_batch, torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    algo = build_algorithm(cfg, dist.input_shape, torch.device("cpu")).train()

    def step() -> None:
        for q in algo.parameters():
            q.grad = None
        algo.meta_train_step(batch, cfg.train)

    for _ in range(2):
        step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.steps):
            step()
    t = cfg.train
    print(f"{case.title}: {cfg.dataset.name} {t.ways}-way {t.shots}-shot, {t.queries} queries/class, meta-batch {t.meta_batch}, "
          f"{args.threads} thread(s), {args.steps} steps profiled")  # fmt: skip
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
