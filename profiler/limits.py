"""What the meta-device simulation cannot run, decided from the request alone: importable without
torch, so that a service can say so on the page before anyone asks for a simulation."""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

from tunefit.estimator import EstimateRequest
from tunefit.estimator.recipes import NO_RECIPE

# The recipe a simulation takes when it names none (`tunefit simulate`, a meta-device job): the
# default recipe's bf16 autocast, fused AdamW and fused head have no meta-device run, so the
# libraries' own defaults
SIMULATION_RECIPE = NO_RECIPE

SIMULATED_OPTIMIZERS = ("adamw", "sgd", "sgd_momentum")
# why the others cannot run on the meta device
UNSIMULATED_OPTIMIZERS = {"adamw_fused": "torch's fused AdamW takes CUDA or CPU tensors only (fused=True)"}
BNB_OPTIMIZERS = "bitsandbytes' optimizers run C kernels, which have no meta implementation"


def simulation_refusal(req: EstimateRequest) -> str | None:
    """Why ``req`` (normalized) cannot be simulated on the meta device, or None where it can."""
    return next(iter(field_refusals(req).values()), None)


def field_refusals(req: EstimateRequest) -> dict[str, str]:
    """Each field of ``req`` (normalized) the meta device cannot run, and why, in the order they
    are told."""
    training = req.method != "inference"
    refused: dict[str, str] = {}
    if training and req.optimizer not in SIMULATED_OPTIMIZERS:
        why = UNSIMULATED_OPTIMIZERS.get(req.optimizer, BNB_OPTIMIZERS)
        refused["optimizer"] = (f"optimizer {req.optimizer!r} cannot be simulated: {why}; simulated optimizers: "
                                f"{', '.join(SIMULATED_OPTIMIZERS)}")
    if training and req.autocast != "none":
        refused["autocast"] = ("autocast cannot be simulated: torch has no autocast for the meta device (its casts "
                               "are dispatched for CUDA and CPU tensors only); measure it instead")
    if req.new_tokens:
        refused["new_tokens"] = ("generate()'s decoding cannot be simulated: its loop reads the chosen tokens' "
                                 "values; measure it")
    if req.loss == "chunked":
        refused["loss"] = ("the chunked loss cannot be simulated: TRL folds its tiles with Triton kernels on CUDA "
                           "and with torch ops elsewhere, so the meta device would run the other path; measure it on "
                           "a CPU")
    return refused


@lru_cache(maxsize=1)
def transformers_model_types() -> frozenset[str] | None:
    """The ``model_type``s the installed transformers has a configuration class for: the keys of
    ``CONFIG_MAPPING_NAMES`` in its generated ``models/auto/auto_mappings.py``, a module of literals
    loaded from its file alone (importing it through the package imports torch, seconds a refused
    request should not cost). None: transformers is not installed, or the file no longer reads so."""
    spec = importlib.util.find_spec("transformers")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / "auto" / "auto_mappings.py"
    loader = importlib.util.spec_from_file_location("tunefit_transformers_auto_mappings", path)
    if loader is None or loader.loader is None:
        return None
    module = importlib.util.module_from_spec(loader)
    try:
        loader.loader.exec_module(module)
    except (OSError, ImportError, SyntaxError):
        return None
    names = getattr(module, "CONFIG_MAPPING_NAMES", None)
    return frozenset(names) if names is not None else None
