"""The one request constructor (``request_from_fields``): defaults from one place, unknown keys refused."""

import pytest

from tunefit.estimator import EstimateError, EstimateRequest, LoraSpec, QuantSpec
from tunefit.estimator.request import request_from_fields


@pytest.mark.parametrize("values,field", [
    ({"model": "llama-2-7b", "batch": 4}, "batch"),
    ({"model": "llama-2-7b", "lora": {"rank": 8}}, "lora.rank"),
    ({"model": "llama-2-7b", "method": "qlora", "quant": {"bits": 4}}, "quant.bits"),
], ids=["request", "lora", "quant"])
def test_the_constructor_refuses_fields_it_does_not_know(values, field):
    """A misspelt key would otherwise fall back to the default without a word."""
    with pytest.raises(EstimateError) as info:
        request_from_fields(values)
    assert info.value.field == field


def test_absent_and_none_keys_take_the_dataclass_defaults():
    built = request_from_fields({"model": "llama-2-7b", "method": "qlora", "lora": {"r": 8, "alpha": None},
                                 "quant": {"double_quant": False}, "gpu": None})
    assert built == EstimateRequest("llama-2-7b", method="qlora", lora=LoraSpec(r=8, alpha=16.0),
                                    quant=QuantSpec(double_quant=False))
