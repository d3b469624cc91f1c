"""Reports: the pages, downloads and API agree with the stored measurements; the shipped
validation data meets the accuracy goal when estimated by this estimator."""

import csv
import io

import pytest

from tunefit.app.reports.data import (
    BASE_RECIPE,
    REPORTS_DATA,
    Stat,
    accuracy_table,
    measurements_in,
    read_jsonl,
    relative_error,
    rows_from_files,
    stat,
)
from tunefit.profiler.matrix import (
    long_eager_cases,
    recipe_cases,
    recipe_simulation_cases,
    simulated_models,
    simulation_cases,
    variant_cases,
)
from tunefit.profiler.validate import UNRUNNABLE

VALIDATION = REPORTS_DATA / "cpu-validation.jsonl"


def test_stat_is_median_and_max_of_magnitudes():
    assert stat([0.01, -0.05, 0.02]) == Stat(3, 0.02, 0.05)
    assert relative_error(110, 100) == pytest.approx(0.10)


def test_every_shipped_measurement_is_in_the_database(client):
    stored = read_jsonl(VALIDATION)
    rows = client.get("/api/v1/reports?source=cpu-validation").json()["rows"]
    assert sorted(r["case"] for r in rows) == sorted(item["case"] for item in stored)
    by_case = {item["case"]: item for item in stored}
    for r in rows:
        assert r["measured_bytes"] == by_case[r["case"]]["measured"]["peak_allocated_bytes"]


def test_csv_json_and_api_downloads_agree(client):
    query = "method=qlora"
    api = client.get(f"/api/v1/reports?{query}").json()
    download = client.get(f"/reports.json?{query}").json()
    table = list(csv.DictReader(io.StringIO(client.get(f"/reports.csv?{query}").text)))
    assert api["rows"] == download["rows"]
    assert [int(r["id"]) for r in table] == [r["id"] for r in api["rows"]]
    assert all(r["method"] == "qlora" for r in table) and table
    assert [int(r["measured_bytes"]) for r in table] == [r["measured_bytes"] for r in api["rows"]]


def test_report_page_shows_every_filtered_row(client):
    api_rows = client.get("/api/v1/reports?method=lora").json()["rows"]
    html = client.get("/reports?method=lora").text
    assert html.count('class="point"') == len(api_rows)
    assert all(f'href="/reports/{r["id"]}"' in html for r in api_rows)
    assert 'id="accuracy-table"' in html and 'id="scatter"' in html


def test_measurement_page_shows_the_stored_figures(client):
    row = client.get("/api/v1/reports?method=full").json()["rows"][0]
    html = client.get(f"/reports/{row['id']}").text
    assert f'id="measured-peak">{row["measured_bytes"]:,}<' in html
    assert 'id="phase-chart"' in html and "torch" in html
    assert client.get("/reports/987654").status_code == 404


def test_shipped_validation_meets_the_accuracy_goal():
    """Goal (issue 18, tightening the reports issue's 3 % / 8 %): median |error| <= 0.5 %, max <= 3 %,
    for every method, over the enlarged matrix (the drawn settings, the long eager ones, peft's
    variants), estimated again by this estimator; the held-out half meets it on its own. A failure
    names the worst case."""
    rows = rows_from_files([VALIDATION])
    assert len(rows) >= 500
    assert {r.split for r in rows} == {"fit", "holdout"}
    assert sum(r.split == "holdout" for r in rows) >= len(rows) / 3
    assert {c.id for c in long_eager_cases() + variant_cases()} <= {r.case for r in rows}
    table = accuracy_table(rows)
    for method, stats in table["methods"].items():
        worst = max((r for r in rows if method in ("all", r.method)), key=lambda r: abs(r.error))
        for key in ("ours", "ours_holdout"):
            assert stats[key].median <= 0.005, (method, key, stats[key], worst.case)
            assert stats[key].max <= 0.03, (method, key, stats[key], worst.case, f"{worst.error:+.2%}")


