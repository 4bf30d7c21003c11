"""The GPU path checked in one prepared run (at most 8 minutes): correctness first, then speed.

    python bench/device_check.py                       # on the lent GPU machine (cuda)
    python bench/device_check.py --write               # ... and write its section of RESULTS.md
    python bench/device_check.py --device cpu --tiny   # end to end on a CPU in about a minute

What it prints (and writes, with --write, as the "device-check" section of bench/RESULTS.md):
1. the MAML meta-gradient against finite differences on the device (float64, a Conv-4,
   second order; directional differences along random directions), with the device policy's
   paths and with the CPU paths switched on there;
2. resume equivalence on the device: a run resumed from its step-k checkpoint against the
   uninterrupted run, step values and final weights compared bit for bit (deterministic on);
3. step times (median, IQR) of MAML 5w1s second and first order against `higher` and
   learn2learn on the same device (when importable, else "skipped" with the reason), ProtoNet
   60-way against the plain implementation, each of ours also with the CPU paths on
   (channels-last, batched tasks, closed-form double backward: is any worth switching on for
   CUDA? `workbench/core/device_policy.py`) and under bf16 autocast; meta-gradients compared
   before anything is timed;
4. a short MAML Omniglot 5w1s training in fp32 and in bf16 (steps/s, test accuracy after the
   same number of steps).

The lent machine has Python 3.12 and torch (CUDA) with numpy, but none of pydantic,
platformdirs or the peers, and nothing can be fetched there. What the script needs is carried
in `device_carry/` (git-ignored; under 64 MiB with the Omniglot archives), prepared here:

    pip download --python-version 3.12 --only-binary :all: --implementation cp \\
        --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \\
        --platform manylinux_2_28_x86_64 -d device_carry/wheels \\
        pydantic pydantic-core annotated-types typing-extensions typing-inspection \\
        pillow psutil tqdm
    pip download --no-deps --only-binary :all: -d device_carry/wheels higher   # not its torch
    pip download --no-deps --no-binary :all: -d /tmp/l2l learn2learn==0.2.0
    # learn2learn ships only an sdist; its MAML is pure Python (bench/peers.py imports it
    # without the package's __init__): carry the package's .py files
    (cd /tmp/l2l && tar xzf learn2learn-0.2.0.tar.gz && cd learn2learn-0.2.0 && \\
        find learn2learn -name '*.py' | cpio -pdm ../../work/main/device_carry/src)
    mkdir -p device_carry/data && cp -r ../shared/data/omniglot device_carry/data/

The catalog's SQLAlchemy and Alembic are not needed (no catalog is opened here). On the lent
machine the script installs the carried wheels with `pip install --no-index --no-deps
--find-links device_carry/wheels --target device_carry/site` when pydantic is missing, and puts
`device_carry/site` and `device_carry/src` on sys.path. Run it with the `run` tool's
`carry: ["device_carry"]`.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CARRY = ROOT / "device_carry"
sys.path.insert(0, str(ROOT))


def use_carried() -> str:
    """Make the carried packages importable; a line saying what was used."""
    site, src, wheels = CARRY / "site", CARRY / "src", CARRY / "wheels"
    said = []
    if importlib.util.find_spec("pydantic") is None and wheels.is_dir():
        files = sorted(str(w) for w in wheels.glob("*.whl"))
        try:
            subprocess.run(
                [sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps",
                 "--find-links", str(wheels), "--target", str(site), *files],
                check=True, timeout=300,
            )  # fmt: skip
            said.append(f"pip installed {len(files)} carried wheels into {site.relative_to(ROOT)}")
        except (
            OSError,
            subprocess.SubprocessError,
        ):  # no pip there: a wheel is a zip of site-packages
            import zipfile

            for w in files:
                with zipfile.ZipFile(w) as z:
                    z.extractall(site)
            said.append(f"unpacked {len(files)} carried wheels into {site.relative_to(ROOT)}")
    for path in (site, src):
        if path.is_dir():
            sys.path.insert(1, str(path))
    return "; ".join(said) or "nothing installed (all imports present)"


CARRIED = use_carried()

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from bench import speed  # noqa: E402
from workbench.core.config import RunConfig  # noqa: E402
from workbench.core.device_policy import overridden, policy_for  # noqa: E402
from workbench.core.devices import device_name  # noqa: E402
from workbench.core.engine import Trainer, build_algorithm, load_datasets  # noqa: E402
from workbench.core.evaluate import evaluate  # noqa: E402
from workbench.core.events import Listener  # noqa: E402
from workbench.core.models import call  # noqa: E402
from workbench.core.presets import get_preset  # noqa: E402
from workbench.core.tasks.base import EpisodeBatch  # noqa: E402

DATA_DIRS = (CARRY / "data" / "omniglot", ROOT.parent / "shared" / "data" / "omniglot")
CPU_PATHS = {"channels_last": True, "batched_tasks": True, "closed_form_double_backward": True}
BUDGET_S = 8 * 60


class Clock:
    """The run's time budget: sections ask before they start, and skip when it is spent."""

    def __init__(self, budget: float) -> None:
        self.t0, self.budget = time.perf_counter(), budget

    def left(self) -> float:
        return self.budget - (time.perf_counter() - self.t0)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def data_dir() -> Path | None:
    return next((d for d in DATA_DIRS if (d / "images_background.zip").exists()), None)


