"""tunefit profiler: builds the model for real and measures its peak memory.

``measure(request)`` runs one measurement in this process (it imports torch, transformers, peft,
bitsandbytes); ``simulate(request)`` runs the same step on the meta device for the request's
device as target (``profiler.simulation``); ``isolate.run_isolated`` runs it in a child process
with a time limit and a memory guard, and imports none of them itself, so a service can hand out
work without loading torch.
"""

from __future__ import annotations

from typing import Any

__all__ = ["BuildError", "DEFAULT_STEPS", "measure", "simulate", "available"]


def available() -> bool:
    """Whether torch is installed here (the ``[profiler]`` extra)."""
    from importlib.util import find_spec

    return find_spec("torch") is not None


def __getattr__(name: str) -> Any:
    # Lazy: importing the package (or profiler.isolate) must not import torch.
    if name in ("measure", "DEFAULT_STEPS"):
        from . import run

        return getattr(run, name)
    if name == "simulate":
        from .simulation import simulate

        return simulate
    if name == "BuildError":
        from .build import BuildError

        return BuildError
    raise AttributeError(name)
