"""Measuring a local checkpoint: its weights are read with transformers' own classes only; the
checkpoint's Python code (``auto_map``) never runs."""

import json

import pytest

from tests.profiler.support import require_profiler_extra

require_profiler_extra()

import torch  # noqa: E402

from tests.estimator.tiny_configs import TINY_CONFIGS  # noqa: E402
from tunefit.estimator import EstimateRequest, LoraSpec  # noqa: E402
from tunefit.profiler import measure  # noqa: E402
from tunefit.profiler.build import load_model  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

# Python a hostile checkpoint ships: importing it leaves a marker file.
REMOTE_CODE = """
import pathlib
pathlib.Path({marker!r}).write_text("the checkpoint's code ran")
from transformers import LlamaForCausalLM as EvilForCausalLM
"""


@pytest.fixture
def hostile_checkpoint(tmp_path):
    from transformers import AutoConfig, AutoModelForCausalLM

    directory = tmp_path / "ckpt"
    config = AutoConfig.for_model(**TINY_CONFIGS["llama-gqa"])
    AutoModelForCausalLM.from_config(config).save_pretrained(directory)
    marker = tmp_path / "remote-code-ran"
    (directory / "evil.py").write_text(REMOTE_CODE.format(marker=str(marker)))
    saved = json.loads((directory / "config.json").read_text())
    saved["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilForCausalLM"}
    (directory / "config.json").write_text(json.dumps(saved))
    return directory, saved, marker


def _request(directory, config, method="lora"):
    return EstimateRequest({"checkpoint": str(directory), "config": config}, method=method, device="cpu",
                           batch_size=1, seq_len=8, lora=LoraSpec(r=4, alpha=8.0))


def test_a_checkpoint_with_remote_code_loads_with_transformers_classes_only(hostile_checkpoint):
    directory, config, marker = hostile_checkpoint
    model = load_model(_request(directory, config), torch.device("cpu"))
    assert type(model).__name__ == "LlamaForCausalLM"
    assert not marker.exists()


def test_a_checkpoint_is_measured_like_its_config(hostile_checkpoint):
    directory, config, marker = hostile_checkpoint
    from_checkpoint = measure(_request(directory, config), steps=1)
    from_config = measure(EstimateRequest({"config": TINY_CONFIGS["llama-gqa"]}, method="lora", device="cpu",
                                          batch_size=1, seq_len=8, lora=LoraSpec(r=4, alpha=8.0)), steps=1)
    assert from_checkpoint["measured"]["load"] == from_config["measured"]["load"]
    assert from_checkpoint["measured"]["peak_allocated_bytes"] == from_config["measured"]["peak_allocated_bytes"]
    assert not marker.exists()
