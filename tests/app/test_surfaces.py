"""One plan, three surfaces, one document: the Python API, the CLI and the REST API build their
requests with the estimator's one constructor and its one set of defaults (alpha = 2·r included),
so the same plan gives the same document everywhere."""

import json

import pytest

from tunefit.app.cli import main as cli_main
from tunefit.app.planning.schemas import LoraIn, QuantIn, SettingIn
from tunefit.estimator import EstimateRequest, LoraSpec, QuantSpec, estimate, to_document
from tunefit.estimator.recipes import DEFAULT_RECIPE
from tunefit.estimator.request import DEFAULT_REQUEST, QLORA_DEFAULT_QUANT, request_from_fields

# (Python request, CLI arguments, REST body): each leaves out what the user would leave out. The
# Python API's defaults are the libraries' own; the CLI and the REST API assume DEFAULT_RECIPE unless
# told "none".
PLANS = {
    "lora-defaults": (
        EstimateRequest("llama-2-7b"),
        ["--recipe", "none", "--model", "llama-2-7b"],
        {"recipe": "none", "model": "llama-2-7b"},
    ),
    "lora-r8-alpha-default": (
        EstimateRequest("llama-3-8b", lora=LoraSpec(r=8, target_modules="all-linear")),
        ["--recipe", "none", "--model", "llama-3-8b", "--r", "8", "--targets", "all-linear"],
        {"recipe": "none", "model": "llama-3-8b", "lora": {"r": 8, "target_modules": "all-linear"}},
    ),
    "qlora-quant-default": (
        EstimateRequest("mistral-7b", method="qlora", lora=LoraSpec(r=64, dropout=0.05), batch_size=4,
                        seq_len=1000, gradient_checkpointing=True),
        ["--recipe", "none", "--model", "mistral-7b", "--method", "qlora", "--r", "64", "--lora-dropout", "0.05",
         "--batch-size", "4", "--seq-len", "1000", "--gradient-checkpointing"],
        {"recipe": "none", "model": "mistral-7b", "method": "qlora", "lora": {"r": 64, "dropout": 0.05},
         "batch_size": 4, "seq_len": 1000, "gradient_checkpointing": True},
    ),
    "qlora-fp4-no-dq-explicit-alpha": (
        EstimateRequest("llama-2-13b", method="qlora", lora=LoraSpec(r=16, alpha=16.0, variant="dora"),
                        quant=QuantSpec("fp4", False, 128), optimizer="paged_adamw_8bit", dtype="fp16"),
        ["--recipe", "none", "--model", "llama-2-13b", "--method", "qlora", "--alpha", "16", "--variant", "dora",
         "--quant", "fp4",
         "--no-double-quant", "--blocksize", "128", "--optimizer", "paged_adamw_8bit", "--dtype", "fp16"],
        {"recipe": "none", "model": "llama-2-13b", "method": "qlora", "lora": {"alpha": 16.0, "variant": "dora"},
         "quant": {"type": "fp4", "double_quant": False, "blocksize": 128}, "optimizer": "paged_adamw_8bit",
         "dtype": "fp16"},
    ),
    "recipe-choices": (
        EstimateRequest("qwen3-8b", method="qlora", prepare_kbit=False, gradient_checkpointing=False, loop="plain",
                        grad_accum=4, batch_size=2, seq_len=2048, autocast="bf16"),
        ["--recipe", "none", "--model", "qwen3-8b", "--method", "qlora", "--no-prepare-kbit",
         "--no-gradient-checkpointing", "--loop",
         "plain", "--grad-accum", "4", "--batch-size", "2", "--seq-len", "2048", "--autocast", "bf16"],
        {"recipe": "none", "model": "qwen3-8b", "method": "qlora", "prepare_kbit": False,
         "gradient_checkpointing": False,
         "loop": "plain", "grad_accum": 4, "batch_size": 2, "seq_len": 2048, "autocast": "bf16"},
    ),
    "chunked-loss-trl-sft": (
        request_from_fields({"model": "qwen3-8b", "recipe": "trl-sft", "method": "lora", "batch_size": 2,
                             "seq_len": 4096}),
        ["--model", "qwen3-8b", "--recipe", "trl-sft", "--method", "lora", "--batch-size", "2", "--seq-len", "4096"],
        {"model": "qwen3-8b", "recipe": "trl-sft", "method": "lora", "batch_size": 2, "seq_len": 4096},
    ),
    "chunked-loss-alone": (
        EstimateRequest("gemma-3-4b", method="full", loss="chunked", device="cpu"),
        ["--recipe", "none", "--model", "gemma-3-4b", "--method", "full", "--loss", "chunked", "--device", "cpu"],
        {"recipe": "none", "model": "gemma-3-4b", "method": "full", "loss": "chunked", "device": "cpu"},
    ),
    "dpo-objective": (
        EstimateRequest("qwen3-8b", method="lora", objective="dpo", batch_size=2, seq_len=2048),
        ["--recipe", "none", "--model", "qwen3-8b", "--method", "lora", "--objective", "dpo", "--batch-size", "2",
         "--seq-len", "2048"],
        {"recipe": "none", "model": "qwen3-8b", "method": "lora", "objective": "dpo", "batch_size": 2, "seq_len": 2048},
    ),
    "bf16-adapters": (
        EstimateRequest("qwen3-8b", method="qlora", adapter_dtype="bf16", prepare_kbit=False),
        ["--recipe", "none", "--model", "qwen3-8b", "--method", "qlora", "--adapter-dtype", "bf16",
         "--no-prepare-kbit"],
        {"recipe": "none", "model": "qwen3-8b", "method": "qlora", "adapter_dtype": "bf16", "prepare_kbit": False},
    ),
    "evaluation-forward": (
        EstimateRequest("gemma-3-4b", method="inference", inference_mode="forward", batch_size=8, seq_len=4096),
        ["--recipe", "none", "--model", "gemma-3-4b", "--method", "inference", "--inference-mode", "forward",
         "--batch-size", "8", "--seq-len", "4096"],
        {"recipe": "none", "model": "gemma-3-4b", "method": "inference", "inference_mode": "forward", "batch_size": 8,
         "seq_len": 4096},
    ),
    "generate-new-tokens": (
        EstimateRequest("qwen3-8b", method="inference", new_tokens=1024, batch_size=4, seq_len=2048),
        ["--recipe", "none", "--model", "qwen3-8b", "--method", "inference", "--new-tokens", "1024", "--batch-size",
         "4", "--seq-len", "2048"],
        {"recipe": "none", "model": "qwen3-8b", "method": "inference", "new_tokens": 1024, "batch_size": 4,
         "seq_len": 2048},
    ),
    "recipe-trl-dpo-full": (
        request_from_fields({"model": "llama-3.2-1b", "recipe": "trl-dpo", "method": "full"}),
        ["--model", "llama-3.2-1b", "--recipe", "trl-dpo", "--method", "full"],
        {"model": "llama-3.2-1b", "recipe": "trl-dpo", "method": "full"},
    ),
    "recipe-qlora-paper-r16": (
        request_from_fields({"model": "llama-3-8b", "recipe": "qlora-paper", "lora": {"r": 16}, "batch_size": 4,
                             "seq_len": 2048}),
        ["--model", "llama-3-8b", "--recipe", "qlora-paper", "--r", "16", "--batch-size", "4", "--seq-len", "2048"],
        {"model": "llama-3-8b", "recipe": "qlora-paper", "lora": {"r": 16}, "batch_size": 4, "seq_len": 2048},
    ),
    "recipe-unsloth-overridden": (
        request_from_fields({"model": "qwen3-8b", "recipe": "unsloth", "method": "qlora", "optimizer": "paged_adamw"}),
        ["--model", "qwen3-8b", "--recipe", "unsloth", "--method", "qlora", "--optimizer", "paged_adamw"],
        {"model": "qwen3-8b", "recipe": "unsloth", "method": "qlora", "optimizer": "paged_adamw"},
    ),
    "library-defaults-gemma2": (
        EstimateRequest("gemma-2-9b", method="qlora"),
        ["--recipe", "none", "--model", "gemma-2-9b", "--method", "qlora"],
        {"recipe": "none", "model": "gemma-2-9b", "method": "qlora"},
    ),
    "full-zero3-gpu": (
        EstimateRequest("llama-2-70b", method="full", sharding="zero3", num_gpus=8, gpu="h100-sxm-80gb",
                        attn_implementation="eager"),
        ["--recipe", "none", "--model", "llama-2-70b", "--method", "full", "--sharding", "zero3", "--num-gpus", "8",
         "--gpu", "h100-sxm-80gb", "--attn", "eager"],
        {"recipe": "none", "model": "llama-2-70b", "method": "full", "sharding": "zero3", "num_gpus": 8,
         "gpu": "h100-sxm-80gb", "attn_implementation": "eager"},
    ),
    "default-recipe-headline": (
        request_from_fields({"model": "llama-3-8b", "recipe": DEFAULT_RECIPE, "method": "qlora",
                             "lora": {"r": 16, "target_modules": "all-linear"}, "batch_size": 4, "seq_len": 2048}),
        ["--model", "llama-3-8b", "--method", "qlora", "--r", "16", "--targets", "all-linear", "--batch-size", "4",
         "--seq-len", "2048"],
        {"model": "llama-3-8b", "method": "qlora", "lora": {"r": 16, "target_modules": "all-linear"},
         "batch_size": 4, "seq_len": 2048},
    ),
    "default-recipe-with-an-exception": (
        request_from_fields({"model": "gpt2", "recipe": DEFAULT_RECIPE, "method": "lora",
                             "lora": {"target_modules": ["c_attn"]}}),
        ["--model", "gpt2", "--method", "lora", "--targets", "c_attn"],
        {"model": "gpt2", "method": "lora", "lora": {"target_modules": ["c_attn"]}},
    ),
    "default-recipe-inference": (
        EstimateRequest("qwen3-8b", method="inference", batch_size=2),
        ["--model", "qwen3-8b", "--method", "inference", "--batch-size", "2"],
        {"model": "qwen3-8b", "method": "inference", "batch_size": 2},
    ),
}


