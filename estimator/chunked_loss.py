"""The chunked loss (``--loss chunked``): TRL's fused LM head, which scores each next-token label
without materializing the ``t x V`` logits (TRL 1.16 ``trl/trainer/utils.py`` ``add_fused_lm_head``,
``trl/kernels/chunked_logprob.py`` ``ChunkedLogProbFunction``; what TRL's SFT and DPO trainers run:
``model(**inputs, fused_lm_head=True)``).

The mechanism, read from that source:
- The backbone runs as usual; its ``last_hidden_state`` (``b x s x e``, ``e = embedding_dim``) is
  cut to the ``N = b·(s-1)`` positions that have a next-token label. On a CUDA device (Triton) only
  the valid positions are gathered (``hidden_states[mask]``, a copy); elsewhere every position is
  scored through ``reshape(-1, e)``, a copy unless ``b = 1`` (then a view of the whole state).
- The forward projects tiles of ``TOKEN_CHUNK_SIZE`` tokens by ``CHUNK_SIZE`` vocabulary columns
  into one buffer (``mm_buf``, ``min(N, 4096) x 32768`` in the compute dtype, whatever the
  vocabulary) and folds each tile into seven fp32 per-token statistics (online log-sum-exp). On
  CUDA a Triton kernel folds in place; elsewhere torch ops fold the whole tile, with fp32 tile-sized
  temporaries.
- It saves the scored hidden states, the targets (int64), ``log_z`` and the entropy (fp32 per
  token) for backward, which recomputes each tile, turns it into the logits' gradient in place and
  accumulates the input's gradient (and, when lm_head trains, its weight's) in fp32 buffers.

Symbols: ``N`` scored positions, ``T = min(N, 4096)`` tile rows, ``C = 32768`` the buffer's
columns, ``W = min(V, C)`` the widest tile, ``a`` bytes of the stream (and of lm_head's weight),
``c`` of the compute dtype (autocast's, else the stream's), ``F = 4`` of fp32.
"""

from __future__ import annotations

from .arch import ArchSpec
from .setting import ActivationSetting
from .units import BOOL_BYTES, FP32_BYTES, INT64_BYTES

# The families whose backbone TRL's fused head cannot reach: it calls ``model.base_model``, which
# transformers 5.23's Llama4ForCausalLM resolves to the model itself (its ``base_model_prefix`` is
# "language_model", its backbone "model"), so the forward fails ("no attribute 'last_hidden_state'",
# measured on CPU)
UNREACHABLE_BACKBONES = ("llama4", "llama4_text")
# trl/kernels/chunked_logprob.py: tokens per projection tile
TOKEN_CHUNK_SIZE = 4096
# trl/trainer/utils.py ``_CHUNKED_LOGPROB_CHUNK_SIZE``: vocabulary columns per tile (and of the buffer)
CHUNK_SIZE = 32768
# running max, sum of exp, x·exp, exp², sum of logits, max before the target, target logit
FORWARD_STATISTICS = 7
# The per-token outputs each trainer asks the fused head for (``add_fused_lm_head(outputs=...)``):
# SFTTrainer's (its ``entropy`` and ``mean_token_accuracy`` metrics), DPOTrainer's for the policy
# (``logits/*`` metrics too), and the default, which DPOTrainer's separate reference model gets
SFT_OUTPUTS = ("log_probs", "entropy", "is_top1")
DPO_OUTPUTS = ("log_probs", "entropy", "mean_logits", "is_top1")
REFERENCE_OUTPUTS = ("log_probs",)
# bytes per position of each output, as returned (``masked_fill`` of the kernel's, the same dtype)
OUTPUT_BYTES = {"log_probs": FP32_BYTES, "entropy": FP32_BYTES, "log_sum_sq_probs": FP32_BYTES,
                "mean_logits": FP32_BYTES, "is_top1": BOOL_BYTES}
# the differentiable outputs: each ``masked_fill(~mask, 0)`` keeps its own inverted mask for backward
DIFFERENTIABLE = ("log_probs", "entropy")
# CPU fold (``_forward_tile``), at its widest: z, ``z - max`` and its ``exp`` (or the exp and its
# product with z for the entropy), fp32, next to the bool ``before_target`` mask of ``is_top1``
FORWARD_FOLD_TILES = 3
# CPU fold (``_backward_tile``): its locals y, z, log_p, p and grad, with the two temporaries of
# ``grad += g * (is_target.float() - p)``, fp32, next to the bool ``is_target``
BACKWARD_FOLD_TILES = 7
# ... and with soft-capping, ``t = tanh(y / softcap)`` besides
SOFTCAP_BACKWARD_TILES = 1


