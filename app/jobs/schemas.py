"""Pydantic schemas of profiling jobs: what a client sends to queue one, what it gets back."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

from tunefit.app.planning.schemas import CheckpointModel, ConfigModel, SettingIn
from tunefit.estimator.request import DEFAULT_REQUEST, Device
from tunefit.profiler.limits import SIMULATION_RECIPE

# What a meta-device job may name as its target: the device type it simulates.
SIMULATION_TARGETS = ("any", "cuda", "cpu")


class ProfileIn(SettingIn):
    """``POST /api/v1/profile``: measure a setting for real, or simulate it on the meta device
    (validated like an estimate)."""

    # A job may also name a local checkpoint: the field widens the shared one (pydantic allows it).
    model: str | ConfigModel | CheckpointModel = Field(  # type: ignore[assignment]
        ..., description="catalog id, {'config': {...config.json...}}, or {'checkpoint': 'directory'}")
    steps: int = Field(3, ge=1, le=20, description="training steps; step one allocates the optimizer state")
    # A job may also simulate on the meta device: the field widens the shared one.
    device: Device | Literal["meta"] = Field(  # type: ignore[assignment]
        DEFAULT_REQUEST.device,
        description="'cuda' or 'cpu' to measure there; 'meta' to simulate the step on the meta device "
                    "(no memory allocated) for the device type named by target")
    target: str = Field("any", pattern=r"^(any|cpu|cuda|cuda\.[a-z0-9][a-z0-9-]*)$", max_length=100,
                        description="device kind to measure on (executor celery), e.g. 'cuda.h100-80gb-hbm3', "
                                    "or 'any' worker of the request's device type; with device 'meta', the "
                                    "device type simulated: 'cuda' (also for 'any') or 'cpu'")

    @model_validator(mode="after")
    def _meta_targets_a_device_type(self) -> ProfileIn:
        if self.device == "meta" and self.target not in SIMULATION_TARGETS:
            raise ValueError(f"device 'meta' simulates a device type: target must be one of {SIMULATION_TARGETS}")
        if self.device == "meta" and "recipe" not in self.model_fields_set:
            self.recipe = SIMULATION_RECIPE
        return self

    @property
    def simulated_device(self) -> str | None:
        """The device type a meta-device job simulates (None for a real measurement)."""
        if self.device != "meta":
            return None
        return "cpu" if self.target == "cpu" else "cuda"



class JobProgress(BaseModel):
    phase: str
    step: int
    steps: int


class WorkerJobOut(BaseModel):
    id: str
    label: str
    attempt: int


class WorkerOut(BaseModel):
    """A live worker: its executor, device kind (``cuda.<gpu>`` or ``cpu``), memory, versions and
    the job it runs now."""

    name: str
    executor: Literal["local", "celery"]
    kind: str | None
    device_name: str | None
    memory_bytes: int | None
    host: str | None
    versions: dict[str, str | None]
    current_job: WorkerJobOut | None


class JobOut(BaseModel):
    """A profiling job: ``queued``, ``running``, ``done`` (with the measurement) or ``failed`` (with why)."""

    id: str
    status: Literal["queued", "running", "done", "failed"]
    label: str
    created_at: str
    started_at: str | None
    finished_at: str | None
    attempts: int
    worker: str | None  # the worker that ran (or runs) its latest attempt
    progress: JobProgress | None
    request: dict[str, Any]
    result: dict[str, Any] | None
    error: str | None
    url: str
