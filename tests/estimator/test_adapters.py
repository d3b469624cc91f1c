"""Adapter trainable-parameter counts: the estimator vs peft's ``get_nb_trainable_parameters()[0]``.

Every case builds the tiny transformers model on CPU (peft's init does not work reliably on the
meta device), wraps it with ``get_peft_model`` and compares peft's trainable count with
``adapter_params``. Tolerance: exact.
"""

import pytest

from tunefit.estimator import get_model
from tunefit.estimator.adapters import LoraSpec, adapter_params
from tunefit.estimator.arch import arch_from_config
from tunefit.estimator.errors import EstimateError
from tests.estimator.tiny_configs import TINY_CONFIGS

torch = pytest.importorskip("torch", reason="needs the [profiler] extra")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")
transformers.utils.logging.set_verbosity_error()

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
    return transformers.AutoModelForCausalLM.from_config(cfg)  # CPU: tiny, and peft needs real tensors


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

# mixtral included: with transformers 5 its experts are fused 3-D parameters and the router a bare
# weight, and peft 0.21 maps "all-linear" onto them through target_parameters (ParamWrapper).
ALL_LINEAR_IDS = sorted(TINY_CONFIGS)


@pytest.mark.parametrize("name", ALL_LINEAR_IDS, ids=ALL_LINEAR_IDS)
def test_all_linear_lora_matches_peft(name):
    assert _ours(name, "lora", 4, "all-linear") == _peft_trainable(name, "lora", 4, "all-linear")


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
]
VARIANTS = ["lora", "rslora", "lora+", "dora", "vera"]
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
MOE_CASES = [
    pytest.param(variant, targets, id=f"mixtral-{'+'.join(targets) if isinstance(targets, tuple) else targets}-{variant}")
    for targets in [("w2",), ("gate", "q_proj"), ("q_proj", "w1", "w3"), ("w1", "w2", "w3", "gate")]
    for variant in ["lora", "rslora", "lora+"]
] + [pytest.param("vera", "all-linear", id="mixtral-all-linear-vera")]


@pytest.mark.parametrize("variant,targets", MOE_CASES)
def test_moe_parameter_targets_match_peft(variant, targets):
    assert _ours("mixtral", variant, 4, targets) == _peft_trainable("mixtral", variant, 4, targets)


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
], ids=[
    "llama-unknown-c_attn", "gpt2-unknown-q_proj", "llama-unknown-in-string", "llama-empty-targets",
    "r-zero", "r-negative", "vera-r-zero", "llama-r-over-k_proj", "llama-r-over-all-linear",
    "gpt2-r-over-c_attn", "falcon-r-over-qkv", "mixtral-w1-without-w3", "mixtral-dora-on-experts",
    "mixtral-dropout-on-experts", "mixtral-down_proj-is-a-parameter",
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
