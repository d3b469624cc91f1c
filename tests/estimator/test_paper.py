"""The seed papers' formulas against the numbers they give by hand (tolerance: exact unless noted)."""

import pytest

from tunefit.estimator import paper


@pytest.mark.parametrize("double_quant,bits", [
    (False, 0.5),  # 32/64, QLoRA arXiv:2305.14314 Sec. 3; seed 004
    (True, 0.126953125),  # 8/64 + 32/(64*256) "≈ 0.127", same sources
], ids=["no-dq", "dq"])
def test_nf4_constant_bits(double_quant, bits):
    assert paper.nf4_constant_bits(double_quant) == bits


def test_double_quant_saves_about_0_373_bits():
    # QLoRA reports "0.373 bits per parameter" saved (arXiv:2305.14314 Sec. 3); tolerance 1e-3.
    assert paper.nf4_constant_bits(False) - paper.nf4_constant_bits(True) == pytest.approx(0.373, abs=1e-3)


@pytest.mark.parametrize("d,k,r,ratio", [
    (4096, 4096, 8, 8 / 4096 + 8 / 4096),
    (4096, 1024, 16, 16 / 4096 + 16 / 1024),
    (2000, 4000, 4, 0.003),  # seed 000 Eq. 9 with d, k ≈ 2,000-4,000
], ids=["square", "gqa-kv", "seed-range"])
def test_lora_ratio(d, k, r, ratio):
    assert paper.lora_ratio(d, k, r) == pytest.approx(ratio)


def test_lora_params_square_llama_7b_attention():
    # seed 000 Eq. 10: L·m·r·2d with L=32, m=4 (W_Q, W_K, W_V, W_O), r=8, d=4096
    assert paper.lora_params_square(32, 4, 8, 4096) == 32 * 4 * 8 * 8192 == 8_388_608


def test_qlora_memory_formula():
    P, P_lora = 6_738_415_616, 4_194_304
    assert paper.qlora_memory_bytes(P, P_lora) == P / 2 + 6 * P_lora == 3_394_373_632


def test_full_ft_fp16_7b_is_56_gb():
    # seed 001: "14 GB + 14 GB + 28 GB = 56 GB" for a 7B model (decimal GB).
    assert paper.full_ft_fp16_bytes(7_000_000_000) == 56 * 10**9


def test_mixed_precision_16_bytes_per_param():
    # seed 002: "16 GB per 1B parameters".
    assert paper.full_ft_mixed_bytes(1_000_000_000) == 16 * 10**9


def test_lora_7b_about_14_5_gb():
    # seed 001: 14 GB base + ~60M adapters x (2 + 2 + 4) bytes ≈ 14.5 GB; tolerance 0.05 GB.
    assert paper.lora_fp16_bytes(7_000_000_000, 60_000_000) / 1e9 == pytest.approx(14.5, abs=0.05)


@pytest.mark.parametrize("method,expected", [
    ("qlora", 3_394_373_632),
    ("lora", 2 * 6_738_415_616 + 8 * 4_194_304),
    ("full", 8 * 6_738_415_616),
    ("inference", 2 * 6_738_415_616),
], ids=["qlora", "lora", "full", "inference"])
def test_paper_figure_per_method(method, expected):
    fig = paper.paper_figure(method, 6_738_415_616, 4_194_304)
    assert fig.bytes == expected
    assert fig.formula
