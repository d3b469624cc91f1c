"""The service's database (SQLite by default): plans made through the web form."""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import DateTime, Integer, String, Text, create_engine, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker


class Base(DeclarativeBase):
    pass


class Plan(Base):
    """One result page someone asked for: its shareable query string and the headline number."""

    __tablename__ = "plans"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=lambda: datetime.now(timezone.utc))
    query: Mapped[str] = mapped_column(Text)
    label: Mapped[str] = mapped_column(String(200))
    peak_bytes: Mapped[int] = mapped_column(Integer)


class Database:
    """Engine and session factory; tables are created on start."""

    def __init__(self, url: str):
        if url.startswith("sqlite:///"):
            from pathlib import Path

            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        self.engine: Engine = create_engine(url, connect_args={"check_same_thread": False} if url.startswith("sqlite") else {})
        Base.metadata.create_all(self.engine)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)

    def add_plan(self, query: str, label: str, peak_bytes: int) -> None:
        with self.sessions.begin() as session:
            session.add(Plan(query=query, label=label[:200], peak_bytes=peak_bytes))

    def recent_plans(self, limit: int) -> list[Plan]:
        with Session(self.engine) as session:
            return list(session.scalars(select(Plan).order_by(Plan.id.desc()).limit(limit)))
