"""tunefit profiler: builds the model for real and measures its peak memory.

Imports torch and friends; the estimator stays free of them. ``measure(request)`` runs one
measurement in this process; ``isolate.run_isolated`` runs it in a child process with a time
limit and a memory guard.
"""

from .build import BuildError
from .run import DEFAULT_STEPS, measure

__all__ = ["BuildError", "DEFAULT_STEPS", "measure"]
