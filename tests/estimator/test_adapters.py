"""Adapter trainable-parameter counts: the estimator vs peft's ``get_nb_trainable_parameters()[0]``.

The tiny cases build the transformers model on CPU, wrap it with ``get_peft_model`` and compare
peft's trainable count with ``adapter_params`` (and peft's trainable tensors, shape by shape, with
``adapter_tensors``); the catalog cases build one real-size model per family on the meta device.
Tolerance: exact.
"""

from collections import Counter

import pytest

from tests.estimator.tiny_configs import OPT_350M, TINY_CONFIGS
from tunefit.estimator import CatalogModel, EstimateRequest, estimate, get_model, models, to_document
from tunefit.estimator.adapters import VARIANTS, LoraSpec, adapter_params, adapter_tensors
from tunefit.estimator.arch import arch_from_config
from tunefit.estimator.errors import EstimateError

torch = pytest.importorskip("torch", reason="needs the [profiler] extra")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")
transformers.utils.logging.set_verbosity_error()

from tunefit.profiler.build import model_class  # noqa: E402

# Known third-party noise: peft switches fan_in_fan_out on for gpt2's Conv1D, and transformers 5
# deprecates a name peft still calls.
pytestmark = [
    pytest.mark.filterwarnings("ignore:fan_in_fan_out is set to False:UserWarning"),
    pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning"),
    # peft matches the doubled rank of mixtral's fused w1/w3 on the parameter, then warns that no *module* matched
    pytest.mark.filterwarnings("ignore:The following (rank|alpha)_pattern keys did not match:RuntimeWarning"),
]


def _tiny_model(name: str):
    config = TINY_CONFIGS[name]
    rest = {k: v for k, v in config.items() if k != "model_type"}
    cfg = transformers.AutoConfig.for_model(config["model_type"], **rest)
    torch.manual_seed(0)
    return model_class(config).from_config(cfg)  # CPU: tiny, and peft needs real tensors


def _peft_config(variant: str, r: int, targets):
    targets = targets if isinstance(targets, str) else list(targets)
    if variant == "vera":
        return peft.VeraConfig(r=r, target_modules=targets)
    # LoRA+ (arXiv:2402.12354) only changes learning rates (peft.optimizers.create_loraplus_optimizer),
    # so its model is a plain LoRA model; rsLoRA only changes the scaling to alpha / sqrt(r).
    return peft.LoraConfig(r=r, target_modules=targets, use_rslora=variant == "rslora", use_dora=variant == "dora")


def _peft_trainable(name: str, variant: str, r: int, targets) -> int:
    model = peft.get_peft_model(_tiny_model(name), _peft_config(variant, r, targets))
    return model.get_nb_trainable_parameters()[0]


def _ours(name: str, variant: str, r: int, targets) -> int:
    return adapter_params(arch_from_config(TINY_CONFIGS[name]), LoraSpec(r=r, target_modules=targets, variant=variant))


# ---- 1. all-linear on every tiny family ------------------------------------------------------------

def _all_linear_breaks(name: str) -> bool:
    """Whether the family has a Linear peft cannot wrap (Llama 4's router returns a tuple)."""
    return arch_from_config(TINY_CONFIGS[name]).every_linear_target != "all-linear"


# mixtral included: with transformers 5 its experts are fused 3-D parameters and the router a bare
# weight, and peft 0.21 maps "all-linear" onto them through target_parameters (ParamWrapper).
ALL_LINEAR_IDS = sorted(n for n in TINY_CONFIGS if not _all_linear_breaks(n))
BROKEN_ALL_LINEAR_IDS = sorted(n for n in TINY_CONFIGS if _all_linear_breaks(n))


@pytest.mark.parametrize("name", ALL_LINEAR_IDS, ids=ALL_LINEAR_IDS)
def test_all_linear_lora_matches_peft(name):
    assert _ours(name, "lora", 4, "all-linear") == _peft_trainable(name, "lora", 4, "all-linear")


