"""Matching Networks and Relation Networks: attention, class probabilities and relation scores
computed by hand, FCE as Appendix A writes it, the relation module's split first convolution,
the batch-norm modes, gradients against finite differences (float64), learning on glyphs, the
presets and the CLI."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from workbench.core.algorithms import ALGORITHMS
from workbench.core.algorithms.matching import (
    FullContextEmbedding,
    MatchingNetworks,
    cosine_similarities,
    matching_log_probs,
)
from workbench.core.algorithms.relation import (
    RelationEncoder,
    RelationModule,
    RelationNetworks,
    class_feature_sums,
    relation_pairs,
)
from workbench.core.config import TaskShape, default_config
from workbench.core.engine import Trainer
from workbench.core.presets import load_presets
from workbench.core.tasks.base import EpisodeBatch

F64 = torch.float64


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """One torch thread: these are tiny float64 passes, and on a shared machine a second
    intra-op thread mostly waits (a tiny FCE episode: 1.7 ms on one thread, 33 ms on two)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def finite_difference(
    params: list[torch.Tensor], objective: Callable[[], float], eps: float = 1e-6
) -> torch.Tensor:
    """Central differences of `objective` in every entry of `params`, in order."""
    grads = []
    with torch.no_grad():
        for p in params:
            flat = p.data.view(-1)
            for j in range(flat.numel()):
                old = float(flat[j])
                flat[j] = old + eps
                plus = objective()
                flat[j] = old - eps
                minus = objective()
                flat[j] = old
                grads.append((plus - minus) / (2 * eps))
    return torch.tensor(grads, dtype=F64)


def accumulated_gradient(algo: nn.Module, batch: EpisodeBatch, shape: TaskShape) -> torch.Tensor:
    """What `meta_train_step` leaves in `.grad`, flattened over every parameter, in order."""
    algo.zero_grad()
    algo.meta_train_step(batch, shape)  # type: ignore[operator]
    return torch.cat(
        [
            (p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
            for p in algo.parameters()
        ]
    )


def random_batch(
    tasks: int, ways: int, shots: int, queries: int, image: tuple[int, ...], seed: int = 0
) -> EpisodeBatch:
    g = torch.Generator().manual_seed(seed)
    sx = torch.randn((tasks, ways * shots, *image), generator=g, dtype=F64)
    qx = torch.randn((tasks, ways * queries, *image), generator=g, dtype=F64)
    sy = torch.arange(ways).repeat_interleave(shots).repeat(tasks, 1)
    qy = torch.arange(ways).repeat_interleave(queries).repeat(tasks, 1)
    return EpisodeBatch(sx, sy, qx, qy, ways)


# ---- Matching Networks ----------------------------------------------------------------------
def test_matching_attention_and_class_probabilities_by_hand() -> None:
    """2 classes x 1 shot: g(x_0) = (1, 0), g(x_1) = (0, 2), query (3, 4) with |q| = 5: the
    cosines are 3/5 and 8/10, the attention softmax(0.6, 0.8), and P(y) = the attention of the
    class's one example."""
    support = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=F64)
    query = torch.tensor([[3.0, 4.0]], dtype=F64)
    sims = cosine_similarities(query, support)
    torch.testing.assert_close(sims, torch.tensor([[0.6, 0.8]], dtype=F64))
    z = math.exp(0.6) + math.exp(0.8)
    attention = torch.tensor([[math.exp(0.6) / z, math.exp(0.8) / z]], dtype=F64)
    torch.testing.assert_close(sims.softmax(1), attention)
    probs = matching_log_probs(sims, torch.tensor([0, 1]), 2).exp()
    torch.testing.assert_close(probs, attention)  # one-hot labels: P(k) = a_k

    # a second example of class 0, (1, 1): cosine 7 / (5 sqrt 2); P(0) sums its two weights
    support3 = torch.cat([support, torch.tensor([[1.0, 1.0]], dtype=F64)])
    c3 = 7 / (5 * math.sqrt(2))
    z3 = z + math.exp(c3)
    probs3 = matching_log_probs(cosine_similarities(query, support3), torch.tensor([0, 1, 0]), 2)
    expected = torch.tensor([[(math.exp(0.6) + math.exp(c3)) / z3, math.exp(0.8) / z3]], dtype=F64)
    torch.testing.assert_close(probs3.exp(), expected)


def identity_embedding() -> nn.Module:
    lin = nn.Linear(2, 2, bias=False).double()
    with torch.no_grad():
        lin.weight.copy_(torch.eye(2))
    return nn.Sequential(nn.Flatten(), lin)


