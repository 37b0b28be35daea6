"""The web page in headless Chromium against a live server on a seeded database: sign in, estimate,
create a small export and a background one, cancel one, watch one complete, download both and
compare them byte for byte with `sealexports export`, and see a 422 in words.

The server runs no workers (`SEALEXPORTS_WORKERS=0`) so that a background job waits to be
cancelled; a `sealexports worker` started later runs the next one. Screenshots go to the test's
folder, or to $SEALEXPORTS_SCREENSHOTS (docs/ keeps them: `SEALEXPORTS_SCREENSHOTS=docs`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal, TypeVar

import pytest
import requests
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import Select, WebDriverWait

from sealexports.jobs.lifecycle import transition
from sealexports.storage.accounts import create_key
from sealexports.storage.database import connect
from sealexports.storage.export_jobs import Status, set_progress
from tests import live
from tests.browser import chromium
from tests.conftest import seed_demo

T = TypeVar("T")
SYNC_ROW_LIMIT = 100
WAIT = 20


def wait_for(driver: WebDriver, what: Callable[[WebDriver], Literal[False] | T], timeout: float = WAIT) -> T:
    """`what(driver)` once it is not False (selenium polls it)."""
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.05).until(what)
    except TimeoutException:
        raise AssertionError(f"timed out; the page says: {by_id(driver, 'status').text!r}") from None


def by_id(driver: WebDriver, id_: str) -> WebElement:
    return driver.find_element(By.ID, id_)


def jobs(driver: WebDriver) -> dict[int, str]:
    """The list as shown: each job's number and status, read in one go (the list redraws)."""
    rows = driver.execute_script(
        "return [...document.querySelectorAll('#job-list li.job')].map(li => ["
        "li.querySelector('.job-title').textContent, li.className])"
    )
    return {int(title.split()[0][1:]): cls.split("status-")[1] for title, cls in rows}


def item(driver: WebDriver, number: int) -> WebElement:
    return next(
        li
        for li in driver.find_elements(By.CSS_SELECTOR, "#job-list li.job")
        if li.find_element(By.CSS_SELECTOR, ".job-title").text.startswith(f"#{number} ")
    )


def status_of(driver: WebDriver, number: int) -> str | None:
    return jobs(driver).get(number)


def newest_number(driver: WebDriver) -> int:
    return max(jobs(driver), default=0)


def cli_export(db: Path, out: Path, *args: str) -> bytes:
    subprocess.run(
        [sys.executable, "-m", "sealexports", "--db", str(db), "export", "--site", "demo", *args,
         "-o", str(out), "--silent"],
        check=True,
    )  # fmt: skip
    return out.read_bytes()


def downloaded(folder: Path, name: str) -> bytes:
    path = folder / name
    deadline = time.monotonic() + WAIT
    while not path.exists() or any(folder.glob("*.crdownload")):
        assert time.monotonic() < deadline, f"{name} was not downloaded: {sorted(os.listdir(folder))}"
        time.sleep(0.05)
    return path.read_bytes()


def screenshot(driver: WebDriver, tmp_path: Path, name: str, width: int) -> None:
    """The whole page at `width` (the window grows to the page's height)."""
    driver.set_window_size(width, 900)
    height, chrome = driver.execute_script(
        "return [document.documentElement.scrollHeight, window.outerHeight - window.innerHeight]"
    )
    driver.set_window_size(width, int(height) + int(chrome))
    driver.execute_script("window.scrollTo(0, 0)")
    folder = Path(os.environ.get("SEALEXPORTS_SCREENSHOTS") or tmp_path)
    driver.save_screenshot(str(folder / name))


@pytest.fixture
def seeded(tmp_path: Path) -> tuple[Path, str]:
    db = seed_demo(tmp_path / "ui.db")
    conn = connect(db.path)
    key = create_key(conn, "demo")
    conn.close()
    return db.path, key


