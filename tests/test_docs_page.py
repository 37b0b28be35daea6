"""The API docs page (/schema) works with no network: Swagger UI comes from the package itself,
pinned, and lists every operation of the OpenAPI document."""

from __future__ import annotations

import os
from pathlib import Path

import requests
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from sealexports.api.docs import ASSETS
from sealexports.storage.database import connect
from tests import live
from tests.browser import chromium

METHODS = {"get", "post", "put", "patch", "delete", "head"}


def test_docs_page_lists_every_operation_offline(tmp_path: Path) -> None:
    db = tmp_path / "docs.db"
    connect(db).close()
    with live.running(db, tmp_path) as server:
        document = requests.get(f"{server.url}/schema/openapi.json", timeout=10).json()
        expected = sorted(
            (method.upper(), path)
            for path, item in document["paths"].items()
            for method in item
            if method in METHODS
        )
        html = requests.get(f"{server.url}/schema", timeout=10).text
        assert "cdn." not in html and "https://" not in html.split("<body>")[0]
        with chromium(offline=True) as browser:
            browser.get(f"{server.url}/schema")
            WebDriverWait(browser, 30).until(
                lambda b: len(b.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")) >= len(expected)
            )
            shown = sorted(
                (
                    block.find_element(By.CSS_SELECTOR, ".opblock-summary-method").text,
                    block.find_element(By.CSS_SELECTOR, ".opblock-summary-path").get_attribute("data-path"),
                )
                for block in browser.find_elements(By.CSS_SELECTOR, ".opblock")
            )
            assert shown == expected
            assert "sealexports" in browser.find_element(By.CSS_SELECTOR, ".info .title").text
            if os.environ.get("SEALEXPORTS_DOCS_SCREENSHOT"):  # how docs/api-docs.png is made
                browser.save_screenshot(os.environ["SEALEXPORTS_DOCS_SCREENSHOT"])


def test_docs_assets_are_served_from_the_package(tmp_path: Path) -> None:
    db = tmp_path / "docs.db"
    connect(db).close()
    with live.running(db, tmp_path) as server:
        for name in ("swagger-ui-bundle.js", "swagger-ui-standalone-preset.js", "swagger-ui.css"):
            r = requests.get(f"{server.url}/schema/assets/{name}", timeout=10)
            assert r.status_code == 200
            assert r.content == (ASSETS / name).read_bytes()
        assert requests.get(f"{server.url}/schema/assets/../app.py", timeout=10).status_code == 404
