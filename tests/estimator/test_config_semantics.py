"""config.json read as transformers 5.23 reads it: every family's configuration class is declared as
data (``ConfigClass``: its ``attribute_map`` and ``__init__`` defaults) and equal to transformers'
own; a config its class writes reads the same under either spelling of every aliased field and
describes the model transformers builds from it; a config round-tripped through transformers
estimates as the original; and the published configs that once failed (Qwen3-MoE's
``num_local_experts``, Llama 4 Scout's ``"attn_temperature_tuning": 4``) read as they should.
"""

import dataclasses
import json
import random

import pytest

from tests.estimator.tiny_configs import TINY_CONFIGS
from tunefit.estimator import EstimateError, EstimateRequest, LoraSpec, arch_from_config, estimate, get_model, models
from tunefit.estimator.arch import FAMILIES, FAMILY_MODULES
from tunefit.estimator.families import mistral3, towers

torch = pytest.importorskip("torch", reason="needs the [profiler] extra")
transformers = pytest.importorskip("transformers")
transformers.utils.logging.set_verbosity_error()

from tunefit.profiler.build import model_class  # noqa: E402

MODEL_TYPES = sorted(FAMILIES)
CONFIG_CLASSES = {**{t: FAMILIES[t].config_class for t in MODEL_TYPES},
                  "siglip_vision_model": towers.SIGLIP_VISION, "pixtral": towers.PIXTRAL_VISION}


def _meta_params(config: dict) -> int:
    """``sum(p.numel())`` of the model transformers builds from ``config`` (on the meta device)."""
    rest = {k: v for k, v in config.items() if k != "model_type"}
    cfg = transformers.AutoConfig.for_model(config["model_type"], **rest)
    with torch.device("meta"):
        return sum(p.numel() for p in model_class(config).from_config(cfg).parameters())


# ---- the declared classes are transformers' ---------------------------------------------------


@pytest.mark.parametrize("model_type", sorted(CONFIG_CLASSES), ids=sorted(CONFIG_CLASSES))
def test_declared_config_class_is_transformers(model_type):
    """Each declared default is the class's ``__init__`` default, each keyword default names no
    field, and the attribute_map is the class's, verbatim."""
    declared = CONFIG_CLASSES[model_type]
    cls = getattr(transformers, declared.name)
    defaults = {f.name: f.default for f in dataclasses.fields(cls)}
    assert {k: defaults.get(k, "not a field") for k in declared.defaults} == dict(declared.defaults)
    assert not set(declared.kwargs_defaults) & set(defaults)
    assert dict(declared.attribute_map) == cls.attribute_map


def test_each_model_type_has_one_family_module():
    assert sum(len(m.FAMILIES) for m in FAMILY_MODULES) == len(FAMILIES)


def test_mistral3_sub_configs_are_its_class_init_kwargs():
    """What Mistral3Config builds for a null ``text_config`` or ``vision_config``."""
    specs = transformers.Mistral3Config.sub_configs_defaults
    assert mistral3.MISTRAL3_TEXT.items() <= specs["text_config"].init_kwargs.items()
    assert mistral3.MISTRAL3_VISION.items() <= specs["vision_config"].init_kwargs.items()


# ---- (a) configs the classes write, under either spelling ---------------------------------------


def _gqa(rng: random.Random, head_dim: bool = True) -> dict:
    """A small text model's sizes, with grouped k/v heads (and an explicit ``head_dim``)."""
    heads, d = rng.choice((2, 4)), rng.choice((8, 16))
    sizes = dict(hidden_size=heads * d * rng.choice((1, 2)), num_attention_heads=heads,
                 num_key_value_heads=rng.choice([k for k in (1, 2, 4) if heads % k == 0]),
                 intermediate_size=rng.randrange(16, 72, 8), num_hidden_layers=rng.randint(1, 4),
                 vocab_size=rng.randrange(64, 256), max_position_embeddings=rng.choice((256, 4096)))
    return {**sizes, "head_dim": d} if head_dim else sizes


def _mha(rng: random.Random) -> dict:
    heads = rng.choice((2, 4))
    return dict(hidden_size=heads * rng.choice((8, 16)), num_attention_heads=heads, num_hidden_layers=rng.randint(1, 3),
                vocab_size=rng.randrange(64, 256))


def _flags(rng: random.Random, model_type: str) -> dict:
    """Every flag the family reads, drawn."""
    declared = FAMILIES[model_type].config_class.defaults
    return {k: rng.random() < 0.5 for k, v in declared.items() if isinstance(v, bool)}