def base_config(preset: str, device: torch.device, tiny: bool, extra: list[str]) -> RunConfig:
    cfg = get_preset(preset).run_config().with_overrides([f"device={device}", *extra])
    folder = data_dir()
    if tiny or folder is None:
        cfg = cfg.with_overrides(["dataset.name=glyphs"])
    else:
        cfg = cfg.with_overrides([f"dataset.data_dir={folder}"])
    if tiny:
        t = cfg.train
        cfg = cfg.with_overrides([f"train.meta_batch={min(t.meta_batch, 2)}",
                                  f"train.ways={min(t.ways, 10)}", f"train.queries={min(t.queries, 2)}",
                                  "eval.queries=2"])  # fmt: skip
    return cfg


@contextlib.contextmanager
def cpu_paths(device: torch.device, on: bool) -> Iterator[None]:
    """The CPU's fast paths switched on for `device` (a no-op where they are on already)."""
    if not on or device.type == "cpu":
        yield
        return
    with overridden(device.type, **CPU_PATHS):
        yield


# ---- 1. finite differences ----------------------------------------------------------------
def meta_loss(algo: Any, batch: EpisodeBatch, lr: float) -> float:
    total = 0.0
    theta = algo.initial_params()
    for i in range(len(batch)):
        adapted = algo.adapt(theta, batch.support_x[i], batch.support_y[i], 1, lr, False)
        with torch.no_grad():
            out = call(algo.model, adapted, batch.query_x[i])
            total += float(F.cross_entropy(out, batch.query_y[i]))
    return total / len(batch)


def finite_differences(device: torch.device, tiny: bool, paths: bool) -> tuple[bool, str]:
    """Second-order MAML's meta-gradient g against (L(t + e v) - L(t - e v)) / 2e along random
    directions v, in float64 on the device (a Conv-4 of width 8 on 5-way 5-shot glyphs: with
    1 shot, batch norm over 5 images is so steep that a step of 1e-5 can cross a ReLU kink)."""
    cfg = base_config(
        "maml-omniglot-5w1s",
        device,
        True,
        ["model.width=8", "train.meta_batch=2", "train.shots=5", "train.queries=5"],
    )
    cfg = cfg.with_overrides(["dataset.name=glyphs"])
    dist = load_datasets(cfg)["train"]
    b = dist.sample(cfg.train, 2, torch.Generator().manual_seed(5))
    batch = EpisodeBatch(b.support_x.double(), b.support_y, b.query_x.double(), b.query_y, b.ways)
    batch = batch.to(device)
    lr = float(cfg.algorithm.inner_lr)  # type: ignore[attr-defined]
    with cpu_paths(device, paths):
        torch.manual_seed(0)
        algo = build_algorithm(cfg, dist.input_shape, device).double()
        algo.zero_grad()
        algo.meta_train_step(batch, cfg.train)
        params = [p for p in algo.parameters() if p.requires_grad]
        grads = [p.grad.detach().clone() for p in params]
        gen = torch.Generator().manual_seed(1)
        worst, eps = 0.0, 1e-7
        for _ in range(2 if tiny else 4):
            vs = [torch.randn(p.shape, generator=gen, dtype=p.dtype).to(device) for p in params]
            analytic = sum(float((g * v).sum()) for g, v in zip(grads, vs, strict=True))
            with torch.no_grad():
                for p, v in zip(params, vs, strict=True):
                    p.add_(v, alpha=eps)
            plus = meta_loss(algo, batch, lr)
            with torch.no_grad():
                for p, v in zip(params, vs, strict=True):
                    p.add_(v, alpha=-2 * eps)
            minus = meta_loss(algo, batch, lr)
            with torch.no_grad():
                for p, v in zip(params, vs, strict=True):
                    p.add_(v, alpha=eps)
            numeric = (plus - minus) / (2 * eps)
            worst = max(worst, abs(analytic - numeric) / max(abs(numeric), 1e-12))
    ok = worst < 1e-5
    return ok, f"max relative error {worst:.1e} over random directions ({'ok' if ok else 'FAIL'})"


