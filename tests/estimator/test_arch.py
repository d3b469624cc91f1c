"""Exact parameter counts: the estimator vs ``sum(p.numel())`` of the transformers model, and its
one list of parameter tensors vs ``model.named_parameters()``, shape by shape."""

from collections import Counter

import pytest

from tests.estimator.tiny_configs import OPT_350M, TINY_CONFIGS
from tunefit.estimator import EstimateError, EstimateRequest, LoraSpec, arch_from_config, estimate, get_model, models
from tunefit.estimator.adapters import VARIANTS

torch = pytest.importorskip("torch", reason="needs the [profiler] extra")
transformers = pytest.importorskip("transformers")
transformers.utils.logging.set_verbosity_error()

from tunefit.profiler.build import model_class  # noqa: E402


def _meta_model(config: dict):
    rest = {k: v for k, v in config.items() if k != "model_type"}
    cfg = transformers.AutoConfig.for_model(config["model_type"], **rest)
    with torch.device("meta"):
        return model_class(config).from_config(cfg)


def _real_params(config: dict) -> int:
    return sum(p.numel() for p in _meta_model(config).parameters())  # parameters() yields a tied one once


def _real_shapes(model) -> Counter:
    """How many parameter tensors of each shape the model has, a Linear weight as ``(out, in)``:
    GPT-2's ``Conv1D`` stores ``(in, out)``, so its weights are turned round."""
    modules = dict(model.named_modules())
    shapes: Counter = Counter()
    for name, p in model.named_parameters():
        owner = modules[name.rpartition(".")[0]]
        conv1d = type(owner).__name__ == "Conv1D" and name.endswith(".weight")
        shapes[tuple(p.shape)[::-1] if conv1d else tuple(p.shape)] += 1
    return shapes


def _listed_shapes(arch) -> Counter:
    shapes: Counter = Counter()
    for t in arch.param_tensors():
        shapes[t.shape] += t.count
    return shapes


@pytest.mark.parametrize("name", sorted(TINY_CONFIGS), ids=sorted(TINY_CONFIGS))
def test_tiny_config_param_count_matches_transformers(name):
    config = TINY_CONFIGS[name]
    assert arch_from_config(config).total_params == _real_params(config)


@pytest.mark.parametrize("name", sorted(TINY_CONFIGS), ids=sorted(TINY_CONFIGS))
def test_tiny_config_param_tensors_match_named_parameters(name):
    config = TINY_CONFIGS[name]
    assert _listed_shapes(arch_from_config(config)) == _real_shapes(_meta_model(config))


@pytest.mark.parametrize("name", sorted(TINY_CONFIGS), ids=sorted(TINY_CONFIGS))
def test_tiny_config_buffer_bytes_match_transformers(name):
    """Rotary ``inv_freq`` / ``original_inv_freq`` (fp32) and Gemma's ``embed_scale`` (bf16 here)."""
    config = TINY_CONFIGS[name]
    rest = {k: v for k, v in config.items() if k != "model_type"}
    cfg = transformers.AutoConfig.for_model(config["model_type"], **rest)
    with torch.device("meta"):
        model = model_class(config).from_config(cfg, dtype=torch.bfloat16)
    real = sum(b.numel() * b.element_size() for b in model.buffers())
    assert arch_from_config(config).buffer_bytes(16) == real


CATALOG_IDS = sorted(models())


@pytest.mark.parametrize("model_id", CATALOG_IDS, ids=CATALOG_IDS)
def test_catalog_param_count_matches_transformers(model_id):
    entry = get_model(model_id)
    model = _meta_model(entry.config)
    assert entry.arch.total_params == sum(p.numel() for p in model.parameters())
    assert _listed_shapes(entry.arch) == _real_shapes(model)


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
    # GPT-2 under transformers' names (attribute_map): checked like its own keys
    ({"model_type": "gpt2", "hidden_size": "64", "n_head": 4, "n_layer": 2, "vocab_size": 100}, "config.hidden_size"),
    ({"model_type": "gpt2", "n_embd": 64, "num_attention_heads": -4, "n_layer": 2, "vocab_size": 100},
     "config.num_attention_heads"),
], ids=["empty", "unsupported", "missing-key", "negative", "float", "bad-gqa", "absurd-size", "not-object",
        "gpt2-alias-string", "gpt2-alias-negative"])