@pytest.mark.parametrize("scale", [1.0, 2.0])
def test_matching_step_is_the_cross_entropy_of_the_attention(scale: float) -> None:
    """Identity embedding: the step's loss is -mean log P(y | x̂, S) with P from the cosines by
    hand (query (3, 4) of class 1: 0.6 / 0.8; query (2, -1) of class 0: 2/sqrt 5 / -1/sqrt 5),
    each multiplied by `cosine_scale` before the softmax."""
    params = ALGORITHMS.get("matching").Params(cosine_scale=scale)
    algo = MatchingNetworks(params, identity_embedding(), "classification")  # type: ignore[arg-type]
    sx = torch.tensor([[[1.0, 0.0]], [[0.0, 2.0]]], dtype=F64)[None]
    qx = torch.tensor([[[3.0, 4.0]], [[2.0, -1.0]]], dtype=F64)[None]
    batch = EpisodeBatch(sx, torch.tensor([[0, 1]]), qx, torch.tensor([[1, 0]]), 2)
    out = algo.meta_train_step(batch, TaskShape(ways=2))
    p1 = math.exp(0.8 * scale) / (math.exp(0.6 * scale) + math.exp(0.8 * scale))
    a, b = 2 / math.sqrt(5) * scale, -1 / math.sqrt(5) * scale
    p0 = math.exp(a) / (math.exp(a) + math.exp(b))
    assert out["loss"] == pytest.approx(-(math.log(p1) + math.log(p0)) / 2, rel=1e-12)
    assert out["accuracy"] == 1.0


