"""Time ONE meta-training step of our MAML (2nd and 1st order), ProtoNet and Meta-LSTM against peers.

    python bench/speed.py                      # all configurations, 2 torch threads, peers venv
    python bench/speed.py --threads 1 --write  # 1 thread; update bench/RESULTS.md ("speed")
    python bench/speed.py --bf16               # also a bf16-autocast row for ours
    python bench/speed.py --no-peers --only maml-5w1s-q1-so
    python bench/speed.py --tiny --no-peers    # seconds, on glyphs (what the test suite runs)

Peers: `higher` (innerloop_ctx) and learn2learn 0.2.0 (MAML.clone/adapt) for MAML, a plain
ProtoNet (expand-and-subtract distances as in Snell et al.'s code, and torch.cdist) and a
plain Meta-LSTM written the straightforward way (markdtw's structure: a stateful learner
whose flat parameters are copied in each step and whose .grad feeds the meta-learner). The
peers live in their own venv outside the project (bench/peers.py creates it); this script
re-executes itself with that venv's python, so ours and the peers run in one process with the
same torch. Our step is the real code path: `algo.meta_train_step(batch, shape)` of the
algorithm `workbench.core.engine.build_algorithm` builds (under bf16 autocast for `--bf16`).

Method: one set of initial weights (every implementation gets a copy), one meta-batch of
episodes sampled once with a fixed generator, a meta-gradient check against ours (fp32,
rtol 1e-4) before anything is timed (a mismatch drops that peer, with a message), then
warm-up rounds and timed rounds that alternate the implementations round-robin (the order
rotates each round). Reported: median and IQR of the wall time of one step (zero_grad +
forward + backward of all tasks of the meta-batch; not the Adam update, identical for all),
ours/peer ratio of medians (< 1: ours is faster), achieved GFLOP/s (FLOPs counted with
torch.utils.flop_counter on one step) against the measured fp32/bf16 2048x2048 matmul peak,
and the cost of sampling the meta-batch as a percentage of our step.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from bench import peers  # noqa: E402
from workbench.core.config import RunConfig, TaskShape  # noqa: E402
from workbench.core.engine import build_algorithm  # noqa: E402
from workbench.core.episode_stream import EpisodeStream  # noqa: E402
from workbench.core.memory import reuse_freed_memory  # noqa: E402
from workbench.core.presets import get_preset  # noqa: E402
from workbench.core.tasks import DATASETS  # noqa: E402
from workbench.core.tasks.base import EpisodeBatch, TaskDistribution  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "omniglot"
IN_PEERS = "WORKBENCH_SPEED_IN_PEERS"  # set when re-executed inside the peers venv
PEER_STATUS = "WORKBENCH_SPEED_PEER_STATUS"
RTOL, ATOL = 1e-4, 1e-6
TASK_THREADS = " (ours: MAML tasks on that many threads, 1 intra-op thread each)"
META_LSTM = ["algorithm.name=meta-lstm", "model.width=32", "model.downsample=maxpool", "train.inner_steps=5",
             "train.meta_batch=1", "train.queries=15", "algorithm.grad_clip=0.25"]  # as bench/accuracy.py  # fmt: skip


@dataclass(frozen=True)
class Case:
    key: str
    title: str
    preset: str
    overrides: tuple[str, ...]
    peers: tuple[str, ...]


CASES = [
    Case("maml-5w1s-q1-so", "MAML 5w1s, 1 query/class, 2nd order", "maml-omniglot-5w1s", (), ("higher", "learn2learn")),
    Case("maml-5w1s-q1-fo", "MAML 5w1s, 1 query/class, 1st order", "maml-omniglot-5w1s", ("algorithm.name=fomaml",), ("higher", "learn2learn")),
    Case("maml-5w1s-q15-so", "MAML 5w1s, 15 queries/class, 2nd order", "maml-omniglot-5w1s", ("train.queries=15",), ("higher", "learn2learn")),
    Case("maml-5w1s-q15-fo", "MAML 5w1s, 15 queries/class, 1st order", "maml-omniglot-5w1s", ("algorithm.name=fomaml", "train.queries=15"), ("higher", "learn2learn")),
    Case("maml-20w1s-so", "MAML 20w1s, 5 steps, 2nd order", "maml-omniglot-20w1s", (), ("higher", "learn2learn")),
    Case("maml-20w1s-fo", "MAML 20w1s, 5 steps, 1st order", "maml-omniglot-20w1s", ("algorithm.name=fomaml",), ("higher", "learn2learn")),
    Case("protonet-60w5s", "ProtoNet 60w5s 5 queries/class", "protonet-omniglot-5w1s", ("train.ways=60", "train.shots=5", "train.queries=5"), ("plain", "plain-cdist")),
    Case("meta-lstm-5w1s", "Meta-LSTM 5w1s, 5 steps, 15 queries/class", "maml-omniglot-5w1s", tuple(META_LSTM), ("plain",)),
]  # fmt: skip


# ---- implementations ------------------------------------------------------------------------
class Impl:
    """One way of computing the meta-gradient of a meta-batch; `grads()` keyed by our names."""

    name = "?"

    def params(self) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def step(self, batch: EpisodeBatch) -> None:
        raise NotImplementedError

    def zero(self) -> None:
        for p in self.params().values():
            p.grad = None

    def grads(self) -> dict[str, torch.Tensor]:
        return {
            k: (p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p))
            for k, p in self.params().items()
        }


class Ours(Impl):
    """Our real code path: the built algorithm's meta_train_step (bf16: under CPU autocast)."""

    def __init__(self, algo: nn.Module, shape: TaskShape, bf16: bool = False) -> None:
        self.algo, self.shape, self.bf16 = algo, shape, bf16
        self.name = "ours bf16" if bf16 else "ours"
        algo.train()

    def params(self) -> dict[str, torch.Tensor]:
        return {k: p for k, p in self.algo.named_parameters() if p.requires_grad}

    def step(self, batch: EpisodeBatch) -> None:
        self.zero()
        ctx = torch.autocast("cpu", dtype=torch.bfloat16) if self.bf16 else contextlib.nullcontext()
        with ctx:
            self.algo.meta_train_step(batch, self.shape)


