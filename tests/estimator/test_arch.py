"""Exact parameter counts: the estimator vs ``sum(p.numel())`` of the transformers model."""

import pytest

from tunefit.estimator import EstimateError, arch_from_config, get_model, models
from tests.estimator.tiny_configs import TINY_CONFIGS

torch = pytest.importorskip("torch", reason="needs the [profiler] extra")
transformers = pytest.importorskip("transformers")
transformers.utils.logging.set_verbosity_error()


def _real_params(config: dict) -> int:
    rest = {k: v for k, v in config.items() if k != "model_type"}
    cfg = transformers.AutoConfig.for_model(config["model_type"], **rest)
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(cfg)
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", sorted(TINY_CONFIGS), ids=sorted(TINY_CONFIGS))
def test_tiny_config_param_count_matches_transformers(name):
    config = TINY_CONFIGS[name]
    assert arch_from_config(config).total_params == _real_params(config)


@pytest.mark.parametrize("name", sorted(TINY_CONFIGS), ids=sorted(TINY_CONFIGS))
def test_tiny_config_buffer_bytes_match_transformers(name):
    """Rotary ``inv_freq`` / ``original_inv_freq`` (fp32) and Gemma's ``embed_scale`` (bf16 here)."""
    config = TINY_CONFIGS[name]
    rest = {k: v for k, v in config.items() if k != "model_type"}
    cfg = transformers.AutoConfig.for_model(config["model_type"], **rest)
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)
    real = sum(b.numel() * b.element_size() for b in model.buffers())
    assert arch_from_config(config).buffer_bytes(16) == real


CATALOG_IDS = sorted(models())


@pytest.mark.parametrize("model_id", CATALOG_IDS, ids=CATALOG_IDS)
def test_catalog_param_count_matches_transformers(model_id):
    entry = get_model(model_id)
    assert entry.arch.total_params == _real_params(entry.config)


# Published exact totals (model cards / Llama 2 paper); tolerance: exact.
@pytest.mark.parametrize("model_id,params", [
    ("llama-2-7b", 6_738_415_616),  # Llama 2 model card, "6.74B" = 6,738,415,616 (HF safetensors metadata)
    ("pythia-1b", 1_011_781_632),  # Pythia model card parameter table
], ids=["llama-2-7b", "pythia-1b"])
def test_published_param_counts(model_id, params):
    assert get_model(model_id).arch.total_params == params
    assert get_model(model_id).published_params == params


def test_gqa_shrinks_k_and_v():
    arch = get_model("llama-3-8b").arch
    dims = {m.name: (m.in_features, m.out_features) for m in arch.layer_linears}
    assert dims["q_proj"] == (4096, 4096)
    assert dims["k_proj"] == dims["v_proj"] == (4096, 1024)  # 8 KV heads x 128


def test_falcon_linears_are_not_quantizable():
    arch = get_model("falcon-7b").arch
    assert not any(m.quantizable for m in arch.layer_linears)  # FalconLinear is an nn.Linear subclass


@pytest.mark.parametrize("config,field", [
    ({}, "config.model_type"),
    ({"model_type": "bert"}, "config.model_type"),
    ({"model_type": "llama", "hidden_size": 64}, "config.num_attention_heads"),
    ({**TINY_CONFIGS["llama-gqa"], "hidden_size": -64}, "config.hidden_size"),
    ({**TINY_CONFIGS["llama-gqa"], "hidden_size": 64.5}, "config.hidden_size"),
    ({**TINY_CONFIGS["llama-gqa"], "num_key_value_heads": 3}, "config.num_key_value_heads"),
    ({**TINY_CONFIGS["llama-gqa"], "hidden_size": 2**24, "intermediate_size": 2**24,
      "num_hidden_layers": 4096, "vocab_size": 10}, "config"),
    ("not a dict", "config"),
], ids=["empty", "unsupported", "missing-key", "negative", "float", "bad-gqa", "absurd-size", "not-object"])
def test_malformed_configs_raise_naming_the_field(config, field):
    with pytest.raises(EstimateError) as info:
        arch_from_config(config)
    assert info.value.field == field
