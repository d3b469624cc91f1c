"""Recent plans are the asking browser's own, and bounded: one client's pasted config is never shown
to another, repeated views are one row, storage is capped per client and in all, and page views past
a client's plan rate are still answered but not stored. A database from before owners gets the
column and shows its old, ownerless plans to nobody."""

import json
import sqlite3

import pytest
from fastapi.testclient import TestClient

from tests.estimator.tiny_configs import TINY_CONFIGS
from tunefit.app.core.clients import COOKIE
from tunefit.app.core.config import Settings
from tunefit.app.core.db import Database
from tunefit.app.main import create_app

SECRET = "only_its_author_should_read_this"  # one word: it shows as is in the link's query string


def _plan(seq_len: int, **extra) -> dict[str, str]:
    return {"model": "llama-2-7b", "method": "qlora", "seq_len": str(seq_len), "submitted": "1", **extra}


def _secret_plan() -> dict[str, str]:
    config = {**TINY_CONFIGS["llama-gqa"], "secret_note": SECRET}
    return {"config": json.dumps(config), "method": "lora", "submitted": "1"}


@pytest.fixture
def app(tmp_path):
    return create_app(Settings(data_dir=tmp_path, run_worker=False, plans_per_client=5, max_stored_plans=12,
                               plan_rate_per_minute=1, plan_rate_burst=20))


def _browser(app) -> TestClient:
    return TestClient(app, raise_server_exceptions=False)


def test_a_plan_is_shown_to_its_browser_only(app):
    with _browser(app) as author, _browser(app) as other:
        assert author.get("/", params=_secret_plan()).status_code == 200
        assert COOKIE in author.cookies
        assert SECRET in author.get("/").text  # the author's recent plans link to it
        assert SECRET not in other.get("/").text


def test_a_forged_or_missing_cookie_gets_a_fresh_id(app):
    with _browser(app) as author:
        author.get("/", params=_secret_plan())
    with _browser(app) as guesser:
        guesser.cookies.set(COOKIE, "0" * 32)
        assert SECRET not in guesser.get("/").text
        guesser.cookies.set(COOKIE, "<script>")
        page = guesser.get("/")
        assert SECRET not in page.text and page.cookies.get(COOKIE) not in (None, "<script>")


def test_repeated_views_are_one_row_and_storage_is_capped(app):
    db: Database = app.state.db
    with _browser(app) as one:
        for _ in range(3):
            one.get("/", params=_plan(100))
        assert db.count_plans() == 1
        for seq in range(101, 111):
            one.get("/", params=_plan(seq))
        assert db.count_plans() == 5  # plans_per_client
        assert "seq 110" in one.get("/").text and "seq 101" not in one.get("/").text
    for n in range(3):
        with _browser(app) as another:
            for seq in range(200 + 10 * n, 205 + 10 * n):
                another.get("/", params=_plan(seq))
    assert db.count_plans() == 12  # max_stored_plans: the oldest went


def test_views_past_the_plan_rate_are_answered_but_not_stored(tmp_path):
    app = create_app(Settings(data_dir=tmp_path, run_worker=False, plan_rate_per_minute=1, plan_rate_burst=3))
    with _browser(app) as flood:
        assert all(flood.get("/", params=_plan(300 + i)).status_code == 200 for i in range(10))
    assert app.state.db.count_plans() == 3


def test_an_older_database_gets_the_owner_column_and_hides_its_plans(tmp_path):
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as old:  # the plans table as versions before owners made it
        old.execute("CREATE TABLE plans (id INTEGER PRIMARY KEY, created_at DATETIME, query TEXT, "
                    "label VARCHAR(200), peak_bytes INTEGER)")
        old.execute("INSERT INTO plans (created_at, query, label, peak_bytes) "
                    "VALUES ('2026-01-01 00:00:00', 'model=x', 'an old plan', 1)")
    app = create_app(Settings(data_dir=tmp_path, database_url=f"sqlite:///{path}", run_worker=False))
    with _browser(app) as browser:
        assert "an old plan" not in browser.get("/").text
        assert browser.get("/", params=_plan(400)).status_code == 200
        assert "seq 400" in browser.get("/").text
