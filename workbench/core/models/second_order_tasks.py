"""Second-order MAML for a group of tasks from batched passes.

Every task's first inner step starts from the same theta, so the support pass of a group of
tasks can share its convolutions: one call over the group's images, where the plain way is
one forward, one backward and, for the meta-gradient, their double backward per task, each
a fixed-cost oneDNN call on a 5-image episode. Here the support gradient of each task is
computed by an explicit backward (Conv-4: conv, batch norm, ReLU, mean pool, linear) written
with differentiable operations, so autograd can differentiate it once more for the
meta-gradient: batch norm, ReLU, pooling and the head run as one op per group, and the
convolution's backward is `_GroupWeightGradient`, whose own derivative is in closed form and
shares every convolution that has the group's common weights. The query pass runs with each
task's adapted weights (one convolution per task, or one matmul for the 1-channel first
layer). Tested against the per-task second-order step and finite differences.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from workbench.core.models.batch_norm import BatchStatNorm2d, second_derivatives
from workbench.core.models.conv import Conv2d
from workbench.core.models.layout import channels_last_input, memory_format
from workbench.core.models.task_gradients import (
    conv_geometry,
    im2col,
    map_view,
    per_task_conv,
    per_task_input_gradient,
    per_task_weight_gradients,
    task_group,
    tasks_view,
)

if TYPE_CHECKING:
    from workbench.core.models.conv4 import Conv4

_CL = torch.channels_last


def _per_slice_channels_last(g: torch.Tensor) -> torch.Tensor:
    """(tasks, Cout, C, k, k) with each task's slice in channels-last order (the weights' layout)."""
    return g.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3)


class _GroupWeightGradient(torch.autograd.Function):
    """(gy, x, w) -> (gW per task, gb per task[, gx]) of a convolution whose weights w the
    group's tasks share (x, gy: the group's images, n per task); differentiable once, in
    closed form. Given upstream (ggW_t, ggb_t, ggx):
        d gy_t = conv(ggx_t, w) + conv(x_t, ggW_t) + ggb_t    d x_t = conv_T(gy_t, ggW_t)
        d w    = sum_t wgrad(ggx_t, gy_t)
    and the parts with the shared w are one call for the whole group."""

    @staticmethod
    def forward(ctx: Any, gy: torch.Tensor, x: torch.Tensor, w: torch.Tensor, layer: Conv2d,
                tasks: int, need_x: bool) -> tuple[torch.Tensor, ...]:  # fmt: skip
        cols = im2col(x, layer, tasks)
        gw, gb, _ = per_task_weight_gradients(gy, x, w, layer, tasks, cols)
        gw = _per_slice_channels_last(gw)
        ctx.save_for_backward(gy, x, w)
        ctx.layer, ctx.tasks, ctx.cols = layer, tasks, cols
        if not need_x:
            return gw, gb
        gx = torch.ops.aten.convolution_backward(
            gy, x, w, None, *conv_geometry(layer), [True, False, False]
        )[0]
        return gw, gb, gx.contiguous(memory_format=memory_format(x))

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, ggw: torch.Tensor | None, ggb: torch.Tensor | None,
                 ggx: torch.Tensor | None = None) -> tuple[torch.Tensor | None, ...]:  # fmt: skip
        gy, x, w = ctx.saved_tensors
        layer, tasks, cols = ctx.layer, ctx.tasks, ctx.cols
        stride, padding = layer.stride, layer.padding
        n = x.shape[0] // tasks
        need_gy, need_x, need_w = ctx.needs_input_grad[:3]
        d_gy = d_x = d_w = None
        if ggx is not None:
            ggx = ggx.contiguous(memory_format=memory_format(x))
        if need_gy:
            if ggw is not None:
                bias = ggb if ggb is not None else ggw.new_zeros(ggw.shape[:2])
                d_gy = per_task_conv(x, ggw, bias, layer, tasks, cols)
                d_gy = d_gy.contiguous(memory_format=memory_format(gy))
                if ggx is not None:
                    d_gy = d_gy + F.conv2d(ggx, w, None, stride, padding)
            elif ggx is not None:
                d_gy = F.conv2d(ggx, w, None, stride, padding)
                if ggb is not None:
                    d_gy = d_gy + ggb.repeat_interleave(n, 0)[:, :, None, None]
            elif ggb is not None:
                per_image = ggb.repeat_interleave(n, 0)[:, :, None, None]
                d_gy = per_image.expand(gy.shape).contiguous(memory_format=memory_format(gy))
        if need_x and ggw is not None:
            d_x = per_task_input_gradient(gy, x, ggw, layer, tasks, cols)
            d_x = d_x.contiguous(memory_format=memory_format(x))
        if need_w and ggx is not None:
            d_w = torch.ops.aten.convolution_backward(
                gy, ggx, w, None, *conv_geometry(layer), [False, True, False]
            )[1]
        return d_gy, d_x, d_w, None, None, None


class _GroupBatchNorm(torch.autograd.Function):
    """Batch norm with per-task statistics over a (tasks, m, C) view, weight and bias shared
    (C) or per task (tasks, 1, C). Returns (y, mean, invstd), the statistics for the explicit
    backward (`_GroupBatchNormBackward`, which accounts for their dependence on x); its own
    backward is first order (the outer pass of the meta-gradient)."""

    @staticmethod
    def forward(ctx: Any, v: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
        mean = v.mean(1, keepdim=True)
        xh = v - mean
        invstd = torch.rsqrt((xh * xh).mean(1, keepdim=True) + eps)
        xh.mul_(invstd)
        ctx.save_for_backward(xh, weight, invstd)
        ctx.mark_non_differentiable(mean, invstd)
        return torch.addcmul(bias, xh, weight), mean, invstd

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, gy: torch.Tensor, *_: Any) -> tuple[torch.Tensor | None, ...]:
        xh, weight, invstd = ctx.saved_tensors
        gx, gw, gb = _group_bn_backward(gy, xh, weight, invstd)
        shared = weight.dim() == 1
        return gx, gw.sum((0, 1)) if shared else gw, gb.sum((0, 1)) if shared else gb, None


def _group_bn_backward(gy: torch.Tensor, xh: torch.Tensor, weight: torch.Tensor,
                       invstd: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    """Batch norm's backward over (tasks, m, C): gx and the per-task (tasks, 1, C) sums."""
    m = xh.shape[1]
    gb = gy.sum(1, keepdim=True)
    gw = (gy * xh).sum(1, keepdim=True)
    gx = torch.addcmul(gy - gb / m, xh, gw / -m).mul_(weight * invstd)
    return gx, gw, gb


