"""A model_type the formulas do not know is answered from its simulated step on every surface,
marked ``"source": "simulated"``: the REST API (estimate, capacity, compare), the CLI and the form."""

import json

import pytest

from tests.profiler.support import LIBRARY_NOTICES, require_profiler_extra
from tunefit.app.cli import main

require_profiler_extra()
pytestmark = LIBRARY_NOTICES

from tunefit.profiler.fit import sample_shapes  # noqa: E402
from tunefit.profiler.generic import SAMPLE_LENGTHS  # noqa: E402

transformers = pytest.importorskip("transformers")

# LFM2, a hybrid of short convolutions and attention: no formula here, a fit in about a second
LFM2 = {**transformers.AutoConfig.for_model("lfm2").to_dict(), "hidden_size": 64, "intermediate_size": 128,
        "block_ff_dim": 128, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 512,
        "num_hidden_layers": 4, "max_position_embeddings": 4096,
        "layer_types": ["conv", "conv", "full_attention", "conv"]}
BODY = {"model": {"config": LFM2}, "method": "lora", "gpus": ["rtx-4090"]}


def test_the_api_answers_from_the_simulation(client):
    r = client.post("/api/v1/estimate", json=BODY)
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["source"] == "simulated" and doc["simulation"]["kind"] == "fitted"
    assert doc["simulation"]["transformers"] == transformers.__version__
    assert doc["verdicts"][0]["fits"] and doc["verdicts"][0]["max_batch_size"] > doc["request"]["batch_size"]
    assert set(doc["breakdown"]) >= {"weights_bytes", "optimizer_bytes", "working_bytes"}
    assert sum(v for k, v in doc["breakdown"].items()) == doc["peak_bytes"]
    assert "lfm2 has no formula here" in doc["assumptions"][0]
    # the default recipe's fields the meta device cannot run are kept at the libraries' defaults, and said
    assert set(doc["request"]["recipe_exceptions"]) == {"optimizer", "autocast", "loss"}


def test_capacity_and_compare_read_the_fit(client):
    cap = client.post("/api/v1/capacity", json={**BODY, "gpus": ["rtx-4090", "h100-sxm-80gb"]})
    assert cap.status_code == 200, cap.text
    rows = cap.json()["rows"]
    assert [r["gpu"] for r in rows] == ["rtx-4090", "h100-sxm-80gb"]
    assert rows[0]["max_batch_size"] <= rows[1]["max_batch_size"] and rows[0]["gpus_needed"] is None
    compare = client.post("/api/v1/compare", json={"model": {"config": LFM2}})
    assert compare.status_code == 200, compare.text
    docs = [r["document"] for r in compare.json()["results"]]
    assert all(d is not None and d["source"] == "simulated" for d in docs)
    assert docs[0]["peak_bytes"] > docs[1]["peak_bytes"]  # full fine-tuning above LoRA


def test_a_config_transformers_cannot_build_is_a_422(client):
    r = client.post("/api/v1/estimate", json={"model": {"config": {**LFM2, "layer_types": ["nonsense"] * 4}}})
    assert r.status_code == 422, r.text


def test_the_cli_shows_progress_and_the_simulated_answer(tmp_path, capsys):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(LFM2))
    # a rank no other test asks for: a setting simulated here, not remembered from before
    assert main(["estimate", "--config", str(path), "--method", "lora", "--r", "3", "--gpu", "rtx-4090", "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["source"] == "simulated"
    shapes = len(sample_shapes(SAMPLE_LENGTHS))  # one piece: LFM2 has no attention window
    assert "simulating 1/" in captured.err and f"simulating {shapes}/{shapes} shapes" in captured.err


def test_the_form_answers_a_pasted_config_of_a_new_family(client):
    page = client.get("/", params={"config": json.dumps(LFM2), "method": "lora", "submitted": "1"})
    assert page.status_code == 200
    assert "lfm2 has no formula here" in page.text and "Fits an NVIDIA GeForce RTX 4090" in page.text