# ---- 2. resume equivalence ----------------------------------------------------------------
class Steps(Listener):
    def __init__(self) -> None:
        self.values: dict[int, dict[str, float]] = {}
        self.ckpts: list[Any] = []

    def on_step(self, e: Any) -> None:
        self.values[e.step] = {
            k: v for k, v in e.values.items() if k not in ("steps_per_s", "step_time")
        }

    def on_checkpoint(self, e: Any) -> None:
        self.ckpts.append(e)


def resume_equivalence(device: torch.device, algorithm: str, tiny: bool) -> tuple[bool, str]:
    """Steps 1..2k uninterrupted against steps k+1..2k resumed from the step-k checkpoint."""
    k = 3 if tiny else 10
    cfg = base_config("maml-omniglot-5w1s", device, tiny, [
        f"algorithm.name={algorithm}", f"steps={2 * k}", f"ckpt_every={k}", f"val_every={k}",
        "val_episodes=8", "test_on_finish=false", "train.meta_batch=4", "memory_check=false",
    ])  # fmt: skip
    dists = load_datasets(cfg, ("train", "val"))
    with tempfile.TemporaryDirectory() as tmp:
        full = Steps()
        r1 = Trainer(cfg, [full], Path(tmp) / "a", datasets=dists).run()
        ckpt = next(c for c in full.ckpts if c.step == k and c.kind == "periodic")
        resumed = Steps()
        r2 = Trainer(cfg, [resumed], Path(tmp) / "b", resume_from=ckpt.path,
                     resume_sha256=ckpt.sha256, datasets=dists).run()  # fmt: skip
        if r1.status != "finished" or r2.status != "finished":
            return False, f"run failed: {r1.error or r2.error}"
        same = all(resumed.values[s] == full.values[s] for s in range(k + 1, 2 * k + 1))
        finals = [torch.load(next(c.path for c in rec.ckpts if c.kind == "final"),
                             weights_only=True)["algorithm"] for rec in (full, resumed)]  # fmt: skip
        weights = all(torch.equal(finals[0][n], finals[1][n]) for n in finals[0])
    ok = same and weights
    return ok, (f"steps {k + 1}-{2 * k} values {'identical' if same else 'DIFFER'}, final weights "
                f"{'identical' if weights else 'DIFFER'}")  # fmt: skip


# ---- 3. step times ------------------------------------------------------------------------
class OursOn(speed.Ours):
    """Our meta_train_step on the device: its autocast, and the policy variant it was built in."""

    def __init__(self, algo: Any, shape: Any, device: torch.device, name: str, bf16: bool = False,
                 paths: bool = False) -> None:  # fmt: skip
        super().__init__(algo, shape)
        self.device, self.name, self.bf16_on, self.paths = device, name, bf16, paths

    def step(self, batch: EpisodeBatch) -> None:
        self.zero()
        ctx = (torch.autocast(self.device.type, dtype=torch.bfloat16) if self.bf16_on
               else contextlib.nullcontext())  # fmt: skip
        with ctx, cpu_paths(self.device, self.paths):
            self.algo.meta_train_step(batch, self.shape)


def peers_available() -> dict[str, str]:
    status = {}
    try:
        import higher  # noqa: F401

        status["higher"] = "ok"
    except Exception as exc:
        status["higher"] = f"not importable: {type(exc).__name__}: {exc}"
    try:
        speed.peers.import_l2l_maml()
        status["learn2learn"] = "ok"
    except Exception as exc:
        status["learn2learn"] = f"not importable: {type(exc).__name__}: {exc}"
    return status


