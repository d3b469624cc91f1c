"""What the meta-device simulation cannot run, decided from the request alone: importable without
torch, so that a service can say so on the page before anyone asks for a simulation."""

from __future__ import annotations

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
    training = req.method != "inference"
    if training and req.optimizer not in SIMULATED_OPTIMIZERS:
        why = UNSIMULATED_OPTIMIZERS.get(req.optimizer, BNB_OPTIMIZERS)
        return (f"optimizer {req.optimizer!r} cannot be simulated: {why}; simulated optimizers: "
                f"{', '.join(SIMULATED_OPTIMIZERS)}")
    if training and req.autocast != "none":
        return ("autocast cannot be simulated: torch has no autocast for the meta device (its casts are dispatched "
                "for CUDA and CPU tensors only); measure it instead")
    if req.new_tokens:
        return "generate()'s decoding cannot be simulated: its loop reads the chosen tokens' values; measure it"
    if req.loss == "chunked":
        return ("the chunked loss cannot be simulated: TRL folds its tiles with Triton kernels on CUDA and with torch "
                "ops elsewhere, so the meta device would run the other path; measure it on a CPU")
    return None