def test_every_recipe_choice_meets_the_accuracy_goal():
    """Goal (issue 19): per recipe choice (the plain loop, gradient accumulation, autocast), against CPU
    measurements on every model of the matrix, the estimate's median error is at most 1 % and its
    largest at most 5 %, the held-out half on its own too; a failure names the worst case."""
    rows = [r for r in rows_from_files([VALIDATION]) if r.recipe != BASE_RECIPE]
    assert {c.id for c in recipe_cases()} <= {r.case for r in rows}
    table = accuracy_table(rows)["recipes"]
    assert set(table) >= {"loop=plain", "grad_accum", "autocast=bf16", "autocast=fp16"}
    for recipe, stats in table.items():
        assert stats["ours_holdout"].n >= stats["ours"].n / 3, recipe
        worst = max((r for r in rows if r.recipe == recipe), key=lambda r: abs(r.error))
        for key in ("ours", "ours_holdout"):
            assert stats[key].median <= 0.01, (recipe, key, stats[key], worst.case)
            assert stats[key].max <= 0.05, (recipe, key, stats[key], worst.case, f"{worst.error:+.2%}")


SIMULATIONS = REPORTS_DATA / "meta-simulation.jsonl"


def test_every_catalog_model_is_simulated():
    """Goal (issue 18): the sweep holds every case of every catalog model - inference, full, LoRA and
    QLoRA at each model's shapes (one past its window where it has one, one with checkpointing) -
    as a simulation for CUDA, or as the reason it could not run; each simulation under 60 s on the
    2-core machine that made it."""
    items = read_jsonl(SIMULATIONS)
    assert sorted(i["case"] for i in items) == sorted(c.id for c in simulation_cases())
    simulated = [i for i in items if UNRUNNABLE not in i]
    assert {i["model"] for i in simulated} == set(simulated_models())
    assert all(i["duration_s"] < 60 for i in simulated), max(i["duration_s"] for i in simulated)
    reasons = [i[UNRUNNABLE] for i in items if UNRUNNABLE in i]
    assert all(reasons) and len(reasons) <= len(items) / 10, reasons
    rows = rows_from_files([SIMULATIONS])
    assert len(rows) == len(simulated) and all(r.simulated and r.target == "cuda" for r in rows)
    assert {r.batch_size for r in rows} >= {1, 4} and {r.seq_len for r in rows} >= {512, 4096, 8192}


def test_the_estimate_holds_to_the_catalog_sweep():
    """Goal (issue 18): against the simulations of every catalog model, the estimate's median error
    is at most 0.5 % and its largest at most 2 %, for every method; a failure names the worst case."""
    rows = rows_from_files([SIMULATIONS])
    for method, stats in accuracy_table(rows)["methods"].items():
        worst = max((r for r in rows if method in ("all", r.method)), key=lambda r: abs(r.error))
        assert stats["ours"].median <= 0.005, (method, stats["ours"], worst.case)
        assert stats["ours"].max <= 0.02, (method, stats["ours"], worst.case, f"{worst.error:+.2%}")


def test_the_estimate_holds_to_the_recipe_simulations():
    """Goal (issue 19): every catalog model simulated for CUDA under the recipe choices the meta
    device runs (a plain loop, gradient accumulation): per choice, median error at most 1 %, largest
    at most 3 %; a failure names the worst case."""
    rows = [r for r in rows_from_files([SIMULATIONS]) if r.recipe != BASE_RECIPE]
    assert {c.id for c in recipe_simulation_cases()} <= {r.case for r in rows} | _unrunnable(SIMULATIONS)
    table = accuracy_table(rows)["recipes"]
    assert set(table) == {"loop=plain", "grad_accum"}
    for recipe, stats in table.items():
        worst = max((r for r in rows if r.recipe == recipe), key=lambda r: abs(r.error))
        assert stats["ours"].n >= len(simulated_models()) * 0.9, recipe
        assert stats["ours"].median <= 0.01, (recipe, stats["ours"], worst.case)
        assert stats["ours"].max <= 0.03, (recipe, stats["ours"], worst.case, f"{worst.error:+.2%}")


def _unrunnable(path):
    return {i["case"] for i in read_jsonl(path) if UNRUNNABLE in i}


def test_simulations_are_reported_apart_from_measurements(client):
    everything = client.get("/api/v1/reports").json()
    simulated = [r for r in everything["rows"] if r["device"] == "meta"]
    assert len(simulated) >= len(measurements_in(SIMULATIONS))
    assert everything["accuracy"]["methods"]["all"]["ours"]["n"] == len(everything["rows"]) - len(simulated)
    assert everything["accuracy_simulated"]["methods"]["all"]["ours"]["n"] == len(simulated)
    html = client.get("/reports?device=meta").text
    assert 'id="simulated-accuracy-table"' in html and "Simulated (GiB)" in html