def time_case(case: speed.Case, device: torch.device, tiny: bool, repeats: int,
              available: dict[str, str], log: Callable[[str], None]) -> list[str]:  # fmt: skip
    cfg = base_config(case.preset, device, tiny, list(case.overrides))
    dist = load_datasets(cfg)["train"]
    batch = dist.sample(cfg.train, cfg.train.meta_batch, torch.Generator().manual_seed(0)).to(
        device
    )
    torch.manual_seed(0)
    algo = build_algorithm(cfg, dist.input_shape, device)
    ours = OursOn(algo, cfg.train, device, "ours")
    with cpu_paths(device, True):
        torch.manual_seed(0)
        algo_cpu = build_algorithm(cfg, dist.input_shape, device)  # channels-last where asked
    impls: list[speed.Impl] = [ours]
    if device.type != "cpu":
        impls.append(OursOn(algo_cpu, cfg.train, device, "ours + CPU paths", paths=True))
    impls.append(OursOn(algo, cfg.train, device, "ours bf16", bf16=True))
    peers, skipped = speed.peer_impls(case, cfg, algo, available)
    impls += peers
    ours.step(batch)
    ref = ours.grads()
    rows = [f"| {case.title} | {describe(cfg)} | | | |"]
    timed: list[speed.Impl] = []
    checks: dict[str, str] = {}
    for impl in impls:
        if impl is not ours:
            impl.step(batch)
            ok, summary = speed.compare(ref, impl.grads())
            if not ok and "bf16" not in impl.name:
                ok, summary = speed.check_fp64(case, cfg, algo, impl.name, batch,
                                               {"ours": ref, impl.name: impl.grads()}) \
                    if impl.name in ("higher", "learn2learn", "plain", "plain-cdist") \
                    else (ok, summary)  # fmt: skip
            if not ok and "bf16" not in impl.name:
                log(f"  {case.key}: {impl.name} meta-gradient disagrees: {summary}")
                checks[impl.name] = "MISMATCH: " + summary
                continue
            if "bf16" in impl.name:  # expected to differ: how far, not a pass or fail
                summary = "bf16 vs fp32 (not checked): " + summary.split(": ", 1)[-1]
            checks[impl.name] = summary
        timed.append(impl)
    times: dict[str, list[float]] = {i.name: [] for i in timed}
    warm = 1 if tiny else 3
    for r in range(warm + repeats):
        k = r % len(timed)
        for impl in timed[k:] + timed[:k]:
            sync(device)
            t0 = time.perf_counter()
            impl.step(batch)
            sync(device)
            if r >= warm:
                times[impl.name].append(time.perf_counter() - t0)
    base = statistics.median(times["ours"])
    for impl in impls:
        if impl.name not in times:
            rows.append(f"| | {impl.name} | not timed | | {checks.get(impl.name, '')} |")
            continue
        med, iqr = speed.stats(times[impl.name])
        ratio = f"{base / med:.2f}" if impl is not ours else "1"
        rows.append(f"| | {impl.name} | {med * 1e3:.1f} ms ± {iqr * 1e3:.1f} | {ratio} | "
                    f"{checks.get(impl.name, 'reference')} |")  # fmt: skip
    rows += [f"| | {s} | | | |" for s in skipped]
    return rows


def describe(cfg: RunConfig) -> str:
    t = cfg.train
    return (f"{cfg.dataset.name}, {t.ways}w{t.shots}s {t.queries}q, meta-batch {t.meta_batch}, "
            f"{t.inner_steps} inner step(s)")  # fmt: skip


# ---- 4. a short training ------------------------------------------------------------------
class StopAt(Listener):
    """Cancels the run once its time is up (the budget guard; steps normally end it)."""

    def __init__(self, seconds: float) -> None:
        self.deadline = time.perf_counter() + seconds
        self.trainer: Trainer | None = None
        self.rate = 0.0

    def attach(self, trainer: Trainer) -> None:
        self.trainer = trainer

    def on_step(self, e: Any) -> None:
        self.rate = e.values.get("steps_per_s", 0.0)
        if time.perf_counter() > self.deadline and self.trainer is not None:
            self.trainer.cancel()


def short_training(device: torch.device, tiny: bool, precision: str, steps: int, seconds: float,
                   episodes: int) -> tuple[int, float, float, float, str]:  # fmt: skip
    """(steps done, steps/s over the run, test accuracy, its ci95, status) of MAML 5w1s."""
    cfg = base_config("maml-omniglot-5w1s", device, tiny, [
        f"steps={steps}", "val_every=0", "ckpt_every=0", "test_on_finish=false",
        f"precision={precision}", "seed=0",
    ])  # fmt: skip
    dists = load_datasets(cfg, ("train", "test"))
    stop = StopAt(seconds)
    trainer = Trainer(cfg, [stop], datasets=dists)
    sync(device)
    t0 = time.perf_counter()
    result = trainer.run()
    sync(device)
    rate = trainer.step / max(time.perf_counter() - t0, 1e-9)
    if trainer.algo is None or result.status == "failed":
        return trainer.step, rate, float("nan"), float("nan"), f"failed: {result.error}"
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if precision == "bf16" \
        else contextlib.nullcontext  # fmt: skip
    s = evaluate(trainer.algo, dists["test"], cfg.eval, episodes, device, "test", autocast)
    return trainer.step, rate, s.mean, s.ci95, result.status