def lstm_cell(
    x: torch.Tensor,
    h: torch.Tensor,
    c: torch.Tensor,
    w_x: torch.Tensor,
    w_h: torch.Tensor,
    b: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One LSTM step written out (gate order i, f, g, o as PyTorch's)."""
    i, f, g, o = (x @ w_x.t() + h @ w_h.t() + b).chunk(4, dim=-1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def test_fce_follows_appendix_a() -> None:
    """g(x_i, S) = h_fwd + h_bwd + g'(x_i) over the support sequence (A.2); f(x̂, S) = h_K with
    h^_k, c_k = LSTM(f'(x̂), [h_{k-1}, r_{k-1}], c_{k-1}), h_k = h^_k + f'(x̂),
    r = sum_i softmax(h^T g_i) g_i (A.1): the recurrent weights act on [h, r]."""
    torch.manual_seed(0)
    d = 3
    fce = FullContextEmbedding(d).double()
    g0, f0 = torch.randn(4, d, dtype=F64), torch.randn(2, d, dtype=F64)
    lstm = fce.support_lstm
    z = torch.zeros(d, dtype=F64)
    fwd, h, c = [], z, z
    for x in g0:
        h, c = lstm_cell(
            x, h, c, lstm.weight_ih_l0, lstm.weight_hh_l0, lstm.bias_ih_l0 + lstm.bias_hh_l0
        )
        fwd.append(h)
    bwd, h, c = [], z, z
    for x in g0.flip(0):
        w = (lstm.weight_ih_l0_reverse, lstm.weight_hh_l0_reverse)
        h, c = lstm_cell(x, h, c, *w, lstm.bias_ih_l0_reverse + lstm.bias_hh_l0_reverse)
        bwd.append(h)
    g = torch.stack(fwd) + torch.stack(bwd[::-1]) + g0
    torch.testing.assert_close(fce.support(g0), g)

    cell = fce.query_cell
    w_x = cell.weight_ih[:, :d]  # on f'(x̂)
    w_hr = torch.cat([cell.weight_hh, cell.weight_ih[:, d:]], dim=1)  # on [h_{k-1}, r_{k-1}]
    h, c = f0, torch.zeros_like(f0)
    for _ in range(3):
        r = torch.softmax(h @ g.t(), dim=1) @ g
        h_hat, c = lstm_cell(f0, torch.cat([h, r], 1), c, w_x, w_hr, cell.bias_ih + cell.bias_hh)
        h = h_hat + f0
    torch.testing.assert_close(fce.query(f0, g, 3), h)


def tiny_embedding(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 3)).double()
    net.embedding_dim = 3  # what FCE reads (Conv-4 states it)
    return net


@pytest.mark.parametrize("fce", [False, True], ids=["plain", "fce"])
def test_matching_gradients_match_finite_differences(fce: bool) -> None:
    """Every parameter (embedding, and with FCE both LSTMs) against central differences of the
    episode loss, float64."""
    params = ALGORITHMS.get("matching").Params(fce=fce, fce_steps=2)
    algo = MatchingNetworks(params, tiny_embedding(), "classification").double()  # type: ignore[arg-type]
    batch, shape = random_batch(2, ways=3, shots=2, queries=2, image=(4,)), TaskShape(ways=3)
    analytic = accumulated_gradient(algo, batch, shape)

    def objective() -> float:
        return sum(
            float(F.nll_loss(algo.log_probs(batch, i), batch.query_y[i])) for i in range(len(batch))
        ) / len(batch)

    numeric = finite_difference(list(algo.parameters()), objective)
    torch.testing.assert_close(analytic, numeric, rtol=1e-6, atol=1e-9)
    if fce:
        n_embed = sum(p.numel() for p in algo.model.parameters())
        assert (
            analytic.numel() > n_embed and analytic[n_embed:].abs().max() > 1e-3
        )  # the LSTMs learn


# ---- Relation Networks ----------------------------------------------------------------------
def test_encoder_gives_64x5x5_maps_on_28x28_images() -> None:
    """The paper's embedding module: pools after the first two blocks only, the first two
    convolutions unpadded (28 -> 26 -> 13 -> 11 -> 5 -> 5 -> 5)."""
    enc = RelationEncoder(1, 64)
    assert enc(torch.zeros(3, 1, 28, 28)).shape == (3, 64, 5, 5)
    assert RelationModule(64, 8).fc1.in_features == 64  # 5 -> 2 -> 1 after the module's pools


def test_class_features_are_the_sums_of_their_shots() -> None:
    feats = torch.arange(4 * 2 * 1 * 1, dtype=F64).view(4, 2, 1, 1)  # 4 support maps of 2 channels
    labels = torch.tensor([1, 0, 1, 0])
    sums = class_feature_sums(feats, labels, 2)
    expected = torch.tensor([[2.0 + 6.0, 3.0 + 7.0], [0.0 + 4.0, 1.0 + 5.0]], dtype=F64)
    torch.testing.assert_close(sums.view(2, 2), expected)


def hand_relation_module() -> RelationModule:
    """width 1, hidden 1, no batch norm; every 3x3 kernel only at its centre (a pointwise map):
    block 1: relu(c - q + 0.5), 2x2 max-pool; block 2: relu(2 m - 1); fc1: relu(3 u); fc2: v - 2."""
    m = RelationModule(1, 1, batch_norm=False).double()
    with torch.no_grad():
        for p in m.parameters():
            p.zero_()
        conv1, conv2 = m.blocks[0][0], m.blocks[1][0]
        conv1.weight[0, 0, 1, 1], conv1.weight[0, 1, 1, 1], conv1.bias[0] = 1.0, -1.0, 0.5
        conv2.weight[0, 0, 1, 1], conv2.bias[0] = 2.0, -1.0
        m.fc1.weight[0, 0], m.fc2.weight[0, 0], m.fc2.bias[0] = 3.0, 1.0, -2.0
    return m


def test_relation_scores_of_a_fixed_module_by_hand() -> None:
    """Two classes of two shots (their maps summed), two queries, 2x2 maps:
    class 0 = [[1,1],[0,0]] + [[0,1],[0,-1]] = [[1,2],[0,-1]], class 1 = 2 x [[0,0],[0.5,0]];
    q0 = [[0,1],[3,1]]: c0 - q0 + .5 = [[1.5,1.5],[-2.5,-1.5]] -> max relu 1.5 -> 2 -> 6 -> s(4);
                        c1 - q0 + .5 = [[.5,-.5],[-1.5,-.5]]  -> .5 -> 0 -> 0 -> s(-2);
    q1 = [[2,2],[0,2]]: c0 -> max .5 -> s(-2);  c1 -> [[-1.5,-1.5],[1.5,-1.5]] -> 1.5 -> s(4)."""
    algo = RelationNetworks(
        ALGORITHMS.get("relation").Params(), nn.Conv2d(1, 1, 3), "classification"
    )  # type: ignore[arg-type]
    algo.model = nn.Identity()  # the support and query maps are the images themselves
    algo.relation = hand_relation_module()
    shots = [[[1, 1], [0, 0]], [[0, 0], [0.5, 0]], [[0, 1], [0, -1]], [[0, 0], [0.5, 0]]]
    sx = torch.tensor(shots, dtype=F64)[None, :, None]
    qx = torch.tensor([[[0, 1], [3, 1]], [[2, 2], [0, 2]]], dtype=F64)[None, :, None]
    batch = EpisodeBatch(sx, torch.tensor([[0, 1, 0, 1]]), qx, torch.tensor([[0, 1]]), 2)
    s4, s_2 = 1 / (1 + math.exp(-4)), 1 / (1 + math.exp(2))
    expected = torch.tensor([[s4, s_2], [s_2, s4]], dtype=F64)
    torch.testing.assert_close(algo.scores(batch, 0), expected)
    # the paper's form: the pairs concatenated on the channels, query-major
    classes = class_feature_sums(sx[0], batch.support_y[0], 2)
    torch.testing.assert_close(algo.relation(relation_pairs(classes, qx[0])).view(2, 2), expected)
    out = algo.meta_train_step(batch, TaskShape(ways=2))
    assert out["loss"] == pytest.approx(((1 - s4) ** 2 + s_2**2) / 2, rel=1e-12)  # MSE to one-hot
    assert out["accuracy"] == 1.0


@pytest.mark.parametrize("mode", ["batch", "running"])
def test_split_first_convolution_equals_the_concatenated_pairs(mode: str) -> None:
    """conv(cat(c, q)) = conv_c(c) + conv_q(q) + b: `scores` equals `forward` on the pairs, with
    batch statistics over all pairs alike (training) and with running ones (evaluation)."""
    torch.manual_seed(0)
    m = RelationModule(4, 8, mode=mode, momentum=0.5).double()  # type: ignore[arg-type]
    for p in m.parameters():
        nn.init.normal_(p)
    classes, queries = torch.randn(3, 4, 5, 5, dtype=F64), torch.randn(7, 4, 5, 5, dtype=F64)
    for training in (True, False):
        m.train(training)
        pairs = m(relation_pairs(classes, queries)).view(7, 3)
        torch.testing.assert_close(m.scores(classes, queries), pairs, rtol=1e-12, atol=1e-14)
        assert pairs.std() > 1e-3  # the scores differ: the test can fail


def test_batch_norm_modes() -> None:
    """ "batch": no running statistics, evaluation normalises as training does (the official
    code). "running", momentum 1: the running statistics are exactly the last batch's (mean and
    unbiased variance), not an average of the batches seen."""
    torch.manual_seed(0)
    x1, x2 = torch.randn(6, 1, 12, 12), torch.randn(6, 1, 12, 12) * 3 + 1
    batch_enc = RelationEncoder(1, 4, mode="batch")
    bn = batch_enc.blocks[0][1]
    assert isinstance(bn, nn.BatchNorm2d) and bn.running_mean is None
    train_out = batch_enc.train()(x1)
    torch.testing.assert_close(batch_enc.eval()(x1), train_out)

    enc = RelationEncoder(1, 4, mode="running", momentum=1.0).train()
    seen: list[torch.Tensor] = []
    enc.blocks[0][1].register_forward_hook(lambda _m, inp, _out: seen.append(inp[0].detach()))
    enc(x1)
    enc(x2)
    bn, last = enc.blocks[0][1], seen[-1]
    torch.testing.assert_close(bn.running_mean, last.mean((0, 2, 3)))
    torch.testing.assert_close(bn.running_var, last.var((0, 2, 3), unbiased=True))
    enc.eval()
    assert not torch.allclose(enc(x1), enc.train()(x1))  # evaluation reads the running stats


def test_relation_gradients_match_finite_differences() -> None:
    """Encoder and relation module (every parameter, batch norm included) against central
    differences of the episode's MSE, float64; 22x22 images so that both of the relation
    module's pools act (maps 4x4 -> 2x2 -> 1x1)."""
    learner = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))  # in 1 channel, width 2, BN
    torch.manual_seed(0)
    algo = RelationNetworks(
        ALGORITHMS.get("relation").Params(hidden=3), learner, "classification"
    ).double()  # type: ignore[arg-type]
    g = torch.Generator().manual_seed(1)
    with (
        torch.no_grad()
    ):  # away from the official init's near-constant start, so every part matters
        for p in algo.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=F64) * 0.5)
    batch, shape = random_batch(2, ways=2, shots=2, queries=2, image=(1, 22, 22)), TaskShape(ways=2)
    analytic = accumulated_gradient(algo, batch, shape)

    def objective() -> float:
        total = 0.0
        for i in range(len(batch)):
            target = F.one_hot(batch.query_y[i], 2).to(F64)
            total += float(F.mse_loss(algo.scores(batch, i), target))
        return total / len(batch)

    numeric = finite_difference(list(algo.parameters()), objective)
    torch.testing.assert_close(analytic, numeric, rtol=1e-5, atol=1e-9)
    n_encoder = sum(p.numel() for p in algo.model.parameters())
    assert analytic[:n_encoder].abs().max() > 1e-4 and analytic[n_encoder:].abs().max() > 1e-3


