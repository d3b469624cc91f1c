"""The meta-device simulation: byte-exact against CPU measurements, and the target's kernels.

Cross-check (issue: "for small configs, the meta simulation's peak equals the CPU measurement's
peak within 1% for every method"): every case below is simulated with target ``cpu`` and
measured on this CPU, and the peaks must agree within 1% (they agree to the byte except where a
CPU kernel keeps a different dtype than meta does, e.g. LayerNorm's mean/rstd).
"""

import math

import pytest

from tests.profiler.support import LIBRARY_NOTICES, require_profiler_extra

require_profiler_extra()

import torch  # noqa: E402

from tests.estimator.tiny_configs import TINY_CONFIGS  # noqa: E402
from tunefit.estimator import EstimateRequest, LoraSpec, QuantSpec, estimate  # noqa: E402
from tunefit.profiler import BuildError, measure, simulate  # noqa: E402
from tunefit.profiler.kernels import TargetKernels, cuda_sdpa_backend  # noqa: E402

pytestmark = LIBRARY_NOTICES
ALL_LINEAR = LoraSpec(r=4, alpha=8.0, target_modules="all-linear")


def _request(family, method, device="cpu", config_changes=None, **kw):
    base = dict(method=method, device=device, dtype="bf16", batch_size=2, seq_len=16, lora=ALL_LINEAR,
                quant=QuantSpec() if method == "qlora" else None)
    base.update(kw)
    return EstimateRequest({"config": {**TINY_CONFIGS[family], **(config_changes or {})}}, **base)


CROSS_CHECKS = {
    "llama-gqa-full-fp32": _request("llama-gqa", "full", dtype="fp32"),
    "llama-gqa-lora-dropout": _request("llama-gqa", "lora", lora=LoraSpec(r=4, alpha=8.0, target_modules="all-linear",
                                                                          dropout=0.1)),
    "mistral-dora": _request("mistral", "lora", lora=LoraSpec(r=4, alpha=8.0, target_modules=("q_proj", "v_proj"),
                                                              variant="dora")),
    "qwen2-qlora-nf4-dq": _request("qwen2", "qlora"),
    "llama-qlora-fp4-checkpointing": _request("llama-head-dim", "qlora", gradient_checkpointing=True,
                                              quant=QuantSpec(type="fp4", double_quant=False)),
    "gpt2-full-attention-dropout": _request("gpt2", "full"),  # CPU sdpa takes the math path
    "falcon-lora-masked": _request("falcon-serial", "lora"),
    "mixtral-lora-experts": _request("mixtral", "lora"),
    "mistral-sliding-window-mask": _request("mistral", "lora", config_changes={"sliding_window": 8}),
    "phi3-inference": _request("phi3", "inference"),
}


@pytest.mark.parametrize("request_", CROSS_CHECKS.values(), ids=CROSS_CHECKS.keys())
def test_simulation_matches_the_cpu_measurement(request_):
    simulated = simulate(request_)["measured"]
    measured = measure(request_, steps=2)["measured"]
    assert simulated["peak_allocated_bytes"] == pytest.approx(measured["peak_allocated_bytes"], rel=0.01)
    assert simulated["phase_peaks"].keys() == measured["phase_peaks"].keys()
    for phase, value in measured["phase_peaks"].items():
        assert simulated["phase_peaks"][phase] == pytest.approx(value, rel=0.01), phase


@pytest.mark.parametrize("device", ["cpu", "cuda"])
@pytest.mark.parametrize("method", ["full", "lora", "qlora"])
def test_the_estimate_equals_the_simulation_past_a_sliding_window(method, device):
    """The mechanism the catalog simulations found: past the window transformers passes sdpa a mask
    (converted to an additive one and kept by every layer) and repeats k, v for it."""
    request_ = _request("mistral", method, device=device, config_changes={"sliding_window": 8}, seq_len=32)
    simulated = simulate(request_)["measured"]["peak_allocated_bytes"]
    assert estimate(request_).peak_allocated_bytes == pytest.approx(simulated, rel=0.01)


# Prefills of the fused-qkv families (issue 18, item 1: Phi-3-mini at 4,096 tokens was +15.8 %): the
# cache copies k and v (transformers' DynamicLayer.update concatenates), the fused output lives only
# while its layer attends, and Phi-3's fused gate_up output stays whole in its MLP.
PREFILLS = [
    pytest.param("phi-3-mini-4k", 1, 4096, "cuda", id="phi-3-mini-4k-b1-s4096-past-the-window"),
    pytest.param("phi-3-mini-4k", 1, 1000, "cuda", id="phi-3-mini-4k-b1-s1000"),
    pytest.param({"config": TINY_CONFIGS["phi3"]}, 2, 64, "cpu", id="tiny-phi3"),
    pytest.param({"config": TINY_CONFIGS["gpt_neox"]}, 2, 64, "cpu", id="tiny-gpt_neox"),
]