class PlainConv4(nn.Module):
    """The Conv-4 a peer's user writes: stock `nn.Conv2d`, `nn.BatchNorm2d` (batch statistics),
    ReLU, (max-pool,) mean over the final map or flatten, `nn.Linear`; default NCHW layout, as
    in higher's and learn2learn's Omniglot examples. Built from ours with the same weights and
    state-dict keys, so every implementation computes the same function."""

    def __init__(self, ours: nn.Module) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for m in ours.features:
            if isinstance(m, nn.Conv2d):
                layers.append(
                    nn.Conv2d(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding)
                )
            elif isinstance(m, nn.BatchNorm2d):
                layers.append(nn.BatchNorm2d(m.num_features, eps=m.eps, track_running_stats=False))
            else:
                layers.append(copy.deepcopy(m))
        self.features = nn.Sequential(*layers)
        self.average = ours.average
        self.head = copy.deepcopy(ours.head) if ours.head is not None else None
        self.to(next(ours.parameters()).dtype)
        self.load_state_dict({k: v.contiguous() for k, v in ours.state_dict().items()})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x)
        h = h.mean(dim=(2, 3)) if self.average else h.flatten(1)
        return self.head(h) if self.head is not None else h


def plain_model(model: nn.Module) -> nn.Module:
    return PlainConv4(model) if hasattr(model, "features") else copy.deepcopy(model)


class ModelImpl(Impl):
    """A peer holding its own copy of the learner (names prefixed like ours: "model.")."""

    def __init__(self, model: nn.Module) -> None:
        self.model = plain_model(model).train()
        for p in self.model.parameters():
            p.requires_grad_(True)

    def params(self) -> dict[str, torch.Tensor]:
        return {f"model.{k}": p for k, p in self.model.named_parameters()}


class HigherMAML(ModelImpl):
    """MAML the way higher's examples/maml-omniglot.py writes it: innerloop_ctx per task.

    First order: track_higher_grads=False (the fast weights are detached leaves) and the query
    gradient at the adapted weights is added to the initial weights' .grad.
    """

    name = "higher"

    def __init__(self, model: nn.Module, steps: int, lr: float, first_order: bool) -> None:
        import higher

        super().__init__(model)
        self.higher, self.steps, self.lr, self.first_order = higher, steps, lr, first_order
        self.inner_opt = torch.optim.SGD(self.model.parameters(), lr=lr)

    def step(self, batch: EpisodeBatch) -> None:
        self.zero()
        n = len(batch)
        for i in range(n):
            with self.higher.innerloop_ctx(self.model, self.inner_opt, copy_initial_weights=False,
                                           track_higher_grads=not self.first_order) as (fmodel, diffopt):  # fmt: skip
                for _ in range(self.steps):
                    diffopt.step(F.cross_entropy(fmodel(batch.support_x[i]), batch.support_y[i]))
                loss = F.cross_entropy(fmodel(batch.query_x[i]), batch.query_y[i])
                if self.first_order:
                    fast = list(fmodel.parameters())
                    grads = torch.autograd.grad(loss / n, fast)
                    for p, g in zip(self.model.parameters(), grads, strict=True):
                        p.grad = g if p.grad is None else p.grad + g
                else:
                    (loss / n).backward()


