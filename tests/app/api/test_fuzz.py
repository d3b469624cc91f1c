"""Fuzz the whole OpenAPI surface with schemathesis: no input makes a 5xx, every response matches
the schema the API documents (status code, content type, headers, body): schemathesis' default
checks, less one.

Left out: ``positive_data_acceptance``, which expects every schema-valid body to be accepted. A
JSON Schema cannot say what the estimator checks beyond it (a pasted config must describe a model;
``sharding: ddp`` needs ``num_gpus > 1``; a checkpoint must lie under the configured directories),
and those answers are the documented located 422s that ``status_code_conformance`` still checks.
And, for the operations whose token is optional (the admin token shows more; without one the
public answer), ``ignored_auth``, which expects a request without credentials refused: a wrong
token is still refused (401, documented), which ``status_code_conformance`` checks.
"""

import os

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import ignored_auth, positive_data_acceptance

from tunefit.app.core.config import Settings
from tunefit.app.main import create_app

# Examples per operation: a few hundred in `make test`; TUNEFIT_FUZZ_EXAMPLES sets another number.
EXAMPLES = int(os.environ.get("TUNEFIT_FUZZ_EXAMPLES", "200"))
OPERATIONS = [
    ("GET", "/healthz"),
    ("GET", "/api/v1/models"),
    ("GET", "/api/v1/models/{model_id}"),
    ("GET", "/api/v1/gpus"),
    ("POST", "/api/v1/estimate"),
    ("POST", "/api/v1/capacity"),
    ("POST", "/api/v1/compare"),
    ("POST", "/api/v1/profile"),
    ("GET", "/api/v1/profile"),
    ("GET", "/api/v1/profile/{job_id}"),
    ("GET", "/api/v1/workers"),
    ("GET", "/api/v1/reports"),
]

OPTIONAL_AUTH = {("GET", "/api/v1/profile"), ("GET", "/api/v1/profile/{job_id}"), ("GET", "/api/v1/workers")}


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory):
    # No rate limit and room in the queue: the fuzzer creates many jobs, none of which may 5xx.
    app = create_app(Settings(data_dir=tmp_path_factory.mktemp("fuzz"), run_worker=False, job_rate_per_minute=0,
                              max_queued_jobs=10**6))
    with TestClient(app):  # runs the lifespan
        yield schemathesis.openapi.from_asgi("/openapi.json", app)


def test_every_operation_is_fuzzed(api_schema):
    found = {(op.ok().method.upper(), op.ok().path) for op in api_schema.get_all_operations()}
    assert found == set(OPERATIONS)


@pytest.mark.parametrize("method,path", OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_no_input_breaks_the_api(api_schema, method, path):
    operation = api_schema[path][method]

    @given(case=operation.as_strategy())
    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def fuzz(case):
        excluded = [positive_data_acceptance, *([ignored_auth] if (method, path) in OPTIONAL_AUTH else [])]
        case.call_and_validate(excluded_checks=excluded)

    fuzz()
