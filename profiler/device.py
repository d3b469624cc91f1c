"""What device this host measures on, without importing torch when NVML can tell.

A worker names its device kind ``cuda.<gpu name>`` (one worker per GPU: set
``CUDA_VISIBLE_DEVICES``; the first visible GPU is the one described) or ``cpu``. Jobs are routed
by that kind.

The host facts a measurement records (physical memory, library versions, the NVIDIA driver) are
read here too, and none of them imports torch: the service imports this module without it.
"""

from __future__ import annotations

import os
import platform
import re
import socket
from collections.abc import Callable, Iterable
from importlib import metadata
from typing import Any, TypeVar

from tunefit.estimator.units import GIB

WORKER_PACKAGES = ("torch", "transformers", "peft", "bitsandbytes", "celery")
# What a host is taken to have where the OS does not say (the default memory guard needs a number).
FALLBACK_HOST_MEMORY_BYTES = 16 * GIB

T = TypeVar("T")


def slug(name: str) -> str:
    """``"NVIDIA H100 80GB HBM3"`` -> ``"h100-80gb-hbm3"``: lower case, vendor dropped, dashes."""
    text = re.sub(r"^(nvidia|amd)\s+", "", name.strip().lower())
    return re.sub(r"[^a-z0-9]+", "-", text).strip("-") or "unknown"


# ---- NVML ------------------------------------------------------------------------------------
def query_nvml(query: Callable[[Any], T]) -> T | None:
    """``query(pynvml)`` with NVML initialised, or None where nvidia-ml-py is not installed, no
    driver answers or the query fails. ``nvmlInit`` counts its calls, so initialising again for
    every query is safe."""
    try:
        import pynvml

        pynvml.nvmlInit()
        return query(pynvml)
    except Exception:  # ImportError (no nvidia-ml-py), NVMLError (no driver, no such device)
        return None


def nvml_text(value: str | bytes) -> str:
    """An NVML string: older nvidia-ml-py releases return bytes, newer ones str."""
    return value.decode() if isinstance(value, bytes) else value


def driver_version() -> str | None:
    """The NVIDIA driver's version, or None where NVML cannot tell."""
    return query_nvml(lambda nvml: nvml_text(nvml.nvmlSystemGetDriverVersion()))


def _first_gpu(nvml: Any) -> tuple[str, int] | None:
    if nvml.nvmlDeviceGetCount() < 1:
        return None
    handle = nvml.nvmlDeviceGetHandleByIndex(0)
    return nvml_text(nvml.nvmlDeviceGetName(handle)), int(nvml.nvmlDeviceGetMemoryInfo(handle).total)


def _nvml_gpu() -> tuple[str, int] | None:
    return query_nvml(_first_gpu)  # None on a CPU host: no driver, no device


def _torch_gpu() -> tuple[str, int] | None:
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    props = torch.cuda.get_device_properties(0)
    return props.name, int(props.total_memory)


# ---- the host ----------------------------------------------------------------------------------
def physical_memory_bytes() -> int | None:
    """This host's physical memory (POSIX ``sysconf``), or None where the OS does not tell."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return None


def host_memory_bytes() -> int:
    """This host's physical memory, or 16 GiB where the OS does not tell: a number to size a
    default by (a measurement records :func:`physical_memory_bytes`, unknown stays unknown)."""
    known = physical_memory_bytes()
    return known if known is not None else FALLBACK_HOST_MEMORY_BYTES


def versions(packages: Iterable[str] = WORKER_PACKAGES) -> dict[str, str | None]:
    """Python's version and each package's installed version (None where it is not installed),
    read from the packages' metadata: nothing is imported."""
    return {"python": platform.python_version(), **{name: _installed_version(name) for name in packages}}


def _installed_version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def describe(force_cpu: bool = False) -> dict[str, Any]:
    """``{kind, device, device_name, memory_bytes, host, versions}`` of this host's device."""
    gpu = None if force_cpu else (_nvml_gpu() or _torch_gpu())
    memory: int | None
    if gpu is not None:
        name, memory = gpu
        kind, device = f"cuda.{slug(name)}", "cuda"
    else:
        name, memory = platform.processor() or platform.machine(), physical_memory_bytes()
        kind, device = "cpu", "cpu"
    return {"kind": kind, "device": device, "device_name": name, "memory_bytes": memory,
            "host": socket.gethostname(), "versions": versions()}
