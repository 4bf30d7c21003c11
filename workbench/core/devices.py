"""Which devices exist here, and turning `auto | cpu | cuda[:i] | mps` into a torch.device."""

from __future__ import annotations

import platform
from dataclasses import dataclass

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
