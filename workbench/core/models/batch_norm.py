"""Batch-statistics batch norm whose second derivative is a few fused passes.

Second-order MAML differentiates through the inner-loop gradient, so every batch norm is
differentiated twice. PyTorch's generic double backward of batch norm
(`batchnorm_double_backward`) runs about forty full-size elementwise ops per layer; on
MAML's tiny episodes (5 images per task) those ops are dispatch-bound and made batch norm
about 40% of a second-order step on CPU. Here the backward calls the native kernel (NCHW), the
forward too except for channels-last fp32 inputs (whose native per-channel sums are
inaccurate in fp32: `_channels_last_sums`), and the double backward is the
closed form below: three per-channel reductions and
a handful of elementwise passes. Same mathematics (tested against autograd's own double
backward and finite differences), no running statistics (the MAML paper's setting).

Notation per channel, N elements: xh = (x - mean) * r, r = 1/sqrt(var + eps),
y = gamma * xh + beta. Backward: gbeta = sum gy, ggamma = sum gy*xh,
gx = gamma*r*(gy - a - xh*b) with a = mean gy, b = mean gy*xh. Given upstream (ggx, gggamma,
ggbeta) for (gx, ggamma, gbeta), with m1 = mean ggx, c = mean ggx*xh, m3 = mean ggx*gy and
A = N*(m3 - a*m1 - b*c):
    d gy    = ggbeta + gggamma*xh + gamma*r*(ggx - m1 - xh*c)
    d gamma = r*A
    d x     = r*(v - mean v - xh*(mean(v*xh) + gamma*A*r/N)),  v = -gamma*r*b*ggx + (gggamma - gamma*r*c)*gy
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from workbench.core.device_policy import policy_for
from workbench.core.models import double_backward
from workbench.core.models.layout import memory_format


def _channel(v: torch.Tensor, ndim: int) -> torch.Tensor:
    """A per-channel vector shaped to broadcast against an (N, C, ...) tensor."""
    return v.view((1, -1) + (1,) * (ndim - 2))


def _dims(ndim: int) -> list[int]:
    return [0, *range(2, ndim)]


def _backward(gy: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, mean: torch.Tensor, invstd: torch.Tensor,
              eps: float, xh: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    """(gx, gweight, gbias) from the forward's (accurate) statistics. The native channels-last
    CPU kernel accumulates gbias = sum gy and gweight = sum gy*xh row by row in one fp32 value
    per channel: 10-20x the NCHW kernel's error on those sums (measured on MAML's activations:
    2e-6 against 1e-7 of the largest entry at 980-14700 elements a channel), which
    second-order MAML amplified into a meta-gradient up to 100x further from float64 than the
    NCHW path's (issue 12). Given xh (the forward's, kept where the backward is
    differentiated: second-order MAML's inner loop), those inputs (`_channels_last_sums`) take
    torch's cascaded sums and gx in closed form, gamma*r*(gy - mean gy - xh*mean(gy*xh)): as
    fast as the native kernel there. Without xh (a query pass, first order) the native kernel
    stays: recomputing xh and the separate passes cost 4-14% of a step (measured)."""
    if xh is None or not _channels_last_sums(x):
        return torch.ops.aten.native_batch_norm_backward(
            gy, x, weight, None, None, mean, invstd, True, eps, [True, True, True]
        )
    nd, dims = x.dim(), _dims(x.dim())
    n = x.numel() // x.shape[1]
    gb = gy.sum(dims)
    gw = (gy * xh).sum(dims)
    grw = weight * invstd
    gx = torch.addcmul(_channel(-grw * gb / n, nd), gy, _channel(grw, nd))
    return gx.addcmul_(xh, _channel(-grw * gw / n, nd)), gw, gb


CENTRED_ABOVE = 2048  # elements per channel


def _channels_last_sums(x: torch.Tensor) -> bool:
    """A channels-last fp32 input on CPU: the native kernels' per-channel fp32 sums
    (statistics, and the backward's gbias and gweight) are replaced by accurate ones
    (`_BatchNorm.forward`, `_backward`). Even at 20-80 elements a channel (Conv-4's last
    layers on a 5-image support set) the native ones moved second-order meta-gradients
    5-15x further from float64 on some batches (issue 12)."""
    return (
        x.dtype == torch.float32
        and policy_for(x.device).centred_bn_sums
        and memory_format(x) == torch.channels_last
    )


def _needs_centred_sums(x: torch.Tensor) -> bool:
    """The native channels-last forward accumulates each channel's sums in one running fp32
    value and takes var = E[x^2] - mean^2; the error grows with the elements per channel (the
    backward, given accurate statistics, is fine: same errors as an all-centred version).
    Measured on fp32 meta-gradients against fp64 (max error / largest entry; NCHW kernels in
    brackets): ProtoNet 60-way (470k per channel)
    8e-2 -> 9e-3 with the centred sums used here (9e-3); 20-way 5-step MAML (3920) 2e-1 -> 5e-2
    (2e-2); 15-query MAML (14700) 3e-3 -> 3e-4 (5e-5). Smaller inputs: `_statistics`
    (at 5-image episodes the fp32 statistics, though close, were what second-order MAML
    amplified: issue 12); the backward's sums: `_backward`."""
    if x.dtype not in (torch.float32, torch.float64):  # bf16 (autocast): the native kernels
        return False
    if not policy_for(x.device).centred_bn_sums:  # CUDA's kernels: Welford, accurate as they are
        return False
    return memory_format(x) == torch.channels_last and x.numel() // x.shape[1] > CENTRED_ABOVE


class _BatchNorm(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float
    ) -> torch.Tensor:
        xh = None
        if _needs_centred_sums(x) and not double_backward.enabled(x):
            # the query pass and first order: one pass less than with xh kept (the backward
            # takes the native kernel's sums there: `_backward`)
            nd, dims = x.dim(), _dims(x.dim())
            n = x.numel() // x.shape[1]
            mean = x.sum(dims) / n
            xc = x - _channel(mean, nd)
            invstd = torch.rsqrt(xc.mul_(xc).sum(dims) / n + eps)  # centred sum of squares
            scale = weight * invstd  # y = x * scale + (bias - mean * scale): one pass
            y = torch.addcmul(_channel(bias - mean * scale, nd), x, _channel(scale, nd), out=xc)
        elif _needs_centred_sums(x) or _channels_last_sums(x):
            mean, invstd, xh = _statistics(x, eps)
            y = torch.addcmul(_channel(bias, x.dim()), xh, _channel(weight, x.dim()))
        else:
            y, mean, invstd = torch.native_batch_norm(x, weight, bias, None, None, True, 0.0, eps)
        ctx.save_for_backward(x, weight, mean, invstd, xh)
        ctx.eps = eps
        return y

    @staticmethod
    def backward(ctx: Any, gy: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight, mean, invstd, xh = ctx.saved_tensors
        gy = gy.contiguous(memory_format=memory_format(x))
        if torch.is_grad_enabled():  # create_graph: the backward itself is differentiated
            gx, gw, gb = _BatchNormBackward.apply(gy, x, weight, mean, invstd, ctx.eps, xh)
        else:
            gx, gw, gb = _backward(gy, x, weight, mean, invstd, ctx.eps, xh)
        return gx, gw, gb, None


def _statistics(x: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(mean, invstd, xh = (x - mean) * invstd) of a channels-last input from centred sums:
    torch's cascaded fp32 sums above CENTRED_ABOVE elements a channel, float64 ones below
    (where they cost little and match the NCHW kernel's accuracy)."""
    nd, dims = x.dim(), _dims(x.dim())
    n = x.numel() // x.shape[1]
    acc = x.dtype if n > CENTRED_ABOVE else torch.float64
    mean = (x.sum(dims, dtype=acc) / n).to(x.dtype)
    xc = x - _channel(mean, nd)
    var = (xc * xc).sum(dims, dtype=acc) / n
    invstd = (var + eps).rsqrt_().to(x.dtype)
    return mean, invstd, xc.mul_(_channel(invstd, nd))


class _BatchNormBackward(torch.autograd.Function):
    """(gy, x, weight) -> (gx, gweight, gbias), differentiable once in closed form."""

    @staticmethod
    def forward(ctx: Any, gy: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, mean: torch.Tensor,
                invstd: torch.Tensor, eps: float, xh: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
        if xh is None:
            xh = (x - _channel(mean, x.dim())) * _channel(invstd, x.dim())
        gx, gw, gb = _backward(gy, x, weight, mean, invstd, eps, xh)
        ctx.save_for_backward(gy, xh, weight, invstd, gw, gb)
        return gx, gw, gb

    @staticmethod
    @once_differentiable
    def backward(
        ctx: Any, ggx: torch.Tensor | None, ggw: torch.Tensor | None, ggb: torch.Tensor | None
    ) -> tuple[torch.Tensor | None, ...]:
        gy, xh, weight, invstd, gw, gb = ctx.saved_tensors
        nd, dims = xh.dim(), _dims(xh.dim())
        # every full-size operand in x's layout: mixed NCHW / channels-last elementwise ops are
        # several times slower than either
        ggx = (
            torch.zeros_like(xh) if ggx is None else ggx.contiguous(memory_format=memory_format(xh))
        )
        d_gy, d_x, d_w = second_derivatives(
            gy, xh, weight, invstd, gw, gb, ggx,
            torch.zeros_like(weight) if ggw is None else ggw,
            torch.zeros_like(weight) if ggb is None else ggb,
            ctx.needs_input_grad[:3], lambda t: t.mean(dims), lambda v: _channel(v, nd),
        )  # fmt: skip
        return d_gy, d_x, d_w, None, None, None, None


def second_derivatives(
    gy: torch.Tensor, xh: torch.Tensor, weight: torch.Tensor, r: torch.Tensor,
    gw: torch.Tensor, gb: torch.Tensor, ggx: torch.Tensor, ggw: torch.Tensor, ggb: torch.Tensor,
    needs: tuple[bool, ...], mean: Any, ch: Any,
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:  # fmt: skip
    """(d gy, d x, d weight) of the module docstring's closed form, each where `needs` says
    (gy, x, weight). `mean` reduces a full-size tensor to per-channel statistics and `ch`
    shapes per-channel values to broadcast against it; weight, r = invstd, gw, gb, ggw and
    ggb are per-channel (for batch norm over groups of tasks: per task and channel)."""
    n = xh.numel() // gw.numel()  # elements per statistic
    a, b = gb / n, gw / n
    grw = weight * r  # gamma * r
    m1 = mean(ggx)
    c = mean(ggx * xh)
    m3 = mean(ggx * gy)
    big_a = n * (m3 - a * m1 - b * c)
    d_gy = d_w = d_x = None
    need_gy, need_x, need_w = needs
    if need_gy:
        # ggb + ggw*xh + grw*(ggx - m1 - xh*c) = grw*ggx + xh*(ggw - grw*c) + (ggb - grw*m1)
        d_gy = (ggx * ch(grw)).addcmul_(xh, ch(ggw - grw * c)).add_(ch(ggb - grw * m1))
    if need_w:
        d_w = r * big_a
    if need_x:
        alpha1 = -grw * b
        alpha2 = ggw - grw * c
        mean_v = alpha1 * m1 + alpha2 * a
        mean_vxh = alpha1 * c + alpha2 * b + weight * big_a * r / n
        # r*(alpha1*ggx + alpha2*gy - mean_v - xh*mean_vxh)
        d_x = (ggx * ch(r * alpha1)).addcmul_(gy, ch(r * alpha2))
        d_x.addcmul_(xh, ch(-r * mean_vxh)).sub_(ch(r * mean_v))
    return d_gy, d_x, d_w


def batch_norm(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float = 1e-5
) -> torch.Tensor:
    """Batch norm with the batch's own statistics (no running statistics)."""
    return _BatchNorm.apply(x, weight, bias, eps)


class BatchStatNorm2d(nn.BatchNorm2d):
    """`nn.BatchNorm2d(track_running_stats=False)` that uses the closed-form double backward
    inside `closed_form_double_backward()`; same parameters and state dict."""

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__(num_features, eps=eps, track_running_stats=False)

    def apply_with(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """This layer's normalisation with the given affine parameters (MAML's adapted ones)."""
        if double_backward.enabled(x) or (torch.is_grad_enabled() and _needs_centred_sums(x)):
            return batch_norm(x, weight, bias, self.eps)
        return F.batch_norm(x, None, None, weight, bias, True, 0.0, self.eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.apply_with(x, self.weight, self.bias)
