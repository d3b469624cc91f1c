"""bench/load.py runs end to end (a few seconds, a few clients): its report's shape and numbers."""

import importlib.util
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _load():
    sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location("load_bench", BENCH / "load.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["load_bench"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_a_short_load_run_reports_every_kind_without_errors(capsys):
    load = _load()
    report = load.measure(seconds=3, warmup=0.5, clients=8, jobs=False, think_ms=5)
    rows = {r["kind"]: r for r in report["rows"]}
    assert set(load.request_kinds()) <= set(rows) and {"all", "estimates (both kinds)"} <= set(rows)
    assert rows["all"]["requests"] == sum(rows[k]["requests"] for k in load.request_kinds())
    assert rows["all"]["errors"] == 0 and rows["all"]["requests"] > 0
    assert 0 < rows["all"]["p50_ms"] <= rows["all"]["p99_ms"] <= rows["all"]["max_ms"]
    load.print_report(report)
    assert "goal (0 errors" in capsys.readouterr().out
