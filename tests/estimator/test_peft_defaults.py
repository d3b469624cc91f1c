"""LoRA's default targets (``target_modules`` left out) against peft 0.21.2's own choice.

(a) The estimator's copy of peft's table equals peft's, for every model_type tunefit builds.
(b) Every catalog model estimates LoRA with the default targets, which the request echo names and
    the assumptions explain; a document of it reads back to the same estimate.
(c) On a tiny model of every family, LoRA and VeRA: peft with the resolved targets wraps exactly
    the modules the estimator counts, with its parameter count; where peft applies a default it is
    these very targets (``get_peft_model`` with ``target_modules=None``); where it has none, or its
    transformers-5 MoE conversion empties them first (LoRA on mixtral), ``get_peft_model`` raises.
"""

from collections import Counter

import pytest

from tests.estimator.tiny_configs import TINY_CONFIGS
from tunefit.estimator import EstimateRequest, estimate, models, to_document
from tunefit.estimator.adapters import LoraSpec, adapter_params, resolve_targets
from tunefit.estimator.arch import FAMILIES, arch_from_config
from tunefit.estimator.document import request_document, request_from_document
from tunefit.estimator.peft_defaults import PEFT_LORA_TARGETS, PEFT_VERSION, default_targets, peft_converts_targets
from tunefit.estimator.request import request_from_fields

MODEL_TYPES = sorted(FAMILIES)
CATALOG = sorted(models())
QV = ("q_proj", "v_proj")
# Written out by hand: peft's entries for the families it lists, else the query and value
# projections in the family's names (a fused qkv; MLA's up-projections from the latents)
EXPECTED = {"gpt2": ("c_attn",), "gpt_neox": ("query_key_value",), "falcon": ("query_key_value",),
            "phi3": ("qkv_proj",), "deepseek_v3": ("q_b_proj", "kv_b_proj")}
# the model_types peft has no default for (get_peft_model raises without target_modules)
NO_PEFT_DEFAULT = ("phi3", "qwen3_moe", "olmo2", "olmo3", "smollm3", "granite", "gpt_oss", "glm4_moe", "deepseek_v3",
                   "mistral3", "llama4_text", "gemma3", "mistral4")


# ---- (a) the table is peft's ------------------------------------------------------------------------

@pytest.mark.parametrize("model_type", MODEL_TYPES, ids=MODEL_TYPES)
def test_the_table_is_pefts_mapping(model_type):
    peft = pytest.importorskip("peft")
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as lora_mapping
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_VERA_TARGET_MODULES_MAPPING as vera_mapping

    assert peft.__version__ == PEFT_VERSION
    theirs = lora_mapping.get(model_type)
    assert PEFT_LORA_TARGETS.get(model_type) == (None if theirs is None else tuple(theirs))
    assert vera_mapping.get(model_type) == theirs  # VeRA's defaults are LoRA's for every family built here
    assert (theirs is None) == (model_type in NO_PEFT_DEFAULT)


def test_the_table_lists_only_families_tunefit_builds():
    assert set(PEFT_LORA_TARGETS) <= set(FAMILIES)


# ---- (b) every catalog model ------------------------------------------------------------------------

@pytest.mark.parametrize("model_id", CATALOG, ids=CATALOG)
def test_every_catalog_model_estimates_lora_with_the_default_targets(model_id):
    est = estimate(EstimateRequest(model=model_id, method="lora"))
    expected = EXPECTED.get(est.arch.model_type, QV)
    assert default_targets(est.arch).modules == expected
    assert est.request.lora.target_modules == expected  # normalize resolved them
    assert est.adapter_params == adapter_params(est.arch, LoraSpec(target_modules=expected))
    assert to_document(est)["request"]["lora"]["target_modules"] == list(expected)
    notes = [a for a in est.assumptions if "target_modules" in a]
    assert len(notes) == 1 and ", ".join(expected) in notes[0] and PEFT_VERSION in notes[0]


@pytest.mark.parametrize("model_id,source", [
    ("phi-4", "peft 0.21.2 has no default target_modules for phi3 (get_peft_model raises without them); assumed "
              "its query and value projections: qkv_proj"),
    ("gpt2", "peft 0.21.2's default for gpt2 (TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING"),
    ("llama-4-scout", "no default target_modules for llama4_text (get_peft_model raises without them; "
                      "AutoModelForCausalLM builds llama4_text from llama4's text_config)"),
    ("gemma-3-4b", "the vision tower's q_proj, v_proj take adapters too"),
    ("mixtral-8x7b", "raises for mixtral without target_modules: its transformers-5 MoE conversion"),
], ids=["phi3-no-peft-default", "gpt2-peft-default", "llama4-builds-llama4_text", "gemma3-tower-names",
        "mixtral-conversion-defeats-the-default"])
