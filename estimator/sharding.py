"""Per-GPU bytes under data parallelism and ZeRO / FSDP sharding.

Rajbhandari et al., "ZeRO", arXiv:1910.02054, Sec. 5 and Fig. 1: stage 1 partitions optimizer
states, stage 2 also gradients, stage 3 also parameters, each over ``N_d`` data-parallel GPUs.
FSDP full sharding (Zhao et al., arXiv:2304.11277) is stage 3. Activations are per GPU.
"""

from __future__ import annotations

import math
from dataclasses import replace

from .phase import Phase

WEIGHT_TERMS = ("weights_bytes", "quantized_weights_bytes", "quant_constants_bytes", "adapter_bytes")
SHARDED_TERMS = {
    "ddp": (),
    "zero1": ("optimizer_bytes", "optimizer_step_temp_bytes"),
    "zero2": ("optimizer_bytes", "optimizer_step_temp_bytes", "gradients_bytes"),
    "zero3": ("optimizer_bytes", "optimizer_step_temp_bytes", "gradients_bytes") + WEIGHT_TERMS,
    "fsdp": ("optimizer_bytes", "optimizer_step_temp_bytes", "gradients_bytes") + WEIGHT_TERMS,
}


def shard_phase(phase: Phase, sharding: str, num_gpus: int, gathered_layer_bytes: int = 0) -> Phase:
    """The phase as one of ``num_gpus`` GPUs holds it.

    DDP (``gradient_as_bucket_view=False``, PyTorch's default) keeps gradient buckets as large
    as the gradients next to ``param.grad``. Stage 3 / FSDP gathers one layer's full weights
    at a time (plus one prefetched): ``gathered_layer_bytes``.
    """
    terms = dict(phase.terms)
    for key in SHARDED_TERMS[sharding]:
        terms[key] = math.ceil(terms[key] / num_gpus)
    if sharding == "ddp":
        terms["gradients_bytes"] *= 2
    if sharding in ("zero3", "fsdp") and phase.name != "load":
        terms["working_bytes"] += gathered_layer_bytes
    return replace(phase, terms=terms)
