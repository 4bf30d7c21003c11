"""Estimate a configuration's peak memory before its run exists, and refuse one that cannot fit.

Why: a configuration that needs more memory than the machine has is otherwise found only
after the run was recorded (often after training steps), or it takes the machine down. The
estimate is analytic, from the config alone (no data, no weights allocated): the learner's
parameter count (built on the meta device), its activation sizes per example (as the model
describes them: `models.ActivationSizes`), the examples of a task, how many tasks are in
flight at once (MAML's task threads and batched groups), the inner steps second-order MAML
keeps in its graph, the evaluation draws, the meta-batch tensors, the decoded dataset cache
and a fixed process overhead. Its constants were fitted to
the RSS high-water marks measured by `bench/memory_peaks.py` (every preset within 2x).
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.core.config import RunConfig
from workbench.core.errors import ConfigError
from workbench.core.params import ModelConfig
from workbench.core.registry import ALGORITHMS

log = logging.getLogger(__name__)

FLOAT = 4  # bytes of an fp32 element (bf16 autocast keeps fp32 weights and many fp32 maps)
GIB = 2**30
MIB = 2**20

# Fitted to bench/memory_peaks.py (2 threads, Linux, glibc with `reuse_freed_memory`).
PROCESS_BYTES = 330 * MIB  # python + torch + pydantic + numpy imported, thread pools started
PER_THREAD_BYTES = 16 * MIB  # each task thread's own malloc arena and oneDNN scratch
GRAPH = 2.0  # a forward kept for one backward: its maps, plus the backward's gradients in flight
SECOND_ORDER = 3.5  # an inner step kept for the meta-gradient: forward + differentiable backward
NO_GRAD = 3.0  # a forward without a graph: a few of the largest maps alive at once

# sizes of the decoded caches, in images (one channel stored for the 1-channel datasets)
OMNIGLOT_IMAGES = 32_460
CIFAR100_IMAGES = 60_000  # CIFAR-FS and FC100 pool train.bin and test.bin
CUB_IMAGES = 11_788  # CUB-200-2011
GLYPHS_IMAGES = 1_200 * 20
MINI_IMAGENET_IMAGES = 60_000  # assumed for an image folder whose files cannot be counted
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")

# batched passes of Conv-4 (`models/task_gradients.py`): groups of about this many images
IMAGES_PER_PASS = 40
MIN_TASKS_PER_PASS = 4
THREAD_WORK_MIN = 1 << 18  # `algorithms/base.py`: smaller tasks run on one thread


@dataclass(frozen=True)
class Estimate:
    """Estimated peak bytes of a run on its device (host RAM on CPU), the bytes of each part,
    and `driver`: the dotted config key that drives the peak (whose halving saves most,
    weighted by how far it is above its usual value), what a refusal tells the user to lower."""

    total: int
    breakdown: dict[str, int] = field(default_factory=dict)
    driver: str = "train.meta_batch"
    device: str = "cpu"


@dataclass(frozen=True)
class _Learner:
    """Per example: every intermediate map of one forward (floats), the largest one, the
    input; and the parameter count."""

    maps: int
    largest: int
    inputs: int
    params: int


# ---- the learner ---------------------------------------------------------------------------
def config_input_shape(config: RunConfig) -> tuple[int, ...]:
    """One example's shape as the dataset will give it, from the config alone (no data read):
    (1,) for sinusoid, (channels, size, size) for the image datasets."""
    if config.task_kind == "regression":
        return (1,)
    size = config.dataset.image_size
    return (config.dataset.channels, size, size)


def _param_count(config: RunConfig, input_shape: tuple[int, ...], out_dim: int) -> int:
    """Parameters of the configured learner, built on the meta device (nothing allocated)."""
    import torch

    from workbench.core.models import build_model

    with torch.device("meta"):
        model = build_model(config.model, input_shape, out_dim, config.task_kind)
    return sum(p.numel() for p in model.parameters())


def _learner(config: RunConfig, input_shape: tuple[int, ...], out_dim: int) -> _Learner:
    """The learner's maps from its builder's `activation_sizes` (`models.ActivationSizes`:
    Conv-4, MLP, ResNet-12 and any model plugin that declares it); a model without it is
    estimated as an MLP over the flattened input (the `model.hidden` sizes), with a note."""
    from workbench.core.models import activation_sizes, mlp, model_name

    inputs = math.prod(input_shape)
    maps = activation_sizes(config.model, input_shape, out_dim, config.task_kind)
    if maps is None:
        _note_undescribed(model_name(config.model, config.task_kind))
        maps = mlp.activation_sizes(config.model, input_shape, out_dim)
    sizes = [inputs, *maps]
    return _Learner(sum(sizes), max(sizes), inputs, _param_count(config, input_shape, out_dim))


_NOTED: set[str] = set()


def _note_undescribed(name: str) -> None:
    """Log, once per model, that its memory estimate is a guess."""
    if name not in _NOTED:
        _NOTED.add(name)
        log.warning(
            "model %r declares no activation_sizes: its peak memory is estimated as an MLP's "
            "(model.hidden) over the flattened input, which may be far too low",
            name,
        )


# ---- the dataset ---------------------------------------------------------------------------
def dataset_bytes(config: RunConfig) -> int:
    """The decoded uint8 cache the run holds for its whole life (all splits)."""
    d = config.dataset
    pixels = d.image_size * d.image_size
    if d.name == "omniglot":
        return OMNIGLOT_IMAGES * pixels
    if d.name == "glyphs":
        return GLYPHS_IMAGES * pixels
    if d.name == "image-folder":
        return _image_folder_images(d.data_dir) * pixels * d.channels
    if d.name in ("cifar-fs", "fc100"):  # the CIFAR-100 pool: train.bin + test.bin
        return CIFAR100_IMAGES * pixels * d.channels
    if d.name == "cub":
        return CUB_IMAGES * pixels * d.channels
    return 0


def _image_folder_images(data_dir: str | None) -> int:
    """Images under the data folder (a directory walk, no decoding), else mini-ImageNet's."""
    base = data_dir or os.environ.get("WORKBENCH_DATA")
    if not base or not Path(base).expanduser().is_dir():
        return MINI_IMAGENET_IMAGES
    count = 0
    for _, _, files in os.walk(Path(base).expanduser()):
        count += sum(f.lower().endswith(IMAGE_EXTENSIONS) for f in files)
    return count or MINI_IMAGENET_IMAGES


