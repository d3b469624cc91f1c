"""Framework presets (``--recipe NAME``): the request fields a user of a framework gets when they
leave them alone, each read from the framework's source and cited beside it. A preset only fills
the fields a request leaves out: every one stays overridable.

A preset's ``quant`` and ``adapter_dtype`` apply to QLoRA only: TRL casts a quantized model's
adapters to bf16, a plain LoRA's it leaves in peft's fp32.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, get_args

from .errors import EstimateError

RecipeName = Literal["hf-trainer", "trl-sft", "trl-dpo", "qlora-paper", "unsloth"]
RECIPE_NAMES: tuple[RecipeName, ...] = get_args(RecipeName)
# The recipe the CLI, the API and the form assume when a request names none: TRL's SFTTrainer,
# the trainer the Hugging Face fine-tuning guides run. ``NO_RECIPE`` asks for none: the libraries'
# own defaults (peft, transformers, torch) without a framework's, the estimator's Python defaults.
DEFAULT_RECIPE: RecipeName = "trl-sft"
NoRecipe = Literal["none"]
NO_RECIPE: NoRecipe = get_args(NoRecipe)[0]
RECIPE_CHOICES: tuple[str, ...] = (*RECIPE_NAMES, NO_RECIPE)


@dataclass(frozen=True)
class Recipe:
    """A preset: its fields (request document keys, ``lora`` and ``quant`` as mappings), where
    each default comes from, and in a few words whose defaults they are."""

    name: str
    fields: dict[str, Any]
    source: str
    title: str


TRL_QLORA_ADAPTERS = ("for QLoRA the adapters cast to bf16 after get_peft_model (a quantized model's trainable "
                      "parameters, 'to follow the recommendations from the original paper')")
# preset fields that only a quantized base takes
QLORA_ONLY = ("quant", "adapter_dtype")

RECIPES: dict[str, Recipe] = {
    "hf-trainer": Recipe(
        "hf-trainer",
        {"loop": "trainer", "grad_accum": 1, "autocast": "none", "optimizer": "adamw_fused"},
        "Hugging Face Trainer (transformers 5.23 TrainingArguments): optim adamw_torch_fused (torch >= 2.8), "
        "bf16=False and fp16=False (no autocast), gradient_accumulation_steps=1, gradient_checkpointing off; "
        "compute_loss keeps only the loss",
        "Hugging Face Trainer's defaults",
    ),
    "trl-sft": Recipe(
        "trl-sft",
        {"loop": "trainer", "grad_accum": 1, "autocast": "bf16", "optimizer": "adamw_fused",
         "gradient_checkpointing": True, "loss": "chunked", "prepare_kbit": False, "adapter_dtype": "bf16"},
        "TRL's SFTTrainer (trl 1.16 SFTConfig over transformers 5.23 TrainingArguments): gradient_checkpointing=True "
        "and bf16=True (SFTConfig's own defaults), optim adamw_torch_fused, gradient_accumulation_steps=1, its "
        "fused LM head (add_fused_lm_head: the chunked loss); adapters from its peft_config through get_peft_model, "
        "without prepare_model_for_kbit_training; the model passed in already loaded in bf16 (given a "
        "model id instead, SFTTrainer loads float32 weights, which autocast here does not model yet); "
        + TRL_QLORA_ADAPTERS,
        "TRL SFTTrainer's defaults",
    ),
    "trl-dpo": Recipe(
        "trl-dpo",
        {"objective": "dpo", "loop": "trainer", "grad_accum": 1, "autocast": "bf16", "optimizer": "adamw_fused",
         "gradient_checkpointing": True, "loss": "chunked", "prepare_kbit": False, "adapter_dtype": "bf16"},
        "TRL's DPOTrainer (trl 1.16 DPOConfig over transformers 5.23 TrainingArguments): gradient_checkpointing=True "
        "and bf16=True (DPOConfig's own defaults), optim adamw_torch_fused, precompute_ref_log_probs=False (the "
        "reference scored in every step), its default sigmoid loss, chosen and rejected sequences in one batch "
        "through its fused LM head; the reference is the policy with its adapters disabled, or for full "
        "fine-tuning a second copy of the model in its dtype; adapters from its peft_config, without "
        "prepare_model_for_kbit_training; " + TRL_QLORA_ADAPTERS,
        "TRL DPOTrainer's defaults",
    ),
    "qlora-paper": Recipe(
        "qlora-paper",
        {"method": "qlora", "dtype": "bf16", "quant": {"type": "nf4", "double_quant": True, "blocksize": 64},
         "lora": {"r": 64, "alpha": 16.0, "target_modules": "all-linear", "dropout": 0.1},
         "gradient_checkpointing": True, "autocast": "bf16", "optimizer": "paged_adamw", "loop": "trainer"},
        "the QLoRA paper's setup (Dettmers et al. 2023, arXiv:2305.14314; its qlora.py on Hugging Face Trainer): "
        "NF4 with double quantization, bf16 compute and bf16=True, paged 32-bit AdamW, gradient checkpointing, "
        "LoRA r=64, alpha=16 on every linear layer, dropout 0.1 (models up to 13B)",
        "the QLoRA paper's setup",
    ),
    "unsloth": Recipe(
        "unsloth",
        {"prepare_kbit": False, "optimizer": "adamw_8bit", "gradient_checkpointing": True, "autocast": "bf16",
         "loop": "trainer"},
        "an Unsloth-style setup: no prepare_model_for_kbit_training (norms, embeddings and lm_head stay in the "
        "compute dtype), 8-bit AdamW (adamw_8bit), gradient checkpointing, bf16 autocast; Unsloth's own kernels "
        "(fused cross-entropy, offloaded checkpoints) are not modelled",
        "an Unsloth-style setup",
    ),
}


@dataclass(frozen=True)
class RecipeLine:
    """The recipe a request document assumed, as the CLI and the page name it: its name
    (:data:`NO_RECIPE` for none; None for inference, which takes no recipe), whose defaults those
    are, and each field of it the model could not take (``recipe_exceptions``)."""

    name: str | None
    title: str
    exceptions: tuple[str, ...]


def recipe_line(request: dict[str, Any]) -> RecipeLine:
    """:class:`RecipeLine` of a request document (``document.request_document``)."""
    name = request["recipe"]
    if name is None:
        return RecipeLine(NO_RECIPE if request["method"] != "inference" else None, "the libraries' own defaults", ())
    return RecipeLine(name, RECIPES[name].title, tuple(f"{field} kept at {request[field] or 'its default'}: {why}"
                                                       for field, why in request["recipe_exceptions"].items()))


@dataclass(frozen=True)
class RecipeFill:
    """``values`` with a recipe's fields filled in, and the keys the recipe filled."""

    values: dict[str, Any]
    filled: frozenset[str]