@pytest.mark.parametrize("model,batch,seq,device", PREFILLS)
def test_a_fused_qkv_prefill_equals_its_simulation(model, batch, seq, device):
    request_ = EstimateRequest(model, method="inference", device=device, dtype="bf16", batch_size=batch, seq_len=seq)
    simulated = simulate(request_)["measured"]["peak_allocated_bytes"]
    assert estimate(request_).peak_allocated_bytes == pytest.approx(simulated, rel=0.01)


@pytest.mark.parametrize("device", ["cpu", "cuda"])
@pytest.mark.parametrize("method,dtype", [("lora", "fp32"), ("lora", "bf16"), ("full", "bf16")])
def test_phi3_layers_keep_what_the_simulation_keeps(method, dtype, device):
    """Phi-3's fused qkv: v stays a view of the projection's output (kept whole by the fused
    kernel), and its concatenating RoPE lays q out (b, heads, s, d), so the flash kernels' output
    is copied before o_proj. Per layer, formula and simulation agree to the byte but for the fused
    CUDA kernels' 16-24 bytes of RNG state."""
    def per_layer_error(layers: int) -> int:
        request_ = _request("phi3", method, device=device, dtype=dtype, seq_len=64,
                            config_changes={"num_hidden_layers": layers})
        simulated = simulate(request_)["measured"]["phase_peaks"]["forward"]
        return next(p.allocated_bytes for p in estimate(request_).phases if p.name == "forward") - simulated

    assert abs(per_layer_error(3) - per_layer_error(2)) <= 24


def test_a_simulation_is_marked_as_one():
    result = simulate(_request("llama-gqa", "lora"))
    assert result["environment"]["device"] == "meta" and result["environment"]["target"] == "cpu"
    assert "meta" in result["measured"]["counter"]
    assert result["measured"]["attention_kernels"] == {"cpu_flash": 4}  # 2 layers x 2 steps


def _qkv(dtype, heads=8, kv_heads=8, d=64):
    q = torch.empty(2, heads, 16, d, dtype=dtype, device="meta")
    k = torch.empty(2, kv_heads, 16, d, dtype=dtype, device="meta")
    return q, k, k


CUDA_BACKENDS = {  # aten/src/ATen/native/transformers/cuda/sdp_utils.cpp, select_sdp_backend
    "bf16-causal": (torch.bfloat16, 64, False, "flash"),
    "fp16-gqa": (torch.float16, 128, False, "flash"),
    "bf16-mask": (torch.bfloat16, 64, True, "efficient"),
    "fp32": (torch.float32, 64, False, "efficient"),
    "bf16-head-dim-256": (torch.bfloat16, 256, False, "flash"),
    "bf16-head-dim-260": (torch.bfloat16, 260, False, "math"),  # > 256 and not a multiple of 8
    "fp32-head-dim-258": (torch.float32, 258, False, "math"),  # not a multiple of 4
}


@pytest.mark.parametrize("dtype,d,masked,expected", CUDA_BACKENDS.values(), ids=CUDA_BACKENDS.keys())
def test_cuda_attention_backend(dtype, d, masked, expected):
    q, k, v = _qkv(dtype, d=d)
    mask = torch.empty(2, 1, 16, 16, dtype=torch.bool, device="meta") if masked else None
    assert cuda_sdpa_backend(q, k, v, mask) == expected


def test_cuda_flash_attention_keeps_no_score_matrix():
    """The fused kernel's saved tensors: q, k, v, the output and an fp32 log-sum-exp, never s x s."""
    s = 1024
    q = torch.empty(1, 8, s, 64, dtype=torch.bfloat16, device="meta", requires_grad=True)
    with TargetKernels("cuda") as kernels:
        out = torch.nn.functional.scaled_dot_product_attention(q, q, q, is_causal=True)
    saved = [t for t in _saved_tensors(out.grad_fn)]
    assert kernels.backends == {"flash": 1}
    assert all(t.numel() < s * s for t in saved)
    assert any(t.dtype == torch.float32 and t.shape == (1, 8, s) for t in saved)  # the log-sum-exp
    assert torch.nn.functional.scaled_dot_product_attention is not kernels._attention  # restored on exit


def _saved_tensors(grad_fn):
    return [getattr(grad_fn, name) for name in dir(grad_fn)
            if name.startswith("_saved_") and isinstance(getattr(grad_fn, name), torch.Tensor)]


def test_cuda_dropout_keeps_a_bool_mask():
    x = torch.empty(4, 8, device="meta", requires_grad=True)
    with TargetKernels("cuda"):
        y = torch.nn.functional.dropout(x, 0.1, training=True)
    assert any(t.dtype == torch.bool for t in _saved_tensors(y.grad_fn))


