"""Local checkpoints a profiling job may read: only directories under ``TUNEFIT_CHECKPOINT_DIRS``.

A job names a checkpoint directory by path, absolute or relative to a configured directory. It is
refused (a located 422) when no directories are configured (the default), when the path has a
``..`` component, when its real location (symlinks followed) is not under a configured directory,
when anything inside it is a symlink that leads out of that directory, and when its
``config.json`` is missing, larger than :data:`MAX_CONFIG_BYTES` or not a JSON object.

The service checks when the job is created; the worker checks again before it reads the files
(a link may have changed in between). The model is read with ``trust_remote_code=False``: a
checkpoint's own Python code never runs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path, PurePath
from typing import Any

from tunefit.estimator import EstimateError

FIELD = "model.checkpoint"
MAX_CONFIG_BYTES = 1 << 20  # a config.json is a few KiB
MAX_ENTRIES = 10_000  # files and folders looked at for links out; a checkpoint has tens


class CheckpointRefused(EstimateError):
    """A checkpoint path the service does not read."""

    def __init__(self, message: str):
        super().__init__(FIELD, message)


def resolve_checkpoint(path: str, roots: Sequence[Path]) -> Path:
    """The real path of checkpoint directory ``path``, checked against the allowed ``roots``."""
    if not roots:
        raise CheckpointRefused("local checkpoints are off: the service reads them only under "
                                "TUNEFIT_CHECKPOINT_DIRS, which is not set")
    if "\x00" in path or ".." in PurePath(path).parts:
        raise CheckpointRefused("a checkpoint path may not contain '..' (or NUL)")
    real_roots = [Path(root).resolve() for root in roots]
    candidates = [Path(path)] if PurePath(path).is_absolute() else [root / path for root in real_roots]
    for candidate in candidates:
        real = candidate.resolve()
        root = next((r for r in real_roots if real.is_relative_to(r)), None)
        if root is not None and real.is_dir():
            _no_links_out(real, root)
            return real
    raise CheckpointRefused(f"{path!r} is not a checkpoint directory under the configured checkpoint directories")


def _no_links_out(directory: Path, root: Path) -> None:
    """Refuse a checkpoint holding a symlink that resolves outside ``root``."""
    seen = 0
    for folder, dirs, files in os.walk(directory):  # does not descend into linked folders
        for name in (*dirs, *files):
            seen += 1
            if seen > MAX_ENTRIES:
                raise CheckpointRefused(f"the checkpoint directory holds more than {MAX_ENTRIES} entries")
            entry = Path(folder) / name
            if entry.is_symlink() and not entry.resolve().is_relative_to(root):
                raise CheckpointRefused(f"{entry.relative_to(directory)} links outside the checkpoint directories")


def read_config(directory: Path) -> dict[str, Any]:
    """The checkpoint's ``config.json``, as a dict."""
    config = directory / "config.json"
    if not config.is_file():
        raise CheckpointRefused(f"no config.json in checkpoint directory {directory.name!r}")
    if config.stat().st_size > MAX_CONFIG_BYTES:
        raise CheckpointRefused(f"config.json is larger than {MAX_CONFIG_BYTES} bytes")
    try:
        value = json.loads(config.read_bytes())
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise CheckpointRefused(f"config.json is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise CheckpointRefused("config.json must hold a JSON object")
    return value