def test_the_assumption_says_whose_default(model_id, source):
    assert any(source in a for a in estimate(EstimateRequest(model=model_id, method="lora")).assumptions)


@pytest.mark.parametrize("model_id,method", [("phi-4", "lora"), ("gpt2", "qlora"), ("falcon-7b", "lora"),
                                             ("mistral-small-3.1-24b", "lora")],
                         ids=["phi3-lora", "gpt2-qlora", "falcon-lora", "mistral3-lora"])
def test_the_document_round_trips_with_the_resolved_targets(model_id, method):
    est = estimate(EstimateRequest(model=model_id, method=method))
    again = estimate(request_from_document(request_document(est)))
    assert again.request == est.request and again.peak_bytes == est.peak_bytes
    assert again.adapter_params == est.adapter_params


@pytest.mark.parametrize("fields,expected", [
    ({"recipe": "qlora-paper"}, "all-linear"),  # the recipe names them: it wins
    ({"recipe": "trl-sft", "method": "qlora"}, ["qkv_proj"]),  # it does not: the default stays
    ({"recipe": "none", "method": "qlora"}, ["qkv_proj"]),
    ({"recipe": "qlora-paper", "lora": {"target_modules": ["o_proj"]}}, ["o_proj"]),  # the user's win over both
], ids=["qlora-paper-all-linear", "trl-sft-default", "no-recipe-default", "named-over-recipe"])
def test_a_recipe_that_names_targets_wins_over_the_default(fields, expected):
    doc = to_document(estimate(request_from_fields({"model": "phi-4", **fields})))
    assert doc["request"]["lora"]["target_modules"] == expected


def test_named_targets_are_used_as_given():
    est = estimate(EstimateRequest(model="phi-4", method="lora", lora=LoraSpec(target_modules=("o_proj",))))
    assert est.request.lora.target_modules == ("o_proj",)
    assert not any("target_modules" in a for a in est.assumptions)


# ---- (c) what peft wraps, on a tiny model of every family ------------------------------------------

TINY = {}
for _name, _config in TINY_CONFIGS.items():
    TINY.setdefault(_config["model_type"], _name)


def _tiny_model(config: dict):
    torch = pytest.importorskip("torch", reason="needs the [profiler] extra")
    transformers = pytest.importorskip("transformers")
    from tunefit.profiler.build import model_class

    transformers.utils.logging.set_verbosity_error()
    rest = {k: v for k, v in config.items() if k != "model_type"}
    torch.manual_seed(0)
    return model_class(config).from_config(transformers.AutoConfig.for_model(config["model_type"], **rest))


def _wrapped_names(model) -> Counter:
    """The last name of every module peft wrapped, counted."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    return Counter(name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                   if isinstance(module, BaseTunerLayer))


def _peft_config(variant: str, targets):
    import peft

    return (peft.VeraConfig if variant == "vera" else peft.LoraConfig)(r=4, target_modules=targets)


# mixtral: the one family peft's table lists whose LoRA default its MoE conversion defeats
CONVERTED_THOUGH_LISTED = ("mixtral",)


@pytest.mark.filterwarnings("ignore:fan_in_fan_out is set to False:UserWarning")
@pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")
@pytest.mark.parametrize("model_type,variant", [(t, v) for t in MODEL_TYPES for v in ("lora", "vera")],
                         ids=[f"{t}-{v}" for t in MODEL_TYPES for v in ("lora", "vera")])
def test_the_default_targets_wrap_what_peft_wraps(model_type, variant):
    peft = pytest.importorskip("peft")
    config = TINY_CONFIGS[TINY[model_type]]
    arch, lora = arch_from_config(config), LoraSpec(r=4, variant=variant)
    found = default_targets(arch)
    model = _tiny_model(config)
    assert model.config.model_type == found.model_type  # the model_type peft looks up
    converted = peft_converts_targets(arch, variant)
    assert (found.in_peft and converted) == (model_type in CONVERTED_THOUGH_LISTED and variant != "vera")
    if found.in_peft and not converted:
        wrapped = peft.get_peft_model(model, _peft_config(variant, None))  # peft's own default
    else:
        with pytest.raises(ValueError, match="`target_modules`"):
            peft.get_peft_model(model, _peft_config(variant, None))
        wrapped = peft.get_peft_model(_tiny_model(config), _peft_config(variant, list(found.modules)))
    ours: Counter = Counter()
    for module, count in resolve_targets(arch, lora):
        ours[module.name] += count
    assert _wrapped_names(wrapped) == ours
    assert wrapped.get_nb_trainable_parameters()[0] == adapter_params(arch, lora)
