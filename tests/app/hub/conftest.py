"""A fake Hub on loopback serving the standard repos, and an application pointed at it."""

import pytest
from fastapi.testclient import TestClient

from tests.app.hub.repos import standard_repos
from tests.fakehub import FakeHub
from tunefit.app.core.config import Settings
from tunefit.app.hub import resolver as hub
from tunefit.app.main import create_app

# Each request to the fake hub is answered at once on loopback; a test of a slow hub makes its
# repo wait SLOW_FACTOR times the configured limit, so the limit alone decides.
HUB_TIMEOUT_S = 3.0
SLOW_FACTOR = 2


@pytest.fixture(scope="module")
def fake_hub():
    fake = FakeHub(standard_repos())
    fake.repos["slow/Llama-3.1-8B-Slow"].delay_s = HUB_TIMEOUT_S * SLOW_FACTOR
    with fake.running():
        yield fake


@pytest.fixture(scope="module")
def hub_settings(fake_hub, tmp_path_factory):
    return Settings(data_dir=tmp_path_factory.mktemp("data"), run_worker=False, job_rate_per_minute=0,
                    hub_endpoint=fake_hub.url, hub_timeout_s=HUB_TIMEOUT_S)


@pytest.fixture(scope="module")
def hub_client(hub_settings):
    with TestClient(create_app(hub_settings), raise_server_exceptions=False) as c:
        yield c
    hub.use(None)
