"""A real browser: headless Chromium (Debian's package, installed by .ci/run) fills and submits the form.

The screenshot is kept as a test artifact in ``test-artifacts/`` (or ``$TUNEFIT_ARTIFACTS``).
"""

import os
import shutil
import threading
import time
from pathlib import Path

import pytest
import uvicorn

from tests.app.processes import free_port
from tunefit.app.core.config import Settings
from tunefit.app.main import create_app

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ROOT = Path(__file__).resolve().parents[3]
ARTIFACTS = Path(os.environ.get("TUNEFIT_ARTIFACTS", ROOT / "test-artifacts"))
# TUNEFIT_UPDATE_DOCS=1: the desktop verdict screenshot also becomes README's picture
README_SCREENSHOT = ROOT / "docs" / "img" / "result-page.png"


@pytest.fixture(scope="module")
def live_server(tmp_path_factory):
    port = free_port()
    app = create_app(Settings(data_dir=tmp_path_factory.mktemp("browser-data")))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    for binary in (CHROMIUM, CHROMEDRIVER):
        assert shutil.which(binary), (f"{binary} missing: install Debian's chromium and chromium-driver "
                                      "(bash .ci/run does)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    # The machine has no network: keep Chromium from calling home at start.
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1280,2400", f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def test_fill_the_form_for_llama_2_7b_qlora(live_server, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    browser.get(live_server + "/")
    model = browser.find_element(By.ID, "model")
    model.clear()
    model.send_keys("llama-2-7b")
    Select(browser.find_element(By.ID, "method")).select_by_value("qlora")
    rank = browser.find_element(By.ID, "r")
    rank.clear()
    rank.send_keys("16")
    browser.find_element(By.ID, "all_linear").click()
    for field, value in (("batch_size", "1"), ("seq_len", "512")):
        box = browser.find_element(By.ID, field)
        box.clear()
        box.send_keys(value)
    Select(browser.find_element(By.ID, "gpu")).select_by_value("rtx-4090")
    browser.find_element(By.ID, "submit").click()

    WebDriverWait(browser, 30).until(lambda d: d.find_elements(By.ID, "result"))
    assert "method=qlora" in browser.current_url and "all_linear=on" in browser.current_url  # shareable
    peak = browser.find_element(By.ID, "peak").text
    assert peak.endswith("GiB") and float(peak.split()[0].replace(",", "")) > 0
    rows = browser.find_elements(By.CSS_SELECTOR, "#gpu-table tbody tr")
    assert len(rows) >= 20
    assert browser.find_elements(By.CSS_SELECTOR, "#gpu-table tr.chosen")  # the chosen GPU is marked
    assert len(browser.find_elements(By.CSS_SELECTOR, "svg.chart rect.segment")) >= 5
    assert len(browser.find_elements(By.CSS_SELECTOR, "#compare-table tbody tr")) == 3
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "plan-llama-2-7b-qlora.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000


def test_picking_another_model_refreshes_the_module_boxes(live_server, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(live_server + "/")
    model = browser.find_element(By.ID, "model")
    model.clear()
    model.send_keys("phi-3-mini-4k")
    browser.find_element(By.ID, "r").click()  # leaving the field fires "change"
    WebDriverWait(browser, 15).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, '#module-boxes input[value="qkv_proj"]'))


def test_result_page_fits_a_phone_screen(live_server, browser):
    """At 390 px (a phone) nothing but the wide tables (which scroll in their own box) overflows."""
    from selenium.webdriver.common.by import By

    browser.set_window_size(390, 844)
    try:
        browser.get(live_server + "/?submitted=1&model=llama-2-7b&method=qlora&r=16&double_quant=on")
        assert browser.find_elements(By.ID, "result")
        page_width = browser.execute_script("return document.documentElement.scrollWidth")
        viewport = browser.execute_script("return window.innerWidth")
        assert page_width <= viewport, (page_width, viewport)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(ARTIFACTS / "plan-phone-width.png"))
    finally:
        browser.set_window_size(1280, 2400)


