"""Profile one meta-training step of our second-order MAML (Omniglot 5-way 1-shot) with torch.profiler.

    python bench/profile_step.py                     # meta-batch 32, 1 query/class, 2 threads
    python bench/profile_step.py --queries 15 --threads 1 --rows 25
    python bench/profile_step.py --tiny              # glyphs, meta-batch 2
    python bench/profile_step.py --write             # the target cases, 1 thread: RESULTS.md "profile"

Prints the operators sorted by self CPU time over `--steps` profiled steps (after warm-up).
Same setup as bench/speed.py: the preset's config, `build_algorithm`, one meta-batch sampled
with a fixed generator, `algo.meta_train_step(batch, shape)`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

from bench.speed import CASES, case_config, distribution  # noqa: E402
from workbench.core.config import RunConfig  # noqa: E402
from workbench.core.engine import build_algorithm  # noqa: E402
from workbench.core.memory import reuse_freed_memory  # noqa: E402


def setup(
    key: str, tiny: bool, threads: int, extra: list[str] | None = None
) -> tuple[Callable[[], None], RunConfig]:
    """One case's step (zero_grad + meta_train_step on a fixed meta-batch) and its config."""
    torch.set_num_threads(threads)
    case = next(c for c in CASES if c.key == key)
    cfg = case_config(case, tiny).with_overrides(extra or [])
    dist = distribution(cfg)
    batch = dist.sample(cfg.train, cfg.train.meta_batch, torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    algo = build_algorithm(cfg, dist.input_shape, torch.device("cpu")).train()

    def step() -> None:
        for q in algo.parameters():
            q.grad = None
        algo.meta_train_step(batch, cfg.train)

    return step, cfg


def median_ms(step: Callable[[], None], repeats: int) -> float:
    step()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def top_ops(
    step: Callable[[], None], steps: int, rows: int
) -> tuple[float, list[tuple[str, float, int]]]:
    """Profiled self-CPU ms per step, and the top ops: (name, share of it, calls per step)."""
    step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    events.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    return total / 1e3 / steps, [
        (e.key, e.self_cpu_time_total / total, e.count // steps) for e in events[:rows]
    ]


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
    p.add_argument(
        "--write",
        action="store_true",
        help="profile the target cases (1 thread) and write the 'profile' section of RESULTS.md",
    )
    args = p.parse_args(argv)
    reuse_freed_memory()  # as the Trainer and bench/speed.py
    if args.write:
        return write(args)
    step, cfg = setup(
        args.case,
        args.tiny,
        args.threads,
        [f"train.queries={args.queries}"] if args.queries else [],
    )
    step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.steps):
            step()
    t = cfg.train
    print(f"{args.case}: {cfg.dataset.name} {t.ways}-way {t.shots}-shot, {t.queries} queries/class, meta-batch {t.meta_batch}, "
          f"{args.threads} thread(s), {args.steps} steps profiled")  # fmt: skip
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))
    return 0


# the speed targets' cases; for MAML also the same step with 4x4 images and 4 filters, which is
# what the step costs when the arithmetic is next to nothing: its fixed per-call cost
TARGET_CASES = ("maml-5w1s-q1-so", "maml-5w1s-q1-fo", "protonet-60w5s")
FIXED = ["dataset.name=glyphs", "dataset.image_size=4", "model.width=4"]


def write(args: argparse.Namespace) -> int:
    from bench.results import stamp, write_section

    repeats = 2 if args.tiny else 7
    lines = [
        "## Where the time of a step goes (`bench/profile_step.py --write`)",
        "",
        f'{stamp()}; 1 torch thread; our step as bench/speed.py times it. "fixed cost": the same '
        "step (same task shape, meta-batch and code path) on 4x4 glyph images with 4 filters per "
        "layer, where the arithmetic is next to nothing: what every call costs regardless of size "
        "(operator dispatch, oneDNN primitive set-up, autograd, Python). Top operators by self CPU "
        "time under torch.profiler (which inflates small ops).",
        "",
        "| case | step ms | fixed cost ms (share) | top operators: share of profiled self CPU (calls per step) |",
        "|---|---:|---:|---|",
    ]
    for key in TARGET_CASES:
        step, _ = setup(key, args.tiny, 1)
        ms = median_ms(step, repeats)
        fixed = ""
        if key.startswith("maml"):
            small, _ = setup(key, args.tiny, 1, FIXED)
            f_ms = median_ms(small, repeats)
            fixed = f"{f_ms:.1f} ({100 * f_ms / ms:.0f}%)"
        _, ops = top_ops(step, 1 if args.tiny else args.steps, 6)
        top = "; ".join(f"`{name}` {100 * share:.0f}% ({calls})" for name, share, calls in ops)
        lines.append(f"| {key} | {ms:.1f} | {fixed or '—'} | {top} |")
        print(lines[-1], flush=True)
    if not args.tiny:
        write_section("profile", "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
