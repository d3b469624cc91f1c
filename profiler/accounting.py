"""Counting memory: exact live-tensor bytes on CPU, the allocator's counters on CUDA.

CPU: a ``TorchDispatchMode`` sees the output of every ATen op run while it is active (forward,
backward, optimizer step); each new storage is counted once (views share it) and uncounted when
PyTorch frees it (a finalizer on the storage). Tensors that exist before the mode starts (the
model's parameters, buffers, bitsandbytes quantization state) are seeded explicitly.

What it does not see, by construction: memory a kernel allocates inside itself and frees before
returning (oneDNN/BLAS workspaces, the scratch of a fused attention kernel, bitsandbytes' own C
buffers), allocator caching and fragmentation (there is none on CPU to speak of), and Python
objects. It counts storage bytes, so a tensor viewing a small part of a large storage is charged
the whole storage, as the allocator would be.

CUDA: ``torch.cuda.max_memory_allocated`` (tensor bytes, the estimator's ``peak_allocated``),
``max_memory_reserved`` (what the caching allocator holds) and the device-level used memory from
NVML when nvidia-ml-py is installed (includes the CUDA context), each recorded under its own name.
"""

from __future__ import annotations

import gc
import weakref
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from .device import query_nvml

Workspace = Callable[[Any, tuple[Any, ...], dict[str, Any]], int]
"""``workspace(func, args, kwargs)``: bytes an op allocates inside itself and frees before it returns."""


def _storage_key(storage: torch.UntypedStorage) -> int:
    return storage._cdata


class LiveTensorBytes(TorchDispatchMode):
    """Current and peak bytes of live tensor storages on the given device types (``cpu``; ``meta``
    for a simulation: meta storages hold no memory but have their size and identity), with a
    peak that can be reset."""

    def __init__(self, device_types: tuple[str, ...] = ("cpu",), workspace: Workspace | None = None) -> None:
        """``workspace(func, args, kwargs)``: bytes an op allocates inside itself and frees before it
        returns, where a simulation knows them (the target's kernels); they count towards the peak,
        next to the op's outputs."""
        super().__init__()
        self.device_types = device_types
        self.workspace = workspace
        self._live: dict[int, int] = {}
        self.current_bytes = 0
        self.peak_bytes = 0

    # ---- bookkeeping ------------------------------------------------------------------------
    def track(self, tensor: torch.Tensor) -> None:
        """Count ``tensor``'s storage if it is new (views and in-place results are not)."""
        if not isinstance(tensor, torch.Tensor) or tensor.device.type not in self.device_types:
            return
        storage = tensor.untyped_storage()
        key = _storage_key(storage)
        size = storage.nbytes()
        old = self._live.get(key)
        if old is None:
            weakref.finalize(storage, self._release, key)
        elif old == size:
            return
        self._live[key] = size
        self.current_bytes += size - (old or 0)
        self.peak_bytes = max(self.peak_bytes, self.current_bytes)

    def track_all(self, tensors: Iterable[torch.Tensor]) -> None:
        for t in tensors:
            self.track(t)

    def _release(self, key: int) -> None:
        size = self._live.pop(key, 0)
        self.current_bytes -= size

    def reset_peak(self) -> None:
        self.peak_bytes = self.current_bytes

    # ---- the dispatch hook -------------------------------------------------------------------
    def __torch_dispatch__(self, func: Any, types: Any, args: tuple[Any, ...] = (),
                           kwargs: dict[str, Any] | None = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        flat, _ = tree_flatten(out)
        for t in flat:
            if isinstance(t, torch.Tensor):
                self.track(t)
        if self.workspace is not None:
            extra = self.workspace(func, args, kwargs)
            if extra:
                self.peak_bytes = max(self.peak_bytes, self.current_bytes + extra)
        return out


def model_tensors(model: torch.nn.Module) -> list[torch.Tensor]:
    """Every tensor the model holds: parameters, buffers and bitsandbytes quantization state
    (absmax, code, nested state, int8 row scales), which are neither parameters nor buffers."""
    tensors: list[torch.Tensor] = list(model.parameters()) + list(model.buffers())
    for p in model.parameters():
        tensors += _quant_state_tensors(p)
    return tensors


def _quant_state_tensors(param: torch.Tensor) -> list[torch.Tensor]:
    out: list[torch.Tensor] = []
    state = getattr(param, "quant_state", None)
    while state is not None:
        out += [t for t in (getattr(state, "absmax", None), getattr(state, "code", None),
                            getattr(state, "offset", None)) if isinstance(t, torch.Tensor)]
        state = getattr(state, "state2", None)
    scb = getattr(param, "SCB", None)
    if isinstance(scb, torch.Tensor):
        out.append(scb)
    return out


def collect() -> None:
    """Free what is unreachable before a reading (Python cycles hold tensors too)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class CudaCounters:
    """The CUDA caching allocator's counters plus NVML's device-level used memory."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._nvml = _nvml_handle(device)

    def reset_peak(self) -> None:
        torch.cuda.synchronize(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)

    def reading(self) -> dict[str, int | None]:
        torch.cuda.synchronize(self.device)
        return {
            "allocated_bytes": torch.cuda.memory_allocated(self.device),
            "peak_allocated_bytes": torch.cuda.max_memory_allocated(self.device),
            "reserved_bytes": torch.cuda.memory_reserved(self.device),
            "peak_reserved_bytes": torch.cuda.max_memory_reserved(self.device),
            "nvml_used_bytes": _nvml_used(self._nvml),
        }


def _nvml_handle(device: torch.device) -> Any:
    """NVML's handle of ``device``; None (its figures are recorded as None) without NVML."""
    return query_nvml(lambda nvml: nvml.nvmlDeviceGetHandleByIndex(device.index or 0))


def _nvml_used(handle: Any) -> int | None:
    if handle is None:
        return None
    import pynvml

    return int(pynvml.nvmlDeviceGetMemoryInfo(handle).used)
