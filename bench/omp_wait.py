"""What OpenMP's wait policy costs and saves: libgomp's default against PASSIVE, quiet and loaded.

    python bench/omp_wait.py --write          # MLP and Conv-4 MAML steps, 1 and 2 threads; RESULTS.md
    python bench/omp_wait.py --tiny           # seconds (what the test suite runs)

Why: `import workbench` sets OMP_WAIT_POLICY=PASSIVE before torch loads libgomp (its OpenMP
runtime, torch's intra-op thread pool on the CPU build). With libgomp's default policy a
thread that finishes its share of an op spins before it sleeps, and when another process
wants the core (a second run, a benchmark, the GUI) the op's last thread waits out a scheduler
slice behind the spinner: a small MAML step on a busy 2-core machine went from 0.27 ms on 1
thread to 26 ms on 2. PASSIVE threads sleep at once, which could cost a quiet machine the
wake-up of every parallel op; this measures both sides in one run.

Method: one child process per wait policy (libgomp's default: the variable removed from the
child's environment and torch imported before workbench, which would set it; PASSIVE: set
in the environment) and torch thread count (1, 2), each holding two workloads built once:
  - MLP: a sinusoid-sized MAML-like step, x[25,40] @ w[40,40], ReLU, sum, the inner gradient
    with create_graph, one inner update, the query loss's backward (tensors drawn once);
  - Conv-4: second-order MAML on Conv-4 width 64, 28x28 glyphs images (Omniglot's size), 5-way
    1-shot, 15 queries a class, meta-batch 8, built as `bench/algorithm_steps.py` builds it,
    with `threads=<n>` set as the Trainer sets it (`torch.set_num_threads`; with 2 threads
    MAML runs the meta-batch's tasks on 2 task threads of 1 intra-op thread each,
    `core/task_threads.py`); one meta-batch drawn once; the step is zero_grad +
    meta_train_step.
The children start together, warm up, then the parent asks them in turn for a batch of
steps (a few untimed, then timed one by one), in rounds: each round measures the machine
quiet (no process of this script besides the measured child; whatever else runs on the
machine does, see the load average) and loaded (one extra process spinning in pure Python
for the whole phase, as a second run sharing the cores would), the two phases' order and the
children's order rotating each round, so that drift in the machine's load falls on all
alike. Reported: the median and IQR of the timed steps per workload, machine state, policy
and thread count, and the ratios PASSIVE / default and 2 threads / 1 thread.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.results import stamp, write_section  # noqa: E402  (imports no torch, no workbench)

POLICIES = ("default", "PASSIVE")
STATES = ("quiet", "loaded")
WORKLOADS = {  # name -> row label
    "mlp": "MLP 25x40 @ 40x40, 2nd order",
    "conv": "Conv-4 w64 28x28 5w1s q15 mb8, 2nd order",
}
TINY_LABELS = {"mlp": WORKLOADS["mlp"], "conv": "Conv-4 w8 14x14 5w1s q5 mb2, 2nd order"}
CONV = ["model.width=64", "dataset.image_size=28", "train.queries=15", "train.meta_batch=8"]
TINY_CONV = ["model.width=8", "dataset.image_size=14", "train.queries=5", "train.meta_batch=2"]
REPLY = "@omp-wait "  # prefix of a child's protocol lines on its stdout


# ---- the child: one policy and thread count, both workloads ---------------------------------
def loaded_libgomp() -> list[str]:
    """The OpenMP runtime(s) mapped into this process (Linux), by file name."""
    try:
        with open("/proc/self/maps", encoding="utf-8") as f:
            return sorted({ln.split()[-1].rsplit("/", 1)[-1] for ln in f if "libgomp" in ln})
    except OSError:
        return []


def child(policy: str, threads: int, tiny: bool) -> int:
    seen = os.environ.get("OMP_WAIT_POLICY")  # what libgomp reads when torch loads it
    import torch  # first, before workbench (which sets OMP_WAIT_POLICY if it is unset)

    import workbench  # noqa: F401
    from bench.algorithm_steps import algorithm_and_batch
    from workbench.core.config import default_config

    torch.set_num_threads(threads)
    gomp = loaded_libgomp()
    backend = next(
        (ln.split(":", 1)[1].strip() for ln in torch.__config__.parallel_info().splitlines()
         if ln.startswith("ATen parallel backend")), "?")  # fmt: skip

    g = torch.Generator().manual_seed(0)
    x = torch.randn(25, 40, generator=g)
    xq = torch.randn(25, 40, generator=g)
    w = (torch.randn(40, 40, generator=g) / 40**0.5).requires_grad_()

    def mlp_step() -> None:
        w.grad = None
        loss = torch.relu(x @ w).sum()
        (grad,) = torch.autograd.grad(loss, w, create_graph=True)
        torch.relu(xq @ (w - 0.01 * grad)).sum().backward()

    cfg = default_config("maml", "glyphs").with_overrides(
        ["train.ways=5", "train.shots=1", "eval.ways=5", "algorithm.first_order=false",
         f"threads={threads}", *(TINY_CONV if tiny else CONV)]
    )  # fmt: skip
    algo, batch = algorithm_and_batch(cfg)
    algo.train()

    def conv_step() -> None:
        algo.zero_grad(set_to_none=True)
        algo.meta_train_step(batch, cfg.train)

    steps = {"mlp": mlp_step, "conv": conv_step}
    hello = {"policy_at_torch_import": seen, "threads": torch.get_num_threads(),
             "libgomp": gomp, "backend": backend}  # fmt: skip
    print(REPLY + json.dumps(hello), flush=True)
    for line in sys.stdin:  # "<workload> <untimed> <timed>" or "quit"
        parts = line.split()
        if not parts or parts[0] == "quit":
            break
        fn, untimed, timed = steps[parts[0]], int(parts[1]), int(parts[2])
        for _ in range(untimed):
            fn()
        times = []
        for _ in range(timed):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        print(REPLY + json.dumps(times), flush=True)
    return 0


# ---- the parent ------------------------------------------------------------------------------
class Child:
    def __init__(self, policy: str, threads: int, tiny: bool) -> None:
        self.policy, self.threads = policy, threads
        env = {
            k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
        }
        if policy != "default":
            env["OMP_WAIT_POLICY"] = policy
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", policy, str(threads)]
        self.proc = subprocess.Popen(cmd + (["--tiny"] if tiny else []), stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, cwd=ROOT, env=env)  # fmt: skip
        self.hello: dict = {}

    def reply(self) -> object:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith(REPLY):
                return json.loads(line[len(REPLY) :])
        raise RuntimeError(f"child {self.policy}/{self.threads} ended (rc {self.proc.wait()})")

    def run(self, workload: str, untimed: int, timed: int) -> list[float]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{workload} {untimed} {timed}\n")
        self.proc.stdin.flush()
        return self.reply()  # type: ignore[return-value]

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write("quit\n")
                self.proc.stdin.close()
                self.proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


def spinner() -> subprocess.Popen:
    """The loaded machine's other run: one process busy on one core until killed."""
    # spins until killed, or until this script is gone (a killed test must leave no spinner)
    code = "import os\np = os.getppid()\nwhile os.getppid() == p:\n    for _ in range(10**5): pass"
    proc = subprocess.Popen([sys.executable, "-c", code])
    time.sleep(0.2)  # running (and scheduled) before the phase's first step
    return proc


