"""The kernel facts the simulation states, held to the estimator's own statement of each.

The simulation checks the estimator, so it states the target's kernel constants itself, from the
kernels' sources (``profiler/kernels.py``). Where the estimator states the same fact, the two were
written independently and must agree: a wrong value on either side shows here instead of agreeing
with itself.
"""

import pytest

pytest.importorskip("torch", reason="needs the [profiler] extra")

from tunefit.estimator import activations  # noqa: E402
from tunefit.profiler import kernels  # noqa: E402


def test_the_memory_efficient_bias_alignment_is_the_estimators():
    """CUDA's memory-efficient attention pads an additive mask's rows (attention.cpp, ``preprocess_mask``)."""
    assert kernels.MEM_EFF_BIAS_ALIGNMENT == activations.MEM_EFF_BIAS_ALIGNMENT


def test_the_cpu_flash_choice_is_torchs_enum():
    from torch.nn.attention import SDPBackend

    assert kernels.CPU_FLASH == SDPBackend.FLASH_ATTENTION.value == 1


@pytest.mark.parametrize("dtype_name,alignment", [("float16", 8), ("bfloat16", 8), ("float32", 4)])
def test_memory_efficient_head_dims_align_to_128_bits_or_4(dtype_name, alignment):
    """sdp_utils.cpp ``minimum_gemm_alignment`` on sm80+: ``max(4, 128 / bits_per_scalar)``."""
    import torch

    assert kernels.mem_eff_head_dim_alignment(getattr(torch, dtype_name)) == alignment