def test_i_train_with_a_recipe_fills_the_form_with_its_defaults(live_server, browser):
    """Picking "I train with: qlora-paper" sets the controls to the QLoRA paper's setup; submitted,
    the estimate is that recipe's and says so."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    browser.get(live_server + "/")
    Select(browser.find_element(By.ID, "recipe")).select_by_value("trl-dpo")
    assert Select(browser.find_element(By.ID, "loss")).first_selected_option.get_attribute("value") == "chunked"
    assert Select(browser.find_element(By.ID, "objective")).first_selected_option.get_attribute("value") == "dpo"
    # the recipe's bf16 adapters are for QLoRA only: left to the recipe ("default")
    assert Select(browser.find_element(By.ID, "adapter_dtype")).first_selected_option.get_attribute("value") == ""
    # picked next, a recipe that leaves the loss and the objective out puts them back to their defaults
    Select(browser.find_element(By.ID, "recipe")).select_by_value("qlora-paper")
    assert Select(browser.find_element(By.ID, "loss")).first_selected_option.get_attribute("value") == ""
    assert Select(browser.find_element(By.ID, "objective")).first_selected_option.get_attribute("value") == "sft"
    assert browser.find_element(By.ID, "r").get_attribute("value") == "64"
    assert Select(browser.find_element(By.ID, "optimizer")).first_selected_option.get_attribute("value") == \
        "paged_adamw"
    assert Select(browser.find_element(By.ID, "autocast")).first_selected_option.get_attribute("value") == "bf16"
    assert browser.find_element(By.ID, "all_linear").is_selected()
    browser.find_element(By.ID, "submit").click()
    WebDriverWait(browser, 30).until(lambda d: d.find_elements(By.ID, "result"))
    assert "recipe=qlora-paper" in browser.current_url
    assert "recipe qlora-paper:" in browser.find_element(By.ID, "assumptions").text


HEADLINE_PLAN = ("/?submitted=1&recipe=none&model=llama-3-8b&method=qlora&r=16&all_linear=on&double_quant=on"
                 "&batch_size=4&seq_len=2048&gpu=rtx-4090")
FIRST_SCREEN_PX = 900


@pytest.mark.parametrize("width", [1400, 400], ids=["desktop", "phone"])
def test_the_verdict_is_on_the_first_screen_and_a_suggestion_leads_to_a_plan_that_fits(live_server, browser, width):
    """The headline plan under the libraries' defaults: does not fit an RTX 4090, by how much, the
    largest batch - all within the first 900 px; the first suggestion's link is a plan that fits."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.set_window_size(width, FIRST_SCREEN_PX)
    try:
        browser.get(live_server + HEADLINE_PLAN)
        sentence = browser.find_element(By.CSS_SELECTOR, "#verdict .sentence")
        text = sentence.text
        assert text.startswith("Does not fit an NVIDIA GeForce RTX 4090") and "short" in text
        assert "Largest micro-batch that fits: 3" in text
        bottom = browser.execute_script("return arguments[0].getBoundingClientRect().bottom", sentence)
        assert bottom <= FIRST_SCREEN_PX, bottom
        first = browser.find_element(By.CSS_SELECTOR, "#verdict ol.suggestions a")
        top = browser.execute_script("return arguments[0].getBoundingClientRect().top", first)
        assert top <= FIRST_SCREEN_PX, top
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shot = ARTIFACTS / f"verdict-{width}px.png"
        assert browser.save_screenshot(str(shot))
        if width == 1400 and os.environ.get("TUNEFIT_UPDATE_DOCS") == "1":
            shutil.copyfile(shot, README_SCREENSHOT)
        first.click()
        WebDriverWait(browser, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#verdict .sentence"))
        assert browser.find_element(By.CSS_SELECTOR, "#verdict .sentence").text.startswith(
            "Fits an NVIDIA GeForce RTX 4090")
    finally:
        browser.set_window_size(1280, 2400)


def test_the_api_docs_render_without_the_internet(live_server, browser):
    """Chromium here has no network: Swagger UI renders only if its assets come from the service."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(live_server + "/docs")
    WebDriverWait(browser, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".swagger-ui .info .title"))
    assert "tunefit" in browser.find_element(By.CSS_SELECTOR, ".swagger-ui .info .title").text
    assert browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")  # the operations are listed


@pytest.mark.parametrize("width,path", [(1400, "/reports"), (400, HEADLINE_PLAN)],
                         ids=["reports-desktop", "plan-phone"])
def test_no_horizontal_scroll(live_server, browser, width, path):
    """The reports' table (formula, simulated, measured, error) fits 1400 px; the result page 400 px."""
    browser.set_window_size(width, FIRST_SCREEN_PX)
    try:
        browser.get(live_server + path)
        page = browser.execute_script("return document.documentElement.scrollWidth")
        assert page <= browser.execute_script("return window.innerWidth"), page
        if path == "/reports":
            wide = browser.execute_script("return [...document.querySelectorAll('#report-rows')]"
                                          ".map(t => t.scrollWidth - t.parentElement.clientWidth)")
            assert wide and max(wide) <= 0, wide
    finally:
        browser.set_window_size(1280, 2400)