# ---- the form, presets, CLI ---------------------------------------------------------------
@pytest.mark.parametrize("name", ["matching", "relation"])
def test_generated_form_defaults_validate(name: str) -> None:
    cfg = default_config(name, "glyphs")
    assert cfg.algorithm.name == name
    for key, field in type(cfg.algorithm).model_fields.items():
        assert key == "name" or field.description, key  # the form's help for every field
    assert ALGORITHMS.get(name).inner_step_phases == ()  # no inner steps asked for


def test_presets_quote_the_papers() -> None:
    presets = load_presets()
    expected = {
        "matching-omniglot-5w1s": (0.981, ("98.1", "98.9", "93.8", "98.5"), 5),
        "matching-omniglot-20w1s": (0.938, ("93.8", "98.1"), 20),
        "relation-omniglot-5w1s": (0.996, ("99.6", "99.8", "97.6", "99.1"), 5),
        "relation-omniglot-20w1s": (0.976, ("97.6", "99.6"), 20),
    }
    for name, (value, quoted, ways) in expected.items():
        p = presets[name]
        assert p.published_value == value and all(q in p.published for q in quoted), name
        cfg = p.run_config()
        assert (cfg.train.ways, cfg.eval.ways) == (ways, ways)
    assert presets["matching-omniglot-5w1s"].run_config().algorithm.fce is False  # type: ignore[attr-defined]
    assert "FCE" in presets["matching-omniglot-5w1s"].published
    relation = presets["relation-omniglot-5w1s"].run_config()
    assert relation.algorithm.batch_norm == "batch" and relation.algorithm.bn_momentum == 1.0  # type: ignore[attr-defined]
    assert (
        relation.train.queries == 19
        and presets["relation-omniglot-20w1s"].run_config().train.queries == 10
    )


