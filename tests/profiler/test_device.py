"""Host facts read without torch: memory, versions, NVML; and the environment a result records."""

import json
import subprocess
import sys

import pytest

from tunefit.estimator.units import GIB
from tunefit.profiler import device

# What a measurement's ``environment`` holds, in this order (the report pages list it as is).
ENVIRONMENT_KEYS = ["device", "python", "platform", "torch", "transformers", "peft", "bitsandbytes", "cuda",
                    "driver", "device_name", "device_memory_bytes"]

WITHOUT_TORCH = """
import json, sys
sys.modules["torch"] = None  # any import of torch now fails
from tunefit.profiler.device import describe, host_memory_bytes, versions
print(json.dumps({"memory": host_memory_bytes(), "kind": describe(force_cpu=True)["kind"],
                  "versions": sorted(versions())}))
"""


def test_host_facts_are_read_without_torch():
    out = subprocess.run([sys.executable, "-c", WITHOUT_TORCH], capture_output=True, text=True, check=True)
    facts = json.loads(out.stdout)
    assert facts["memory"] > 0 and facts["kind"] == "cpu"
    assert facts["versions"] == sorted(["python", *device.WORKER_PACKAGES])


def test_host_memory_is_16_gib_where_the_os_does_not_tell(monkeypatch):
    def no_answer(name):
        raise ValueError(name)

    monkeypatch.setattr(device.os, "sysconf", no_answer)
    assert device.physical_memory_bytes() is None
    assert device.host_memory_bytes() == 16 * GIB


def test_host_memory_is_what_sysconf_says():
    assert device.host_memory_bytes() == device.physical_memory_bytes() > 0


def test_an_nvml_query_that_fails_answers_none():
    assert device.query_nvml(lambda nvml: 1 / 0) is None


def test_a_measurements_environment_keeps_its_keys():
    torch = pytest.importorskip("torch", reason="needs the [profiler] extra")
    from tunefit.profiler.run import environment

    env = environment(torch.device("cpu"))
    assert list(env) == ENVIRONMENT_KEYS
    assert env["torch"] == torch.__version__ and env["device_memory_bytes"] == device.physical_memory_bytes()
