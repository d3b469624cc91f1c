"""A fresh application per test module, on a SQLite file in a temporary data directory."""

import pytest
from fastapi.testclient import TestClient

from tunefit.app.core.config import Settings
from tunefit.app.main import create_app


@pytest.fixture(scope="module")
def settings(tmp_path_factory):
    # no job rate limit here: tests/app/api/test_access.py tests it; other modules create jobs freely
    return Settings(data_dir=tmp_path_factory.mktemp("data"), run_worker=False, job_rate_per_minute=0)


@pytest.fixture(scope="module")
def client(settings):
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c
