"""Switch for the layers whose double backward is written out (conv, batch norm).

Only second-order MAML differentiates the backward pass; everywhere else the native autograd
nodes are cheaper than a Python `autograd.Function` (about 8% of a first-order step), so the
layers use their hand-written double backward only inside `closed_form_double_backward()`.
A ContextVar keeps the switch per thread: a GUI run and an evaluation can overlap.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

import torch

_ENABLED: ContextVar[bool] = ContextVar("closed_form_double_backward", default=False)


def enabled(x: torch.Tensor | None = None) -> bool:
    """Switched on, recording gradients, and (given the layer input x) not under autocast:
    the closed forms compute in the input's dtype, and bf16 autocast mixes dtypes."""
    if not (_ENABLED.get() and torch.is_grad_enabled()):
        return False
    return x is None or not torch.is_autocast_enabled(x.device.type)


@contextlib.contextmanager
def closed_form_double_backward(on: bool = True) -> Iterator[None]:
    token = _ENABLED.set(on)
    try:
        yield
    finally:
        _ENABLED.reset(token)
