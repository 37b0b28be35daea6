"""The web page as served: where it lives, its headers, and that it needs nothing from elsewhere."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from sealexports.api.ui import UI_DIR
from tests.apps import Api, ApiFactory, Template
from tests.conftest import DemoDB


@pytest.fixture
def api(make: ApiFactory, demo_db: DemoDB) -> Api:
    return make(
        Template(demo_db.path, "demo", str(demo_db.date_from), str(demo_db.date_to)), run_workers=False
    )


class Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.script_text = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag == "script"

    def handle_data(self, data: str) -> None:
        if getattr(self, "_in_script", False):
            self.script_text += data.strip()

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False


def test_root_redirects_to_the_page(api: Api) -> None:
    r = api.client.get("/", follow_redirects=False)
    assert r.status_code == 302 and r.headers["location"] == "/ui"
    assert api.client.get("/").url.path == "/ui"


def test_under_a_path_prefix_the_page_and_its_assets_are_under_it(make: ApiFactory, demo_db: DemoDB) -> None:
    template = Template(demo_db.path, "demo", str(demo_db.date_from), str(demo_db.date_to))
    api = make(template, run_workers=False, root_path="/exports")
    for path in ("/exports/", "/"):  # the proxy kept the prefix, or stripped it
        r = api.client.get(path, follow_redirects=False)
        assert r.headers["location"] == "/exports/ui"
    page = api.client.get("/exports/ui")
    assert page.status_code == 200
    # Relative references: from /exports/ui they resolve under /exports/.
    for ref in re.findall(r'(?:src|href)="(ui/static/[^"]+)"', page.text):
        assert api.client.get(f"/exports/{ref}").status_code == 200
    assert "new URL(`api/v1/${path}`, document.baseURI)" in (UI_DIR / "api.js").read_text()


@pytest.mark.parametrize("path", ["/ui", "/ui/static/app.js", "/ui/static/api.js", "/ui/static/ui.css"])
def test_page_and_assets_carry_a_strict_csp(api: Api, path: str) -> None:
    r = api.client.get(path)
    assert r.status_code == 200
    csp = dict(d.strip().split(" ", 1) for d in r.headers["content-security-policy"].split(";"))
    assert csp["default-src"] == "'self'" and csp["script-src"] == "'self'" and csp["style-src"] == "'self'"
    assert csp["frame-ancestors"] == "'none'"
    assert "unsafe" not in r.headers["content-security-policy"]
    assert r.headers["x-content-type-options"] == "nosniff"
    expected = {"/ui": "text/html", ".js": "javascript", ".css": "text/css"}
    assert any(path.endswith(k) and v in r.headers["content-type"] for k, v in expected.items())


def test_page_has_no_inline_script_or_style_and_no_other_origin(api: Api) -> None:
    html = api.client.get("/ui").text
    parser = Tags()
    parser.feed(html)
    assert parser.script_text == ""
    assert all(
        "style" not in attrs and not any(k.startswith("on") for k in attrs) for _, attrs in parser.tags
    )
    assert "<style" not in html
    for tag, attrs in parser.tags:
        for name in ("src", "href"):
            ref = attrs.get(name) or ""
            assert not re.match(r"^(https?:)?//", ref), f"<{tag} {name}={ref}> leaves the origin"
    scripts = [a for t, a in parser.tags if t == "script"]
    assert scripts == [{"type": "module", "src": "ui/static/app.js"}]
    # The key input has no name: even a form submitted without the script carries no key.
    key_input = next(a for t, a in parser.tags if t == "input" and a.get("id") == "key")
    assert "name" not in key_input and key_input["type"] == "password"


def test_scripts_never_put_the_key_in_a_url_or_a_log() -> None:
    code = (UI_DIR / "api.js").read_text() + (UI_DIR / "app.js").read_text()
    assert "console." not in code
    assert "localStorage" not in code  # the key lives in sessionStorage only
    assert '"X-API-Key"' in code


def test_every_ui_file_is_package_data() -> None:
    """The wheel (and the binary) carry the page: pyproject's globs cover every file in ui/."""
    pyproject = (Path(__file__).parent.parent / "pyproject.toml").read_text()
    globs = re.search(r"sealexports = \[([^\]]*)\]", pyproject.split("[tool.setuptools.package-data]")[1])
    assert globs
    patterns = re.findall(r'"([^"]+)"', globs.group(1))
    root = UI_DIR.parent
    for f in UI_DIR.iterdir():
        assert any(f.relative_to(root).match(p) for p in patterns), f"{f.name} is not package data"
