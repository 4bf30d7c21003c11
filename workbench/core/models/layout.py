"""Which memory layout a 4-d tensor is in: one answer for every layer that must match it."""

from __future__ import annotations

import torch


def memory_format(t: torch.Tensor) -> torch.memory_format:
    """channels_last for a (strictly) channels-last 4-d tensor, else contiguous_format. A tensor
    that is both (one channel, or 1x1 maps) counts as contiguous."""
    if (
        t.dim() == 4
        and t.is_contiguous(memory_format=torch.channels_last)
        and not t.is_contiguous()
    ):
        return torch.channels_last
    return torch.contiguous_format
