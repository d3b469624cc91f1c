"""The CLI prints the estimator's document; bad input exits non-zero naming the field."""

import json

import pytest

from tunefit.app.cli import main
from tunefit.estimator import estimate, to_document
from tunefit.estimator.recipes import DEFAULT_RECIPE
from tunefit.estimator.request import request_from_fields


def test_json_output_equals_the_document(capsys):
    rc = main(["estimate", "--model", "llama-2-7b", "--method", "qlora", "--r", "16", "--targets", "all-linear",
               "--batch-size", "1", "--seq-len", "512", "--json"])
    assert rc == 0
    doc = json.loads(capsys.readouterr().out)
    # the CLI names no recipe: it assumes the default one
    req = request_from_fields({"model": "llama-2-7b", "recipe": DEFAULT_RECIPE, "method": "qlora",
                               "lora": {"r": 16, "target_modules": "all-linear"}, "batch_size": 1, "seq_len": 512})
    assert doc == json.loads(json.dumps(to_document(estimate(req))))
    assert doc["request"]["recipe"] == DEFAULT_RECIPE
    for key in ("params", "paper", "breakdown", "peak_allocated_bytes", "peak_bytes", "peak_phase", "fits",
                "assumptions"):
        assert key in doc
    assert all(k.endswith("_bytes") and isinstance(v, int) for k, v in doc["breakdown"].items())


def test_table_output_labels_units(capsys):
    assert main(["estimate", "--model", "mistral-7b", "--method", "lora", "--targets", "q_proj,v_proj",
                 "--gpu", "rtx-4090"]) == 0
    out = capsys.readouterr().out
    assert "GiB" in out and "rtx-4090" in out and "peak on device" in out
    assert " GB" not in out