@pytest.mark.parametrize("name", BROKEN_ALL_LINEAR_IDS, ids=BROKEN_ALL_LINEAR_IDS)
def test_all_linear_is_refused_where_peft_wraps_a_module_it_cannot_run(name):
    """peft's all-linear wraps Llama 4's router (an nn.Linear returning ``(scores, logits)``) and the
    forward fails; the estimator refuses it and names the targets to use instead."""
    with pytest.raises(EstimateError, match=r"\['router'\].*returns a tuple.*'q_proj'"):
        _ours(name, "lora", 4, "all-linear")
    with pytest.raises(EstimateError, match="router"):
        _ours(name, "lora", 4, ("q_proj", "router"))
    model = peft.get_peft_model(_tiny_model(name), _peft_config("lora", 4, "all-linear"))
    ids = torch.zeros(1, 4, dtype=torch.long)
    with pytest.raises(AttributeError, match="'tuple' object has no attribute"):
        model(input_ids=ids, labels=ids)


# ---- 2. explicit module names x variants -----------------------------------------------------------

TARGETS = [
    ("llama-gqa", ("q_proj", "v_proj")),  # GQA: v_proj is narrower than q_proj
    ("gpt2", ("c_attn", "c_proj")),  # Conv1D; c_proj is both attn (H->H) and mlp (4H->H)
    ("gpt2-inner", ("c_attn", "c_proj")),  # same with n_inner
    ("phi3", ("qkv_proj",)),  # fused qkv
    ("falcon-mqa", ("query_key_value", "dense_h_to_4h")),
    ("falcon-new-arch", ("query_key_value", "dense_h_to_4h")),
    ("falcon-serial", ("query_key_value", "dense_h_to_4h")),
    ("gpt_neox", ("query_key_value",)),
    ("opt", ("q_proj", "fc1")),
    ("mixtral", ("q_proj", "k_proj", "v_proj", "o_proj")),
    ("gemma2", ("gate_proj", "down_proj")),
    ("qwen3", ("q_proj", "v_proj")),  # q_norm/k_norm are not Linear: never targets
    ("olmo2", ("k_proj", "o_proj")),
    ("gemma3_text", ("q_proj", "gate_proj")),
    ("smollm3", ("v_proj", "down_proj")),
    ("granite", ("q_proj", "up_proj")),
    ("gemma3", ("q_proj", "v_proj")),  # the SigLIP tower's q_proj, v_proj too: peft matches a name anywhere
    ("mistral3-untied", ("o_proj", "linear_1")),  # Pixtral's o_proj and the projector's linear_1
    # gate_proj and down_proj of the dense layers and of the MoE layers' shared expert
    ("llama4_text", ("q_proj", "gate_proj", "down_proj")),
    ("llama4", ("k_proj", "up_proj")),  # the wrapper's text model: no vision tower is built
    # no conversion table: gate_proj reaches the dense layer's and the shared experts' Linears
    ("mistral4", ("q_b_proj", "kv_b_proj", "gate_proj")),
]
CASES = [
    pytest.param(name, targets, variant, id=f"{name}-{'+'.join(targets)}-{variant}")
    for name, targets in TARGETS
    for variant in VARIANTS
]


@pytest.mark.parametrize("name,targets,variant", CASES)
def test_named_targets_match_peft(name, targets, variant):
    assert _ours(name, variant, 4, targets) == _peft_trainable(name, variant, 4, targets)


# The largest rank the estimator accepts (r == min(d_in, d_out) of the narrowest targeted module) is one
# peft builds too.
@pytest.mark.parametrize("name,targets,r", [
    ("llama-gqa", ("k_proj",), 32),  # k_proj: 64 -> 2 KV heads x 16 = 32
    ("gpt2", ("c_attn",), 64),  # c_attn: 64 -> 192
], ids=["llama-gqa-k_proj-r32", "gpt2-c_attn-r64"])
def test_rank_at_the_limit_matches_peft(name, targets, r):
    assert _ours(name, "lora", r, targets) == _peft_trainable(name, "lora", r, targets)


