"""The ids that appear in URLs, bounded as the database stores them: a longer job id or a larger
measurement number cannot name anything, and an unbounded integer overflows SQLite's (a 500)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path

from tunefit.app.core.db import JOB_ID_LENGTH, MAX_ROW_ID

JobId = Annotated[str, Path(min_length=1, max_length=JOB_ID_LENGTH)]
MeasurementId = Annotated[int, Path(ge=1, le=MAX_ROW_ID)]