def test_create_watch_cancel_and_download_in_the_browser(
    seeded: tuple[Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db, key = seeded
    env = {"SEALEXPORTS_SYNC_ROW_LIMIT": str(SYNC_ROW_LIMIT), "SEALEXPORTS_WORKERS": "0"}
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    worker: subprocess.Popen[bytes] | None = None
    with live.running(db, tmp_path, env=env) as server, chromium(downloads=downloads, offline=True) as driver:
        try:
            driver.get(server.url + "/")
            assert driver.current_url == server.url + "/ui"

            # A wrong key: refused in words, and nothing kept.
            by_id(driver, "key").send_keys("sm_not-a-key")
            by_id(driver, "key").submit()
            error = wait_for(driver, lambda d: by_id(d, "key-error").text)
            assert "not accepted" in error and "401" not in error
            assert driver.execute_script("return sessionStorage.length") == 0

            # Sign in (Enter in the field): the key stays in sessionStorage, out of every URL.
            by_id(driver, "key").clear()
            by_id(driver, "key").send_keys(key + "\n")
            wait_for(driver, lambda d: by_id(d, "create").is_displayed() and by_id(d, "site").text)
            assert driver.execute_script("return sessionStorage.getItem('sealexports.key')") == key
            assert key not in driver.current_url
            assert by_id(driver, "key").get_attribute("value") == ""
            # The estimate follows the form without being asked (here: the last 30 days of sources).
            wait_for(driver, lambda d: by_id(d, "estimate-out").text.startswith("Estimate: about"))

            # A small export: sources from Spain over all the data, estimated then created.
            driver.find_element(By.CSS_SELECTOR, "[data-range=all]").click()
            date_from = by_id(driver, "date_from").get_attribute("value") or ""
            date_to = by_id(driver, "date_to").get_attribute("value") or ""
            assert (date_from, date_to) == ("2025-03-16", "2025-04-06")  # the seeded span, in Madrid days
            Select(by_id(driver, "export_type")).select_by_value("sources")
            by_id(driver, "add-filter").click()
            value = driver.find_element(By.CSS_SELECTOR, ".filter-row .filter-value")
            options = wait_for(
                driver, lambda d: d.find_elements(By.CSS_SELECTOR, ".filter-row datalist option")
            )
            assert "ES" in [o.get_attribute("value") for o in options]  # the picker offers the values
            value.send_keys("ES")
            by_id(driver, "estimate").click()
            estimate = wait_for(
                driver,
                lambda d: (
                    by_id(d, "estimate-out").text.startswith("Estimate:") and by_id(d, "estimate-out").text
                ),
            )
            assert "ready at once" in estimate
            by_id(driver, "create-button").click()
            wait_for(driver, lambda d: status_of(d, newest_number(d)) == "completed")
            small = newest_number(driver)

            # A background export: every conversion, as JSON. Nothing runs it yet: cancel it.
            driver.find_element(By.CSS_SELECTOR, ".remove-filter").click()
            Select(by_id(driver, "export_type")).select_by_value("conversions")
            Select(by_id(driver, "format")).select_by_value("json")
            by_id(driver, "estimate").click()
            estimate = wait_for(
                driver,
                lambda d: "background" in by_id(d, "estimate-out").text and by_id(d, "estimate-out").text,
            )
            by_id(driver, "create-button").click()
            wait_for(driver, lambda d: newest_number(d) > small)
            cancelled = newest_number(driver)
            assert status_of(driver, cancelled) == "pending"
            li = item(driver, cancelled)
            assert li.find_element(By.TAG_NAME, "progress").is_displayed()
            li.find_element(By.CSS_SELECTOR, ".remove-job").click()
            wait_for(driver, lambda d: cancelled not in jobs(d))
            assert f"Export #{cancelled} cancelled." == by_id(driver, "status").text
            assert by_id(driver, "jobs-title") == driver.switch_to.active_element  # focus moves on

            # Again, and this time the test moves the job along as a worker would: the page follows
            # its progress, then shows why it failed.
            by_id(driver, "create-button").click()
            wait_for(driver, lambda d: len(jobs(d)) == 2)  # (SQLite may give it the cancelled one's number)
            failing = newest_number(driver)
            job_id = item(driver, failing).get_attribute("data-job-id") or ""
            conn = connect(db, migrate=False)
            try:
                transition(conn, job_id, Status.PENDING, Status.ESTIMATING)
                transition(conn, job_id, Status.ESTIMATING, Status.GENERATING)
                set_progress(conn, job_id, 40)
                wait_for(driver, lambda d: status_of(d, failing) == "generating")
                bar = item(driver, failing).find_element(By.TAG_NAME, "progress")
                assert (bar.get_attribute("value"), bar.get_attribute("aria-label")) == (
                    "40",
                    f"Progress of export #{failing}",
                )
                assert "40%" in item(driver, failing).text
                by_id(driver, "add-filter").click()  # for the picture: a filter with its suggestions
                Select(driver.find_element(By.CSS_SELECTOR, ".filter-key")).select_by_value("device_type")
                wait_for(driver, lambda d: "value" in d.find_element(By.CSS_SELECTOR, ".filter-hint").text)
                driver.find_element(By.CSS_SELECTOR, ".filter-value").send_keys("mobile")
                by_id(driver, "estimate").click()
                wait_for(driver, lambda d: by_id(d, "estimate-out").text.startswith("Estimate:"))
                screenshot(driver, tmp_path, "ui.png", 1280)
                screenshot(driver, tmp_path, "ui-phone.png", 390)
                driver.set_window_size(1280, 900)
                unlabelled = driver.execute_script(
                    "return [...document.querySelectorAll('input, select, button, progress, a')]"
                    ".filter(e => e.offsetParent !== null && !(e.labels && e.labels.length)"
                    " && !e.getAttribute('aria-label') && !e.textContent.trim()).map(e => e.outerHTML)"
                )
                assert unlabelled == []  # every control a screen reader meets has a name
                driver.find_element(By.CSS_SELECTOR, ".remove-filter").click()
                transition(conn, job_id, Status.GENERATING, Status.FAILED, error_message="the disk is full")
            finally:
                conn.close()
            wait_for(driver, lambda d: status_of(d, failing) == "failed")
            assert "The export failed: the disk is full" in item(driver, failing).text
            assert by_id(driver, "status").text == f"Export #{failing} failed: the disk is full"

            # Once more, left waiting; then a worker runs it while the page watches.
            by_id(driver, "create-button").click()
            wait_for(driver, lambda d: len(jobs(d)) == 3)
            background = newest_number(driver)
            assert status_of(driver, background) == "pending"
            seen: set[str] = set()
            worker = subprocess.Popen(
                [sys.executable, "-m", "sealexports", "--db", str(db), "worker"],
                env={**os.environ, "SEALEXPORTS_EXPORTS_DIR": str(tmp_path / "exports"),
                     "SEALEXPORTS_PUBLIC_URL": server.url},
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            started = time.monotonic()

            def completed(d: WebDriver) -> bool:
                status = status_of(d, background) or "gone"
                seen.add(status)  # pending, generating, completed
                return status == "completed"

            wait_for(driver, completed)
            with capsys.disabled():
                took = time.monotonic() - started
                print(f"\nbackground export done {took:.1f} s after the worker started; seen: {sorted(seen)}")
            assert f"Export #{background} is ready to download." == by_id(driver, "status").text

            # Download both through the browser; the same bytes as the command line.
            dates = ["--from", date_from, "--to", date_to]
            expected = {
                small: cli_export(
                    db, tmp_path / "s.csv", "--type", "sources", *dates, "--filter", "country=ES"
                ),
                background: cli_export(
                    db, tmp_path / "c.json", "--type", "conversions", *dates, "--format", "json"
                ),
            }
            span = f"{date_from}_{date_to}".replace("-", "")
            names = {
                small: f"sealmetrics_sources_{span}.csv",
                background: f"sealmetrics_conversions_{span}.json",
            }
            for number, name in names.items():
                li = item(driver, number)
                assert "The link expires" in li.text
                li.find_element(By.CSS_SELECTOR, "a.download").click()
                assert downloaded(downloads, name) == expected[number], name
            assert expected[background].count(b'"conversion_type"') > SYNC_ROW_LIMIT  # truly a background one

            # Bad input: the 422 in words, under the field it is about.
            by_id(driver, "advanced").send_keys("path:bogus:/blog/")
            by_id(driver, "estimate").click()
            message = wait_for(
                driver,
                lambda d: by_id(d, "advanced-error").is_displayed() and by_id(d, "advanced-error").text,
            )
            assert message.startswith("Unknown operator 'bogus'") and "422" not in message
            assert by_id(driver, "advanced").get_attribute("aria-invalid") == "true"
            assert by_id(driver, "advanced") == driver.switch_to.active_element
            assert "is-error" in (by_id(driver, "status").get_attribute("class") or "")

            # Delete the small one from the list; the API agrees it is gone.
            li = item(driver, small)
            small_id = li.get_attribute("data-job-id")
            assert small_id
            li.find_element(By.CSS_SELECTOR, ".remove-job").click()
            wait_for(driver, lambda d: small not in jobs(d))
            r = requests.get(
                f"{server.api}/exports/{small_id}",
                params={"site_id": "demo"},
                headers={"X-API-Key": key},
                timeout=5,
            )
            assert r.status_code == 404

            expected_refusals = ("status of 401", "status of 422")  # the wrong key, the bad filter
            log = driver.get_log("browser")  # type: ignore[no-untyped-call]  # selenium leaves it unannotated
            errors = [
                e
                for e in log
                if e["level"] == "SEVERE" and not any(r in e["message"] for r in expected_refusals)
            ]
            assert errors == []  # no CSP violation, no script error, no other failed request
        finally:
            if worker is not None:
                worker.send_signal(signal.SIGTERM)
                worker.wait(timeout=30)
        server.stop()
    log = server.log.read_text()
    assert '"POST /api/v1/exports/estimate' in log  # the access log is on, and yet:
    assert key not in log  # the key is never logged