# mixtral (transformers 5): peft maps the transformers-4 names of the router ("gate") and experts
# ("w1", "w3" fused into gate_up_proj at rank 2r; "w2" = down_proj) onto ParamWrapper. VeRA's config is
# not converted, so its "all-linear" reaches the attention projections only.
def _label(targets) -> str:
    return targets if isinstance(targets, str) else "+".join(targets)


MOE_CASES = [
    pytest.param(variant, targets, id=f"mixtral-{_label(targets)}-{variant}")
    for targets in [("w2",), ("gate", "q_proj"), ("q_proj", "w1", "w3"), ("w1", "w2", "w3", "gate")]
    for variant in ["lora", "rslora", "lora+"]
] + [pytest.param("vera", "all-linear", id="mixtral-all-linear-vera")]
# qwen3_moe: peft 0.21 maps it with qwen2_moe's table ("gate"; "gate_proj" + "up_proj" fused into
# gate_up_proj at rank 2r; "down_proj", now the stacked parameter of the same name)
MOE_CASES = [pytest.param("mixtral", *case.values, id=case.id) for case in MOE_CASES] + [
    pytest.param("qwen3_moe", variant, targets, id=f"qwen3_moe-{_label(targets)}-{variant}")
    for targets in [("down_proj",), ("gate", "q_proj"), ("gate_proj", "up_proj"), "all-linear"]
    for variant in ["lora", "rslora"]
] + [
    # dense layers among the sparse ones: the converted names leave their gate/up/down_proj Linears alone
    pytest.param("qwen3_moe-dense-layers", "lora", targets, id=f"qwen3_moe-dense-layers-{_label(targets)}-lora")
    for targets in [("gate_proj", "up_proj", "q_proj"), "all-linear"]
]


@pytest.mark.parametrize("name,variant,targets", MOE_CASES)
def test_moe_parameter_targets_match_peft(name, variant, targets):
    assert _ours(name, variant, 4, targets) == _peft_trainable(name, variant, 4, targets)


# ---- 3. invalid input names the field --------------------------------------------------------------

@pytest.mark.parametrize("name,lora,field", [
    ("llama-gqa", LoraSpec(r=4, target_modules=("c_attn",)), "lora.target_modules"),
    ("gpt2", LoraSpec(r=4, target_modules=("q_proj", "v_proj")), "lora.target_modules"),
    ("llama-gqa", LoraSpec(r=4, target_modules="q_proj,nope"), "lora.target_modules"),
    ("llama-gqa", LoraSpec(r=4, target_modules=()), "lora.target_modules"),
    ("llama-gqa", LoraSpec(r=0), "lora.r"),
    ("llama-gqa", LoraSpec(r=-2), "lora.r"),
    ("llama-gqa", LoraSpec(r=0, variant="vera"), "lora.r"),
    ("llama-gqa", LoraSpec(r=33, target_modules=("k_proj",)), "lora.r"),  # k_proj is 64 -> 32
    ("llama-gqa", LoraSpec(r=33, target_modules="all-linear"), "lora.r"),
    ("gpt2", LoraSpec(r=65, target_modules=("c_attn",)), "lora.r"),  # c_attn is 64 -> 192
    ("falcon-mqa", LoraSpec(r=65, target_modules=("query_key_value",)), "lora.r"),  # 64 -> 96
    # peft: "Cannot convert PEFT target(s) w1 without also targeting w3 because they are fused"
    ("mixtral", LoraSpec(r=4, target_modules=("w1",)), "lora.target_modules"),
    # peft: "lora.ParamWrapper does not work with use_dora=True" / "with lora_dropout != 0"
    ("mixtral", LoraSpec(r=4, target_modules="all-linear", variant="dora"), "lora.variant"),
    ("mixtral", LoraSpec(r=4, target_modules=("w2",), dropout=0.1), "lora.dropout"),
    # "down_proj" is a parameter in transformers 5, not a module peft's target_modules can match
    ("mixtral", LoraSpec(r=4, target_modules=("down_proj",)), "lora.target_modules"),
    ("qwen3_moe", LoraSpec(r=4, target_modules=("up_proj",)), "lora.target_modules"),
    ("qwen3", LoraSpec(r=4, target_modules=("q_norm",)), "lora.target_modules"),
], ids=[
    "llama-unknown-c_attn", "gpt2-unknown-q_proj", "llama-unknown-in-string", "llama-empty-targets",
    "r-zero", "r-negative", "vera-r-zero", "llama-r-over-k_proj", "llama-r-over-all-linear",
    "gpt2-r-over-c_attn", "falcon-r-over-qkv", "mixtral-w1-without-w3", "mixtral-dora-on-experts",
    "mixtral-dropout-on-experts", "mixtral-down_proj-is-a-parameter", "qwen3_moe-up_proj-without-gate_proj",
    "qwen3-q_norm-is-no-linear",
])
def test_invalid_lora_raises_naming_the_field(name, lora, field):
    with pytest.raises(EstimateError) as info:
        adapter_params(arch_from_config(TINY_CONFIGS[name]), lora)
    assert info.value.field == field


