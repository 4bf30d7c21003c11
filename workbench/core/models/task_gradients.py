"""Cross-entropy gradients of many tasks from one batched pass, for first-order MAML.

First-order MAML needs, per task, the support gradient at shared theta (the first inner
step), support gradients at each task's own adapted weights (later inner steps) and the
query gradient at the task's adapted weights, summed over tasks (the meta-gradient).
Autograd gives the gradient of one sum, so the plain way is one forward and backward per
task: on 5-image episodes that is a few hundred tiny convolution calls and a few thousand
tiny elementwise ops, each dominated by its fixed cost. Here a group of tasks goes through
each layer together: batch norm (per-task statistics and, for adapted weights, per-task
gamma and beta), ReLU, pooling and the head run as one op over the group; a convolution
runs once when the weights are shared and once per task otherwise, and its weight gradient
once for the group when it is summed over tasks and once per task otherwise. The backward
is written out (Conv-4 is conv, batch norm, ReLU, mean pool, linear), so this is first-order
only: the result is not differentiable. Tested against per-task autograd.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from workbench.core.models.batch_norm import BatchStatNorm2d
from workbench.core.models.conv import Conv2d
from workbench.core.models.layout import channels_last_input, memory_format

if TYPE_CHECKING:
    from workbench.core.models.conv4 import Conv4


# Tasks go through in groups of about this many images: a group's activations then stay
# cache-sized (measured here, 32 tasks of 5 images: 36 ms in groups of 8, 37 ms all at once,
# 50 ms one task per pass; elementwise passes over one 8 MB block are memory-bound).
IMAGES_PER_PASS = 40
# Below this many tasks per pass nothing is gained (20-image tasks: per-task autograd is as fast).
MIN_TASKS_PER_PASS = 4
# A per-task convolution whose im2col matrix (one task's) has at most this many entries runs
# as ONE batched matmul over the group's tasks: on such maps a oneDNN call costs 40-80 us
# whatever its size. Measured here, 8 tasks of 5 images: weight gradients at 4x4 maps 634 us
# per task against 150 us by matmul, forward of the 1-channel 28x28 layer 538 against 251 us;
# at 14x14 and 7x7 maps with 64 channels (141k and 46k entries) oneDNN per task is faster.
SMALL_COLS = 16_384


def tasks_view(h: torch.Tensor, tasks: int) -> torch.Tensor:
    """(N, C, H, W) -> (tasks, N/tasks * H * W, C): free for a channels-last tensor."""
    return h.permute(0, 2, 3, 1).reshape(tasks, -1, h.shape[1])


def map_view(v: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    n, c, h, w = shape
    return v.reshape(n, h, w, c).permute(0, 3, 1, 2)


def task_group(model: Conv4, x: torch.Tensor) -> int:
    """Tasks per batched pass for x: (tasks, n, C, H, W); 0 where the pass does not apply:
    another model shape, too few tasks per pass to gain anything, or bf16 autocast (the pass
    computes in x's dtype)."""
    group = IMAGES_PER_PASS // x.shape[1]
    if (
        group < MIN_TASKS_PER_PASS
        or not _supported(model)
        or torch.is_autocast_enabled(x.device.type)
    ):
        return 0
    return group


def batched_gradients(
    model: Conv4,
    params: Mapping[str, torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    per_task_params: bool = False,
    summed: bool = False,
    scale: float = 1.0,
) -> tuple[dict[str, torch.Tensor], torch.Tensor] | None:
    """Gradients of each task's mean cross-entropy times `scale`, for x: (tasks, n, C, H, W),
    y: (tasks, n), and the logits (tasks, n, classes). `params` are shared (parameter shapes)
    or, with `per_task_params`, one set per task ((tasks, *shape) each). The gradients come
    per task ((tasks, *shape), each task's slice in its parameter's memory layout) or, with
    `summed`, summed over the tasks. None where the pass does not apply (`task_group`)."""
    group = task_group(model, x)
    if not group:
        return None
    grads: list[dict[str, torch.Tensor]] = []
    logits = []
    for i in range(0, x.shape[0], group):
        tasks = slice(i, i + group)
        part = {k: p[tasks] for k, p in params.items()} if per_task_params else params
        g, out = _group_pass(model, part, x[tasks], y[tasks], per_task_params, summed, scale)
        grads.append(g)
        logits.append(out)
    if summed:
        total = {k: grads[0][k] for k in params}  # in params' order
        for g in grads[1:]:
            for k, t in total.items():
                t.add_(g[k])
        return total, torch.cat(logits)
    layouts = {k: memory_format(p[0] if per_task_params else p) for k, p in params.items()}
    return _merge(grads, layouts), torch.cat(logits)


def _merge(
    parts: list[dict[str, torch.Tensor]], layouts: Mapping[str, torch.memory_format]
) -> dict[str, torch.Tensor]:
    """Concatenate the groups' (tasks, ...) gradients; each task's slice gets its parameter's
    memory layout, so that theta - alpha * g[t] does not mix NCHW and channels-last."""
    out = {}
    for k, layout in layouts.items():
        if layout == torch.channels_last:
            out[k] = torch.cat([g[k].permute(0, 1, 3, 4, 2) for g in parts]).permute(0, 1, 4, 2, 3)
        else:
            out[k] = torch.cat([g[k] for g in parts])
    return out


def _supported(model: Conv4) -> bool:
    return (
        model.average
        and model.head is not None
        and not any(isinstance(m, nn.MaxPool2d) for m in model.features)
    )


def _per_task(v: torch.Tensor, per_task: bool) -> torch.Tensor:
    """A per-channel parameter shaped to broadcast against a (tasks, m, C) view."""
    return v.unsqueeze(1) if per_task else v


@torch.no_grad()
def _group_pass(
    model: Conv4,
    params: Mapping[str, torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    per_task: bool,
    summed: bool,
    scale: float,
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """`batched_gradients` for one group of tasks (x: (tasks, n, C, H, W)): the gradients,
    summed or per task, and the logits. The model must be the strided Conv-4 with a head."""
    tasks, n = x.shape[:2]
    h = x.reshape(tasks * n, *x.shape[2:])
    if model.channels_last:
        h = channels_last_input(h)
    tape: list[tuple] = []
    for layer, keys in model.in_order:
        if isinstance(layer, Conv2d):
            w, b = params[keys[0]], params[keys[1]]
            cols = im2col(h, layer, tasks) if per_task else None
            tape.append(("conv", keys, h, w, layer, cols))
            if per_task:
                h = per_task_conv(h, w, b, layer, tasks, cols)
            else:
                h = F.conv2d(h, w, b, layer.stride, layer.padding)
            layout = torch.channels_last if model.channels_last else torch.contiguous_format
            h = h.contiguous(memory_format=layout)
        elif isinstance(layer, BatchStatNorm2d):
            v = tasks_view(h, tasks)
            xh = v - v.mean(1, keepdim=True)
            invstd = torch.rsqrt((xh * xh).mean(1, keepdim=True) + layer.eps)
            xh.mul_(invstd)
            gamma = _per_task(params[keys[0]], per_task)
            tape.append(("bn", keys, xh, invstd, gamma, h.shape))
            h = map_view(torch.addcmul(_per_task(params[keys[1]], per_task), xh, gamma), h.shape)
        elif isinstance(layer, nn.ReLU):
            h = torch.relu(h)
            tape.append(("relu", h))
        else:
            raise ValueError(f"task_gradients: unsupported layer {type(layer).__name__}")
    feat = h.mean((2, 3)).view(tasks, n, -1)
    w_head, b_head = params["head.weight"], params["head.bias"]
    if per_task:
        logits = torch.baddbmm(b_head.unsqueeze(1), feat, w_head.transpose(1, 2))
    else:
        logits = F.linear(feat, w_head, b_head)
    d_logits = logits.softmax(-1)
    d_logits.scatter_add_(2, y.unsqueeze(2), torch.full(y.shape + (1,), -1.0, dtype=d_logits.dtype))
    d_logits *= scale / n  # mean over each task's examples
    if summed:
        flat = d_logits.reshape(tasks * n, -1)
        grads = {"head.weight": flat.T @ feat.reshape(tasks * n, -1), "head.bias": flat.sum(0)}
    else:
        grads = {
            "head.weight": torch.bmm(d_logits.transpose(1, 2), feat),
            "head.bias": d_logits.sum(1),
        }
    d_feat = torch.bmm(d_logits, w_head) if per_task else d_logits @ w_head
    size = h.shape[2] * h.shape[3]
    d = (d_feat.reshape(tasks * n, -1) / size)[:, :, None, None].expand(h.shape)
    for entry in reversed(tape):
        kind = entry[0]
        if kind == "relu":
            d = torch.ops.aten.threshold_backward(d, entry[1], 0)
        elif kind == "bn":
            _, keys, xh, invstd, gamma, shape = entry
            dv = tasks_view(d, tasks)
            g_beta = dv.sum(1, keepdim=True)
            g_gamma = (dv * xh).sum(1, keepdim=True)
            m = xh.shape[1]
            dz = torch.addcmul(dv - g_beta / m, xh, g_gamma / -m)
            d = map_view(dz.mul_(gamma * invstd), shape)
            if summed:
                grads[keys[0]], grads[keys[1]] = g_gamma.sum((0, 1)), g_beta.sum((0, 1))
            else:
                grads[keys[0]], grads[keys[1]] = g_gamma.squeeze(1), g_beta.squeeze(1)
        else:
            d = _conv_backward(d, entry, entry is not tape[0], grads, tasks, n, per_task, summed)
    return grads, logits


def _conv_backward(
    d: torch.Tensor,
    entry: tuple,
    need_input: bool,
    grads: dict[str, torch.Tensor],
    tasks: int,
    n: int,
    per_task: bool,
    summed: bool,
) -> torch.Tensor:
    """One convolution's backward for a group: stores its weight and bias gradients in
    `grads` and returns the input gradient (`d` itself where none is needed). Each part is
    as few calls as the weights allow: one convolution over the group where the weights
    (input gradient) or the gradients (summed) are shared, one matmul over the group where
    the layer is small (`SMALL_COLS`), one convolution per task otherwise."""
    _, keys, h_in, w, layer, cols = entry
    bwd = torch.ops.aten.convolution_backward
    one = w[0] if per_task else w  # the weight's shape, for gradients over the group
    gx = None
    if summed:
        both = need_input and not per_task
        gx, grads[keys[0]], grads[keys[1]] = bwd(
            d, h_in, one, [one.shape[0]], *conv_geometry(layer), [both, True, True]
        )
    else:
        if cols is None:
            cols = im2col(h_in, layer, tasks)
        grads[keys[0]], grads[keys[1]], gx = per_task_weight_gradients(
            d, h_in, w, layer, tasks, cols, with_input=need_input and per_task
        )
    if not need_input:
        return d
    if gx is None:
        if per_task:
            gx = per_task_input_gradient(d, h_in, w, layer, tasks, cols)
        else:
            gx = bwd(d, h_in, w, None, *conv_geometry(layer), [True, False, False])[0]
    return gx.contiguous(memory_format=memory_format(h_in))


def conv_geometry(layer: Conv2d) -> tuple:
    """`convolution_backward`'s arguments after (gy, x, w, bias sizes) for this layer."""
    return (list(layer.stride), list(layer.padding), [1, 1], False, [0, 0], 1)


def _output_size(layer: Conv2d, height: int, width: int) -> tuple[int, int]:
    k, s, p = layer.kernel_size[0], layer.stride[0], layer.padding[0]
    return (height + 2 * p - k) // s + 1, (width + 2 * p - k) // s + 1


def per_task_conv(
    h: torch.Tensor, w: torch.Tensor, b: torch.Tensor, layer: Conv2d, tasks: int,
    cols: torch.Tensor | None,
) -> torch.Tensor:  # fmt: skip
    """Each task's images of h (N, C, H, W) through its own weights w (tasks, Cout, C, k, k)
    and bias b (tasks, Cout): one matmul over the group where the layer is small (`cols`, its
    `im2col`), one convolution per task otherwise. Differentiable."""
    if cols is not None:
        out = torch.baddbmm(b.unsqueeze(1), cols, weight_matrix(w).transpose(1, 2))
        return conv_output(out, h.shape, layer)
    return torch.cat([
        F.conv2d(h_t, w_t, b_t, layer.stride, layer.padding)
        for h_t, w_t, b_t in zip(h.split(h.shape[0] // tasks), w.unbind(0), b.unbind(0), strict=True)
    ])  # fmt: skip


def per_task_weight_gradients(
    d: torch.Tensor, h_in: torch.Tensor, w: torch.Tensor, layer: Conv2d, tasks: int,
    cols: torch.Tensor | None, with_input: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:  # fmt: skip
    """Each task's weight and bias gradients, (tasks, *shape), of a convolution with weights w
    shared (Cout, C, k, k) or per task (tasks, Cout, C, k, k), given the output gradient d and
    the input h_in of the group: one matmul where the layer is small (`cols`), one oneDNN call
    per task otherwise. With `with_input` (per-task weights) that call also gives each task's
    input gradient, returned third; None from the matmul."""
    if cols is not None:
        dv = tasks_view(d, tasks)
        k = layer.kernel_size[0]
        gw = torch.bmm(dv.transpose(1, 2), cols).view(tasks, -1, k, k, h_in.shape[1])
        return gw.permute(0, 1, 4, 2, 3), dv.sum(1), None
    n, per_task, geometry = h_in.shape[0] // tasks, w.dim() == 5, conv_geometry(layer)
    outs = [
        torch.ops.aten.convolution_backward(
            d_t, h_t, w[t] if per_task else w, [w.shape[-4]], *geometry, [with_input, True, True]
        )
        for t, (d_t, h_t) in enumerate(zip(d.split(n), h_in.split(n), strict=True))
    ]  # fmt: skip
    gx = torch.cat([o[0] for o in outs]) if with_input else None
    return torch.stack([o[1] for o in outs]), torch.stack([o[2] for o in outs]), gx


def per_task_input_gradient(
    d: torch.Tensor, h_in: torch.Tensor, w: torch.Tensor, layer: Conv2d, tasks: int,
    cols: torch.Tensor | None,
) -> torch.Tensor:  # fmt: skip
    """Each task's input gradient of a convolution with per-task weights w (tasks, ...): one
    matmul and k*k strided adds where the layer is small (`cols`), one oneDNN call per task
    otherwise."""
    if cols is not None:
        return small_input_gradient(d, w, h_in.shape, layer, tasks)
    n, geometry = h_in.shape[0] // tasks, conv_geometry(layer)
    return torch.cat([
        torch.ops.aten.convolution_backward(d_t, h_t, w_t, None, *geometry, [True, False, False])[0]
        for d_t, h_t, w_t in zip(d.split(n), h_in.split(n), w.unbind(0), strict=True)
    ])  # fmt: skip


def im2col(h: torch.Tensor, layer: Conv2d, tasks: int) -> torch.Tensor | None:
    """im2col of the group's input h (N, C, H, W) as (tasks, n*Ho*Wo, k*k*C), each row one
    output position's (kh, kw, c) patch: the memory order of a channels-last weight. None
    where oneDNN per task is the faster way (`SMALL_COLS`) or h is not channels-last."""
    n_all, c, height, width = h.shape
    k, s, p = layer.kernel_size[0], layer.stride[0], layer.padding[0]
    ho, wo = _output_size(layer, height, width)
    small = n_all // tasks * ho * wo * k * k * c <= SMALL_COLS
    if not small or (c > 1 and memory_format(h) != torch.channels_last):
        return None
    padded = F.pad(h.permute(0, 2, 3, 1), (0, 0, p, p, p, p))  # (N, H+2p, W+2p, C)
    sn, sh, sw, sc = padded.stride()
    patches = padded.as_strided((n_all, ho, wo, k, k, c), (sn, sh * s, sw * s, sh, sw, sc))
    return patches.reshape(tasks, -1, k * k * c)


def weight_matrix(w: torch.Tensor) -> torch.Tensor:
    """Per-task weights (tasks, Cout, C, k, k) as (tasks, Cout, k*k*C), `im2col`' patch order
    (a view for channels-last weights)."""
    return w.permute(0, 1, 3, 4, 2).reshape(w.shape[0], w.shape[1], -1)


def conv_output(out: torch.Tensor, shape: torch.Size, layer: Conv2d) -> torch.Tensor:
    """A matmul convolution's (tasks, n*Ho*Wo, Cout) as an (N, Cout, Ho, Wo) channels-last map."""
    ho, wo = _output_size(layer, shape[2], shape[3])
    return out.view(shape[0], ho, wo, -1).permute(0, 3, 1, 2)


def small_input_gradient(
    d: torch.Tensor, w: torch.Tensor, shape: torch.Size, layer: Conv2d, tasks: int
) -> torch.Tensor:
    """Input gradient of a small per-task convolution: one matmul gives every patch's
    gradient, and the k*k kernel offsets add them back onto the (padded) input map."""
    n_all, c, height, width = shape
    k, s, p = layer.kernel_size[0], layer.stride[0], layer.padding[0]
    ho, wo = d.shape[2:]
    patches = torch.bmm(tasks_view(d, tasks), weight_matrix(w)).view(n_all, ho, wo, k, k, c)
    padded = d.new_zeros(n_all, height + 2 * p, width + 2 * p, c)
    for i in range(k):
        for j in range(k):
            padded[:, i : i + s * (ho - 1) + 1 : s, j : j + s * (wo - 1) + 1 : s].add_(
                patches[:, :, :, i, j]
            )
    return padded[:, p : p + height, p : p + width].permute(0, 3, 1, 2)