def with_recipe(values: dict[str, Any]) -> RecipeFill:
    """``values`` (request document keys) with its ``recipe``'s fields filling the keys it leaves
    out or None (``lora`` and ``quant`` key by key); unchanged without a recipe. A preset sets up
    training: an inference request takes none of it, and names no recipe; nor does ``NO_RECIPE``."""
    name = values.get("recipe")
    if name is None or name == NO_RECIPE:
        return RecipeFill({**values, "recipe": None}, frozenset())
    recipe = RECIPES.get(name)
    if recipe is None:
        raise EstimateError("recipe", f"must be one of {list(RECIPE_CHOICES)}, got {name!r}")
    merged = dict(values)
    method = merged.get("method") or recipe.fields.get("method")
    if method == "inference":
        merged["recipe"] = None
        return RecipeFill(merged, frozenset())
    filled = set()
    for key, preset in recipe.fields.items():
        if key in QLORA_ONLY and method != "qlora":
            continue  # a method that trains an unquantized base takes no preset quantization
        given = merged.get(key)
        if isinstance(preset, dict):
            merged[key] = {**preset, **{k: v for k, v in (given or {}).items() if v is not None}}
        elif given is None:
            merged[key] = preset
            filled.add(key)
    return RecipeFill(merged, frozenset(filled))