class _GroupBatchNormBackward(torch.autograd.Function):
    """(gy, x, weight) -> (gx, per-task gweight, per-task gbias) of `_GroupBatchNorm` with a
    shared weight, differentiable once in closed form (`batch_norm.second_derivatives`)."""

    @staticmethod
    def forward(ctx: Any, gy: torch.Tensor, v: torch.Tensor, weight: torch.Tensor,
                mean: torch.Tensor, invstd: torch.Tensor) -> tuple[torch.Tensor, ...]:  # fmt: skip
        xh = (v - mean).mul_(invstd)
        gx, gw, gb = _group_bn_backward(gy, xh, weight, invstd)
        ctx.save_for_backward(gy, xh, weight, invstd, gw, gb)
        return gx, gw.squeeze(1), gb.squeeze(1)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, ggx: torch.Tensor | None, ggw: torch.Tensor | None,
                 ggb: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:  # fmt: skip
        gy, xh, weight, invstd, gw, gb = ctx.saved_tensors
        d_gy, d_x, d_w = second_derivatives(
            gy, xh, weight, invstd, gw, gb,
            torch.zeros_like(xh) if ggx is None else ggx.contiguous(),
            torch.zeros_like(gw) if ggw is None else ggw.unsqueeze(1),
            torch.zeros_like(gb) if ggb is None else ggb.unsqueeze(1),
            ctx.needs_input_grad[:3], lambda t: t.mean(1, keepdim=True), lambda c: c,
        )  # fmt: skip
        return d_gy, d_x, None if d_w is None else d_w.sum((0, 1)), None, None