def test_config_file_instead_of_model(tmp_path, capsys):
    from tests.estimator.tiny_configs import TINY_CONFIGS

    path = tmp_path / "config.json"
    path.write_text(json.dumps(TINY_CONFIGS["qwen2"]))
    assert main(["estimate", "--config", str(path), "--method", "full", "--device", "cpu", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["peak_bytes"] == doc["peak_allocated_bytes"]


@pytest.mark.parametrize("argv,field", [
    (["--r", "0"], "lora.r"),
    (["--r", "5000"], "lora.r"),
    (["--targets", "foo_proj"], "lora.target_modules"),
    (["--batch-size", "0"], "batch_size"),
    (["--seq-len", "-5"], "seq_len"),
    (["--dtype", "fp8"], "dtype"),
], ids=["r-zero", "r-too-big", "unknown-module", "batch-zero", "seq-negative", "bad-dtype"])
def test_bad_input_exits_2_naming_the_field(argv, field, capsys):
    rc = main(["estimate", "--model", "llama-2-7b", "--method", "lora", *argv])
    assert rc == 2
    assert field in capsys.readouterr().err


def test_unknown_model_suggests_close_ids(capsys):
    assert main(["estimate", "--model", "llama-2-7x"]) == 2
    assert "llama-2-7b" in capsys.readouterr().err


@pytest.mark.parametrize("model,targets", [("phi-4", "qkv_proj"), ("gpt2", "c_attn"), ("falcon-7b", "query_key_value")],
                         ids=["phi3-no-peft-default", "gpt2-peft-default", "falcon-peft-default"])
def test_lora_without_targets_takes_the_models_default(model, targets, capsys):
    assert main(["estimate", "--model", model, "--method", "lora"]) == 0
    assert f"target_modules {targets}" in capsys.readouterr().out  # the table names what was targeted
    assert main(["estimate", "--model", model, "--method", "lora", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["request"]["lora"]["target_modules"] == [targets]
    assert any(targets in a and "name target_modules to choose" in a for a in doc["assumptions"])


@pytest.mark.parametrize("command,needle", [("models", "llama-2-7b"), ("gpus", "rtx-4090")])
def test_catalog_listings(command, needle, capsys):
    assert main([command]) == 0
    assert needle in capsys.readouterr().out


def test_profile_prints_predicted_next_to_measured(tmp_path, capsys):
    pytest.importorskip("torch", reason="needs the [profiler] extra")
    from tests.estimator.tiny_configs import TINY_CONFIGS

    path = tmp_path / "config.json"
    path.write_text(json.dumps(TINY_CONFIGS["llama-gqa"]))
    argv = ["profile", "--config", str(path), "--method", "lora", "--r", "4", "--device", "cpu",
            "--batch-size", "1", "--seq-len", "8", "--steps", "2"]
    assert main([*argv, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["measured"]["steady_state_steps"] == [2]
    assert result["trainable_params"]["trainable"] == result["prediction"]["params"]["trainable"]
    assert main(argv) == 0
    table = capsys.readouterr().out
    assert "predicted bytes" in table and "measured bytes" in table and "optimizer_step" in table


def test_validate_prints_the_accuracy_table(capsys):
    from tunefit.app.reports.data import REPORTS_DATA, read_jsonl

    assert main(["validate"]) == 0
    out = capsys.readouterr().out
    n = len(read_jsonl(REPORTS_DATA / "cpu-validation.jsonl"))
    assert f"{n} measurements" in out
    for column in ("ours (holdout)", "paper formula", "4x rule", "optimizer_step"):
        assert column in out


HEADLINE_ARGS = ["--model", "llama-3-8b", "--method", "qlora", "--r", "16", "--targets", "all-linear",
                 "--batch-size", "4", "--seq-len", "2048"]
HEADLINE_BODY = {"model": "llama-3-8b", "method": "qlora", "lora": {"r": 16, "target_modules": "all-linear"},
                 "batch_size": 4, "seq_len": 2048}


@pytest.mark.parametrize("argv,path,body", [
    (["capacity", *HEADLINE_ARGS, "--gpu", "rtx-4090", "--gpu", "a100-80gb"], "/api/v1/capacity",
     {**HEADLINE_BODY, "gpus": ["rtx-4090", "a100-80gb"]}),
    (["capacity", *HEADLINE_ARGS, "--recipe", "none", "--multi-gpu", "fsdp"], "/api/v1/capacity",
     {**HEADLINE_BODY, "recipe": "none", "multi_gpu": "fsdp"}),
    (["compare", *HEADLINE_ARGS, "--gpu", "rtx-4090"], "/api/v1/compare", {**HEADLINE_BODY, "gpus": ["rtx-4090"]}),
    (["compare", *HEADLINE_ARGS, "--column", "method=lora,r=8", "--column", "label=wide,method=qlora,r=64"],
     "/api/v1/compare", {**HEADLINE_BODY, "variants": [{"method": "lora", "r": 8},
                                                       {"label": "wide", "method": "qlora", "r": 64}]}),
    (["estimate", *HEADLINE_ARGS, "--gpu", "rtx-4090", "--gpu", "rtx-3060-12gb"], "/api/v1/estimate",
     {**HEADLINE_BODY, "gpus": ["rtx-4090", "rtx-3060-12gb"]}),
], ids=["capacity", "capacity-fsdp-no-recipe", "compare", "compare-columns", "estimate-two-gpus"])
def test_the_cli_json_is_the_apis_document(client, capsys, argv, path, body):
    assert main([*argv, "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    response = client.post(path, json=body)
    assert response.status_code == 200, response.text
    assert printed == response.json()


def test_estimate_prints_the_verdict_first(capsys):
    assert main(["estimate", *HEADLINE_ARGS, "--recipe", "none", "--gpu", "rtx-4090", "--gpu", "h100-sxm-80gb"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("Does not fit an NVIDIA GeForce RTX 4090") and "short" in lines[0]
    assert lines[1].startswith("  1. score the loss in chunks")
    assert any(line.startswith("Fits an NVIDIA H100") for line in lines[:12])
    assert lines.index(next(x for x in lines if x.startswith("model llama-3-8b"))) > 2  # the plan after it


def test_piping_into_head_prints_no_traceback():
    import subprocess
    import sys

    script = ("import sys\nfrom tunefit.app.cli import main\n"
              "sys.exit(main(['estimate', '--model', 'llama-2-7b', '--gpu', 'rtx-4090']))")
    # head reads one line; true reads none and exits before the CLI has imported: the pipe is closed
    # when it writes, every time
    for reader, lines in (("head -n 1", 1), ("true", 0)):
        for command in (f"{sys.executable} -c \"{script}\"", f"{sys.executable} -m tunefit.app.cli models"):
            done = subprocess.run(["bash", "-c", f"{command} | {reader}"], capture_output=True, text=True, timeout=120)
            assert done.stdout.count("\n") == lines, done.stdout
            assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr
