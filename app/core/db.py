"""The service's database (SQLite by default, any SQLAlchemy URL): plans and profiling jobs."""

from __future__ import annotations

import functools
import json
import logging
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar, cast

from sqlalchemy import (
    DateTime,
    Integer,
    String,
    Text,
    Update,
    create_engine,
    delete,
    event,
    func,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.engine import CursorResult, Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

log = logging.getLogger("tunefit.db")


JOB_ID_LENGTH = 32  # uuid4().hex
CLIENT_ID_LENGTH = 32  # secrets.token_hex(16): a browser's id (core.clients)
MAX_ROW_ID = 2**63 - 1  # SQLite's INTEGER PRIMARY KEY (and PostgreSQL's bigint)


def now() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class Plan(Base):
    """One result page someone asked for: its shareable query string and the headline number."""

    __tablename__ = "plans"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)
    query: Mapped[str] = mapped_column(Text)
    label: Mapped[str] = mapped_column(String(200))
    peak_bytes: Mapped[int] = mapped_column(Integer)
    # The browser that asked (its client id cookie): recent plans are shown to it only. Plans stored
    # before there were owners have none, and are shown to nobody.
    client: Mapped[str | None] = mapped_column(String(CLIENT_ID_LENGTH), index=True, nullable=True)


class Job(Base):
    """A profiling job: the validated request, its progress and its result (JSON text)."""

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(JOB_ID_LENGTH), primary_key=True, default=lambda: uuid.uuid4().hex)
    status: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    label: Mapped[str] = mapped_column(String(200))
    request_json: Mapped[str] = mapped_column(Text)
    steps: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    worker: Mapped[str | None] = mapped_column(String(100), nullable=True)
    # The browser that created it (its client id cookie): job lists show a caller its own jobs.
    owner: Mapped[str | None] = mapped_column(String(CLIENT_ID_LENGTH), index=True, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    progress_json: Mapped[str | None] = mapped_column(Text, nullable=True)
    result_json: Mapped[str | None] = mapped_column(Text, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)

    @property
    def progress(self) -> dict[str, Any] | None:
        return json.loads(self.progress_json) if self.progress_json else None

    @property
    def result(self) -> dict[str, Any] | None:
        return json.loads(self.result_json) if self.result_json else None


class Measurement(Base):
    """One profiler measurement (a validation case, a job's result, an imported CUDA run)."""

    __tablename__ = "measurements"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(300), unique=True)  # source + case id (or job id)
    source: Mapped[str] = mapped_column(String(50), index=True)
    split: Mapped[str] = mapped_column(String(20), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)
    result_json: Mapped[str] = mapped_column(Text)

    @property
    def result(self) -> dict[str, Any]:
        return json.loads(self.result_json)


class HubModel(Base):
    """A Hugging Face model as read from the Hub at one commit (``app.hub``): its config.json and
    safetensors summary (JSON), by the id and the revision asked for. A repeated or offline query
    answers from here, naming the commit."""

    __tablename__ = "hub_models"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    repo_key: Mapped[str] = mapped_column(String(200), index=True)  # the id case-folded, as the Hub matches it
    revision: Mapped[str] = mapped_column(String(255))  # as asked: a branch, a tag or a commit hash
    sha: Mapped[str] = mapped_column(String(64), index=True)
    fetched_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)
    snapshot_json: Mapped[str] = mapped_column(Text)


def _aware(moment: datetime | None) -> datetime | None:
    """SQLite hands datetimes back without their zone; they were written in UTC."""
    if moment is not None and moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment


# SQLite under concurrent writers (the server, `tunefit worker` processes, threads): a connection
# waits up to its busy timeout for a lock; past it, or when SQLite answers "locked" at once (it
# does, to avoid a deadlock, when a reading transaction wants to write while another writes), the
# whole transaction runs again after a growing pause, up to this many times.
SQLITE_BUSY_TIMEOUT_S = 30.0
LOCKED_RETRIES = 8
LOCKED_FIRST_PAUSE_S = 0.05
LOCKED_MAX_PAUSE_S = 2.0

T = TypeVar("T")


def _add_missing_columns(engine: Engine) -> None:
    """Bring a database made by an earlier version up to the tables: columns added since (nullable,
    so rows stored before keep their meaning: a plan without an owner) and their indexes."""
    with engine.begin() as connection:  # one connection: on SQLite the writer holds the lock from BEGIN
        inspector = inspect(connection)
        for table in Base.metadata.sorted_tables:
            present = {c["name"] for c in inspector.get_columns(table.name)}
            for column in table.columns:
                if column.name not in present and column.nullable:
                    kind = column.type.compile(dialect=engine.dialect)
                    connection.execute(text(f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" {kind}'))
            for index in table.indexes:
                index.create(connection, checkfirst=True)


def _keep_newest(session: Session, keep: int, *where: Any) -> None:
    """Delete all but the ``keep`` newest plans matching ``where``."""
    newest = select(Plan.id).where(*where).order_by(Plan.created_at.desc(), Plan.id.desc()).limit(keep)
    session.execute(delete(Plan).where(*where, Plan.id.not_in(newest)))


def rows_updated(session: Session, statement: Update) -> int:
    """How many rows an UPDATE changed (the conditional updates that claim and finish jobs)."""
    return cast(CursorResult[Any], session.execute(statement)).rowcount


def _is_locked(exc: OperationalError) -> bool:
    message = str(exc.orig).lower()
    return "locked" in message or "busy" in message


def retried_when_locked(method: Callable[..., T]) -> Callable[..., T]:
    """Run ``method`` (one whole transaction) again when the database is locked or busy."""

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        pause = LOCKED_FIRST_PAUSE_S
        for attempt in range(LOCKED_RETRIES + 1):
            try:
                return method(*args, **kwargs)
            except OperationalError as exc:
                if not _is_locked(exc) or attempt == LOCKED_RETRIES:
                    raise
                log.warning("database busy (%s); trying again in %.2f s", exc.orig, pause)
                time.sleep(pause)
                pause = min(2 * pause, LOCKED_MAX_PAUSE_S)
        raise AssertionError("unreachable")

    return wrapper


def _sqlite_engine(url: str, busy_timeout_s: float, immediate: bool) -> Engine:
    """A SQLite engine in WAL mode (readers and a writer do not block each other); with
    ``immediate``, every transaction takes the write lock as it begins (``BEGIN IMMEDIATE``), so a
    writer waits for its turn at the start instead of failing halfway (SQLAlchemy's pysqlite recipe:
    the driver's own transaction handling off, BEGIN emitted in the ``begin`` event)."""
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": busy_timeout_s})

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection, _record) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


# (key, source, split, result) of a stored measurement
MeasurementRow = tuple[str, str, str, dict[str, Any]]


def _insert_measurements(session: Session, rows: list[MeasurementRow]) -> int:
    """Add the rows whose key is new to ``session``'s transaction; returns how many."""
    known = set(session.scalars(select(Measurement.key)))
    fresh = [Measurement(key=k, source=src, split=split, result_json=json.dumps(res))
             for k, src, split, res in rows if k not in known]
    session.add_all(fresh)
    return len(fresh)


class Database:
    """Engine and session factory; tables are created on start.

    Reads go through ``engine``; writes through ``sessions``, whose transactions on SQLite begin
    with the write lock. Every method is one transaction, run again when the database is locked.
    """

    def __init__(self, url: str, busy_timeout_s: float = SQLITE_BUSY_TIMEOUT_S):
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        if url.startswith("sqlite"):
            self.engine: Engine = _sqlite_engine(url, busy_timeout_s, immediate=False)
            writer = _sqlite_engine(url, busy_timeout_s, immediate=True)
        else:
            self.engine = writer = create_engine(url)
        retried_when_locked(Base.metadata.create_all)(writer)
        retried_when_locked(_add_missing_columns)(writer)
        self.sessions = sessionmaker(writer, expire_on_commit=False)
        self.measurements_added = 0  # by this process: caches of derived reports look at it

    # ---- plans ----------------------------------------------------------------------------------
    @retried_when_locked
    def add_plan(self, client: str, query: str, label: str, peak_bytes: int, per_client: int, total: int) -> None:
        """Remember ``client``'s plan: the same query again moves its row to the front (no second
        row); past ``per_client`` plans of this client, or ``total`` in all, the oldest are deleted."""
        with self.sessions.begin() as session:
            known = session.scalar(select(Plan).where(Plan.client == client, Plan.query == query))
            if known is None:
                session.add(Plan(client=client, query=query, label=label[:200], peak_bytes=peak_bytes))
            else:
                known.created_at, known.label, known.peak_bytes = now(), label[:200], peak_bytes
            session.flush()
            _keep_newest(session, per_client, Plan.client == client)
            _keep_newest(session, total)

    @retried_when_locked
    def recent_plans(self, client: str, limit: int) -> list[Plan]:
        """``client``'s latest plans, newest first."""
        with Session(self.engine) as session:
            return list(session.scalars(select(Plan).where(Plan.client == client)
                                        .order_by(Plan.created_at.desc(), Plan.id.desc()).limit(limit)))

    @retried_when_locked
    def count_plans(self) -> int:
        with Session(self.engine) as session:
            return session.scalar(select(func.count()).select_from(Plan)) or 0

    # ---- measurements ---------------------------------------------------------------------------
    @retried_when_locked
    def add_measurements(self, rows: list[MeasurementRow]) -> int:
        """Insert ``(key, source, split, result)`` rows whose key is new; returns how many."""
        with self.sessions.begin() as session:
            added = _insert_measurements(session, rows)
        self.measurements_added += added
        return added

    @retried_when_locked
    def measurements(self) -> list[Measurement]:
        with Session(self.engine) as session:
            return list(session.scalars(select(Measurement).order_by(Measurement.id)))

    @retried_when_locked
    def get_measurement(self, measurement_id: int) -> Measurement | None:
        with Session(self.engine) as session:
            return session.get(Measurement, measurement_id)

    # ---- Hub models -----------------------------------------------------------------------------
    @retried_when_locked
    def put_hub_model(self, repo_key: str, revision: str, sha: str, snapshot: dict[str, Any]) -> None:
        """Store a snapshot read from the Hub: the row of ``(repo_key, revision)`` replaced."""
        with self.sessions.begin() as session:
            session.execute(delete(HubModel).where(HubModel.repo_key == repo_key, HubModel.revision == revision))
            session.add(HubModel(repo_key=repo_key, revision=revision, sha=sha, snapshot_json=json.dumps(snapshot)))

    @retried_when_locked
    def get_hub_model(self, repo_key: str, revision: str) -> tuple[dict[str, Any], datetime] | None:
        """The stored snapshot of ``repo_key`` at ``revision`` (as asked, or the commit it resolved
        to) and when it was fetched; None when there is none."""
        with Session(self.engine) as session:
            row = session.scalars(select(HubModel).where(
                HubModel.repo_key == repo_key, (HubModel.revision == revision) | (HubModel.sha == revision))
                .order_by(HubModel.fetched_at.desc()).limit(1)).first()
            if row is None:
                return None
            return json.loads(row.snapshot_json), _aware(row.fetched_at) or now()

    # ---- jobs -----------------------------------------------------------------------------------
    @retried_when_locked
    def create_job(self, request_json: str, label: str, steps: int, max_queued: int | None = None,
                   owner: str | None = None) -> Job | None:
        """Queue a job; with ``max_queued``, only while fewer jobs wait (None when the queue is full).

        The count and the insert are one write transaction that writers take in turn (SQLite:
        ``BEGIN IMMEDIATE``; PostgreSQL: a lock on the table that conflicts with itself), so
        concurrent submissions cannot all see room for one more.
        """
        with self.sessions.begin() as session:
            if max_queued is not None:
                if session.get_bind().dialect.name == "postgresql":
                    session.execute(text("LOCK TABLE jobs IN SHARE ROW EXCLUSIVE MODE"))
                waiting = session.scalar(select(func.count()).select_from(Job).where(Job.status == "queued")) or 0
                if waiting >= max_queued:
                    return None
            job = Job(request_json=request_json, label=label[:200], steps=steps, status="queued", owner=owner)
            session.add(job)
        return job

    @retried_when_locked
    def get_job(self, job_id: str) -> Job | None:
        with Session(self.engine) as session:
            return session.get(Job, job_id)

    @retried_when_locked
    def list_jobs(self, limit: int, owner: str | None = None, everyone: bool = True) -> list[Job]:
        """The latest jobs, newest first: everyone's, or (``everyone`` False) ``owner``'s only."""
        query = select(Job).order_by(Job.created_at.desc()).limit(limit)
        if not everyone:
            if owner is None:  # a caller with no id owns nothing (and ownerless jobs are nobody's)
                return []
            query = query.where(Job.owner == owner)
        with Session(self.engine) as session:
            return list(session.scalars(query))

    @retried_when_locked
    def claim_next(self, worker: str) -> Job | None:
        """Move the oldest queued job to running for ``worker``; None when there is none.

        The conditional update makes the claim atomic: two workers never run one job. When other
        workers took every candidate first, the next ones are looked at.
        """
        with self.sessions.begin() as session:
            while candidates := session.scalars(select(Job.id).where(Job.status == "queued")
                                                .order_by(Job.created_at).limit(5)).all():
                for job_id in candidates:
                    moment = now()
                    claimed = rows_updated(session, update(Job).where(Job.id == job_id, Job.status == "queued").values(
                        status="running", worker=worker, started_at=moment, heartbeat_at=moment,
                        attempts=Job.attempts + 1))
                    if claimed:
                        return session.get(Job, job_id)
        return None

    @retried_when_locked
    def claim_delivered(self, job_id: str, worker: str, stale_after_s: float,
                        max_attempts: int) -> tuple[str, Job | None]:
        """A broker delivered ``job_id`` to ``worker``: decide what this delivery does.

        ``("run", job)``: the job is now running for ``worker`` (first delivery, or its last
        worker went silent for ``stale_after_s`` and attempts remain); ``("finished", job)``: done
        or failed already, a duplicate delivery; ``("busy", job)``: running with a live heartbeat
        elsewhere; ``("lost", job)``: its worker died on the last allowed attempt, now marked
        failed; ``("missing", None)``. The claim is a compare-and-set on (status, attempts), so two
        deliveries never both run a job.
        """
        with self.sessions.begin() as session:
            job = session.get(Job, job_id)
            if job is None:
                return "missing", None
            if job.status in ("done", "failed"):
                return "finished", job
            silent_since = now() - timedelta(seconds=stale_after_s)
            if job.status == "running" and (_aware(job.heartbeat_at) or _aware(job.started_at) or now()) > silent_since:
                return "busy", job
            if job.status == "running" and job.attempts >= max_attempts:
                job.status, job.finished_at = "failed", now()
                job.error = (f"its worker stopped while running it, {job.attempts} time(s) "
                             f"(no heartbeat for {stale_after_s:g} s); not retried again")
                return "lost", job
            moment = now()
            claimed = rows_updated(session, update(Job).where(
                Job.id == job_id, Job.status == job.status, Job.attempts == job.attempts).values(
                    status="running", worker=worker[:100], started_at=moment, heartbeat_at=moment,
                    attempts=job.attempts + 1, progress_json=None))
            if not claimed:
                return "busy", job
        return "run", self.get_job(job_id)

    @retried_when_locked
    def finish_first(self, job_id: str, status: str, result: dict[str, Any] | None = None,
                     error: str | None = None, measurement: MeasurementRow | None = None) -> bool:
        """Record the outcome unless the job has one already; True if this call recorded it
        (results are persisted by whoever finishes first). ``measurement``: the row the outcome
        adds to the reports, stored in the same transaction, so that no crash leaves a finished
        job without it."""
        added = 0
        with self.sessions.begin() as session:
            recorded = bool(rows_updated(session, update(Job).where(
                Job.id == job_id, Job.status.not_in(("done", "failed"))).values(
                    status=status, finished_at=now(), heartbeat_at=now(), error=error,
                    result_json=json.dumps(result) if result is not None else None)))
            if recorded and measurement is not None:
                added = _insert_measurements(session, [measurement])
        self.measurements_added += added
        return recorded

    def set_progress(self, job_id: str, progress: dict[str, Any]) -> None:
        self._update(job_id, progress_json=json.dumps(progress), heartbeat_at=now())

    def heartbeat(self, job_id: str) -> None:
        self._update(job_id, heartbeat_at=now())

    def finish(self, job_id: str, status: str, result: dict[str, Any] | None = None, error: str | None = None) -> None:
        self._update(job_id, status=status, finished_at=now(), heartbeat_at=now(),
                     result_json=json.dumps(result) if result is not None else None, error=error)

    def requeue(self, job_id: str) -> None:
        self._update(job_id, status="queued", worker=None, started_at=None, progress_json=None)

    @retried_when_locked
    def fail_stale(self, silent_for_s: float) -> int:
        """Mark failed the running jobs whose worker has been silent for ``silent_for_s``: it died
        while running them (they are not retried: a job that killed its worker may do it again)."""
        limit = now() - timedelta(seconds=silent_for_s)
        reason = (f"the worker stopped while this job was running (no heartbeat for {silent_for_s:g} s); "
                  "not retried")
        with self.sessions.begin() as session:
            stale = [j for j in session.scalars(select(Job).where(Job.status == "running"))
                     if (_aware(j.heartbeat_at) or _aware(j.started_at) or limit) <= limit]
            for job in stale:
                job.status, job.error, job.finished_at = "failed", reason, now()
            return len(stale)

    @retried_when_locked
    def _update(self, job_id: str, **values: Any) -> None:
        with self.sessions.begin() as session:
            session.execute(update(Job).where(Job.id == job_id).values(**values))
