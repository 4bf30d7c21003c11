"""Conv2d whose double backward is one `convolution_backward` and one convolution.

For y = conv(x, W) + b the backward is gx = conv_T(gy, W), gW = wgrad(x, gy), gb = sum gy.
Its derivative, given upstream (ggx, ggW, ggb), is
    d gy = conv(ggx, W) + conv(x, ggW) + ggb   (one convolution over stacked channels)
    d x  = conv_T(gy, ggW)        d W = wgrad(ggx, gy)
and the last two are exactly what ONE `convolution_backward(gy, input=ggx, weight=ggW)`
returns. PyTorch's generic `_convolution_double_backward` instead gets d W from a convolution
over batch-transposed copies (slow for MAML's 5-image episodes on CPU: about 10% of a
second-order step). Tested against autograd's own double backward.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from workbench.core.models import double_backward
from workbench.core.models.layout import memory_format


class _Conv(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, stride: int, padding: int
    ) -> torch.Tensor:
        ctx.save_for_backward(x, w)
        ctx.geometry = (stride, padding)
        return F.conv2d(x, w, b, stride, padding)

    @staticmethod
    def backward(ctx: Any, gy: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, w = ctx.saved_tensors
        need_x = ctx.needs_input_grad[0]
        out = _ConvBackward.apply(gy, x, w, ctx.geometry, need_x)
        gx, gw, gb = out if need_x else (None, *out)
        return gx, gw, gb, None, None


class _ConvBackward(torch.autograd.Function):
    """(gy, x, W) -> ([gx,] gW, gb), differentiable once in closed form."""

    @staticmethod
    def forward(ctx: Any, gy: torch.Tensor, x: torch.Tensor, w: torch.Tensor, geometry: tuple[int, int],
                need_x: bool) -> tuple[torch.Tensor, ...]:  # fmt: skip
        stride, padding = geometry
        gx, gw, gb = torch.ops.aten.convolution_backward(
            gy,
            x,
            w,
            [w.shape[0]],
            [stride] * 2,
            [padding] * 2,
            [1, 1],
            False,
            [0, 0],
            1,
            [need_x, True, True],
        )
        ctx.save_for_backward(gy, x, w)
        ctx.geometry, ctx.need_x = geometry, need_x
        return (gx, gw, gb) if need_x else (gw, gb)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, *upstream: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:
        gy, x, w = ctx.saved_tensors
        stride, padding = ctx.geometry
        ggx, ggw, ggb = upstream if ctx.need_x else (None, *upstream)
        need_gy, need_x, need_w = ctx.needs_input_grad[:3]
        d_gy = d_x = d_w = None
        if need_gy:
            if ggw is not None and ggx is not None:
                # conv(x, ggW) + conv(ggx, W) as ONE convolution over stacked input channels:
                # on 5-image episodes a call costs more than the copies
                both_x = torch.cat([x, ggx.contiguous(memory_format=memory_format(x))], 1)
                d_gy = F.conv2d(both_x, torch.cat([ggw, w], 1), ggb, stride, padding)
            elif ggw is not None:
                d_gy = F.conv2d(x, ggw, ggb, stride, padding)
            elif ggx is not None:
                d_gy = F.conv2d(ggx, w, ggb, stride, padding)
            if d_gy is None and ggb is not None:
                d_gy = ggb.view(1, -1, 1, 1).expand_as(gy)
        mask = [need_x and ggw is not None, need_w and ggx is not None, False]
        if any(mask):
            d_x, d_w, _ = torch.ops.aten.convolution_backward(
                gy, ggx if ggx is not None else x, ggw if ggw is not None else w, None,
                [stride] * 2, [padding] * 2, [1, 1], False, [0, 0], 1, mask,
            )  # fmt: skip
        return d_gy, d_x, d_w, None, None


class Conv2d(nn.Conv2d):
    """`nn.Conv2d` (square stride and padding, no dilation or groups) that uses the closed-form
    double backward inside `closed_form_double_backward()`; same parameters and state dict."""

    def apply_with(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """This layer's convolution with the given weights (MAML's adapted parameters)."""
        stride, padding = self.stride[0], self.padding[0]  # type: ignore[index]
        if double_backward.enabled(x):
            return _Conv.apply(x, weight, bias, stride, padding)
        return F.conv2d(x, weight, bias, stride, padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.apply_with(x, self.weight, self.bias)
