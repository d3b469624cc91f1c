"""One ``Settings`` object for the service, read from ``TUNEFIT_*`` environment variables."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from tunefit.profiler.device import host_memory_bytes


def _host_memory_fraction(fraction: float) -> int:
    """A share of this machine's physical memory (the default memory guard of a profiling job)."""
    return int(host_memory_bytes() * fraction)


def _default_templates_dir() -> Path:
    """The templates shipped as package data (``tunefit.templates``; the repository's ``templates/``
    in an editable install)."""
    return Path(str(resources.files("tunefit.templates")))


class Settings(BaseSettings):
    """Embedded defaults: a SQLite file under ``data_dir``, the worker in-process."""

    model_config = SettingsConfigDict(env_prefix="TUNEFIT_", env_file=".env", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    data_dir: Path = Path("data")
    database_url: str | None = None  # default: sqlite file tunefit.db in data_dir
    templates_dir: Path = Field(default_factory=_default_templates_dir)
    max_body_bytes: int = Field(256 * 1024, ge=1024)  # a config.json is a few KiB
    recent_plans: int = Field(10, ge=0)  # a browser's own recent plans shown on the form
    # Plans stored: a browser's latest plans_per_client, at most max_stored_plans in all (the oldest
    # go), and a client stores at most plan_rate_per_minute a minute (beyond, pages are still shown).
    plans_per_client: int = Field(20, ge=1)
    max_stored_plans: int = Field(10_000, ge=1)
    plan_rate_per_minute: float = Field(60.0, ge=0)
    plan_rate_burst: int = Field(30, ge=1)
    answer_cache_size: int = Field(4096, ge=0)  # API answers kept (pure functions of the request); 0: off
    answer_cache_bytes: int = Field(32 * 2**20, ge=0)  # ... and the bytes they may hold, requests included
    # Profiling jobs.
    run_worker: bool = True  # an in-process worker with `tunefit serve` (when torch is installed)
    worker_poll_s: float = Field(1.0, gt=0)
    job_timeout_s: float = Field(3600.0, gt=0)
    job_memory_limit_bytes: int = Field(default_factory=lambda: _host_memory_fraction(0.8), ge=2**26)
    job_heartbeat_timeout_s: float = Field(60.0, gt=0)
    # A job's measurement process runs this much below normal CPU priority (os.nice), so estimates
    # stay fast while a CPU job runs on the same host (bench/load.py); memory does not depend on it.
    job_niceness: int = Field(10, ge=0, le=19)
    # Access to profiling jobs (estimates are public): see app/core/security.py and app/checkpoints.py.
    api_token: SecretStr | None = None  # when set, creating a job needs `Authorization: Bearer <token>`
    # With `Authorization: Bearer <admin token>`: every job (not only the caller's), and the details
    # public documents leave out (worker hosts and process ids, checkpoint paths, the platform).
    admin_token: SecretStr | None = None
    job_rate_per_minute: float = Field(10.0, ge=0)  # jobs one client may create a minute; 0: no limit
    job_rate_burst: int = Field(5, ge=1)  # jobs one client may create at once
    # Proxies whose X-Forwarded-For names the client (uvicorn's forwarded_allow_ips: comma-separated
    # addresses or networks, "*" for any). Empty (the default): none; the peer address is the client,
    # so a forged header cannot dodge the rate limits.
    forwarded_allow_ips: str = ""
    max_queued_jobs: int = Field(100, ge=1)  # jobs waiting for a worker; past it new ones are refused (503)
    # Simulations allocate nothing, but one of a plan past this many bytes (1 PiB: no fleet runs it)
    # only spends a worker's time (up to job_timeout_s): refused like a job too large for its device.
    max_simulated_bytes: int = Field(2**50, ge=2**30)
    checkpoint_dirs: list[Path] = []  # local checkpoints are read only under these; empty: none
    # Hugging Face ids not in the catalog: read from the Hub (``app/hub``), each answer naming the
    # commit. The endpoint, token and offline switch are huggingface_hub's own variables (HF_ENDPOINT,
    # HF_TOKEN, HF_HUB_OFFLINE), or TUNEFIT_HUB_*; the user's Hugging Face cache holds the files.
    allow_hub: bool = True  # False: catalog ids and pasted configs only (no network at all)
    hub_endpoint: str = Field("https://huggingface.co",
                              validation_alias=AliasChoices("TUNEFIT_HUB_ENDPOINT", "HF_ENDPOINT", "hub_endpoint"))
    hub_token: SecretStr | None = Field(None, validation_alias=AliasChoices("TUNEFIT_HUB_TOKEN", "HF_TOKEN",
                                                                            "hub_token"))
    hub_offline: bool = Field(False, validation_alias=AliasChoices("TUNEFIT_HUB_OFFLINE", "HF_HUB_OFFLINE",
                                                                   "hub_offline"))
    hub_timeout_s: float = Field(5.0, gt=0)  # each request to the Hub; a slower hub is an error, not a hang
    # A branch or tag resolved this recently answers from the store without asking the Hub again; a
    # commit hash always does (what it names never changes).
    hub_refresh_s: float = Field(3600.0, ge=0)
    # Who runs profiling jobs: `local` (a worker polling the database; in-process with `tunefit
    # serve`) or `celery` (workers on any host, fed through a Redis broker; see docs/operations.md "Scaling out").
    executor: Literal["local", "celery"] = "local"
    broker_url: str | None = None  # redis://host:6379/0, for executor celery
    # A job's message that no worker acknowledged (its worker died) goes back to the queue after
    # this long; default: the job time limit plus five minutes, so a running job is not handed out twice.
    celery_visibility_timeout_s: float | None = Field(None, gt=0)
    celery_restore_interval_s: float = Field(10.0, gt=0)  # how often workers look for such messages
    job_max_attempts: int = Field(2, ge=1)  # deliveries of a job whose worker died, before it fails
    job_busy_retry_s: float = Field(30.0, gt=0)  # a duplicate delivery looks again after this long
    workers_inspect_timeout_s: float = Field(1.0, gt=0)  # GET /api/v1/workers waits this long for replies

    @field_validator("api_token", "admin_token", "hub_token", mode="before")
    @classmethod
    def _empty_token_is_none(cls, value: object) -> object:
        """``TUNEFIT_API_TOKEN=`` (empty) means no token, not a token nobody can send."""
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _broker_for_celery(self) -> Settings:
        if self.executor == "celery" and not self.broker_url:
            raise ValueError("executor 'celery' needs TUNEFIT_BROKER_URL (e.g. redis://127.0.0.1:6379/0)")
        return self

    @property
    def visibility_timeout_s(self) -> float:
        return self.celery_visibility_timeout_s or self.job_timeout_s + 300

    @property
    def sqlalchemy_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'tunefit.db').resolve()}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
