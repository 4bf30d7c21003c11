"""Which devices exist here, and turning `auto | cpu | cuda[:i] | mps` into a torch.device."""

from __future__ import annotations

import contextlib
import platform
import re
from dataclasses import dataclass
from typing import Any

import torch

from workbench.core.errors import ConfigError


@dataclass(frozen=True)
class DeviceInfo:
    id: str  # "cpu", "cuda:0", "mps"
    name: str  # human description
    memory_bytes: int | None = None

    @property
    def label(self) -> str:
        mem = f", {self.memory_bytes / 2**30:.0f} GiB" if self.memory_bytes else ""
        return f"{self.id} ({self.name}{mem})"


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "CPU"


def available_devices() -> list[DeviceInfo]:
    """CPU always; each CUDA device by name and memory; MPS on Apple silicon."""
    out = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            out.append(DeviceInfo(f"cuda:{i}", props.name, int(props.total_memory)))
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        out.append(DeviceInfo("mps", "Apple Metal"))
    out.append(DeviceInfo("cpu", cpu_name()))
    return out


def resolve_device(spec: str) -> torch.device:
    """auto prefers cuda, then mps, then cpu; an unavailable device is a ConfigError naming what exists."""
    asked = spec.strip().lower()
    ids = [d.id for d in available_devices()]
    if asked == "auto":
        return torch.device(ids[0])
    if (asked if asked != "cuda" else "cuda:0") in ids:
        return torch.device(asked if asked != "cuda" else "cuda:0")
    raise ConfigError(
        "device", f"{spec!r} is not available on this machine; available: auto, {', '.join(ids)}"
    )


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return "Apple Metal"
    return cpu_name()


def device_memory(device: torch.device) -> dict[str, float]:
    """Allocated / peak device memory in MiB where the backend reports it (CUDA, MPS)."""
    if device.type == "cuda":
        return {
            "device_mem_mb": torch.cuda.memory_allocated(device) / 2**20,
            "device_peak_mb": torch.cuda.max_memory_allocated(device) / 2**20,
        }
    if device.type == "mps":
        return {"device_mem_mb": torch.mps.current_allocated_memory() / 2**20}
    return {}


_TRIED = re.compile(r"Tried to allocate ([0-9.]+ [KMGT]?i?B)")


def memory_info(device: torch.device | None) -> tuple[int, int] | None:
    """(free, total) bytes of a CUDA device, None elsewhere or where the driver cannot say."""
    if device is None or device.type != "cuda" or not torch.cuda.is_available():
        return None
    try:
        free, total = torch.cuda.mem_get_info(device)
    except RuntimeError:
        return None
    return int(free), int(total)


def out_of_memory_message(error: str, device: torch.device | None, config: Any) -> str:
    """One line for a run that ran out of device memory: what the step asked for, what the
    device had free, and the settings that lower the peak (the run fails; the app lives on)."""
    where = str(device) if device is not None else "the device"
    if device is not None and device.type == "cuda" and torch.cuda.is_available():
        with contextlib.suppress(Exception):
            where += f" ({torch.cuda.get_device_name(device)})"
    found = _TRIED.search(error)
    asked = f"tried to allocate {found.group(1)}" if found else "an allocation failed"
    info = memory_info(device)
    have = (
        f"; {info[0] / 2**30:.2f} GiB free of {info[1] / 2**30:.2f} GiB" if info is not None else ""
    )
    hints = [f"a smaller train.meta_batch (now {config.train.meta_batch})"]
    algo = config.algorithm
    if getattr(algo, "first_order", True) is False:  # second-order MAML keeps the inner graph
        hints.insert(0, "first order (algorithm.name=fomaml: no second-order graph)")
    if config.precision != "bf16":
        hints.append("precision=bf16")
    return f"out of memory on {where}: {asked}{have}; try " + ", or ".join(hints)


def device_memory_text(device: torch.device) -> str:
    """The status bar's device memory: " · cuda:0 812 MiB (peak 1430)" (in use by tensors, and
    the run's peak); empty where the backend reports nothing (CPU)."""
    m = device_memory(device)
    if "device_mem_mb" not in m:
        return ""
    text = f" · {device} {m['device_mem_mb']:.0f} MiB"
    if "device_peak_mb" in m:
        text += f" (peak {m['device_peak_mb']:.0f})"
    return text