# ---- 4. the LoRA paper's setting -------------------------------------------------------------------

def test_llama_2_7b_lora_r8_q_v_matches_the_paper():
    # LoRA (Hu et al., arXiv:2106.09685; seed article 000), Eq. 10: trainable params = L * m * r * 2d
    # with L = 32 layers, m = 2 adapted matrices (W_q, W_v), r = 8, d = 4096:
    # 32 * 2 * 8 * (4096 + 4096) = 4,194,304. peft prints "trainable params: 4,194,304" for
    # LoraConfig(r=8, target_modules=["q_proj", "v_proj"]) on Llama-2-7B. Tolerance: exact.
    arch = get_model("llama-2-7b").arch
    assert adapter_params(arch, LoraSpec(r=8, target_modules=("q_proj", "v_proj"))) == 4_194_304
    assert 32 * 2 * 8 * (4096 + 4096) == 4_194_304


# ---- 5. one list of tensors per variant --------------------------------------------------------------

SHAPE_CASES = [
    pytest.param(name, variant, id=f"{name}-{variant}")
    for name in sorted(TINY_CONFIGS)
    for variant in VARIANTS
    # peft's ParamWrapper refuses DoRA on MoE experts (section 3)
    if not (arch_from_config(TINY_CONFIGS[name]).peft_reaches_experts and variant == "dora")
    and not _all_linear_breaks(name)  # named targets for these: section 2
]


@pytest.mark.parametrize("name,variant", SHAPE_CASES)
def test_adapter_tensors_are_peft_trainable_parameters(name, variant):
    """``adapter_tensors`` lists exactly the trainable tensors peft creates, shape by shape."""
    model = peft.get_peft_model(_tiny_model(name), _peft_config(variant, 4, "all-linear"))
    theirs = Counter(tuple(p.shape) for p in model.parameters() if p.requires_grad)
    ours: Counter = Counter()
    lora = LoraSpec(r=4, target_modules="all-linear", variant=variant)
    for tensor, count in adapter_tensors(arch_from_config(TINY_CONFIGS[name]), lora):
        ours[tensor.shape] += count
    assert ours == theirs


# ---- 6. real-size configs: one catalog model per family, on the meta device -------------------------

# peft's own "q and v" defaults (peft.utils.constants.TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING);
# phi3 is not in that table: its q and v live in the fused qkv_proj.
QV_TARGETS = {"falcon": ("query_key_value",), "gpt2": ("c_attn",), "gpt_neox": ("query_key_value",),
              "phi3": ("qkv_proj",),
              # multi-head latent attention: q through q_a/q_b, k and v through kv_a/kv_b (no table in peft)
              "deepseek_v3": ("q_b_proj", "kv_b_proj")}