def test_malformed_configs_raise_naming_the_field(config, field):
    with pytest.raises(EstimateError) as info:
        arch_from_config(config)
    assert info.value.field == field


# ---- OPT's projected embedding (word_embed_proj_dim != hidden_size) ---------------------------------
# transformers' modeling_opt: embed_tokens is (vocab, word_embed_proj_dim); project_in (e -> h) and
# project_out (h -> e) are plain nn.Linear without bias; lm_head is nn.Linear(e, vocab), tied to
# embed_tokens by default; the logits stay vocab wide.

OPT_CONFIGS = {
    "opt-350m": OPT_350M,  # published: 331,196,416 parameters
    "opt-350m-untied": {**OPT_350M, "tie_word_embeddings": False},  # lm_head (vocab, 512) of its own
    "opt-350m-prenorm": {**OPT_350M, "do_layer_norm_before": True},  # adds the final LayerNorm (1024)
    "opt-350m-no-bias": {**OPT_350M, "enable_bias": False, "layer_norm_elementwise_affine": False},
}
OPT_IDS = list(OPT_CONFIGS)


@pytest.mark.parametrize("name", OPT_IDS, ids=OPT_IDS)
def test_opt_projected_embedding_matches_transformers(name):
    config = OPT_CONFIGS[name]
    arch = arch_from_config(config)
    model = _meta_model(config)
    assert arch.total_params == sum(p.numel() for p in model.parameters())
    assert _listed_shapes(arch) == _real_shapes(model)
    assert arch.embedding_dim == 512 and arch.hidden_size == 1024
    assert {m.name: (m.in_features, m.out_features, m.bias) for m in arch.model_linears} == {
        "project_out": (1024, 512, False), "project_in": (512, 1024, False)}


def test_opt_350m_total_is_the_published_count():
    tokens = 50272 * 512  # tied with lm_head: counted once
    positions = (2048 + 2) * 1024  # OPTLearnedPositionalEmbedding's offset of 2
    projections = 2 * 512 * 1024  # project_in, project_out; no bias
    layer = 4 * (1024 * 1024 + 1024) + 2 * 1024 * 4096 + 4096 + 1024 + 2 * 2 * 1024  # attention, fc1/fc2, 2 LayerNorms
    assert tokens + positions + projections + 24 * layer == 331_196_416
    assert arch_from_config(OPT_350M).total_params == 331_196_416


def _trainable_cases() -> list:
    cases = []
    targets = (("q_proj", "v_proj"), "all-linear")
    for name in OPT_IDS:
        for method in ("inference", "full"):
            cases.append(pytest.param(name, method, "lora", "all-linear", id=f"{name}-{method}"))
        for method in ("lora", "qlora"):
            for variant in VARIANTS:
                for target in targets:
                    label = target if isinstance(target, str) else "q+v"
                    cases.append(pytest.param(name, method, variant, target, id=f"{name}-{method}-{variant}-{label}"))
    return cases


@pytest.mark.parametrize("name,method,variant,targets", _trainable_cases())
def test_opt_trainable_never_exceeds_total(name, method, variant, targets):
    """Full fine-tuning trains every parameter (it once reported 356,935,680 of 331,196,416: the
    token table counted hidden_size wide); adapters train a small part."""
    lora = LoraSpec(r=8, target_modules=targets, variant=variant)
    est = estimate(EstimateRequest({"config": OPT_CONFIGS[name]}, method=method, lora=lora))
    assert 0 <= est.trainable_params <= est.total_params
    if method == "full":
        assert est.trainable_params == est.total_params
    if method in ("lora", "qlora"):
        assert est.trainable_params == est.adapter_params > 0
