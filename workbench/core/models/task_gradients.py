"""Cross-entropy gradients of many tasks at the same weights, from one batched pass.

MAML's first inner step starts every task of the meta-batch from the same theta. Autograd
can only give the gradient of a sum, so the plain way is one forward and backward per task:
on 5-image episodes that is a few hundred tiny convolution calls, each dominated by its fixed
cost. Here all tasks' support sets go through each convolution in ONE call (the weights are
shared), batch norm keeps per-task statistics, the input gradients run batched too, and only
the weight gradient, the one quantity that differs per task, is computed task by task. The
backward is written out (Conv-4 is conv, batch norm, ReLU, mean pool, linear), so this is
first-order only: the result is not differentiable. Tested against per-task autograd.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from workbench.core.models.batch_norm import BatchStatNorm2d
from workbench.core.models.conv import Conv2d
from workbench.core.models.layout import memory_format

if TYPE_CHECKING:
    from workbench.core.models.conv4 import Conv4


# Tasks go through in groups of about this many images: a group's activations then stay
# cache-sized (measured here, 32 tasks of 5 images: 36 ms in groups of 8, 37 ms all at once,
# 50 ms one task per pass; elementwise passes over one 8 MB block are memory-bound).
IMAGES_PER_PASS = 40
# Below this many tasks per pass nothing is gained (20-image tasks: per-task autograd is as fast).
MIN_TASKS_PER_PASS = 4


def _tasks_view(h: torch.Tensor, tasks: int) -> torch.Tensor:
    """(N, C, H, W) -> (tasks, N/tasks * H * W, C): free for a channels-last tensor."""
    return h.permute(0, 2, 3, 1).reshape(tasks, -1, h.shape[1])


def _map_view(v: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    n, c, h, w = shape
    return v.reshape(n, h, w, c).permute(0, 3, 1, 2)


def per_task_gradients(
    model: Conv4, params: Mapping[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor
) -> dict[str, torch.Tensor] | None:
    """Per-task gradients of the mean cross-entropy at shared `params`, (tasks, *param shape)
    per parameter, for x: (tasks, n, C, H, W), y: (tasks, n); tasks go through in groups of
    about IMAGES_PER_PASS images. None where it does not apply: another model shape, too
    few tasks per pass to gain anything, or bf16 autocast (this computes in x's dtype)."""
    group = IMAGES_PER_PASS // x.shape[1]
    if (
        group < MIN_TASKS_PER_PASS
        or not _supported(model)
        or torch.is_autocast_enabled(x.device.type)
    ):
        return None
    parts = [
        _group_gradients(model, params, x[i : i + group], y[i : i + group])
        for i in range(0, x.shape[0], group)
    ]
    return _merge(parts, params)


def _merge(
    parts: list[dict[str, torch.Tensor]], params: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Concatenate the groups' (tasks, ...) gradients; each task's slice gets its parameter's
    memory layout, so that theta - alpha * g[t] does not mix NCHW and channels-last."""
    out = {}
    for k, p in params.items():
        if memory_format(p) == torch.channels_last:
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


@torch.no_grad()
def _group_gradients(
    model: Conv4, params: Mapping[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Per-task gradients of the mean cross-entropy, (tasks, *param shape) per parameter.

    x: (tasks, n, C, H, W) support images, y: (tasks, n) labels. The model must be the
    strided Conv-4 with a head (`_supported`)."""
    tasks, n = x.shape[:2]
    h = x.reshape(tasks * n, *x.shape[2:])
    layers = list(model.features)
    tape: list[tuple] = []
    for i in model._order:
        layer, keys = layers[i], model._keys[i]
        if isinstance(layer, Conv2d):
            w = params[keys[0]]
            tape.append(("conv", keys, h, w, layer))
            h = F.conv2d(h, w, params[keys[1]], layer.stride, layer.padding)
            if model.channels_last:
                h = h.contiguous(memory_format=torch.channels_last)
        elif isinstance(layer, BatchStatNorm2d):
            v = _tasks_view(h, tasks)
            xh = v - v.mean(1, keepdim=True)
            invstd = torch.rsqrt((xh * xh).mean(1, keepdim=True) + layer.eps)
            xh.mul_(invstd)
            gamma = params[keys[0]]
            tape.append(("bn", keys, xh, invstd, gamma, h.shape))
            h = _map_view(torch.addcmul(params[keys[1]], xh, gamma), h.shape)
        elif isinstance(layer, nn.ReLU):
            h = torch.relu(h)
            tape.append(("relu", h))
        else:
            raise ValueError(f"task_gradients: unsupported layer {type(layer).__name__}")
    feat = h.mean((2, 3))
    w_head = params["head.weight"]
    logits = F.linear(feat, w_head, params["head.bias"]).view(tasks, n, -1)
    d_logits = logits.softmax(-1)
    d_logits.scatter_add_(2, y.unsqueeze(2), torch.full(y.shape + (1,), -1.0, dtype=d_logits.dtype))
    d_logits /= n  # mean over each task's support set
    grads = {
        "head.weight": torch.bmm(d_logits.transpose(1, 2), feat.view(tasks, n, -1)),
        "head.bias": d_logits.sum(1),
    }
    size = h.shape[2] * h.shape[3]
    d = (d_logits.reshape(tasks * n, -1) @ w_head / size)[:, :, None, None].expand(h.shape)
    for entry in reversed(tape):
        kind = entry[0]
        if kind == "relu":
            d = d * (entry[1] > 0)
        elif kind == "bn":
            _, keys, xh, invstd, gamma, shape = entry
            dv = _tasks_view(d, tasks)
            g_beta = dv.sum(1)
            g_gamma = (dv * xh).sum(1)
            m = xh.shape[1]
            dz = torch.addcmul(dv - (g_beta / m).unsqueeze(1), xh, (g_gamma / -m).unsqueeze(1))
            d = _map_view(dz.mul_(gamma * invstd), shape)
            grads[keys[0]], grads[keys[1]] = g_gamma, g_beta
        else:
            _, keys, h_in, w, layer = entry
            geometry = (list(layer.stride), list(layer.padding), [1, 1], False, [0, 0], 1)
            per_task = [
                torch.ops.aten.convolution_backward(d[t * n : (t + 1) * n], h_in[t * n : (t + 1) * n], w, [w.shape[0]], *geometry, [False, True, True])
                for t in range(tasks)
            ]  # fmt: skip
            grads[keys[0]] = torch.stack([g[1] for g in per_task])
            grads[keys[1]] = torch.stack([g[2] for g in per_task])
            if entry is not tape[0]:  # the images need no gradient
                d = torch.ops.aten.convolution_backward(
                    d, h_in, w, None, *geometry, [True, False, False]
                )[0]
    return grads