def _window(rng: random.Random) -> dict:
    return {"sliding_window": rng.choice((None, 16, 4096))}


def _experts(rng: random.Random, key: str) -> dict:
    n = rng.choice((2, 4, 8))
    return {key: n, "num_experts_per_tok": rng.randint(1, n), "moe_intermediate_size": rng.randrange(8, 40, 8)}


def _grouped(rng: random.Random, layers: int) -> dict:
    return {**_experts(rng, "n_routed_experts"), "n_group": 2, "topk_group": 1, "n_shared_experts": rng.choice((1, 2)),
            "first_k_dense_replace": rng.randint(0, layers)}


def _mla(rng: random.Random) -> dict:
    mha = _mha(rng)
    return {**mha, "intermediate_size": 48, **_grouped(rng, mha["num_hidden_layers"]),
            "q_lora_rank": rng.choice((None, 16)), "kv_lora_rank": 16, "qk_nope_head_dim": rng.choice((8, 16)),
            "qk_rope_head_dim": 8, "v_head_dim": rng.choice((8, 16))}


SIGLIP = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=28,
              patch_size=14)
PIXTRAL = dict(SIGLIP, head_dim=8)


def _text(rng: random.Random, model_type: str) -> dict:
    """A drawn config of ``model_type``'s class, as keyword arguments to it."""
    config = {**_flags(rng, model_type), **DRAWS[model_type](rng)}
    # a padding token within the drawn vocabulary (Phi3Config's default, 32000, is not)
    return config if "text_config" in config else {**config, "pad_token_id": 0}


DRAWS = {
    "llama": lambda r: _gqa(r),
    "mistral": lambda r: {**_gqa(r), **_window(r)},
    "mixtral": lambda r: {**_gqa(r), **_window(r), **_experts(r, "num_local_experts")},
    "qwen2": lambda r: {**_gqa(r), **_window(r), "max_window_layers": r.randint(0, 3)},
    "gemma": lambda r: _gqa(r),
    "gemma2": lambda r: {**_gqa(r), **_window(r), "attn_logit_softcapping": r.choice((None, 20.0))},
    "phi3": lambda r: {**_gqa(r, head_dim=False), **_window(r)},
    "gpt2": lambda r: dict(n_embd=r.choice((16, 32)), n_head=2, n_layer=r.randint(1, 3), n_positions=64,
                           vocab_size=r.randrange(64, 256), n_inner=r.choice((None, 40))),
    "opt": lambda r: {**_mha(r), "ffn_dim": 40, "max_position_embeddings": 64,
                      "word_embed_proj_dim": r.choice((None, 8))},
    "gpt_neox": lambda r: {**_mha(r), "intermediate_size": 40, "rotary_pct": r.choice((0.25, 0.5, 1.0))},
    "falcon": lambda r: {**_mha(r), "num_kv_heads": r.choice((1, 2)), "ffn_hidden_size": r.choice((None, 40)),
                         "num_ln_in_parallel_attn": r.choice((None, 1, 2))},
    "qwen3": lambda r: {**_gqa(r), **_window(r), "max_window_layers": r.randint(0, 3)},
    "qwen3_moe": lambda r: {**_gqa(r), **_window(r), **_experts(r, "num_experts"),
                            "decoder_sparse_step": r.choice((1, 2)), "mlp_only_layers": r.choice(([], [0]))},
    "olmo2": lambda r: _gqa(r, head_dim=False),
    "olmo3": lambda r: {**_gqa(r, head_dim=False), **_window(r)},
    "smollm3": lambda r: {**_gqa(r, head_dim=False), **_window(r), "no_rope_layer_interval": r.choice((2, 4))},
    "granite": lambda r: _gqa(r, head_dim=False),
    "gemma3_text": lambda r: {**_gqa(r), "sliding_window": r.choice((16, 4096)),
                              "sliding_window_pattern": r.choice((2, 6))},
    "gpt_oss": lambda r: {**_gqa(r), "sliding_window": r.choice((16, 128)), **_experts(r, "num_local_experts")},
    "glm4_moe": lambda r: {**_gqa(r), "partial_rotary_factor": r.choice((0.5, 1.0)),
                           **_grouped(r, 4)},
    "deepseek_v3": _mla,
    "mistral4": _mla,
    "llama4_text": lambda r: {**_gqa(r), **_experts(r, "num_local_experts"), "intermediate_size_mlp": 48,
                              "interleave_moe_layer_step": r.choice((1, 2)), "attention_chunk_size": r.choice((16, 64)),
                              "no_rope_layer_interval": r.choice((2, 4))},
    "gemma3": lambda r: {"text_config": _text(r, "gemma3_text"),
                         "vision_config": {**SIGLIP, "vision_use_head": r.random() < 0.5}},
    "llama4": lambda r: {"text_config": _text(r, "llama4_text"), "vision_config": SIGLIP},
    "mistral3": lambda r: {"text_config": {"model_type": "mistral", **_text(r, "mistral")}, "vision_config": PIXTRAL,
                           "spatial_merge_size": r.choice((1, 2)), "vision_feature_layer": r.choice((-1, [-1, -2]))},
}
DRAWS_PER_FAMILY = 2
DRAWN = [pytest.param(t, seed, id=f"{t}-{seed}") for t in MODEL_TYPES for seed in range(DRAWS_PER_FAMILY)]