class L2LMAML(ModelImpl):
    """learn2learn's MAML wrapper: clone() per task, adapt() per inner step."""

    name = "learn2learn"

    def __init__(self, model: nn.Module, steps: int, lr: float, first_order: bool) -> None:
        maml_cls = peers.import_l2l_maml()
        super().__init__(model)
        self.maml = maml_cls(self.model, lr=lr, first_order=first_order)
        self.steps = steps

    def step(self, batch: EpisodeBatch) -> None:
        self.zero()
        n = len(batch)
        for i in range(n):
            learner = self.maml.clone()
            for _ in range(self.steps):
                learner.adapt(F.cross_entropy(learner(batch.support_x[i]), batch.support_y[i]))
            loss = F.cross_entropy(learner(batch.query_x[i]), batch.query_y[i])
            (loss / n).backward()


class PlainProtoNet(ModelImpl):
    """Snell et al.'s training step: one pass over support+query, mean prototypes,
    squared Euclidean distances by expand-and-subtract (or torch.cdist), NCHW, no tricks."""

    def __init__(self, model: nn.Module, cdist: bool) -> None:
        super().__init__(model)
        self.cdist = cdist
        self.name = "plain-cdist" if cdist else "plain"

    def step(self, batch: EpisodeBatch) -> None:
        self.zero()
        n, ways = len(batch), batch.ways
        for i in range(n):
            xs, xq = batch.support_x[i], batch.query_x[i]
            z = self.model(torch.cat([xs, xq], 0))
            zs, zq = z[: xs.shape[0]], z[xs.shape[0] :]
            protos = zs.view(ways, xs.shape[0] // ways, -1).mean(1)  # support is class-major
            if self.cdist:
                dists = torch.cdist(zq, protos).pow(2)
            else:
                dists = (zq.unsqueeze(1) - protos.unsqueeze(0)).pow(2).sum(2)
            loss = F.cross_entropy(-dists, batch.query_y[i])
            (loss / n).backward()


class PlainMetaLSTM(Impl):
    """Ravi & Larochelle's step written plainly, in the structure of markdtw's PyTorch port:

    a stateful learner `learner_w_grad` gets the flat parameters cI copied in (`.data`), its
    loss.backward() fills .grad, the flattened .grad and the loss are preprocessed (p = 10) and
    fed to an LSTMCell and to the coordinate-wise meta cell (f, i gates over [h, cI, f/i]);
    the query pass uses `learner_wo_grad` whose parameters are replaced by views of cI
    (markdtw's transfer_params). Same mathematics as ours (sigmoided gate state, our input
    order [grad, loss]); weights are copies of ours.
    """

    name = "plain"

    def __init__(self, algo: nn.Module, steps: int) -> None:
        self.steps = steps
        self.p = float(algo.params.preprocess_p)
        self.hidden = int(algo.params.hidden)
        self.learner_w_grad = plain_model(algo.model).train()
        for q in self.learner_w_grad.parameters():
            q.requires_grad_(True)
        self.learner_wo_grad = plain_model(algo.model).train()
        self.lstm = copy.deepcopy(algo.lstm)
        cell = algo.cell
        self.WF = nn.Parameter(cell.W_f.detach().clone())
        self.WI = nn.Parameter(cell.W_i.detach().clone())
        self.bF = nn.Parameter(cell.b_f.detach().clone())
        self.bI = nn.Parameter(cell.b_i.detach().clone())
        self.cI = nn.Parameter(cell.theta0.detach().clone())

    def params(self) -> dict[str, torch.Tensor]:
        out = {f"lstm.{k}": q for k, q in self.lstm.named_parameters()}
        out.update(
            {
                "cell.W_f": self.WF,
                "cell.W_i": self.WI,
                "cell.b_f": self.bF,
                "cell.b_i": self.bI,
                "cell.theta0": self.cI,
            }
        )
        return out

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        big = x.abs() >= math.exp(-self.p)
        x1 = torch.where(
            big, torch.log(x.abs().clamp_min(1e-38)) / self.p, torch.full_like(x, -1.0)
        )
        x2 = torch.where(big, torch.sign(x), math.exp(self.p) * x)
        return torch.stack((x1, x2), 1)

    def copy_flat_params(self, cI: torch.Tensor) -> None:
        idx = 0
        for q in self.learner_w_grad.parameters():
            q.data.copy_(cI[idx : idx + q.numel()].view_as(q))
            idx += q.numel()

    def transfer_params(self, cI: torch.Tensor) -> None:
        idx = 0
        for m in self.learner_wo_grad.modules():
            if isinstance(m, nn.Conv2d | nn.BatchNorm2d | nn.Linear):
                for key in ("weight", "bias"):
                    w = m._parameters[key]
                    m._parameters[key] = cI[idx : idx + w.numel()].view_as(w)  # type: ignore[assignment]
                    idx += w.numel()

    def step(self, batch: EpisodeBatch) -> None:
        self.zero()
        n = len(batch)
        for k in range(n):
            x, y = batch.support_x[k], batch.support_y[k]
            cI = self.cI
            size = cI.numel()
            hx = cI.new_zeros(size, self.hidden)
            cx = cI.new_zeros(size, self.hidden)
            f = cI.new_zeros(size, 1)
            i = cI.new_zeros(size, 1)
            for _ in range(self.steps):
                self.copy_flat_params(cI.detach())
                loss = F.cross_entropy(self.learner_w_grad(x), y)
                self.learner_w_grad.zero_grad()
                loss.backward()
                grad = torch.cat(
                    [q.grad.data.reshape(-1) for q in self.learner_w_grad.parameters()], 0
                )
                inp = torch.cat([self.preprocess(grad), self.preprocess(loss.data.expand(size))], 1)
                hx, cx = self.lstm(inp, (hx, cx))
                f = torch.sigmoid(torch.mm(torch.cat((hx, cI[:, None], f), 1), self.WF) + self.bF)
                i = torch.sigmoid(torch.mm(torch.cat((hx, cI[:, None], i), 1), self.WI) + self.bI)
                cI = f[:, 0] * cI - i[:, 0] * grad
            self.transfer_params(cI)
            loss = F.cross_entropy(self.learner_wo_grad(batch.query_x[k]), batch.query_y[k])
            (loss / n).backward()


# ---- setting up one case --------------------------------------------------------------------
def case_config(case: Case, tiny: bool) -> RunConfig:
    cfg = get_preset(case.preset).run_config().with_overrides(list(case.overrides))
    if tiny or not DATA.is_dir():
        extra = ["dataset.name=glyphs"]
        if tiny:
            extra.append(f"train.meta_batch={min(2, cfg.train.meta_batch)}")
            t = cfg.train  # small enough for the test suite; same code paths
            extra += [
                f"train.ways={min(t.ways, 10)}",
                f"train.queries={min(t.queries, 5)}",
                f"train.inner_steps={min(t.inner_steps, 2)}",
            ]
        return cfg.with_overrides(extra)
    return cfg.with_overrides([f"dataset.data_dir={DATA}"])


_DISTS: dict[str, TaskDistribution] = {}


def distribution(cfg: RunConfig) -> TaskDistribution:
    key = cfg.dataset.model_dump_json()
    if key not in _DISTS:
        _DISTS[key] = DATASETS.get(cfg.dataset.name)().build(cfg.dataset, "train")
    return _DISTS[key]


def make_peer(name: str, case: Case, cfg: RunConfig, algo: nn.Module) -> Impl:
    if name in ("higher", "learn2learn"):
        cls = HigherMAML if name == "higher" else L2LMAML
        fo = bool(getattr(cfg.algorithm, "first_order", False))
        return cls(algo.model, cfg.train.inner_steps, float(cfg.algorithm.inner_lr), fo)  # type: ignore[attr-defined]
    if case.key.startswith("protonet"):
        return PlainProtoNet(algo.model, cdist=name == "plain-cdist")
    return PlainMetaLSTM(algo, cfg.train.inner_steps)


def peer_impls(
    case: Case, cfg: RunConfig, algo: nn.Module, available: dict[str, str]
) -> tuple[list[Impl], list[str]]:
    """The case's peers that can run here, and one line for each that cannot."""
    impls: list[Impl] = []
    skipped: list[str] = []
    for name in case.peers:
        if name in ("higher", "learn2learn") and available.get(name) != "ok":
            skipped.append(f"{name}: skipped ({available.get(name, 'peers venv not used')})")
            continue
        try:
            impls.append(make_peer(name, case, cfg, algo))
        except Exception as exc:  # an import that fails inside the peers venv
            skipped.append(f"{name}: skipped ({type(exc).__name__}: {exc})")
    return impls, skipped


def check_fp64(case: Case, cfg: RunConfig, algo: nn.Module, name: str, batch: EpisodeBatch,
               fp32: dict[str, dict[str, torch.Tensor]]) -> tuple[bool, str]:  # fmt: skip
    """The same comparison with ours and the peer in float64 (weights and episodes converted),
    plus how far each fp32 meta-gradient in `fp32` lies from the float64 one: where two fp32
    results differ, this says whether one of them is the less accurate."""
    algo64 = copy.deepcopy(algo).double()
    b64 = EpisodeBatch(
        batch.support_x.double(), batch.support_y, batch.query_x.double(), batch.query_y, batch.ways
    )
    ours = Ours(algo64, cfg.train)
    peer = make_peer(name, case, cfg, algo64)
    ours.step(b64)
    peer.step(b64)
    exact = ours.grads()
    ok, summary = compare(exact, peer.grads())
    scale = max(float(g.abs().max()) for g in exact.values())
    errs = ", ".join(
        f"{impl} {max(float((g[k].double() - exact[k]).abs().max()) for k in exact) / scale:.1e}"
        for impl, g in fp32.items()
    )
    return ok, f"{summary}; fp32 error vs fp64 (max |diff| / largest |grad|): {errs}"


def compare(ref: dict[str, torch.Tensor], got: dict[str, torch.Tensor]) -> tuple[bool, str]:
    """Meta-gradients agree (rtol 1e-4, atol 1e-6) on every parameter; a one-line summary."""
    if ref.keys() != got.keys():
        return False, f"different parameters: {sorted(ref.keys() ^ got.keys())[:4]}"
    worst_abs = worst_rel = 0.0
    bad = []
    scale = max(float(g.abs().max()) for g in ref.values())
    for k in ref:
        a, b = ref[k].float(), got[k].float()
        diff = (a - b).abs()
        worst_abs = max(worst_abs, float(diff.max()))
        big = a.abs() >= 1e-3 * scale  # relative error where it means something
        if bool(big.any()):
            worst_rel = max(worst_rel, float((diff[big] / a[big].abs()).max()))
        if not torch.allclose(b, a, rtol=RTOL, atol=ATOL):
            bad.append(k)
    summary = f"max |diff| {worst_abs:.1e} (largest |grad| {scale:.1e}), max rel {worst_rel:.1e} (entries >= 1e-3 of the largest)"
    if bad:
        return False, f"MISMATCH in {len(bad)} tensors ({', '.join(bad[:3])}): {summary}"
    return True, f"agree: {summary}"


def count_flops(impl: Impl, batch: EpisodeBatch) -> int:
    """FLOPs of one step, counted on one thread: the counter (a dispatch mode) sees only the
    thread it is entered on, not our task threads."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with FlopCounterMode(display=False) as counter:
            impl.step(batch)
    finally:
        torch.set_num_threads(threads)
    return int(counter.get_total_flops())


def stats(xs: list[float]) -> tuple[float, float]:
    """Median and interquartile range."""
    if len(xs) < 2:
        return xs[0], 0.0
    q = statistics.quantiles(xs, n=4, method="inclusive")
    return statistics.median(xs), q[2] - q[0]


def timed(fn: Callable[[], Any]) -> float:
    gc.collect()
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def matmul_peak(dtype: torch.dtype, n: int, repeats: int) -> float:
    """Best GFLOP/s of an n x n matmul in this process (the machine's practical peak)."""
    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    torch.mm(a, b)
    best = min(timed(lambda: torch.mm(a, b)) for _ in range(repeats))
    return 2 * n**3 / best / 1e9


@dataclass
class Row:
    case: Case
    impl: str
    median: float = float("nan")
    iqr: float = float("nan")
    flops: int = 0
    check: str = ""
    timed: bool = True


@dataclass
class CaseResult:
    case: Case
    cfg: RunConfig
    rows: list[Row] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    sample: tuple[float, float] = (float("nan"), float("nan"))
    wait: tuple[float, float] = (float("nan"), float("nan"))  # the trainer's, drawing ahead


def run_case(
    case: Case, args: argparse.Namespace, available: dict[str, str], log: Callable[[str], None]
) -> CaseResult:
    cfg = case_config(case, args.tiny)
    dist = distribution(cfg)
    shape = cfg.train
    gen = torch.Generator().manual_seed(args.seed)
    batch = dist.sample(shape, shape.meta_batch, gen)  # the episodes every implementation gets
    torch.manual_seed(args.seed)
    algo = build_algorithm(cfg, dist.input_shape, torch.device("cpu"))
    ours = Ours(algo, shape)
    res = CaseResult(case, cfg)
    impls, res.skipped = peer_impls(case, cfg, algo, available)

    # meta-gradient check before any timing: fp32, same weights, same episodes
    ours.step(batch)
    ref = ours.grads()
    checked: list[Impl] = [ours]
    res.rows.append(Row(case, "ours", check="reference"))
    if args.bf16:
        b16 = Ours(algo, shape, bf16=True)
        b16.step(batch)
        _, summary = compare(ref, b16.grads())
        checked.append(b16)
        res.rows.append(
            Row(case, b16.name, check="bf16 vs fp32 (not checked): " + summary.split(": ", 1)[-1])
        )
    for impl in impls:
        impl.step(batch)
        got = impl.grads()
        ok, summary = compare(ref, got)
        if not ok:
            # different but equally valid op orders round differently, and second-order MAML
            # amplifies fp32 rounding (20-way, 5 steps: percent-level); the same check in float64
            # separates rounding from different maths
            ok, summary64 = check_fp64(
                case, cfg, algo, impl.name, batch, {"ours": ref, impl.name: got}
            )
            summary = f"fp32 {summary}; fp64 {summary64}"
        if ok:
            checked.append(impl)
            res.rows.append(Row(case, impl.name, check=summary))
        else:
            log(
                f"  {case.key}: {impl.name} meta-gradient disagrees with ours; comparison aborted: {summary}"
            )
            res.rows.append(Row(case, impl.name, check=summary, timed=False))

    rows = {r.impl: r for r in res.rows}
    for impl in checked:
        rows[impl.name].flops = count_flops(impl, batch)

    times: dict[str, list[float]] = {impl.name: [] for impl in checked}
    for r in range(args.warmup + args.repeats):
        k = r % len(checked)
        for impl in checked[k:] + checked[:k]:  # round-robin, rotating who goes first
            dt = timed(lambda impl=impl: impl.step(batch))
            if r >= args.warmup:
                times[impl.name].append(dt)
    for name, xs in times.items():
        rows[name].median, rows[name].iqr = stats(xs)

    # sampling the meta-batch (the same distribution and shape) against our step
    sgen = torch.Generator().manual_seed(args.seed + 1)
    dist.sample(shape, shape.meta_batch, sgen)
    res.sample = stats(
        [
            timed(lambda: dist.sample(shape, shape.meta_batch, sgen))
            for _ in range(max(5, args.repeats))
        ]
    )
    # the trainer draws each meta-batch during the step before (EpisodeStream): what it waits
    stream = EpisodeStream(dist, shape, shape.meta_batch, torch.Generator().manual_seed(args.seed))
    ours.step(stream.next())  # the first batch is drawn inline
    waits = []
    for _ in range(max(5, args.repeats)):
        t0 = time.perf_counter()
        b = stream.next()
        waits.append(time.perf_counter() - t0)
        ours.step(b)
    res.wait = stats(waits)
    return res


# ---- report ---------------------------------------------------------------------------------
def describe(cfg: RunConfig) -> str:
    t = cfg.train
    alg = cfg.algorithm
    lr = f", alpha {alg.inner_lr}" if hasattr(alg, "inner_lr") else ""
    return (f"{cfg.dataset.name} {t.ways}-way {t.shots}-shot, {t.queries} quer{'y' if t.queries == 1 else 'ies'}/class, "
            f"meta-batch {t.meta_batch}, {t.inner_steps} inner step(s){lr}, Conv-4 {cfg.model.width} {cfg.model.downsample}")  # fmt: skip


def table(results: list[CaseResult], peak32: float, peak16: float) -> list[str]:
    lines = [
        "| configuration | implementation | median ms | IQR ms | ours/impl | GFLOP/step | GFLOP/s | % of peak |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for res in results:
        ours = next(r for r in res.rows if r.impl == "ours")
        for row in res.rows:
            if not row.timed:
                lines.append(
                    f"| {res.case.title} | {row.impl} | — | — | aborted: gradients disagree | — | — | — |"
                )
                continue
            ratio = "1" if row.impl == "ours" else f"{ours.median / row.median:.2f}"
            gflops = row.flops / row.median / 1e9
            peak = peak16 if "bf16" in row.impl else peak32
            lines.append(
                f"| {res.case.title} | {row.impl} | {1e3 * row.median:.1f} | {1e3 * row.iqr:.1f} | {ratio} | "
                f"{row.flops / 1e9:.2f} | {gflops:.1f} | {100 * gflops / peak:.0f}% |"
            )
        for line in res.skipped:
            lines.append(f"| {res.case.title} | {line} | — | — | — | — | — | — |")
    return lines


def report(
    results: list[CaseResult],
    threads: int,
    peak32: float,
    peak16: float,
    args: argparse.Namespace,
    peers_line: str,
) -> list[str]:
    lines = [
        f"### {threads} torch thread(s)",
        "",
        f"{stamp_or_plain(args)}; `torch.set_num_threads({threads})`{TASK_THREADS if threads > 1 else ''}; {args.repeats} timed rounds after {args.warmup} warm-up, "
        f"implementations alternated round-robin; {args.malloc} for all; matmul peak (best 2048x2048) fp32 {peak32:.0f} GFLOP/s, bf16 {peak16:.0f} GFLOP/s; peers: {peers_line}.",
        "",
        *table(results, peak32, peak16),
        "",
        "Meta-gradient check against ours before timing: fp32, rtol 1e-4, atol 1e-6; where fp32 fails, the same check in fp64 decides (timed only if it agrees), and each fp32 result's distance from the fp64 meta-gradient is shown:",
        "",
    ]
    for res in results:
        for row in res.rows:
            if row.impl != "ours":
                lines.append(f"- {res.case.title}, {row.impl}: {row.check}")
    lines += [
        "",
        "Sampling the meta-batch from the task distribution (`dist.sample`) vs our fp32 step, and what the training "
        "loop waits for it: the trainer draws each meta-batch on a background thread during the step before "
        "(`workbench/core/episode_stream.py`), so it waits only for the hand-over:",
        "",
    ]
    lines += [
        "| configuration | setting | sampling ms (median, IQR) | % of our step | trainer's wait ms (median, IQR) | % of our step |",
        "|---|---|---|---|---|---|",
    ]
    for res in results:
        ours = next(r for r in res.rows if r.impl == "ours")
        lines.append(
            f"| {res.case.title} | {describe(res.cfg)} | {1e3 * res.sample[0]:.2f} ({1e3 * res.sample[1]:.2f}) | {100 * res.sample[0] / ours.median:.1f}% | "
            f"{1e3 * res.wait[0]:.3f} ({1e3 * res.wait[1]:.3f}) | {100 * res.wait[0] / ours.median:.2f}% |"
        )
    return lines


def stamp_or_plain(args: argparse.Namespace) -> str:
    from bench.results import stamp

    return stamp()


def merge(existing: str, key: str, block: str) -> str:
    """Replace (or append) the sub-block `<!-- key -->...<!-- /key -->` inside a section body."""
    start, end = f"<!-- {key} -->", f"<!-- /{key} -->"
    new = f"{start}\n{block.rstrip()}\n{end}"
    if start in existing and end in existing:
        a, b = existing.index(start), existing.index(end) + len(end)
        return existing[:a] + new + existing[b:]
    return existing.rstrip() + "\n\n" + new


HEAD = """## Speed of one meta-training step (`bench/speed.py`)

One meta-gradient computation (zero_grad + forward + backward over the meta-batch; the Adam
update is not timed) on CPU, same initial weights and the same episodes for every
implementation, meta-gradients checked against ours before timing. ours/impl is the ratio of
medians: below 1 ours is faster. GFLOP/s counts the FLOPs of one step
(`torch.utils.flop_counter`) over its median time; "% of peak" is against the best
2048x2048 matmul measured in the same run. Written by `python bench/speed.py --write`.

The peers run the Conv-4 their users write (stock `nn.Conv2d`, `nn.BatchNorm2d` with batch
statistics, ReLU, mean pooling or max-pool and flatten, NCHW as in higher's and
learn2learn's Omniglot examples) with our weights. Ours is the workbench's own step, and the
difference is work it does not do: second-order MAML differentiates conv and batch norm
through closed-form double backwards (`workbench/core/models/conv.py`, `batch_norm.py`: one
`convolution_backward` gives both dW and dx, where autograd's generic one convolves
batch-transposed copies; three reductions for batch norm instead of about forty ops), so
its step also counts fewer FLOPs; on 5-image episodes MAML runs groups of 8 tasks through
batched passes: first order its inner steps and query pass (`models/task_gradients.py`:
batch norm with per-task statistics and weights, ReLU, pooling and head as one op per group;
convolutions once per group where the weights or the summed gradients are shared, as one
batched matmul where the layer is small, per task otherwise), second order with one inner
step its support gradients as an explicit backward that autograd differentiates once more
(`models/second_order_tasks.py`: the convolution's and batch norm's derivatives in closed
form, every call with the group's shared weights made once per group); the learner runs through a
direct functional forward (no
`functional_call` parameter swapping, which on 5-image episodes costs as much as the
convolutions); one channels-last layout through forward and backward (one NCHW gradient
meeting channels-last activations makes every later op a strided loop); max-pool before
ReLU (they commute); batch norm on large channel-last episodes takes its statistics with
centred cascaded sums (the native channels-last kernel's drift in fp32). With more than one
torch thread, our MAML step runs the meta-batch's tasks on that many threads, a few tasks at a
time, one intra-op thread each (`workbench/core/task_threads.py`, summed in a fixed order);
the peers use torch's intra-op threads, the way they run: the ops of a 5-image episode are
too small to split well (a second thread makes their steps 8-10% faster). Where two fp32 results differ, the check says how far each is from the
float64 meta-gradient: different but equally valid operation orders round differently,
and second-order MAML amplifies that rounding (20-way, 5 steps: percent-level for every
implementation)."""


def write(threads: int, lines: list[str]) -> None:
    from bench.results import RESULTS, write_section

    text = RESULTS.read_text(encoding="utf-8") if RESULTS.exists() else ""
    start, end = "<!-- speed -->", "<!-- /speed -->"
    body = (
        text[text.index(start) + len(start) : text.index(end)]
        if start in text and end in text
        else ""
    )
    blocks = body.split("<!-- speed-threads-", 1)
    body = HEAD + ("\n\n<!-- speed-threads-" + blocks[1] if len(blocks) > 1 else "")
    write_section("speed", merge(body, f"speed-threads-{threads}", "\n".join(lines)))


# ---- peers environment and main -------------------------------------------------------------
def use_peers(args: argparse.Namespace, argv: list[str]) -> dict[str, str]:
    """Inside the peers venv: which peers import. Outside: set it up and re-execute there."""
    if os.environ.get(IN_PEERS):
        status = json.loads(os.environ.get(PEER_STATUS, "{}"))
        try:
            import higher  # noqa: F401
        except ImportError as exc:
            status["higher"] = f"import failed: {exc}"
        try:
            peers.import_l2l_maml()
        except Exception as exc:
            status["learn2learn"] = f"import failed: {type(exc).__name__}: {exc}"
        return status
    if args.no_peers:
        return {"higher": "--no-peers", "learn2learn": "--no-peers"}
    if args.tiny and not peers.present(args.peers_dir):
        return {
            "higher": "--tiny without a peers venv",
            "learn2learn": "--tiny without a peers venv",
        }
    print(f"peers environment: {args.peers_dir}", flush=True)
    status = peers.ensure(args.peers_dir, log=lambda s: print(s, flush=True))
    for name, state in status.items():
        if state != "ok":
            print(f"  {name}: {state}", flush=True)
    if status.get("base") != "ok":
        print("  running without peers", flush=True)
        return {"higher": status["base"], "learn2learn": status["base"]}
    py = str(peers.venv_python(args.peers_dir))
    env = {**os.environ, IN_PEERS: "1", PEER_STATUS: json.dumps(status)}
    sys.stdout.flush()
    os.execve(py, [py, str(Path(__file__).resolve()), *argv], env)
    raise AssertionError("unreachable")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--threads",
        type=int,
        nargs="+",
        default=[2],
        help="torch thread counts, each reported (default 2)",
    )
    p.add_argument(
        "--repeats", type=int, help="timed rounds per implementation (default 7; tiny 2)"
    )
    p.add_argument("--warmup", type=int, help="untimed rounds first (default 2; tiny 1)")
    p.add_argument("--bf16", action="store_true", help="also time ours under bf16 autocast")
    p.add_argument(
        "--only", nargs="+", choices=[c.key for c in CASES], help="run only these configurations"
    )
    p.add_argument(
        "--peers-dir",
        type=Path,
        default=Path(os.environ.get("WORKBENCH_PEERS_DIR", peers.DEFAULT_DIR)).expanduser(),
    )
    p.add_argument("--no-peers", action="store_true", help="do not create or use the peers venv")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--tiny",
        action="store_true",
        help="glyphs, meta-batch 2, 2 repeats; no peers venv unless present",
    )
    p.add_argument(
        "--write", action="store_true", help="update the 'speed' section of bench/RESULTS.md"
    )
    args = p.parse_args(argv)
    args.repeats = args.repeats or (2 if args.tiny else 7)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.tiny else 2)
    available = use_peers(args, argv)
    torch.set_num_interop_threads(1)
    # what our Trainer does at start; process-wide, so every implementation gets it alike
    args.malloc = (
        "freed memory kept in the heap (`reuse_freed_memory`, as our Trainer)"
        if reuse_freed_memory()
        else "default malloc"
    )
    peers_line = ", ".join(
        f"{k} {'ok' if v == 'ok' else 'skipped: ' + v}" for k, v in available.items() if k != "base"
    )
    print(f"python {sys.executable}, torch {torch.__version__}; peers: {peers_line}", flush=True)
    if not args.tiny and not DATA.is_dir():
        print(f"Omniglot not found at {DATA}: using glyphs data", flush=True)
    cases = [c for c in CASES if not args.only or c.key in args.only]
    for threads in args.threads:
        torch.set_num_threads(threads)
        size = 512 if args.tiny else 2048
        peak32 = matmul_peak(torch.float32, size, 3 if args.tiny else 7)
        peak16 = matmul_peak(torch.bfloat16, size, 3 if args.tiny else 7)
        print(
            f"\n{threads} thread(s): matmul {size}x{size} peak fp32 {peak32:.0f} GFLOP/s, bf16 {peak16:.0f} GFLOP/s",
            flush=True,
        )
        results = []
        for case in cases:
            t0 = time.perf_counter()
            res = run_case(case, args, available, lambda s: print(s, flush=True))
            results.append(res)
            ours = res.rows[0]
            print(
                f"  {case.key}: {describe(res.cfg)}; ours {1e3 * ours.median:.1f} ms ({time.perf_counter() - t0:.0f} s)",
                flush=True,
            )
        lines = report(results, threads, peak32, peak16, args, peers_line)
        print("\n" + "\n".join(lines), flush=True)
        if args.write and not args.tiny:
            write(threads, lines)
            print(f"wrote the speed section ({threads} threads) of bench/RESULTS.md", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