def measure(configs, rounds, plan, tiny):
    """times[(workload, state, policy, threads)] -> step times (s); and the children's hellos."""
    children = [Child(p, n, tiny) for p, n in configs]
    times: dict[tuple[str, str, str, int], list[float]] = {}
    try:
        for c in children:
            c.hello = c.reply()  # type: ignore[assignment]
        for c in children:  # warm-up, quiet
            for workload, (_untimed, _timed, warm) in plan.items():
                c.run(workload, warm, 0)
        for r in range(rounds):
            for state in STATES[r % 2 :] + STATES[: r % 2]:
                busy = spinner() if state == "loaded" else None
                try:
                    for workload, (untimed, timed, _warm) in plan.items():
                        k = r % len(children)
                        for c in children[k:] + children[:k]:
                            key = (workload, state, c.policy, c.threads)
                            times.setdefault(key, []).extend(c.run(workload, untimed, timed))
                finally:
                    if busy is not None:
                        busy.kill()
                        busy.wait()
    finally:
        for c in children:
            c.close()
    return times, {(c.policy, c.threads): c.hello for c in children}


def summarize(ts: list[float]) -> tuple[float, float, float]:
    """Median, IQR and mean, in ms."""
    med = statistics.median(ts)
    q = statistics.quantiles(ts, n=4) if len(ts) > 1 else [med, med, med]
    return med * 1e3, (q[2] - q[0]) * 1e3, statistics.fmean(ts) * 1e3