# ---- the estimate --------------------------------------------------------------------------
def _threads(config: RunConfig) -> int:
    if config.threads:
        return config.threads
    import torch

    return torch.get_num_threads()


def _device_type(config: RunConfig) -> str:
    spec = config.device.strip().lower()
    if spec == "auto":
        try:
            from workbench.core.devices import resolve_device

            return resolve_device("auto").type
        except Exception:  # an unusable device is reported elsewhere, by its own key
            return "cpu"
    return spec.split(":")[0]


def _group(images_per_task: int) -> int:
    """Tasks per batched Conv-4 pass (0: the pass does not apply)."""
    group = IMAGES_PER_PASS // max(images_per_task, 1)
    return group if group >= MIN_TASKS_PER_PASS else 0


def _parts(config: RunConfig, input_shape: tuple[int, ...], device: str) -> dict[str, int]:
    """The breakdown: bytes per component (see `estimate_peak_bytes`)."""
    algo = config.algorithm.name
    kind = config.task_kind
    tr, ev = config.train, config.eval
    classification = kind == "classification"
    uses_head = ALGORITHMS.get(algo).uses_head  # an embedding network (ProtoNet, Matching)
    out_dim = (tr.ways if classification else 1) if uses_head else 0
    net = _learner(config, input_shape, out_dim)
    a = net.maps * FLOAT  # bytes of all of one example's maps
    ways_tr = tr.ways if classification else 1
    ways_ev = ev.ways if classification else 1
    s_tr, q_tr = ways_tr * tr.shots, ways_tr * tr.queries
    s_ev, q_ev = ways_ev * ev.shots, ways_ev * ev.queries
    conv = len(input_shape) == 3 and config.model.name in ("auto", "conv4")
    batched = conv and classification and config.model.batch_norm == "batch"
    batched = batched and config.precision == "fp32"
    cpu = device == "cpu"
    threads = _threads(config) if cpu else 1

    def graph(images: int) -> float:
        return images * a * GRAPH

    def no_grad(images: int) -> float:
        return images * net.largest * FLOAT * NO_GRAD

    small = net.params * (s_tr + q_tr) < THREAD_WORK_MIN
    workers = 1 if (small or not cpu) else max(1, min(threads, tr.meta_batch))
    parts: dict[str, int] = {}

    # -- meta-training: what one task thread holds at once, times the threads in flight
    if algo in ("maml", "fomaml", "pretrain-finetune"):
        steps = 0 if algo == "pretrain-finetune" else tr.inner_steps
        first_order = bool(getattr(config.algorithm, "first_order", False))
        if first_order or steps == 0:
            group = _group(s_tr) if batched and steps else 0
            unit = 8 if group else 1
            if group:  # inner steps batched over the group; stacked per-task weights
                inner = min(group, tr.meta_batch) * s_tr * a * GRAPH + unit * net.params * FLOAT * 2
            else:  # one task's inner step at a time, no graph kept
                inner = graph(s_tr) if steps else 0.0
            group_q = _group(q_tr) if group else 0
            query = graph(min(group_q, tr.meta_batch) * q_tr) if group_q else graph(q_tr)
            per_worker = max(inner, query)
        else:
            group = min(_group(s_tr), _group(q_tr)) if batched and steps == 1 else 0
            tasks = min(group, tr.meta_batch) if group else 1
            per_worker = tasks * (steps * s_tr * a * SECOND_ORDER + q_tr * a * GRAPH)
        units = math.ceil(tr.meta_batch / (8 if (first_order or group) else 2))
        parts["train_tasks"] = int(per_worker * min(workers, units))
    elif algo == "protonet":
        parts["train_tasks"] = int(graph(s_tr + q_tr))
    elif algo == "meta-lstm":
        hidden = int(getattr(config.algorithm, "hidden", 20))
        support = int(getattr(config.algorithm, "support_batch", 0)) or s_tr
        lstm = net.params * FLOAT * (7 * hidden + 20)  # per coordinate per step, kept
        parts["train_tasks"] = int(tr.inner_steps * lstm + graph(min(support, s_tr)) + graph(q_tr))
    else:  # an algorithm this estimate does not know: one task's forward and backward
        parts["train_tasks"] = int(graph(s_tr + q_tr))
    parts["train_threads"] = PER_THREAD_BYTES * (workers if cpu else 0)

    # -- the meta-batch tensors: the one training, the next (drawn ahead) and, as
    # they change hands, the one after; each with its uint8 gathers
    per_task = (s_tr + q_tr) * net.inputs
    parts["train_batch"] = int(tr.meta_batch * per_task * (3 * FLOAT + 3))

    # -- validation / test: episodes drawn together, scored a task per thread
    from workbench.core.evaluate import episodes_per_draw

    draw = min(episodes_per_draw(ev), config.val_episodes, config.test_episodes)
    eval_workers = 1 if (not cpu or net.params * (s_ev + q_ev) < THREAD_WORK_MIN) else threads
    eval_workers = min(eval_workers, draw)
    if algo == "protonet":
        per_eval = no_grad(s_ev + q_ev)
    elif algo == "meta-lstm":
        hidden = int(getattr(config.algorithm, "hidden", 20))
        per_eval = net.params * FLOAT * (7 * hidden + 20) + graph(s_ev) + no_grad(q_ev)
    else:
        per_eval = graph(s_ev) + no_grad(q_ev)
    parts["eval_tasks"] = int(per_eval * eval_workers)
    parts["eval_batch"] = int(draw * (s_ev + q_ev) * net.inputs * (FLOAT + 1))

    # -- weights: learner (+ gradient, Adam's two moments) and what the algorithm adds
    weights = net.params * FLOAT * 4
    if algo == "meta-lstm":
        weights += net.params * FLOAT * 4  # theta_0 with its gradient and moments
    parts["weights"] = int(weights)
    if cpu:
        parts["dataset"] = dataset_bytes(config)
        parts["process"] = PROCESS_BYTES
    return parts