def support_gradients(
    model: Conv4, params: Mapping[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor
) -> dict[str, torch.Tensor] | None:
    """Each task's gradient of its mean cross-entropy at the shared `params`, (tasks, *shape)
    per parameter (conv weights channels-last per task), for x: (tasks, n, C, H, W), as a
    differentiable function of `params` (what `create_graph=True` gives per task). One group:
    the caller splits larger batches (`task_group`). None where it does not apply."""
    if not task_group(model, x):
        return None
    tasks, n = x.shape[:2]
    h = channels_last_input(x.reshape(tasks * n, *x.shape[2:]))
    tape: list[tuple] = []
    for layer, keys in model.in_order:
        if isinstance(layer, Conv2d):
            tape.append(("conv", keys, h, layer))
            h = layer.apply_with(h, params[keys[0]], params[keys[1]]).contiguous(memory_format=_CL)
        elif isinstance(layer, BatchStatNorm2d):
            v = tasks_view(h, tasks)
            out, mean, invstd = _GroupBatchNorm.apply(
                v, params[keys[0]], params[keys[1]], layer.eps
            )
            tape.append(("bn", keys, v, mean, invstd, h.shape))
            h = map_view(out, h.shape)
        elif isinstance(layer, nn.ReLU):
            h = torch.relu(h)
            tape.append(("relu", h))
        else:
            raise ValueError(f"second_order_tasks: unsupported layer {type(layer).__name__}")
    feat = h.mean((2, 3)).view(tasks, n, -1)
    w_head = params["head.weight"]
    logits = F.linear(feat, w_head, params["head.bias"])
    onehot = F.one_hot(y, logits.shape[-1]).to(logits.dtype)
    d_logits = (logits.softmax(-1) - onehot) / n  # mean over each task's examples
    grads = {"head.weight": torch.bmm(d_logits.transpose(1, 2), feat), "head.bias": d_logits.sum(1)}
    size = h.shape[2] * h.shape[3]
    d = ((d_logits @ w_head).reshape(tasks * n, -1) / size)[:, :, None, None].expand(h.shape)
    for entry in reversed(tape):
        if entry[0] == "relu":
            d = torch.ops.aten.threshold_backward(d, entry[1], 0)
        elif entry[0] == "bn":
            _, keys, v, mean, invstd, shape = entry
            dv = tasks_view(d, tasks).contiguous()
            dz, grads[keys[0]], grads[keys[1]] = _GroupBatchNormBackward.apply(
                dv, v, params[keys[0]], mean, invstd
            )
            d = map_view(dz, shape)
        else:
            _, keys, h_in, layer = entry
            need_x = entry is not tape[0]
            out = _GroupWeightGradient.apply(d, h_in, params[keys[0]], layer, tasks, need_x)
            grads[keys[0]], grads[keys[1]] = out[0], out[1]
            if need_x:
                d = out[2]
    return {k: grads[k] for k in params}


def tasks_forward(
    model: Conv4, params: Mapping[str, torch.Tensor], x: torch.Tensor
) -> torch.Tensor:
    """Logits (tasks, n, classes) of each task's images x: (tasks, n, C, H, W) under its own
    weights (tasks, *shape) per parameter; differentiable. Batch norm, ReLU, pooling and the
    head run once for the group, each convolution once per task (the 1-channel first layer as
    one matmul)."""
    tasks, n = x.shape[:2]
    h = x.reshape(tasks * n, *x.shape[2:])
    for layer, keys in model.in_order:
        if isinstance(layer, Conv2d):
            w, b = params[keys[0]], params[keys[1]]
            # the matmul only for the images: no gradient through the im2col copy needed
            cols = im2col(h, layer, tasks) if not h.requires_grad else None
            h = per_task_conv(h, w, b, layer, tasks, cols).contiguous(memory_format=_CL)
        elif isinstance(layer, BatchStatNorm2d):
            gamma, beta = params[keys[0]].unsqueeze(1), params[keys[1]].unsqueeze(1)
            y, _, _ = _GroupBatchNorm.apply(tasks_view(h, tasks), gamma, beta, layer.eps)
            h = map_view(y, h.shape)
        else:
            h = torch.relu(h)
    feat = h.mean((2, 3)).view(tasks, n, -1)
    return torch.baddbmm(
        params["head.bias"].unsqueeze(1), feat, params["head.weight"].transpose(1, 2)
    )
