"""Run, on the meta device, the kernels the target device would run.

Meta tensors carry no data, so PyTorch's kernel choices that look at the device fall back to
their generic paths there. Where the target's kernel allocates differently, a simulation must
call that kernel's own op (every one below has a meta implementation that allocates its real
outputs):

- ``scaled_dot_product_attention`` picks a fused backend per device (``aten/src/ATen/native/
  transformers/attention.cpp``, ``scaled_dot_product_attention``). On CUDA (``cuda/sdp_utils.cpp``,
  ``select_sdp_backend``): flash attention for fp16/bf16 without a mask, head dim <= 256 (GQA
  native); else memory-efficient attention (fp32 too, masks allowed, head dim a multiple of 8 for
  16-bit, 4 for fp32); else the math path. Fused kernels keep the output and an fp32 log-sum-exp,
  never the ``s x s`` probabilities the math path keeps. On CPU, torch itself answers
  (``_fused_sdp_choice`` on tiny CPU tensors of the same dtype and head layout): its flash kernel,
  or the math path (attention dropout).
- ``dropout`` on CUDA is the fused ``native_dropout`` (a bool mask); elsewhere
  ``input * bernoulli noise`` keeps a noise tensor of the input's dtype.

- bitsandbytes' ``gemm_4bit`` on CUDA (``backends/cuda/ops.py``) runs its fused kernel only for
  inputs of at most 1,536 rows (below that, a per-architecture heuristic decides; counted as fused
  here) with ``in_features`` a multiple of the blocksize; otherwise it dequantizes the whole weight
  to the input's dtype inside the op (plus, nested, two fp32 absmax vectors) and frees it before
  returning. The CUDA allocator counts that buffer, so the simulation adds it as the op's
  workspace (``cuda_workspace_bytes``).

Cross-entropy needs no routing: its CUDA and CPU kernels allocate what the meta kernels do
(``log_softmax``'s output, ``nll_loss``'s gradient).

Not seen, on either target: other memory a kernel allocates inside itself and frees before
returning (the CUDA flash backward's fp32 ``dq`` accumulator, cuBLAS workspaces).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend
from torch.utils._python_dispatch import _disable_current_modes

from tunefit.estimator.units import FP32_BYTES

TARGETS = ("cuda", "cpu")
HALF = (torch.float16, torch.bfloat16)

# The kernels' own constants, read from their sources (torch 2.13.0, bitsandbytes 0.50.2) and not
# from the estimator: the simulation checks the estimator, so it must not share its mistakes.
# tests/profiler/test_kernels.py holds the two statements of a fact to each other.
FLASH_MAX_HEAD_DIM = 256
"""torch 2.13.0 ``aten/src/ATen/native/transformers/cuda/sdp_utils.cpp``, ``check_head_dim_size_flash``:
``max_size = c10::SymInt(256)`` (CUDA build)."""
FLASH_PAD_MULTIPLE = 8
"""torch 2.13.0 ``aten/src/ATen/native/transformers/attention.cpp``, ``scaled_dot_product_attention``:
``pad_last_dim<8, false>`` on q, k, v before the CUDA flash kernel."""
MEM_EFF_BIAS_ALIGNMENT = 8
"""torch 2.13.0 ``aten/src/ATen/native/transformers/attention.cpp``, ``preprocess_mask``:
``constexpr int mem_eff_alignment = 8``; a bias whose strides are not multiples of it is padded
(``pad_bias``) and sliced back. torch's own Python repeats it: ``torch/_inductor/lowering.py``,
``sdpa_constraint``, ``ALIGNMENT = 8`` ("the minimum alignment required by SDPA kernels for
attention_bias"). Earlier releases' ``pad_bias`` aligned to 16 (``int align_to = 16``)."""
GEMM_MIN_ALIGNMENT_SM80 = 4
"""torch 2.13.0 ``cuda/sdp_utils.cpp``, ``minimum_gemm_alignment``: ``matmul_alignment_mn = 4`` on
sm80+, raised to ``128 / bits_per_scalar`` (``TENSOR_CORE_ACCESS_BITS``) where tensor cores run
(every dtype on sm80+): 8 for fp16/bf16, 4 for fp32. The memory-efficient kernel takes head dims
that are multiples of it (``check_head_dim_size_mem_efficient``)."""
TENSOR_CORE_ACCESS_BITS = 128
CPU_FLASH = int(SDPBackend.FLASH_ATTENTION.value)
"""What ``torch.ops.aten._fused_sdp_choice`` returns for the CPU flash kernel: torch's own enum."""
GEMM_4BIT_CUSTOM_MAX_M = 1536
"""bitsandbytes 0.50.2 ``bitsandbytes/backends/cuda/ops.py``: ``_gemm_4bit_custom_max_m = 1536``
(CUDA; 256 on ROCm), the most input rows ``gemm_4bit`` runs its fused kernel for."""


def mem_eff_head_dim_alignment(dtype: torch.dtype) -> int:
    """The multiple of which CUDA's memory-efficient kernel takes head dims, on sm80+ (see
    ``GEMM_MIN_ALIGNMENT_SM80``)."""
    return max(GEMM_MIN_ALIGNMENT_SM80, TENSOR_CORE_ACCESS_BITS // (dtype.itemsize * 8))


def cuda_sdpa_backend(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                      attn_mask: torch.Tensor | None) -> str:
    """``flash``, ``efficient`` or ``math``: the backend CUDA's ``select_sdp_backend`` picks on an
    sm80+ GPU (A100, H100) for dense inputs, in its default priority order."""
    d = query.shape[-1]
    same_dim = key.shape[-1] == d and value.shape[-1] == d
    if query.dtype in HALF and attn_mask is None and same_dim and d <= FLASH_MAX_HEAD_DIM:
        return "flash"
    alignment = mem_eff_head_dim_alignment(query.dtype)
    if query.dtype in (*HALF, torch.float32) and key.shape[-1] == d and d % alignment == 0 \
            and value.shape[-1] % alignment == 0:
        return "efficient"
    return "math"


def cpu_sdpa_backend(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attn_mask: torch.Tensor | None,
                     dropout_p: float, is_causal: bool, enable_gqa: bool) -> str:
    """``cpu_flash`` or ``math``, as torch decides on this host for the same dtypes and heads."""
    def probe(t: torch.Tensor) -> torch.Tensor:
        """A tensor like ``t`` with batch 1 and 2 positions: torch's choice depends on dtypes,
        head counts and head dims, and on the mask's rank, not on the batch or the length."""
        shape = (*[1] * (t.dim() - 3), *t.shape[-3:-2], 2, 2 if t is attn_mask else t.shape[-1])
        return torch.zeros(shape[-t.dim():], dtype=t.dtype)

    with torch.no_grad(), _disable_current_modes():  # the probe's tensors are not the step's
        mask = probe(attn_mask) if attn_mask is not None else None
        choice = torch.ops.aten._fused_sdp_choice(probe(query), probe(key), probe(value), mask, dropout_p,
                                                  is_causal, enable_gqa=enable_gqa)
    return "cpu_flash" if choice == CPU_FLASH else "math"


def cuda_workspace_bytes(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    """Bytes a CUDA kernel allocates inside the op and frees before returning, for the ops whose
    buffer a simulation can size: bitsandbytes' ``gemm_4bit`` when it falls back to dequantize +
    ``F.linear`` (see the module doc)."""
    if getattr(func, "name", lambda: "")() != "bitsandbytes::gemm_4bit":
        return 0
    A, _, shape_b, _, blocksize = args[:5]
    k = A.shape[-1]
    rows = A.numel() // k
    if rows <= GEMM_4BIT_CUSTOM_MAX_M and k % blocksize == 0:
        return 0
    dequantized = math.prod(shape_b) * A.element_size()
    nested = args[7] if len(args) > 7 else kwargs.get("absmax_8bit")
    return dequantized + (2 * nested.numel() * FP32_BYTES if nested is not None else 0)  # absmax, then + offset


def _additive(mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """attention.cpp ``convert_boolean_attn_mask``: a bool mask becomes 0 / -inf in ``dtype``."""
    if mask is None or mask.dtype != torch.bool:
        return mask
    zero = torch.zeros((), dtype=dtype, device=mask.device)
    return torch.where(mask.logical_not(), -math.inf, zero)


def _scale(query: torch.Tensor, scale: float | None) -> float:
    return scale if scale is not None else 1.0 / math.sqrt(query.shape[-1])


def _flash(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, dropout_p: float, is_causal: bool,
           scale: float | None) -> torch.Tensor:
    """attention.cpp, case flash_attention on CUDA: pad the head dim to a multiple of 8, run the
    kernel, slice the output back."""
    d = query.shape[-1]
    og_scale = _scale(query, scale)  # from the head dim before padding
    pad = -d % FLASH_PAD_MULTIPLE
    if pad:
        query, key, value = (F.pad(t, (0, pad)) for t in (query, key, value))
    out = torch.ops.aten._scaled_dot_product_flash_attention(query, key, value, dropout_p, is_causal, False,
                                                             scale=og_scale)[0]
    return out[..., :d] if pad else out


def _efficient(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attn_mask: torch.Tensor | None,
               dropout_p: float, is_causal: bool, scale: float | None, enable_gqa: bool) -> torch.Tensor:
    """attention.cpp, case efficient_attention; GQA heads are expanded first (the op's meta
    backward takes equal head counts). The bias is padded as ``preprocess_mask`` pads it: by its
    strides, which for the contiguous masks ``_additive`` makes come down to the last dim."""
    if enable_gqa and key.shape[-3] != query.shape[-3]:
        groups = query.shape[-3] // key.shape[-3]
        key, value = key.repeat_interleave(groups, -3), value.repeat_interleave(groups, -3)
    bias = _additive(attn_mask, query.dtype)
    if bias is not None:
        s = bias.shape[-1]
        pad = -s % MEM_EFF_BIAS_ALIGNMENT
        if pad:
            bias = F.pad(bias, (0, pad))[..., :s]
        bias = bias.expand(*query.shape[:-1], key.shape[-2])
    compute_lse = torch.is_grad_enabled() and any(t.requires_grad for t in (query, key, value))
    return torch.ops.aten._scaled_dot_product_efficient_attention(
        query, key, value, bias, compute_lse, dropout_p, is_causal, scale=scale)[0]


def _cpu_flash(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attn_mask: torch.Tensor | None,
               dropout_p: float, is_causal: bool, scale: float | None) -> torch.Tensor:
    return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
        query, key, value, dropout_p, is_causal, attn_mask=_additive(attn_mask, query.dtype), scale=scale)[0]


class TargetKernels:
    """While active (a context manager), ``torch.nn.functional.scaled_dot_product_attention``
    and ``dropout`` run the ``target`` device's kernels (see the module doc); ``backends`` counts
    which attention kernels ran.

    The functions are swapped on ``torch.nn.functional``, where transformers and ``nn.Dropout``
    look them up at each call, rather than intercepted by a ``TorchFunctionMode``: gradient
    checkpointing recomputes layers inside the autograd engine, where such a mode is not active.
    """

    def __init__(self, target: str) -> None:
        if target not in TARGETS:
            raise ValueError(f"target must be one of {TARGETS}, not {target!r}")
        self.target = target
        self.backends: dict[str, int] = {}
        self._saved: dict[str, Callable[..., torch.Tensor]] = {}

    def __enter__(self) -> TargetKernels:
        self._saved = {"scaled_dot_product_attention": F.scaled_dot_product_attention, "dropout": F.dropout}
        F.scaled_dot_product_attention = self._attention
        if self.target == "cuda":
            F.dropout = self._dropout
        return self

    def __exit__(self, *exc: object) -> None:
        for name, func in self._saved.items():
            setattr(F, name, func)

    def _attention(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                   attn_mask: torch.Tensor | None = None, dropout_p: float = 0.0, is_causal: bool = False,
                   scale: float | None = None, enable_gqa: bool = False) -> torch.Tensor:
        if self.target == "cuda":
            backend = cuda_sdpa_backend(query, key, value, attn_mask)
        else:
            backend = cpu_sdpa_backend(query, key, value, attn_mask, dropout_p, is_causal, enable_gqa)
        self.backends[backend] = self.backends.get(backend, 0) + 1
        if backend == "flash":
            return _flash(query, key, value, dropout_p, is_causal, scale)
        if backend == "efficient":
            return _efficient(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa)
        if backend == "cpu_flash":
            return _cpu_flash(query, key, value, attn_mask, dropout_p, is_causal, scale)
        return self._saved["scaled_dot_product_attention"](query, key, value, attn_mask=attn_mask, dropout_p=dropout_p,
                                                           is_causal=is_causal, scale=scale, enable_gqa=enable_gqa)

    def _dropout(self, input: torch.Tensor, p: float = 0.5, training: bool = True,
                 inplace: bool = False) -> torch.Tensor:
        """``at::dropout`` on CUDA: ``native_dropout`` when training with 0 < p < 1."""
        if not training or not 0 < p < 1 or input.numel() == 0 or inplace:
            return self._saved["dropout"](input, p, training, inplace)
        return torch.ops.aten.native_dropout(input, p, True)[0]
