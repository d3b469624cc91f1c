"""The HTML routes, which the OpenAPI fuzzer (tests/app/api/test_fuzz.py) never visits, fed what
hypothesis draws: valid values of every form field mixed with hostile ones (huge and negative
numbers, thousand-digit integers, deep or broken JSON, long and odd strings). Every request gets an
answer or a 4xx, never a 5xx."""

import json
from urllib.parse import quote, urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tunefit.estimator import models
from tunefit.estimator.adapters import VARIANTS
from tunefit.estimator.request import ATTN_IMPLEMENTATIONS, DEVICES, MAX_BATCH, MAX_SEQ, METHODS, OPTIMIZERS

FUZZ = settings(max_examples=120, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

HOSTILE_TEXT = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["", "-1", "0", "1e400", "nan", "inf", "9" * 4400, "[" * 3000, '{"a": 1', "\x00", "<script>"]),
)
INTEGERS = st.one_of(st.integers(min_value=-(2**70), max_value=2**70).map(str),
                     st.integers(min_value=1, max_value=MAX_SEQ).map(str),
                     st.sampled_from([str(MAX_BATCH), str(MAX_SEQ), str(2**63), "9" * 4400]), HOSTILE_TEXT)


def _choice(values) -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(list(values)), HOSTILE_TEXT)


def _config() -> st.SearchStrategy[str]:
    llama = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
             "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 100}
    mutated = st.fixed_dictionaries({}, optional={k: st.one_of(st.integers(-(2**66), 2**66), st.text(max_size=5),
                                                                 st.none(), st.floats())
                                                  for k in llama}).map(lambda changes: json.dumps({**llama, **changes}))
    return st.one_of(st.just(""), mutated, HOSTILE_TEXT)


PLAN = st.fixed_dictionaries({}, optional={
    "model": _choice(models()), "config": _config(), "method": _choice(METHODS),
    "dtype": _choice(["bf16", "fp16", "fp32"]), "r": INTEGERS, "alpha": INTEGERS, "targets": HOSTILE_TEXT,
    "all_linear": _choice(["on"]), "variant": _choice(VARIANTS), "quant": _choice(["nf4", "fp4", "int8", "none"]),
    "double_quant": _choice(["on"]), "batch_size": INTEGERS, "seq_len": INTEGERS,
    "gradient_checkpointing": _choice(["on"]), "optimizer": _choice(OPTIMIZERS),
    "attn": _choice(ATTN_IMPLEMENTATIONS), "device": _choice(DEVICES), "gpu": HOSTILE_TEXT,
    "submitted": st.just("1"),
})


def _no_5xx(response) -> None:
    assert response.status_code < 500, response.text[:500]


@FUZZ
@given(plan=PLAN)
def test_the_plan_page(client, plan):
    _no_5xx(client.get("/", params=plan))


@FUZZ
@given(plan=PLAN, steps=INTEGERS, device=_choice(["meta", "cuda"]))
def test_the_job_form(client, plan, steps, device):
    _no_5xx(client.post("/jobs", data={"plan": urlencode(plan), "steps": steps, "device": device},
                        follow_redirects=False))


@FUZZ
@given(model=_choice(models()), r=INTEGERS, targets=HOSTILE_TEXT)
def test_the_paper_page(client, model, r, targets):
    _no_5xx(client.get("/paper", params={"model": model, "r": r, "targets": targets}))


@FUZZ
@given(filters=st.dictionaries(_choice(["method", "family", "split", "device", "device_kind", "source", "dtype",
                                        "attn"]), HOSTILE_TEXT, max_size=4))
@pytest.mark.parametrize("path", ["/reports", "/reports.csv", "/reports.json"])
def test_the_report_pages(client, path, filters):
    _no_5xx(client.get(path, params=filters))


@FUZZ
@given(ident=INTEGERS)
@pytest.mark.parametrize("path", ["/reports/{}", "/jobs/{}"])
def test_pages_by_id(client, path, ident):
    _no_5xx(client.get(path.format(quote(ident, safe="") or "x")))