@pytest.mark.parametrize("python,argv,body", PLANS.values(), ids=PLANS.keys())
def test_python_cli_and_rest_give_the_same_document(python, argv, body, client, capsys):
    expected = to_document(estimate(python))
    assert cli_main(["estimate", *argv, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == expected
    response = client.post("/api/v1/estimate", json=body)
    assert response.status_code == 200, response.text
    assert response.json() == expected


def test_the_alpha_default_is_two_r_on_every_surface(client, capsys):
    r = 12
    assert estimate(EstimateRequest("llama-2-7b", lora=LoraSpec(r=r))).request.lora.alpha == 2 * r
    assert cli_main(["estimate", "--model", "llama-2-7b", "--r", str(r), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["request"]["lora"]["alpha"] == 2 * r
    body = {"model": "llama-2-7b", "lora": {"r": r}}
    assert client.post("/api/v1/estimate", json=body).json()["request"]["lora"]["alpha"] == 2 * r


def test_the_api_schemas_take_their_defaults_from_the_estimator():
    setting = SettingIn(model="llama-2-7b")
    assert (setting.method, setting.dtype, setting.batch_size, setting.seq_len, setting.optimizer,
            setting.attn_implementation, setting.device, setting.num_gpus, setting.sharding,
            setting.gradient_checkpointing, setting.prepare_kbit, setting.loop, setting.grad_accum,
            setting.autocast, setting.loss, setting.objective, setting.adapter_dtype, setting.inference_mode,
            setting.new_tokens) == (
        DEFAULT_REQUEST.method, DEFAULT_REQUEST.dtype, DEFAULT_REQUEST.batch_size, DEFAULT_REQUEST.seq_len,
        DEFAULT_REQUEST.optimizer, DEFAULT_REQUEST.attn_implementation, DEFAULT_REQUEST.device,
        DEFAULT_REQUEST.num_gpus, DEFAULT_REQUEST.sharding, DEFAULT_REQUEST.gradient_checkpointing,
        DEFAULT_REQUEST.prepare_kbit, DEFAULT_REQUEST.loop, DEFAULT_REQUEST.grad_accum, DEFAULT_REQUEST.autocast,
        DEFAULT_REQUEST.loss, DEFAULT_REQUEST.objective, DEFAULT_REQUEST.adapter_dtype,
        DEFAULT_REQUEST.inference_mode, DEFAULT_REQUEST.new_tokens)
    lora = LoraIn()
    assert (lora.r, lora.target_modules, lora.variant, lora.dropout) == (  # targets None: the model's default
        DEFAULT_REQUEST.lora.r, DEFAULT_REQUEST.lora.target_modules, DEFAULT_REQUEST.lora.variant,
        DEFAULT_REQUEST.lora.dropout)
    quant = QuantIn()
    assert (quant.type, quant.double_quant, quant.blocksize) == (
        QLORA_DEFAULT_QUANT.type, QLORA_DEFAULT_QUANT.double_quant, QLORA_DEFAULT_QUANT.blocksize)