def _respelled(config: dict, attribute_map: dict) -> dict:
    """``config`` with every field its class's ``attribute_map`` aliases under the alias."""
    out = dict(config)
    for alias, name in attribute_map.items():
        if name in out:
            out[alias] = out.pop(name)
    return out


def _every_alias(config: dict, cfg) -> dict:
    """``config`` re-spelled by hand: every aliased field, the text model's too, under its alias."""
    out = _respelled(config, type(cfg).attribute_map)
    if "text_config" in out:
        out["text_config"] = _respelled(out["text_config"], type(cfg.text_config).attribute_map)
    return out


def _windows(cfg, layers: int) -> tuple[int, ...]:
    """Each layer's window as transformers' config has it: ``sliding_window`` on its sliding layers
    (every layer where it keeps no ``layer_types``), ``attention_chunk_size`` on chunked ones."""
    window = getattr(cfg, "sliding_window", None) or 0
    types = getattr(cfg, "layer_types", None)
    if not types:
        return (window,) * layers
    local = {"sliding_attention": window, "chunked_attention": getattr(cfg, "attention_chunk_size", 0)}
    return tuple(local.get(t, 0) for t in types)


@pytest.mark.parametrize("model_type,seed", DRAWN)
def test_a_config_its_class_writes_reads_alike_under_every_alias(model_type, seed, tmp_path):
    rng = random.Random(f"{model_type}-{seed}")
    cfg = transformers.AutoConfig.for_model(model_type, **_text(rng, model_type))
    cfg.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    arch = arch_from_config(saved)
    respelled = _every_alias(saved, cfg)
    assert arch_from_config(respelled) == arch and arch_from_config(respelled).total_params == arch.total_params
    # and it is the model transformers builds from that config.json
    text = getattr(cfg, "text_config", cfg)
    assert arch.total_params == _meta_params(saved)
    assert arch.layer_windows == _windows(text, text.num_hidden_layers)
    assert arch.max_position_embeddings == text.max_position_embeddings
    assert arch.num_local_experts == getattr(text, "num_local_experts", 0)


# ---- (b) configs round-tripped through transformers --------------------------------------------


def _round_trip(config: dict) -> dict:
    """``config`` as transformers 5.23 keeps it: its class's every attribute, defaults filled in."""
    rest = {k: v for k, v in config.items() if k != "model_type"}
    return transformers.AutoConfig.for_model(config["model_type"], **rest).to_dict()


CATALOG_IDS = sorted(models())


@pytest.mark.parametrize("model_id", CATALOG_IDS, ids=CATALOG_IDS)
def test_a_catalog_config_round_tripped_through_transformers_estimates_alike(model_id):
    config = get_model(model_id).config
    again = _round_trip(config)
    arch = arch_from_config(config)
    assert arch_from_config(again) == arch
    lora = LoraSpec(r=8, target_modules=arch.every_linear_target)
    peaks = [estimate(EstimateRequest({"config": c}, method="lora", lora=lora)).peak_bytes for c in (config, again)]
    assert peaks[0] == peaks[1]


@pytest.mark.parametrize("name", sorted(TINY_CONFIGS), ids=sorted(TINY_CONFIGS))
def test_what_a_tiny_config_leaves_out_takes_the_class_default(name):
    """The tiny configs leave most keys out: their defaults are the classes'."""
    config = TINY_CONFIGS[name]
    assert arch_from_config(_round_trip(config)) == arch_from_config(config)


# ---- (c) published configs that once failed, and what a reader must refuse ------------------------

QWEN3_MOE = dict(model_type="qwen3_moe", hidden_size=64, intermediate_size=96, moe_intermediate_size=32,
                 num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16, vocab_size=300,
                 num_experts_per_tok=2)


