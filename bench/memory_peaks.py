"""Peak memory of each shipped preset (and a few heavy extras) against `footprint`'s estimate.

    python bench/memory_peaks.py            # every preset + extras, markdown table
    python bench/memory_peaks.py --write    # ... and the "memory" section of bench/RESULTS.md
    python bench/memory_peaks.py --tiny     # two cheap configs (the tests run this)

Why: `workbench.core.footprint` refuses a configuration before its run exists when its
estimated peak does not fit; that is only useful if the estimate is close, so each config is
run here for real. Each runs in a fresh subprocess (the Trainer, as the CLI runs it: 2 torch
threads, a few steps, one validation of at least one full draw of episodes; the task shapes
and meta-batch of the preset are kept) and reports its RSS high-water mark
(getrusage(RUSAGE_SELF).ru_maxrss), which is what the operating system must find room for.
Presets whose data is absent here are skipped with a note.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DATA = ROOT.parent / "shared" / "data"
OMNIGLOT = DATA / "omniglot"
MINI_IMAGENET_IMAGES = DATA / "mini-imagenet" / "images"
STEPS = 3  # meta-training steps per measurement; the validation runs after the last
THREADS = 2
GIB = 2**30


@dataclass
class Case:
    """One measured configuration: a name, the config dict, and why it is in the table."""

    name: str
    config: dict[str, Any]
    note: str = ""
    skip: str = ""  # non-empty: not run, and why
    extra_env: dict[str, str] = field(default_factory=dict)


def shortened(config: dict[str, Any]) -> dict[str, Any]:
    """The same task shapes and meta-batch, a few steps, one validation, no test, no checkpoints."""
    from workbench.core.config import RunConfig
    from workbench.core.evaluate import episodes_per_draw

    cfg = RunConfig.from_dict(config)
    draw = episodes_per_draw(cfg.eval)
    return {
        **config,
        "steps": STEPS,
        "val_every": STEPS,
        "val_episodes": max(draw, 2),
        "test_on_finish": False,
        "ckpt_every": 0,
        "threads": THREADS,
        "device": "cpu",
    }


def preset_cases() -> list[Case]:
    from workbench.core.presets import load_presets

    cases = []
    for name, preset in load_presets().items():
        config = json.loads(json.dumps(preset.config))
        dataset = config.get("dataset", {}).get("name")
        skip = ""
        if dataset == "omniglot":
            if (OMNIGLOT / "images_background.zip").is_file():
                config["dataset"]["data_dir"] = str(OMNIGLOT)
            else:
                skip = f"Omniglot not found in {OMNIGLOT}"
        elif dataset == "image-folder":
            if MINI_IMAGENET_IMAGES.is_dir():
                config["dataset"]["data_dir"] = str(MINI_IMAGENET_IMAGES.parent)
            else:
                skip = f"mini-ImageNet images absent ({MINI_IMAGENET_IMAGES})"
        cases.append(Case(name, config, "preset", skip))
    return cases


def extra_cases() -> list[Case]:
    """Configurations that push one setting far: the estimate must follow each."""
    glyphs = {"name": "glyphs"}
    omni = {"name": "omniglot", "data_dir": str(OMNIGLOT), "split": "random"}
    no_omni = "" if (OMNIGLOT / "images_background.zip").is_file() else "Omniglot absent"
    return [
        Case(
            "maml-glyphs-10w1s9q-mb1024",
            {
                "algorithm": {"name": "maml", "inner_lr": 0.4, "first_order": True},
                "dataset": glyphs,
                "train": {"ways": 10, "shots": 1, "queries": 9, "meta_batch": 1024},
                "eval": {"ways": 10, "shots": 1, "queries": 9, "inner_steps": 1},
            },
            "huge meta_batch (first order)",
        ),
        Case(
            "protonet-omniglot-60w5s15q",
            {
                "algorithm": {"name": "protonet"},
                "dataset": {**omni, "split": "vinyals"},
                "model": {"name": "conv4", "downsample": "maxpool"},
                "train": {"ways": 60, "shots": 5, "queries": 15, "meta_batch": 1, "inner_steps": 0},
                "eval": {"ways": 60, "shots": 5, "queries": 15, "inner_steps": 0},
            },
            "60-way ProtoNet, 1,200-image episodes",
            no_omni,
        ),
        Case(
            "maml-omniglot-20w1s-5step-so-q5",
            {
                "algorithm": {"name": "maml", "inner_lr": 0.1},
                "dataset": omni,
                "model": {"name": "conv4"},
                "train": {"ways": 20, "shots": 1, "queries": 5, "meta_batch": 16, "inner_steps": 5},
                "eval": {"ways": 20, "shots": 1, "queries": 5, "inner_steps": 5},
            },
            "20-way 5-step second order",
            no_omni,
        ),
        Case(
            "meta-lstm-glyphs-5w5s-84px",
            {
                "algorithm": {"name": "meta-lstm", "grad_clip": 0.25},
                "dataset": {**glyphs, "image_size": 84, "channels": 3},
                "model": {"name": "conv4", "width": 32, "downsample": "maxpool"},
                "train": {"ways": 5, "shots": 5, "queries": 15, "meta_batch": 1, "inner_steps": 12},
                "eval": {"ways": 5, "shots": 5, "queries": 15, "inner_steps": 12},
            },
            "the mini-ImageNet Meta-LSTM shapes on generated 84x84 RGB images",
        ),
    ]


def tiny_cases() -> list[Case]:
    return [
        Case(
            "maml-sinusoid",
            {
                "algorithm": {"name": "maml", "inner_lr": 0.01},
                "dataset": {"name": "sinusoid"},
                "train": {"ways": 1, "shots": 10, "queries": 10, "meta_batch": 25},
                "eval": {"ways": 1, "shots": 5, "queries": 100, "inner_steps": 10},
            },
            "tiny",
        ),
        Case(
            "protonet-glyphs-20w1s5q",
            {
                "algorithm": {"name": "protonet"},
                "dataset": {"name": "glyphs"},
                "model": {"name": "conv4", "downsample": "maxpool"},
                "train": {"ways": 20, "shots": 1, "queries": 5, "meta_batch": 1, "inner_steps": 0},
                "eval": {"ways": 5, "shots": 1, "queries": 15, "inner_steps": 0},
            },
            "tiny",
        ),
    ]


# ---- the measured process -------------------------------------------------------------------
def child(config_json: str) -> None:
    """Run the configuration with the Trainer and print its status and peak RSS as JSON."""
    from workbench.core.config import RunConfig
    from workbench.core.engine import Trainer

    finished = Trainer(RunConfig.from_json(config_json)).run()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    print(json.dumps({"status": finished.status, "reason": finished.error, "peak": peak}))


def measure(config: dict[str, Any]) -> int:
    """Peak RSS in bytes of a fresh process running `config`."""
    env = {**os.environ, "OMP_NUM_THREADS": str(THREADS)}
    with tempfile.TemporaryDirectory() as tmp:
        env.setdefault("WORKBENCH_DB", str(Path(tmp) / "unused.db"))
        proc = subprocess.run(
            [sys.executable, __file__, "--child", json.dumps(config)],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env=env,
        )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"measurement failed ({proc.returncode}): {proc.stderr[-3000:]}")
    out = json.loads(lines[-1])
    if out["status"] != "finished":
        raise RuntimeError(f"run ended {out['status']}: {out['reason']}")
    return int(out["peak"])


def estimate(config: dict[str, Any]) -> tuple[int, str]:
    from workbench.core.config import RunConfig
    from workbench.core.footprint import config_input_shape, estimate_peak_bytes

    cfg = RunConfig.from_dict(config)
    est = estimate_peak_bytes(cfg, config_input_shape(cfg))
    return est.total, est.driver


def gib(n: float) -> str:
    return f"{n / GIB:.2f} GiB"


def run_cases(cases: list[Case]) -> tuple[list[str], list[float]]:
    """Markdown rows (config, estimate, measured, ratio, driver, note) and the ratios."""
    rows, ratios = [], []
    for case in cases:
        if case.skip:
            rows.append(f"| {case.name} | - | - | - | - | skipped: {case.skip} |")
            continue
        config = shortened(case.config)
        est, driver = estimate(config)
        peak = measure(config)
        ratio = est / peak
        ratios.append(ratio)
        rows.append(
            f"| {case.name} | {gib(est)} | {gib(peak)} | {ratio:.2f} | {driver} | {case.note} |"
        )
        print(rows[-1], file=sys.stderr, flush=True)
    return rows, ratios


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="two cheap configs (for the tests)")
    ap.add_argument("--write", action="store_true", help="write bench/RESULTS.md 'memory'")
    ap.add_argument("--only", nargs="*", help="case names to run (default: all)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child)
        return
    cases = tiny_cases() if args.tiny else preset_cases() + extra_cases()
    if args.only:
        cases = [c for c in cases if c.name in args.only]
    rows, ratios = run_cases(cases)
    head = [
        "| config | estimate | measured peak RSS | ratio | driver | note |",
        "|---|---|---|---|---|---|",
    ]
    table = "\n".join(head + rows)
    print(table)
    if ratios:
        print(f"\nratio range: {min(ratios):.2f} - {max(ratios):.2f}")
    if args.write and not args.tiny:
        from bench.results import stamp, write_section

        body = (
            "## Peak memory: estimate against measurement\n\n"
            f"{stamp()}. `python bench/memory_peaks.py --write`: each configuration runs in a"
            f" fresh process (Trainer, {THREADS} threads, {STEPS} steps, one validation of at least"
            " one full draw of episodes; task shapes and meta-batch as configured); measured is its"
            " RSS high-water mark, estimate is `workbench.core.footprint.estimate_peak_bytes`, which"
            " `check_fits` compares with the free memory before a run is created. Ratio ="
            " estimate / measured (target 0.5-2).\n\n" + table + "\n"
        )
        write_section("memory", body)


if __name__ == "__main__":
    main()
