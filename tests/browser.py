"""Headless Chromium (Debian's `chromium` and `chromium-driver`) driven by Selenium, for page tests.

Nothing is downloaded at test time: the driver is the system's /usr/bin/chromedriver. Where it is
missing the test fails in CI (scripts/setup-system installs it) and skips only outside CI.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def require_chromium() -> None:
    if os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER):
        return
    message = "Debian's chromium and chromium-driver are needed (scripts/setup-system installs them)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@contextmanager
def chromium(
    *, width: int = 1280, height: int = 900, offline: bool = False, downloads: Path | None = None
) -> Iterator[webdriver.Chrome]:
    """A fresh headless Chromium with an empty profile. `offline` blocks every host but loopback;
    `downloads` is where downloaded files go (without asking)."""
    require_chromium()
    profile = tempfile.mkdtemp(prefix="chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--window-size={width},{height}",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    if offline:
        # Every name but localhost resolves nowhere: a page that needs a CDN stays blank.
        options.add_argument("--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1")
    if downloads is not None:
        options.add_experimental_option(
            "prefs",
            {
                "download.default_directory": str(downloads),
                "download.prompt_for_download": False,
                "safebrowsing.enabled": False,
            },
        )
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