def test_one_plan_measured_on_several_devices_is_shown_side_by_side(client):
    """A fleet measures one plan on each device kind; the reports group them (the CUDA row here is
    a shipped CPU measurement relabelled: the grouping, not the numbers, is under test)."""
    cpu = next(item for item in read_jsonl(VALIDATION) if item["request"]["method"] == "lora")
    gpu = {**cpu, "case": cpu["case"] + " on H100", "device_kind": "cuda.h100-80gb-hbm3",
           "request": {**cpu["request"], "device": "cuda"},
           "environment": {**cpu["environment"], "device": "cuda", "device_name": "NVIDIA H100 80GB HBM3"},
           "measured": {**cpu["measured"], "peak_allocated_bytes": cpu["measured"]["peak_allocated_bytes"] + 2**20}}
    client.app.state.db.add_measurements([("fleet-test:gpu", "fleet-test", "", gpu)])
    doc = client.get("/api/v1/reports").json()["by_device"]
    assert "cpu" in doc["kinds"] and "cuda.h100-80gb-hbm3" in doc["kinds"]
    plan = next(p for p in doc["plans"] if "cuda.h100-80gb-hbm3" in p["devices"])
    assert plan["request"]["model"] == cpu["request"]["model"] and "device" not in plan["request"]
    assert plan["devices"]["cuda.h100-80gb-hbm3"]["measured_bytes"] == cpu["measured"]["peak_allocated_bytes"] + 2**20
    assert plan["devices"]["cpu"]["measured_bytes"] == cpu["measured"]["peak_allocated_bytes"]
    only_gpu = client.get("/api/v1/reports?device_kind=cuda.h100-80gb-hbm3").json()
    assert [r["case"] for r in only_gpu["rows"]] == [gpu["case"]] and only_gpu["by_device"]["plans"] == []
    html = client.get("/reports").text
    assert 'id="by-device"' in html and "cuda.h100-80gb-hbm3" in html


def test_each_measurement_is_estimated_once_and_new_ones_appear(tmp_path, monkeypatch):
    from tunefit.app.core.db import Database
    from tunefit.app.reports import data as reports

    db = Database(f"sqlite:///{tmp_path / 'reports.db'}")
    stored = reports.import_jsonl(db)
    calls = []
    real_to_row = reports.to_row
    monkeypatch.setattr(reports, "to_row", lambda *args: calls.append(args[0]) or real_to_row(*args))
    first = reports.rows(db)
    assert reports.rows(db) == first and len(calls) == stored
    db.add_measurements([("job:new", "job", "", {**db.measurements()[0].result, "case": "new one"})])
    latest = reports.rows(db)
    assert len(calls) == stored + 1 and latest[:-1] == first and latest[-1].case == "new one"
    assert reports.rows(Database(f"sqlite:///{tmp_path / 'other.db'}")) == []  # caches are per database


def test_the_report_document_is_made_again_only_when_measurements_are_added(tmp_path, monkeypatch):
    import orjson

    from tunefit.app.core.db import Database
    from tunefit.app.reports import data as reports
    from tunefit.app.reports import documents as report_views

    db = Database(f"sqlite:///{tmp_path / 'reports.db'}")
    reports.import_jsonl(db)
    made = []
    real = report_views.report_document
    monkeypatch.setattr(report_views, "report_document", lambda rows, f, *rest: made.append(f) or real(rows, f, *rest))
    first = report_views.report_json(db, {"method": "lora"})
    assert report_views.report_json(db, {"method": "lora"}, max_age_s=0) == first and len(made) == 1
    assert orjson.loads(first) == real(reports.rows(db), {"method": "lora"})
    report_views.report_json(db, {"method": "full"})
    assert len(made) == 2  # other filters, another document
    lora = next(m.result for m in db.measurements() if m.result["request"]["method"] == "lora")
    elsewhere = Database(f"sqlite:///{tmp_path / 'reports.db'}")  # another process, as a fleet worker is
    elsewhere.add_measurements([("job:later", "job", "", {**lora, "case": "added later"})])
    assert report_views.report_json(db, {"method": "lora"}, max_age_s=60) == first  # read a moment ago
    again = orjson.loads(report_views.report_json(db, {"method": "lora"}, max_age_s=0))
    assert len(made) == 3 and again["rows"][-1]["case"] == "added later"
    db.add_measurements([("job:here", "job", "", {**lora, "case": "added here"})])
    here = orjson.loads(report_views.report_json(db, {"method": "lora"}, max_age_s=60))  # this process: at once
    assert len(made) == 4 and here["rows"][-1]["case"] == "added here"