def ratio(a: tuple[float, float, float], b: tuple[float, float, float]) -> str:
    """a / b: of means, and of medians in brackets."""
    return f"{a[2] / b[2]:.2f} ({a[0] / b[0]:.2f})"


def ms(v: float) -> str:
    return (
        f"{v:.0f}" if v >= 100 else f"{v:.1f}" if v >= 10 else f"{v:.2f}" if v >= 1 else f"{v:.3f}"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--tiny", action="store_true", help="small shapes, 2 threads only, 1 round")
    p.add_argument("--write", action="store_true", help="write the RESULTS.md section")
    p.add_argument("--child", nargs=2, metavar=("POLICY", "THREADS"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return child(args.child[0], int(args.child[1]), args.tiny)

    if args.tiny:
        configs = [(pol, 2) for pol in POLICIES]
        rounds, plan, labels = 1, {"mlp": (5, 20, 20), "conv": (0, 2, 0)}, TINY_LABELS
    else:
        configs = [(pol, n) for n in (1, 2) for pol in POLICIES]
        # workload -> (untimed steps before each batch, timed steps a batch, warm-up steps)
        rounds, plan, labels = args.rounds, {"mlp": (20, 100, 200), "conv": (0, 2, 2)}, WORKLOADS
    load0 = os.getloadavg()
    t0 = time.perf_counter()
    times, hellos = measure(configs, rounds, plan, args.tiny)
    wall, load1 = time.perf_counter() - t0, os.getloadavg()

    seen = "; ".join(
        f"{pol}/{n} thread(s): OMP_WAIT_POLICY={h['policy_at_torch_import'] or 'unset'} at "
        f"torch import, {h['threads']} thread(s), {', '.join(h['libgomp']) or 'no libgomp'}"
        for (pol, n), h in hellos.items()
    )
    backend = {h["backend"] for h in hellos.values()}
    threads = sorted({n for _, n in configs})
    lines = [
        "## OpenMP wait policy: libgomp's default against PASSIVE (`bench/omp_wait.py`)",
        "",
        f"{stamp()}; ATen parallel backend {', '.join(sorted(backend))}. One child process per "
        f"policy and thread count ({seen}); {rounds} rounds, each measuring every child quiet "
        "and loaded (one extra process spinning on a core for the phase), phases and children "
        f"alternated; {wall:.0f} s in all. The machine's own load average (1 min) was "
        f"{load0[0]:.1f} before and {load1[0]:.1f} after, on {os.cpu_count()} CPUs: 'quiet' "
        "is without this script's extra process, not an idle machine. Steps timed one by one "
        f"({', '.join(f'{w}: {plan[w][1]} a batch after {plan[w][0]} untimed' for w in plan)}); "
        "ms per step: median, IQR and mean (the mean is what a run's throughput sees, the "
        "median hides a few very slow steps); the ratios are of means (of medians in brackets).",
        "",
        "| workload | machine | torch threads | default median | IQR | mean | PASSIVE median | "
        "IQR | mean | PASSIVE / default | default / 1 thread | PASSIVE / 1 thread |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    summary = []
    for workload in plan:
        for state in STATES:
            for n in threads:
                d = summarize(times[(workload, state, "default", n)])
                s = summarize(times[(workload, state, "PASSIVE", n)])
                vs1 = ["–", "–"]
                if n != 1 and 1 in threads:
                    d1 = summarize(times[(workload, state, "default", 1)])
                    s1 = summarize(times[(workload, state, "PASSIVE", 1)])
                    vs1 = [ratio(d, d1), ratio(s, s1)]
                lines.append(
                    f"| {labels[workload]} | {state} | {n} | {ms(d[0])} | {ms(d[1])} | {ms(d[2])} "
                    f"| {ms(s[0])} | {ms(s[1])} | {ms(s[2])} | {ratio(s, d)} | {vs1[0]} | {vs1[1]} |"
                )
            n = max(threads)
            d = summarize(times[(workload, state, "default", n)])
            s = summarize(times[(workload, state, "PASSIVE", n)])
            summary.append(
                f"- {labels[workload]}, {n} threads, {state} machine: PASSIVE / default "
                f"{ratio(s, d)} (mean {ms(s[2])} against {ms(d[2])} ms a step)"
            )
    lines += ["", *summary]
    text = "\n".join(lines)
    print(text)
    if args.write and not args.tiny:
        write_section("omp-wait", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