@pytest.mark.parametrize(
    "name,extra",
    [("matching", ["--set", "algorithm.fce=true"]), ("relation", [])],
    ids=["matching-fce", "relation"],
)
def test_cli_run_finishes(name: str, extra: list[str], tmp_path: Path) -> None:
    """A few steps from the command line (Matching with FCE: its LSTMs end to end too)."""
    out = subprocess.run(
        [sys.executable, "-m", "workbench", "run", "--algorithm", name, "--dataset", "glyphs",
         "--steps", "3", "--db", str(tmp_path / "r.db"), "--set", "train.meta_batch=2",
         "--set", "val_every=0", "--set", "test_episodes=5", "--set", "ckpt_every=3",
         "--set", "model.width=16", "--quiet", *extra],
        capture_output=True, text=True, timeout=1800,
        env={**os.environ, "WORKBENCH_CACHE": str(tmp_path / "cache")},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "finished at step 3" in out.stdout, out.stdout


# ---- learning on glyphs (slow) -------------------------------------------------------------
def train(algorithm: str, *overrides: str):  # type: ignore[no-untyped-def]
    torch.set_num_threads(1)
    cfg = default_config(algorithm, "glyphs").with_overrides(
        ["val_every=0", "ckpt_every=0", "test_episodes=100", "seed=1", "threads=1", *overrides]
    )
    result = Trainer(cfg, []).run()
    assert result.status == "finished", result.error
    assert result.test is not None
    return result.test


# Budgets measured here on one thread (machine shared), 5-way 1-shot, chance 20 %: Matching
# 60 steps 72.6 +- 2.1 % (9 s; 45.8 % untrained: random Conv-4 features already match a little),
# Relation (width 32, 5 queries) 80 steps 76.4 +- 1.9 % (6.5 s; 60 steps: 70.0 and 73.3 % over two seeds;
# 18.4 % untrained).
@pytest.mark.slow
def test_matching_glyphs_5way_1shot_beats_60_percent() -> None:
    test = train("matching", "steps=60", "train.meta_batch=4")
    assert test.mean - test.ci95 > 0.60, test


@pytest.mark.slow
def test_relation_glyphs_5way_1shot_beats_60_percent() -> None:
    test = train("relation", "steps=80", "train.meta_batch=2", "train.queries=5", "model.width=32")
    assert test.mean - test.ci95 > 0.60, test