def _total(parts: dict[str, int]) -> int:
    """Everything adds up, the training and evaluation phases too: freed memory stays in the
    process heap (`reuse_freed_memory`) and evaluation runs on other threads, whose malloc
    arenas do not reuse what training freed (measured: the sum, not the larger, matches)."""
    return int(sum(parts.values()))


def _with(config: RunConfig, key: str, value: Any) -> RunConfig:
    """`config` with one dotted key changed, unvalidated (model_copy): only for estimating."""
    section, _, name = key.rpartition(".")
    if not section:
        return config.model_copy(update={name: value})
    part = getattr(config, section).model_copy(update={name: value})
    return config.model_copy(update={section: part})


def _halved(config: RunConfig) -> dict[str, RunConfig]:
    """Candidate drivers, each with the config it would be at half its value: the key whose
    halving saves most is the one the peak is most proportional to. The learner's size, the
    image size and the thread count are candidates only above their usual values, so that a
    paper's setting (84x84 images, 64 filters, a few threads) is not blamed before the task
    shape is."""
    tr, ev, m = config.train, config.eval, config.model
    out: dict[str, RunConfig] = {}

    def half(key: str, value: int, floor: int) -> None:
        if value > floor:
            out[key] = _with(config, key, max(floor, value // 2))

    if config.task_kind == "classification":
        same_ways = ALGORITHMS.get(config.algorithm.name).same_ways  # a head fixes both
        if tr.ways > 2:
            lowered = _with(config, "train.ways", max(2, tr.ways // 2))
            out["train.ways"] = (
                _with(lowered, "eval.ways", max(2, ev.ways // 2)) if same_ways else lowered
            )
        if not same_ways:
            half("eval.ways", ev.ways, 2)
    half("train.meta_batch", tr.meta_batch, 1)
    half("train.queries", tr.queries, 1)
    half("train.shots", tr.shots, 1)
    half("train.inner_steps", tr.inner_steps, 1)
    half("eval.queries", ev.queries, 1)
    half("eval.shots", ev.shots, 1)
    half("eval.inner_steps", ev.inner_steps, 1)
    half("model.width", m.width, 64)
    half("dataset.image_size", config.dataset.image_size, 84)
    usual_widths = ModelConfig().resnet_widths  # MetaOptNet's: halved only above these
    if any(w > usual for w, usual in zip(m.resnet_widths, usual_widths, strict=False)):
        out["model.resnet_widths"] = _with(
            config, "model.resnet_widths", [max(8, w // 2) for w in m.resnet_widths]
        )
    if any(h > 40 for h in m.hidden):
        out["model.hidden"] = _with(config, "model.hidden", [max(40, h // 2) for h in m.hidden])
    threads = _threads(config)
    if threads > 4:
        out["threads"] = _with(config, "threads", threads // 2)
    return out


# usual values of the task shape (the papers'): a key far above its usual value is preferred
# as the driver over one that saves as much when halved (halving the ways halves nearly
# everything, so it would otherwise always be named)
USUAL = {"meta_batch": 32, "ways": 5, "queries": 5, "shots": 5, "inner_steps": 5}


def _driver(config: RunConfig, device: str, total: int) -> str:
    """The key to lower: the saving from halving it, weighted by how far it is above usual."""
    best, score = "train.meta_batch", 0.0
    for key, lowered in _halved(config).items():
        gain = total - _total(_parts(lowered, config_input_shape(lowered), device))
        name = key.rpartition(".")[2]
        value = _lookup(config, key)
        weight = max(1.0, value / USUAL[name]) if name in USUAL else 1.0
        if gain * weight > score:
            best, score = key, gain * weight
    return best


def estimate_peak_bytes(
    config: RunConfig, input_shape: tuple[int, ...], device: str | None = None
) -> Estimate:
    """Peak bytes the run of `config` needs on its device (host RAM on CPU; device memory on
    CUDA/MPS, where the dataset and the process stay in host RAM and are not counted)."""
    device = device or _device_type(config)
    parts = _parts(config, input_shape, device)
    total = _total(parts)
    return Estimate(total, parts, _driver(config, device, total), device)


def available_bytes(config: RunConfig, device: str | None = None) -> int:
    """Free memory where the run will train: CUDA's free device memory, else available RAM."""
    device = device or _device_type(config)
    if device == "cuda":
        import torch

        if torch.cuda.is_available():
            spec = config.device.strip().lower()
            index = int(spec.split(":")[1]) if ":" in spec else 0
            return int(torch.cuda.mem_get_info(index)[0])
    import psutil

    return int(psutil.virtual_memory().available)


def _lookup(config: RunConfig, key: str) -> Any:
    node: Any = config
    for part in key.split("."):
        node = getattr(node, part)
    return node


def check_fits(
    config: RunConfig, input_shape: tuple[int, ...], available: int | None = None
) -> Estimate:
    """The estimate, or a ConfigError naming the driving key when it exceeds `available` bytes
    (default: what is free now on the run's device), so nothing is recorded for a run that
    would crash the machine."""
    est = estimate_peak_bytes(config, input_shape)
    free = available_bytes(config, est.device) if available is None else available
    if est.total > free:
        value = _lookup(config, est.driver)
        where = "" if est.device == "cpu" else f" on {est.device}"
        raise ConfigError(
            est.driver,
            f"this configuration needs about {est.total / GIB:.1f} GiB at its peak{where}, "
            f"{free / GIB:.1f} GiB is free; {est.driver} ({value}) drives it: lower it, "
            "or set memory_check=false to try anyway",
        )
    return est