def scored_positions(st: ActivationSetting) -> int:
    """``N = b·(s-1)``: every position but each sequence's last has a next-token label (no
    padding, the worst case)."""
    return st.batch * (st.seq - 1)


def tile_rows(st: ActivationSetting) -> int:
    """``T = min(N, TOKEN_CHUNK_SIZE)``."""
    return min(scored_positions(st), TOKEN_CHUNK_SIZE)


def widest_tile(arch: ArchSpec) -> int:
    """``W = min(V, CHUNK_SIZE)``: the first vocabulary tile."""
    return min(arch.vocab_size, CHUNK_SIZE)


def last_tile(arch: ArchSpec) -> int:
    """The last vocabulary tile's width, whose casts are alive when backward returns."""
    return arch.vocab_size - CHUNK_SIZE * ((arch.vocab_size - 1) // CHUNK_SIZE)


def compute_bytes(st: ActivationSetting) -> float:
    """``c``: the dtype the projection runs in, autocast's when on, else the hidden states'."""
    return st.autocast_bytes or st.stream_bytes


def _triton(st: ActivationSetting) -> bool:
    """TRL folds with its Triton kernels on CUDA (``_use_triton``), with torch ops elsewhere."""
    return st.device == "cuda"


def hidden_saved(arch: ArchSpec, st: ActivationSetting) -> float:
    """The scored hidden states the function keeps for backward: a copy of the ``N`` rows
    (``N·e·a``), or on a CPU with ``b = 1`` a view keeping the whole ``s·e·a`` state."""
    a, e = st.stream_bytes, arch.embedding_dim
    if st.batch == 1 and not _triton(st):
        return st.seq * e * a
    return scored_positions(st) * e * a


def policy_outputs(st: ActivationSetting) -> tuple[str, ...]:
    """The outputs the trainer asks of the trained model's head (:data:`SFT_OUTPUTS`, :data:`DPO_OUTPUTS`)."""
    return DPO_OUTPUTS if st.objective == "dpo" else SFT_OUTPUTS


def saved_per_token(outputs: tuple[str, ...]) -> int:
    """Per scored position, kept for backward: the int64 targets and fp32 ``log_z`` by the function
    (and the fp32 entropy when asked for), an inverted label mask per differentiable output."""
    entropy = FP32_BYTES if "entropy" in outputs else 0
    masks = BOOL_BYTES * sum(1 for name in outputs if name in DIFFERENTIABLE)
    return INT64_BYTES + FP32_BYTES + entropy + masks


def output_per_token(outputs: tuple[str, ...]) -> int:
    """Per position, what the returned ``FusedCausalLMOutput`` holds: each output asked for and the
    bool label mask."""
    return BOOL_BYTES + sum(OUTPUT_BYTES[name] for name in outputs)


def saved(arch: ArchSpec, st: ActivationSetting) -> float:
    """What the fused head keeps from its forward to its backward (:func:`saved_per_token`)."""
    return hidden_saved(arch, st) + scored_positions(st) * saved_per_token(policy_outputs(st))


def _hidden_cast(arch: ArchSpec, st: ActivationSetting) -> float:
    """A tile's hidden rows cast to the compute dtype (the local ``hidden_chunk``), a copy when
    the stream's dtype is another: ``T·e·c``."""
    c = compute_bytes(st)
    return 0.0 if c == st.stream_bytes else tile_rows(st) * arch.embedding_dim * c


def _weight_cast(arch: ArchSpec, st: ActivationSetting, width: int) -> float:
    """A tile's lm_head rows cast to the compute dtype, a copy when the weight's dtype (the
    stream's) is another: ``width·e·c``; in forward a temporary of the projection, in backward the
    local ``w_chunk``."""
    c = compute_bytes(st)
    return 0.0 if c == st.stream_bytes else width * arch.embedding_dim * c


def _buffer(st: ActivationSetting) -> float:
    """``mm_buf``: ``T x C`` in the compute dtype, allocated whole in forward and in backward."""
    return tile_rows(st) * CHUNK_SIZE * compute_bytes(st)


def forward_working(arch: ArchSpec, st: ActivationSetting, outputs: tuple[str, ...] | None = None) -> float:
    """Inside the function's forward: the backbone's ``last_hidden_state`` (``b·s·e·a``, held by the
    caller), the scored rows' copy, the label mask and the int64 targets, the seven fp32
    statistics, the buffer and the hidden rows' cast; then the widest tile's projection with its
    weight rows' cast, or (the larger, on a CPU) its fold's :data:`FORWARD_FOLD_TILES` fp32 tiles
    and, for ``is_top1``, a bool one (``outputs``: the policy's by default)."""
    mask = BOOL_BYTES if "is_top1" in (outputs or policy_outputs(st)) else 0
    N, T, W = scored_positions(st), tile_rows(st), widest_tile(arch)
    state = st.tokens * arch.embedding_dim * st.stream_bytes
    rows = 0.0 if st.batch == 1 and not _triton(st) else hidden_saved(arch, st)
    labels = N * (BOOL_BYTES + INT64_BYTES)
    fold = 0.0 if _triton(st) else T * W * (FORWARD_FOLD_TILES * FP32_BYTES + mask)
    return (state + rows + labels + N * FORWARD_STATISTICS * FP32_BYTES + _buffer(st) + _hidden_cast(arch, st)
            + max(_weight_cast(arch, st, W), fold))


def _grad_buffers(arch: ArchSpec, st: ActivationSetting) -> float:
    """The fp32 gradient accumulators: the hidden rows' (``N·e·F``) and, when lm_head trains, its
    weight's (``V·e·F``)."""
    e = arch.embedding_dim
    weight = arch.vocab_size * e * FP32_BYTES if st.full else 0.0
    return scored_positions(st) * e * FP32_BYTES + weight


def _in_backward(arch: ArchSpec, st: ActivationSetting, width: int) -> float:
    """Alive throughout the function's backward: the incoming fp32 log-prob gradient (``N·F``), the
    gradient buffers, ``mm_buf`` and the casts of a tile ``width`` columns wide."""
    return (scored_positions(st) * FP32_BYTES + _grad_buffers(arch, st) + _buffer(st) + _hidden_cast(arch, st)
            + _weight_cast(arch, st, width))


def backward_fold_working(arch: ArchSpec, st: ActivationSetting) -> float:
    """Inside the function's backward, at its widest fold: the incoming fp32 log-prob gradient,
    the gradient buffers, ``mm_buf``, the casts and, on a CPU, :data:`BACKWARD_FOLD_TILES` fp32
    tiles (one more with soft-capping) and a bool one."""
    T, W = tile_rows(st), widest_tile(arch)
    tiles = BACKWARD_FOLD_TILES + (SOFTCAP_BACKWARD_TILES if arch.final_logit_softcapping else 0)
    fold = 0.0 if _triton(st) else T * W * (tiles * FP32_BYTES + BOOL_BYTES)
    return _in_backward(arch, st, W) + fold


def backward_accumulate_working(arch: ArchSpec, st: ActivationSetting) -> float:
    """Inside the function's backward, accumulating a tile's products on a CPU (``_addmm_fp32``:
    ``acc.addmm_(a.float(), b.float())``): fp32 copies of the 16-bit tile and of the weight rows
    (``T·W·F + W·e·F``), and for lm_head's own gradient of the tile and the hidden rows
    (``T·W·F + T·e·F``). On CUDA ``addmm(out_dtype=float32)`` takes them as they are."""
    c, e, T, W = compute_bytes(st), arch.embedding_dim, tile_rows(st), widest_tile(arch)
    if _triton(st) or c == FP32_BYTES:
        return 0.0
    copies = T * W * FP32_BYTES + max(W * e, T * e if st.full else 0) * FP32_BYTES
    return _in_backward(arch, st, W) + copies


def backward_return_working(arch: ArchSpec, st: ActivationSetting) -> float:
    """As the function's backward returns: the fp32 gradient buffers and their copies in the
    stream's dtype (``grad_hidden.to(hidden.dtype)``, ``grad_weight.to(weight.dtype)``), with
    ``mm_buf`` and the last tile's casts still bound to its locals."""
    a, e = st.stream_bytes, arch.embedding_dim
    copies = 0.0
    if a != FP32_BYTES:
        copies = scored_positions(st) * e * a + (arch.vocab_size * e * a if st.full else 0.0)
    return _in_backward(arch, st, last_tile(arch)) + copies


def output_held(st: ActivationSetting) -> float:
    """What the returned output holds of the fused head (:func:`output_per_token`)."""
    return scored_positions(st) * output_per_token(policy_outputs(st))