@pytest.mark.parametrize("key", ["num_local_experts", "num_experts"])
def test_a_qwen3_moe_config_counts_its_experts_under_either_name(key):
    """transformers 5.x writes Qwen3-MoE's expert count as ``num_local_experts`` (Qwen3MoeConfig's
    attribute_map); read once as absent, it was taken for the default 128."""
    config = {**QWEN3_MOE, key: 8}
    arch = arch_from_config(config)
    assert arch.num_local_experts == 8
    assert arch.total_params == _meta_params({**QWEN3_MOE, "num_experts": 8})


def test_llama4_scout_reads_its_integer_temperature_flag_as_its_truth_value():
    """Scout's published text_config has ``"attn_temperature_tuning": 4``; the modeling code uses it
    as a truth value (``if self.attn_temperature_tuning and not self.use_rope``), so 4 reads as true
    and 0 as false. (transformers 5.23's own strict validation refuses the integer, which is why
    this compares with the ``true`` config, not with a transformers model.)"""
    scout = get_model("llama-4-scout").config

    def with_flag(value: object) -> dict:
        return {**scout, "text_config": {**scout["text_config"], "attn_temperature_tuning": value}}

    assert arch_from_config(with_flag(4)) == arch_from_config(with_flag(True))
    assert arch_from_config(with_flag(4)).query_position_scale == "nope_fp32"
    assert arch_from_config(with_flag(0)) == arch_from_config(with_flag(False))
    assert arch_from_config(with_flag(0)).query_position_scale == ""


LLAMA = TINY_CONFIGS["llama-gqa"]


@pytest.mark.parametrize("config,field", [
    ({**LLAMA, "attention_bias": "yes"}, "config.attention_bias"),
    ({**LLAMA, "attention_bias": 1.0}, "config.attention_bias"),
    ({**QWEN3_MOE, "num_experts": 8, "num_local_experts": 4}, "config.num_experts"),
    ({"model_type": "gpt2", "n_embd": 64, "hidden_size": 32, "n_head": 4, "n_layer": 2, "vocab_size": 100},
     "config.hidden_size"),
    ({"model_type": "gemma3", "text_config": {"hidden_size": -1}}, "config.text_config.hidden_size"),
], ids=["flag-string", "flag-float", "two-spellings-differ", "gpt2-two-spellings-differ", "nested-path"])
def test_what_no_reading_makes_sense_of_is_refused_naming_the_field(config, field):
    with pytest.raises(EstimateError) as info:
        arch_from_config(config)
    assert info.value.field == field


@pytest.mark.parametrize("config,expected", [
    # Mistral and Mixtral build bias-free Linears and Qwen2 biases q/k/v alone, whatever the config says
    ({**LLAMA, "model_type": "mistral", "attention_bias": True, "mlp_bias": True}, {**LLAMA, "model_type": "mistral"}),
    ({**LLAMA, "model_type": "qwen2", "attention_bias": True, "mlp_bias": True}, {**LLAMA, "model_type": "qwen2"}),
    ({**LLAMA, "model_type": "gemma", "head_dim": 16, "mlp_bias": True},
     {**LLAMA, "model_type": "gemma", "head_dim": 16}),
    # an alias and its field given alike are one field
    ({**QWEN3_MOE, "num_experts": 8, "num_local_experts": 8}, {**QWEN3_MOE, "num_experts": 8}),
    # Falcon's __post_init__ still reads an old config's n_embed as hidden_size
    ({**{k: v for k, v in TINY_CONFIGS["falcon-mqa"].items() if k != "hidden_size"}, "n_embed": 64},
     TINY_CONFIGS["falcon-mqa"]),
    # GPT-NeoX's rotary fraction: rope_parameters', else rotary_pct (a top-level partial_rotary_factor is not read)
    ({**TINY_CONFIGS["gpt_neox"], "rope_parameters": {"partial_rotary_factor": 0.5}, "rotary_pct": 1.0},
     {**TINY_CONFIGS["gpt_neox"], "rotary_pct": 0.5, "partial_rotary_factor": 1.0}),
    # flags as integers: their truth value
    ({**LLAMA, "attention_bias": 1, "tie_word_embeddings": 0}, {**LLAMA, "attention_bias": True}),
], ids=["mistral-ignores-bias-flags", "qwen2-ignores-bias-flags", "gemma-ignores-mlp-bias", "alias-equal",
        "falcon-n-embed", "gpt-neox-rotary", "integer-flags"])
def test_configs_transformers_reads_alike_read_alike(config, expected):
    assert arch_from_config(config) == arch_from_config(expected)