def _step_peak_above_state(result) -> int:
    """What the optimizer step adds above the bytes alive when it starts (steady state, step 2)."""
    timeline = result["measured"]["timeline"]
    before = next(r for r in timeline if r["phase"] == "backward" and r["step"] == 2)["allocated_bytes"]
    step = next(r for r in timeline if r["phase"] == "optimizer_step" and r["step"] == 2)
    return step["peak_allocated_bytes"] - before


def test_cuda_adamw_step_allocates_one_exp_avg_sq_sized_temporary():
    """torch's foreach AdamW (the CUDA default): ``_foreach_sqrt(exp_avg_sqs)`` holds a copy of every
    ``exp_avg_sq`` at once; per tensor (CPU) only the largest tensor's ``sqrt`` and its quotient."""
    cuda = simulate(_request("llama-gqa", "full", device="cuda"))
    cpu = simulate(_request("llama-gqa", "full", device="cpu"))
    params = cuda["trainable_params"]["trainable"]
    largest = TINY_CONFIGS["llama-gqa"]["vocab_size"] * TINY_CONFIGS["llama-gqa"]["hidden_size"]
    assert _step_peak_above_state(cuda) == params * 2  # bf16 state
    assert _step_peak_above_state(cpu) == pytest.approx(2 * largest * 2, abs=1024)  # + 0-dim scalars


def test_qlora_layers_hold_what_bitsandbytes_lays_out():
    """NF4 + double quantization (QLoRA, arXiv:2305.14314, Sec. 3): 4 bits per weight, an 8-bit
    absmax per 64 weights and an fp32 absmax per 256 of those: 0.127 bits of constants per weight."""
    import bitsandbytes as bnb

    from tunefit.profiler.simulation import meta_model

    model = meta_model(_request("llama-gqa", "qlora"))
    layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert layers and all(m.weight.device.type == "meta" for m in layers)
    for m in layers:
        n = m.in_features * m.out_features
        state = m.weight.quant_state
        assert m.weight.dtype == torch.uint8 and m.weight.numel() == math.ceil(n / 2)
        blocks = math.ceil(n / 64)
        assert (state.absmax.dtype, state.absmax.numel()) == (torch.uint8, blocks)
        assert (state.state2.absmax.dtype, state.state2.absmax.numel()) == (torch.float32, math.ceil(blocks / 256))
        assert state.code.numel() == 16 and state.state2.code.numel() == 256
    assert not isinstance(model.lm_head, bnb.nn.Linear4bit)  # transformers keeps the output layer


def test_what_meta_cannot_run_is_refused_with_the_reason():
    """QLoRA of fused MoE experts: prepare_kbit makes them fp32, torch's grouped matmul (meta) takes bf16."""
    with pytest.raises(BuildError, match="meta device"):
        simulate(_request("mixtral", "qlora"))


@pytest.mark.parametrize("optimizer,reason", [("adamw_8bit", "bitsandbytes' optimizers run C kernels"),
                                              ("adamw_fused", "fused AdamW takes CUDA or CPU tensors only")])
def test_optimizers_without_a_meta_kernel_are_refused_with_the_reason(optimizer, reason):
    with pytest.raises(BuildError, match=reason):
        simulate(_request("llama-gqa", "lora", optimizer=optimizer))


@pytest.mark.parametrize("rows,expected", [(2048, True), (1536, False)], ids=["fallback", "fused"])
def test_cuda_gemm_4bit_dequantizes_inside_the_op_past_1536_rows(rows, expected):
    """bitsandbytes' CUDA gemm_4bit: above 1,536 input rows it dequantizes the whole weight to the
    input's dtype inside the op (and the nested absmax to fp32, twice); the allocator sees that."""
    import bitsandbytes as bnb

    from tunefit.profiler.accounting import LiveTensorBytes
    from tunefit.profiler.kernels import cuda_workspace_bytes

    out_f, in_f = 256, 512
    packed, state = bnb.functional.quantize_4bit(torch.empty(out_f, in_f, dtype=torch.bfloat16, device="meta"),
                                                 blocksize=64, compress_statistics=True, quant_type="nf4")
    a = torch.empty(rows, in_f, dtype=torch.bfloat16, device="meta")

    def peak(workspace) -> int:
        counter = LiveTensorBytes(("meta",), workspace=workspace)
        with counter:
            bnb.matmul_4bit(a, packed.t(), quant_state=state)
        return counter.peak_bytes

    workspace = out_f * in_f * 2 + 2 * state.absmax.numel() * 4  # bf16 weight; fp32 absmax, then + offset
    assert peak(cuda_workspace_bytes) - peak(None) == (workspace if expected else 0)
