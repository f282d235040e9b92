"""The web page of gtr serve in a real headless browser: Debian's chromium + chromium-driver, driven by
selenium (installed by .ci/run with apt-get). Skips with the reason where either is missing.

Set GTR_SERVE_SCREENSHOT=PATH to also save a screenshot of the page (docs/serve-screenshot.png is made so).
"""
from __future__ import annotations

import base64
import io
import os
import shutil
import tempfile

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="gtr serve needs the serve extra (pip install 'gtr-mar[serve]')")
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")

from test_serve import Server, bundle, close, pipe  # noqa: E402,F401  (the module fixtures and helpers)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
DRIVER = shutil.which("chromedriver") or next((p for p in ("/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver")
                                               if os.path.exists(p)), None)


@pytest.fixture
def browser():
    if not CHROMIUM or not DRIVER:
        pytest.skip("no chromium / chromedriver here (apt-get install chromium chromium-driver)")
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    profile = tempfile.mkdtemp(prefix="gtr-chromium-")
    options = Options()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--window-size=1100,800", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    try:
        driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    except Exception as e:  # noqa: BLE001 - a browser that cannot start here is a reason to skip
        shutil.rmtree(profile, ignore_errors=True)
        pytest.skip(f"chromium would not start: {str(e).strip().splitlines()[0]}")
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def test_the_page_compares_two_plans_with_progress_times_and_downloads(bundle, pipe, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import Select, WebDriverWait

    server = Server(bundle)
    try:
        browser.get(server.url + "/")
        wait = WebDriverWait(browser, 120)
        wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1")
        assert "mar-tiny" in browser.find_element(By.ID, "model").text
        classes = Select(browser.find_element(By.ID, "class"))
        assert len(classes.options) == 10
        browser.find_element(By.ID, "search").send_keys("sev")  # searchable: only "7: seven" is left
        assert [o.text for o in classes.options] == ["7: seven"]
        # side by side by default: the bundle's first plan and the next one
        assert Select(browser.find_element(By.ID, "plan")).first_selected_option.get_attribute("value") == "gtr"
        assert Select(browser.find_element(By.ID, "plan-b")).first_selected_option.get_attribute("value") == "mar-64"
        for field, value in (("seed", "3"), ("num", "2"), ("temperature", "0.9")):
            box = browser.find_element(By.ID, field)
            box.clear()
            box.send_keys(value)
        # every text the progress line of each run shows, in order (a DOM observer: no timing involved)
        browser.execute_script("""
            window.shown = {a: [], b: []};
            for (const slot of ["a", "b"]) new MutationObserver((records) => records.forEach((r) =>
                r.addedNodes.forEach((n) => window.shown[slot].push(n.textContent)))
            ).observe(document.getElementById("step-" + slot), {childList: true});""")
        browser.find_element(By.ID, "go").click()
        wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "#took-b:not(:empty)")))
        shown = browser.execute_script("return window.shown")
        for slot, plan in (("a", "gtr"), ("b", "mar-64")):
            steps = pipe.plans[plan].num_steps
            run = browser.find_element(By.ID, f"run-{slot}")
            assert run.get_attribute("data-events") == str(steps)  # one event per AR step (one call of 2)
            assert shown[slot] == ["waiting…"] + [f"step {s} / {steps}" for s in range(1, steps + 1)] + ["done"]
            assert browser.find_element(By.ID, f"progress-{slot}").get_attribute("value") == str(steps)
            took = browser.find_element(By.ID, f"took-{slot}").text
            assert " s sampling (" in took and "temperature 0.9" in took and "2 images" in took, took
            want = pipe.generate([7], seed=3, num_images=2, plan=plan, temperature=0.9, progress=False)
            links = run.find_elements(By.CSS_SELECTOR, "a.download")
            assert [a.get_attribute("download") for a in links] == [
                f"mar-tiny-{plan}-class7-seed3-{i}.png" for i in range(2)]
            for link, img, w in zip(links, run.find_elements(By.TAG_NAME, "img"), want):
                href = link.get_attribute("href")
                assert href.startswith("data:image/png;base64,") and img.get_attribute("src") == href
                assert close(np.asarray(Image.open(io.BytesIO(base64.b64decode(href.split(",", 1)[1])))
                                        .convert("RGB")), w)  # the pipeline's image for it
        assert "x faster" in browser.find_element(By.ID, "summary").text
        if os.environ.get("GTR_SERVE_SCREENSHOT"):
            browser.execute_script("window.scrollTo(0, 0); document.activeElement.blur()")
            browser.save_screenshot(os.environ["GTR_SERVE_SCREENSHOT"])
        # a bad value is shown as the server's one-line error, not a broken page
        seed = browser.find_element(By.ID, "seed")
        seed.clear()
        seed.send_keys("99999999999999999999")  # over 2^63: the server's 422
        Select(browser.find_element(By.ID, "plan-b")).select_by_value("")  # one plan alone
        assert browser.find_element(By.ID, "go").text == "Generate"
        browser.find_element(By.ID, "go").click()
        error = wait.until(EC.presence_of_element_located((By.ID, "error-a")))
        assert "seed" in error.text and not browser.find_element(By.ID, "run-b").is_displayed()
    finally:
        server.stop()