# ---- the run ------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--device", default="cuda")
    p.add_argument("--tiny", action="store_true", help="small shapes and counts (the test suite)")
    p.add_argument("--write", action="store_true", help="write the section of bench/RESULTS.md")
    p.add_argument(
        "--save",
        type=Path,
        default=None,
        help="also save the section alone to this file (the lent machine's $OUT: "
        "bench.results.write_section('device-check', text) puts it in RESULTS.md here)",
    )
    p.add_argument("--budget", type=float, default=BUDGET_S, help="seconds for the whole check")
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--train-steps", type=int, default=None)
    args = p.parse_args(argv)
    os.environ.setdefault(
        "WORKBENCH_CACHE", str(Path(tempfile.gettempdir()) / "workbench-device-cache")
    )
    clock = Clock(args.budget)
    device = torch.device(args.device if args.device != "cuda" else "cuda:0")
    if device.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA device here: run with --device cpu")
        return 2
    tiny = args.tiny
    repeats = args.repeats or (2 if tiny else 15)
    train_steps = args.train_steps or (3 if tiny else 600)
    out: list[str] = []
    failures: list[str] = []

    def say(line: str = "") -> None:
        print(line, flush=True)
        out.append(line)

    pol = policy_for(device)
    say(f"device check on {device} ({device_name(device)}), torch {torch.__version__}"
        + (f", CUDA {torch.version.cuda}" if device.type == "cuda" else "")
        + f", Python {sys.version.split()[0]}; carried: {CARRIED}")  # fmt: skip
    on = [k for k, v in vars(pol).items() if v]
    say(f"device policy for {device.type}: on: {', '.join(on) or 'none'}")
    folder = data_dir()
    say(
        f"Omniglot: {folder if folder and not tiny else 'glyphs stand in (' + ('--tiny' if tiny else 'no archives carried') + ')'}"
    )
    say()

    say("## finite-difference MAML meta-gradient check (float64, second order)")
    for paths in (False, True) if device.type != "cpu" else (False,):
        ok, line = finite_differences(device, tiny, paths)
        say(f"- {'CPU paths on' if paths else 'device policy'}: {line}")
        if not ok:
            failures.append("finite differences")
    say()
    say("## resume equivalence (deterministic algorithms on)")
    for algorithm in ("maml", "fomaml"):
        ok, line = resume_equivalence(device, algorithm, tiny)
        say(f"- {algorithm}: {line}")
        if not ok:
            failures.append(f"resume {algorithm}")
    say()

    say(
        "## step times (median ± IQR of one meta-training step; ratio: ours / it, > 1: it is slower)"
    )
    available = peers_available()
    for name, state in available.items():
        say(f"- {name}: {state}")
    say()
    say("| case | implementation | step | ratio | meta-gradient check |")
    say("|---|---|---|---|---|")
    keys = ("maml-5w1s-q1-so", "maml-5w1s-q1-fo", "protonet-60w5s")
    for case in (c for c in speed.CASES if c.key in keys):
        if clock.left() < 150:
            say(f"| {case.title} | skipped: time budget | | | |")
            continue
        for row in time_case(case, device, tiny, repeats, available, say):
            say(row)
    say()

    say("## short MAML Omniglot 5w1s training, fp32 and bf16 (same steps, test accuracy)")
    say("| precision | steps | steps/s | test accuracy (ci95) | status |")
    say("|---|---|---|---|---|")
    episodes = 10 if tiny else 200
    accs = {}
    for precision in ("fp32", "bf16"):
        seconds = max(10.0, (clock.left() - 30) / (2 if precision == "fp32" else 1) - 15)
        steps, rate, acc, ci, status = short_training(
            device, tiny, precision, train_steps, seconds, episodes
        )
        accs[precision] = acc
        say(f"| {precision} | {steps} | {rate:.1f} | {acc:.3f} ({ci:.3f}) | {status} |")
    say()
    verdict = "all checks passed" if not failures else "FAILED: " + ", ".join(failures)
    say(f"device check: {verdict} in {args.budget - clock.left():.0f} s")
    if args.write or args.save:
        from bench.results import stamp, write_section

        body = (
            "## GPU path (`bench/device_check.py --write`)\n\n" + stamp() + "\n\n" + "\n".join(out)
        )
        if args.save:
            args.save.parent.mkdir(parents=True, exist_ok=True)
            args.save.write_text(body + "\n", encoding="utf-8")
            print(f"saved the device-check section to {args.save}")
        if args.write:
            write_section("device-check", body)
            print("wrote the device-check section of bench/RESULTS.md")
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