def _smallest_per_family() -> dict[str, dict]:
    """The smallest catalog model of each model_type (and OPT-350m, whose projected embedding
    adds project_in and project_out to "all-linear"): every family, in seconds."""
    chosen: dict[str, CatalogModel] = {}
    for entry in models().values():
        best = chosen.get(entry.arch.model_type)
        if best is None or entry.arch.total_params < best.arch.total_params:
            chosen[entry.arch.model_type] = entry
    configs = {entry.id: entry.config for entry in chosen.values()}
    return {**dict(sorted(configs.items())), "opt-350m": OPT_350M}


FAMILY_CONFIGS = _smallest_per_family()
FAMILY_CASES = [
    pytest.param(model_id, variant, targets, id=f"{model_id}-{_label(targets)}-{variant}")
    for model_id, config in FAMILY_CONFIGS.items()
    for targets in (QV_TARGETS.get(config["model_type"], ("q_proj", "v_proj")),
                    arch_from_config(config).every_linear_target)
    for variant in VARIANTS
]


def _meta_peft_trainable(config: dict, variant: str, r: int, targets) -> int:
    rest = {k: v for k, v in config.items() if k != "model_type"}
    cfg = transformers.AutoConfig.for_model(config["model_type"], **rest)
    with torch.device("meta"):
        model = model_class(config).from_config(cfg)
    model = peft.get_peft_model(model, _peft_config(variant, r, targets))
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_qv_targets_are_pefts_defaults():
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as defaults

    for model_type in {c["model_type"] for c in FAMILY_CONFIGS.values()}:
        ours = QV_TARGETS.get(model_type, ("q_proj", "v_proj"))
        assert tuple(defaults.get(model_type, ours)) == ours


@pytest.mark.parametrize("model_id,variant,targets", FAMILY_CASES)
def test_catalog_family_counts_match_peft_on_meta(model_id, variant, targets):
    """r = 8 on the family's q/v projections and on all-linear. One model per family, not the whole
    catalog: the families' builders are what differ (every catalog model's own tensors are checked
    against transformers in test_arch), and the whole real-size catalog takes minutes with peft."""
    config = FAMILY_CONFIGS[model_id]
    arch = arch_from_config(config)
    lora = LoraSpec(r=8, target_modules=targets, variant=variant)
    if arch.peft_reaches_experts and variant == "dora" and targets == "all-linear":
        # the router and experts are stacked parameters: peft's ParamWrapper refuses DoRA, and so do we
        with pytest.raises(EstimateError):
            adapter_params(arch, lora)
        with pytest.raises(ValueError, match="ParamWrapper"):
            _meta_peft_trainable(config, variant, 8, targets)
        return
    assert adapter_params(arch, lora) == _meta_peft_trainable(config, variant, 8, targets)


# ---- 7. lora_alpha defaults to 2·r -------------------------------------------------------------------

@pytest.mark.parametrize("lora,alpha", [
    (LoraSpec(), 32.0),  # r = 16
    (LoraSpec(r=8), 16.0),
    (LoraSpec(r=16, alpha=32.0), 32.0),
    (LoraSpec(r=16, alpha=8.0), 8.0),  # given: kept, even below 2·r
    (LoraSpec(r=4, alpha=None, variant="vera"), 8.0),
], ids=["default", "r8", "r16-given", "given-below-2r", "explicit-none"])
def test_lora_alpha_defaults_to_twice_the_rank(lora, alpha):
    assert lora.alpha == alpha


def test_the_resolved_alpha_is_what_the_request_echo_shows():
    doc = to_document(estimate(EstimateRequest("llama-2-7b", method="lora", lora=LoraSpec(r=8))))
    assert doc["request"]["lora"]["alpha"] == 16.0
    assert LoraSpec(r=8) == LoraSpec(r=8, alpha=16.0)  # the same setting, the same cache entries


def test_every_variant_has_its_tensors_listed():
    """``Variant`` names the choices (the API and the CLI offer them); ``VARIANT_TENSORS`` says what
    each adds. A name without tensors, or tensors without a name, would be a second list."""
    from tunefit.estimator.adapters import VARIANT_TENSORS

    assert tuple(VARIANT_TENSORS) == VARIANTS
