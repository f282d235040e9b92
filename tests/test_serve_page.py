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
                 "--no-first-run", "--window-size=1000,640", f"--user-data-dir={profile}"):
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


def test_the_page_searches_a_class_and_shows_its_image_and_time(bundle, pipe, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import Select, WebDriverWait

    server = Server(bundle)
    try:
        browser.get(server.url + "/")
        wait = WebDriverWait(browser, 60)
        wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1")
        assert "mar-tiny" in browser.find_element(By.ID, "model").text
        classes = Select(browser.find_element(By.ID, "class"))
        assert len(classes.options) == 10
        browser.find_element(By.ID, "search").send_keys("sev")  # searchable: only "7: seven" is left
        assert [o.text for o in classes.options] == ["7: seven"]
        assert Select(browser.find_element(By.ID, "plan")).first_selected_option.get_attribute("value") == "gtr"
        seed = browser.find_element(By.ID, "seed")
        seed.clear()
        seed.send_keys("3")
        browser.find_element(By.ID, "go").click()
        took = wait.until(EC.presence_of_element_located((By.ID, "took")))
        assert "seven (class 7), seed 3, plan gtr" in took.text and " s (sampling" in took.text
        src = browser.find_element(By.ID, "image").get_attribute("src")
        assert src.startswith("data:image/png;base64,")
        assert browser.execute_script("return document.getElementById('image').naturalWidth") == 32
        shown = np.asarray(Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).convert("RGB"))
        assert close(shown, pipe.generate([7], seed=3, progress=False)[0])  # the pipeline's image for it
        # a bad value is shown as the server's one-line error, not a broken page
        seed.clear()
        seed.send_keys("99999999999999999999")  # over 2^63: the server's 422
        browser.find_element(By.ID, "go").click()
        error = wait.until(EC.presence_of_element_located((By.ID, "error")))
        assert "seed" in error.text
        if os.environ.get("GTR_SERVE_SCREENSHOT"):
            seed.clear()
            seed.send_keys("3")
            browser.find_element(By.ID, "go").click()
            wait.until(EC.presence_of_element_located((By.ID, "took")))
            browser.execute_script("window.scrollTo(0, 0); document.activeElement.blur()")
            browser.save_screenshot(os.environ["GTR_SERVE_SCREENSHOT"])
    finally:
        server.stop()
