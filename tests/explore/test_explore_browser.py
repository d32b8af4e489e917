"""``pairless explore`` end to end in headless Debian chromium: start the server on a free port, pick a
held-out sample, generate with both runs, see their images and the zero-shot mark; every file the page
loaded came from the server itself (nothing fetched from the network).

Needs /usr/bin/chromium and /usr/bin/chromedriver (``apt-get install chromium chromium-driver``; ``make
test`` installs them) and selenium (the ``dev`` extra). Outside CI a missing browser skips the test with
the reason; in CI (``CI=true``) it fails. ``PAIRLESS_SCREENSHOT=PATH`` writes a screenshot of the page;
``PAIRLESS_EXPLORE_RESULTS=FOLDER`` explores that results folder instead of the micro demo (README's
screenshot: ``PAIRLESS_EXPLORE_RESULTS=results/demo PAIRLESS_SCREENSHOT=docs/explore.png``).
"""

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
TIMEOUT = 120  # seconds for the server to start and for each step of the page (a loaded 2-core machine)


def _browser():
    """Selenium's modules, after checking the browser is there (a skip outside CI, a failure in CI)."""
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.is_file()]
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        missing.append("the selenium package (pip install -e '.[dev]')")
    if missing:
        reason = (f"the browser test needs {', '.join(missing)}: apt-get install chromium chromium-driver "
                  "(`make test` does)")
        if os.environ.get("CI", "").lower() in ("true", "1"):
            pytest.fail(reason)
        pytest.skip(reason)
    return webdriver, Service


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def server(request, tmp_path):
    """The URL of a running ``pairless explore`` (stopped after the test)."""
    given = os.environ.get("PAIRLESS_EXPLORE_RESULTS")
    results = Path(given) if given else request.getfixturevalue("demo_results")
    port = _free_port()
    log = tmp_path / "server.log"
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "GRADIO_TEMP_DIR": str(tmp_path / "gradio")}
    # the installed command as a user runs it (-m pairless would import a pairless/ in the current folder)
    script = Path(sys.executable).with_name("pairless")
    command = [str(script)] if script.is_file() else [sys.executable, "-m", "pairless"]
    command += ["explore", str(results), "--port", str(port), "--threads", "1"]
    with open(log, "wb") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=environment)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + TIMEOUT
        while True:
            if process.poll() is not None:
                pytest.fail(f"pairless explore exited ({process.returncode}):\n{log.read_text()}")
            try:
                with urllib.request.urlopen(url, timeout=5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"pairless explore did not answer {url} in {TIMEOUT} s:\n{log.read_text()}")
                time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_pick_a_sample_generate_and_see_the_outputs(server):
    webdriver, Service = _browser()
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=1400,1700"):
        options.add_argument(argument)
    # the driver is given, so Selenium Manager never looks for one on the network
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        driver.get(server)
        wait = WebDriverWait(driver, TIMEOUT)
        wait.until(lambda page: page.find_elements(By.CSS_SELECTOR, "#explore-sample img"))
        assert "never in one training sample" in driver.find_element(By.ID, "explore-never-seen").text

        index = driver.find_element(By.CSS_SELECTOR, "#explore-sample-index input")
        index.clear()
        index.send_keys("3")
        driver.find_element(By.ID, "explore-show-sample").click()
        wait.until(lambda page: "sample 3 " in page.find_element(By.ID, "explore-sample-text").text)

        driver.find_element(By.ID, "explore-generate").click()
        wait.until(lambda page: "ZERO-SHOT" in page.find_element(By.ID, "explore-results").text)
        images = "#explore-outputs img"
        wait.until(lambda page: len(page.find_elements(By.CSS_SELECTOR, images)) >= 3)  # truth + 2 runs
        loaded_images = f"return [...document.querySelectorAll('{images}')]" \
            ".every(image => image.complete && image.naturalWidth > 0)"
        wait.until(lambda page: page.execute_script(loaded_images))
        results = driver.find_element(By.ID, "explore-results").text
        assert "zs-rgb-depth" in results and "many-shot" in results and "abs_rel" in results

        loaded = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
        outside = [address for address in loaded if not address.startswith(server.rstrip("/"))]
        assert loaded and not outside, f"the page fetched from outside this machine: {outside}"
        if os.environ.get("PAIRLESS_SCREENSHOT"):  # the whole page: a window as tall as the page
            driver.set_window_size(1400, driver.execute_script("return document.body.scrollHeight") + 120)
            time.sleep(1)  # the galleries lay themselves out again
            driver.save_screenshot(os.environ["PAIRLESS_SCREENSHOT"])
    finally:
        driver.quit()


def test_a_missing_browser_fails_in_ci_and_skips_elsewhere(monkeypatch, tmp_path):
    monkeypatch.setattr(sys.modules[__name__], "CHROMIUM", tmp_path / "no-chromium")
    monkeypatch.setenv("CI", "true")
    # (the driver may be missing too, on a machine where `make test` has not installed them)
    missing = r"no-chromium(, \S+)?: apt-get install chromium chromium-driver"
    with pytest.raises(pytest.fail.Exception, match=missing):
        _browser()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="no-chromium"):
        _browser()
