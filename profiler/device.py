"""What device this host measures on, without importing torch when NVML can tell.

A worker names its device kind ``cuda.<gpu name>`` (one worker per GPU: set
``CUDA_VISIBLE_DEVICES``; the first visible GPU is the one described) or ``cpu``. Jobs are routed
by that kind.
"""

from __future__ import annotations

import os
import platform
import re
import socket
from importlib import metadata
from typing import Any

PACKAGES = ("torch", "transformers", "peft", "bitsandbytes", "celery")


def slug(name: str) -> str:
    """``"NVIDIA H100 80GB HBM3"`` -> ``"h100-80gb-hbm3"``: lower case, vendor dropped, dashes."""
    text = re.sub(r"^(nvidia|amd)\s+", "", name.strip().lower())
    return re.sub(r"[^a-z0-9]+", "-", text).strip("-") or "unknown"


def _nvml_gpu() -> tuple[str, int] | None:
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
        if pynvml.nvmlDeviceGetCount() < 1:
            return None
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        name = pynvml.nvmlDeviceGetName(handle)
        return (name.decode() if isinstance(name, bytes) else name), int(pynvml.nvmlDeviceGetMemoryInfo(handle).total)
    except Exception:  # no driver, no device: a CPU host
        return None


def _torch_gpu() -> tuple[str, int] | None:
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    props = torch.cuda.get_device_properties(0)
    return props.name, int(props.total_memory)


def _host_memory() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def describe(force_cpu: bool = False) -> dict[str, Any]:
    """``{kind, device, device_name, memory_bytes, host, versions}`` of this host's device."""
    gpu = None if force_cpu else (_nvml_gpu() or _torch_gpu())
    if gpu is not None:
        name, memory = gpu
        kind, device = f"cuda.{slug(name)}", "cuda"
    else:
        name, memory = platform.processor() or platform.machine(), _host_memory()
        kind, device = "cpu", "cpu"
    return {"kind": kind, "device": device, "device_name": name, "memory_bytes": memory,
            "host": socket.gethostname(), "versions": versions()}
