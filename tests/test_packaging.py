"""The installed code lives under one namespace, ``tunefit``: the wheel puts nothing else at the top
of site-packages, and in a fresh virtual environment the CLI, the service and the Python API work
from a directory that holds a user's own ``app`` and ``estimator`` packages.

The fresh environment gets the wheel with ``pip install --no-deps``; its dependencies (fastapi,
uvicorn, ...) are those of the test environment, put on its path by a ``.pth`` line. A ``.pth``
line adds a directory without running the ``.pth`` files inside it, so the editable install of
this checkout stays out: what is imported as ``tunefit`` is the wheel (a test checks where from).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import time
import tomllib
import zipfile
from pathlib import Path

import httpx
import pytest

from tests.app.processes import free_port
from tunefit.estimator import EstimateRequest, estimate, to_document
from tunefit.estimator.recipes import DEFAULT_RECIPE
from tunefit.estimator.request import request_from_fields

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SOURCES = ("pyproject.toml", "README.md", "app", "estimator", "profiler", "templates", "reports")
NAMESPACE = "tunefit"
SERVER_START_TIMEOUT_S = 60  # a cold start imports fastapi, pydantic and the catalogs
COMMAND_TIMEOUT_S = 120
USER_PACKAGE = "MARK = 'the user package {name}'\n"


def listed_packages() -> list[str]:
    return PYPROJECT["tool"]["setuptools"]["packages"]


def test_every_package_folder_is_listed_under_the_namespace():
    """A subpackage missing from pyproject.toml's list would be missing from the wheel."""
    mapping = PYPROJECT["tool"]["setuptools"]["package-dir"]
    found = set()
    for package, folder in mapping.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT / folder).parts
            found.add(".".join([package, *relative]))
    assert sorted(found) == sorted(listed_packages())
    assert all(p.startswith(NAMESPACE + ".") for p in listed_packages())


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The project's wheel, built from a copy of its sources (the checkout is left as it is)."""
    source = tmp_path_factory.mktemp("source")
    for name in SOURCES:
        copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copy2
        copy(ROOT / name, source / name,
             **({"ignore": shutil.ignore_patterns("__pycache__")} if (ROOT / name).is_dir() else {}))
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                    "-w", str(out), str(source)], check=True, timeout=COMMAND_TIMEOUT_S)
    (found,) = out.glob("tunefit-*.whl")
    return found


def test_the_wheel_holds_only_the_namespace(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    tops = {n.split("/", 1)[0] for n in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {NAMESPACE}
    for generic in ("app", "estimator", "profiler", "templates", "reports"):
        assert not any(n.startswith(f"{generic}/") for n in names)
    assert f"{NAMESPACE}/templates/index.html" in names
    assert f"{NAMESPACE}/reports/data/cpu-validation.jsonl" in names
    assert f"{NAMESPACE}/estimator/data/gpus.json" in names


@pytest.fixture(scope="module")
def fresh_env(wheel, tmp_path_factory) -> dict[str, Path]:
    """A new venv with the wheel installed, and a working directory holding the user's own
    ``app`` and ``estimator`` packages."""
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=COMMAND_TIMEOUT_S)
    python = venv / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", "--quiet", str(wheel)],
                   check=True, timeout=COMMAND_TIMEOUT_S)
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    work = tmp_path_factory.mktemp("user")
    for name in ("app", "estimator"):
        (work / name).mkdir()
        (work / name / "__init__.py").write_text(USER_PACKAGE.format(name=name))
    return {"python": python, "tunefit": venv / "bin" / "tunefit", "site": site, "work": work}


def run_in(env: dict[str, Path], *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in argv], cwd=env["work"], capture_output=True, text=True,
                          timeout=COMMAND_TIMEOUT_S, env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})


def test_the_python_api_is_the_wheels_and_the_users_packages_are_theirs(fresh_env):
    code = ("import app, estimator, tunefit.estimator as ours\n"
            "from tunefit.estimator import EstimateRequest, estimate\n"
            "print(app.MARK); print(estimator.MARK); print(ours.__file__)\n"
            "print(estimate(EstimateRequest('llama-2-7b', method='qlora')).peak_bytes)\n")
    out = run_in(fresh_env, fresh_env["python"], "-c", code)
    assert out.returncode == 0, out.stderr
    app_mark, estimator_mark, ours, peak = out.stdout.split("\n")[:4]
    assert (app_mark, estimator_mark) == ("the user package app", "the user package estimator")
    assert Path(ours).is_relative_to(fresh_env["site"])
    assert int(peak) == estimate(EstimateRequest("llama-2-7b", method="qlora")).peak_bytes


def test_the_cli_answers_from_the_wheel(fresh_env):
    out = run_in(fresh_env, fresh_env["tunefit"], "estimate", "--model", "llama-3-8b", "--method", "lora",
                 "--targets", "all-linear", "--json")
    assert out.returncode == 0, out.stderr
    # the CLI names no recipe: the default one's
    expected = estimate(request_from_fields({"model": "llama-3-8b", "method": "lora", "recipe": DEFAULT_RECIPE,
                                             "lora": {"target_modules": "all-linear"}}))
    assert json.loads(out.stdout) == to_document(expected)


def test_the_service_serves_pages_and_shipped_data_from_the_wheel(fresh_env, tmp_path):
    port = free_port()
    env = {**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, "TUNEFIT_DATA_DIR": str(tmp_path),
           "TUNEFIT_RUN_WORKER": "false"}
    proc = subprocess.Popen([str(fresh_env["tunefit"]), "serve", "--port", str(port)], cwd=fresh_env["work"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while True:
            try:
                if httpx.get(url + "/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
                assert time.monotonic() < deadline, "the service did not start"
                time.sleep(0.2)
        page = httpx.get(url + "/", params={"model": "llama-2-7b", "method": "qlora", "submitted": "1"})
        assert page.status_code == 200 and "<form" in page.text  # templates read from the wheel
        reports = httpx.get(url + "/api/v1/reports", params={"method": "lora"}, timeout=COMMAND_TIMEOUT_S).json()
        assert reports["rows"]  # the shipped measurements, package data of the wheel
    finally:
        proc.terminate()
        proc.wait(timeout=COMMAND_TIMEOUT_S)
