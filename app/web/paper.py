"""The papers' two figures for any catalog model and rank: trainable parameters of full
fine-tuning vs LoRA (log scale), and the training-loss curves of its small experiment."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from tunefit.app.web.charts import log_bars, loss_curves
from tunefit.estimator import ESTIMATOR_VERSION, EstimateError, LoraSpec, adapter_params, get_model, models
from tunefit.estimator.adapters import ALL_LINEAR, targets_text
from tunefit.estimator.paper import lora_ratio
from tunefit.estimator.peft_defaults import default_targets
from tunefit.estimator.units import GIB

CURVE_COLOURS = {"full": "#e15759", "lora": "#4e79a7"}
RANKS = (1, 2, 4, 8, 16, 32, 64)


@lru_cache(maxsize=16)
def toy_curves(r: int) -> dict[str, Any] | None:
    """The small experiment (torch, about a second on a CPU); None without the [profiler] extra."""
    try:
        from tunefit.profiler.toy import lora_toy_curves
    except ImportError:
        return None
    return lora_toy_curves(r=r)


def paper_context(model_id: str, r: int, targets: str) -> dict[str, Any]:
    arch = get_model(model_id).arch
    names = tuple(t.strip() for t in targets.split(",") if t.strip())
    # none named: the model's default targets (LoraSpec's None)
    lora = LoraSpec(r=r, target_modules=ALL_LINEAR if targets == ALL_LINEAR else names or None)
    n_lora = adapter_params(arch, lora)
    first = next(m for m in arch.layer_linears if m.name in arch.linear_names)
    curves = toy_curves(min(r, 64))
    context = {
        "model_id": model_id, "r": r, "targets": targets, "models": list(models()), "ranks": RANKS,
        "modules": list(arch.linear_names), "default_targets": targets_text(default_targets(arch).modules),
        "bars": log_bars([("full fine-tuning", arch.total_params), (f"LoRA r={r}", n_lora)]),
        "ratio": f"{100 * n_lora / arch.total_params:.4f}",
        "per_matrix": f"{lora_ratio(first.out_features, first.in_features, r):.6f}",
        "first_module": first.name, "curves": None, "toy": None,
        "gib_bytes": f"{GIB:,}", "estimator_version": ESTIMATOR_VERSION,
    }
    if curves:
        context["curves"] = loss_curves({"full": curves["full"], "lora": curves["lora"]}, CURVE_COLOURS)
        context["toy"] = {"full_final": f"{curves['full'][-1]:.4g}", "lora_final": f"{curves['lora'][-1]:.4g}",
                          "full_params": f"{curves['trainable']['full']:,}",
                          "lora_params": f"{curves['trainable']['lora']:,}", "steps": curves["steps"]}
    return context


def parse_paper_query(query) -> tuple[str, int, str]:
    model_id = query.get("model", "llama-2-7b")
    r_text = query.get("r", "8")
    # at most four digits before int(): a thousand-digit string is past int()'s own limit (ValueError)
    if not (r_text.isdigit() and len(r_text) <= 4) or not 1 <= int(r_text) <= 4096:
        raise EstimateError("r", f"must be a whole number from 1 to 4096, got {r_text!r}")
    return model_id, int(r_text), query.get("targets", "")
