"""The web UI in a real browser: Debian's chromium driven by Playwright against a real
``latentsearch serve`` (a text collection and an image collection, ``hashing:64``), under the
page's own Content-Security-Policy. It searches by text, filters, reads the clusters, clicks a
point of the map and a hit, searches by an uploaded image, and enters a read token; the
screenshots go to ``LATENTSEARCH_SCREENSHOTS`` (a folder) when set, else to the test's temporary
folder. Skipped, with the reason, when Playwright or a Chromium browser is missing: ``.ci/run``
installs both (apt ``chromium``; nothing is downloaded by Playwright)."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
playwright = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed (pip install playwright)")

import latentsearch  # noqa: E402
from serving import running  # noqa: E402
from test_serve import make_texts  # noqa: E402

pytestmark = pytest.mark.slow
READ = "browser-read-token"
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_browser() -> str | None:
    wanted = os.environ.get("LATENTSEARCH_BROWSER")
    if wanted:
        return wanted if Path(wanted).exists() else None
    for name in BROWSERS:
        if found := shutil.which(name):
            return found
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    path = find_browser()
    if path is None:
        pytest.skip(f"no Chromium browser: none of {', '.join(BROWSERS)} is on PATH (apt install chromium) "
                    "and LATENTSEARCH_BROWSER is not set")
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


@pytest.fixture(scope="module")
def collections(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """``notes`` (120 texts in four topics), ``pics`` (24 images in three colours) and a query image."""
    from PIL import Image

    root = tmp_path_factory.mktemp("ui")
    texts, metas = make_texts(120)
    with latentsearch.create(root / "notes", encoder="hashing:64", index="Flat") as col:
        col.add(texts, metadata=metas, keys=[f"k{i}" for i in range(len(texts))])
    folder = root / "images"
    folder.mkdir()
    rng = np.random.RandomState(0)
    for i in range(24):
        base = np.array([(200, 40, 40), (40, 160, 60), (40, 80, 220)][i % 3])
        pixels = np.clip(base + rng.randint(-25, 25, (48, 64, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"img{i:02d}.png")
    with latentsearch.create(root / "pics", encoder="hashing:64", index="Flat") as col:
        col.index_paths([folder])
    return root / "notes", root / "pics", folder / "img04.png"


@pytest.fixture(scope="module")
def server(collections: tuple[Path, Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    notes, pics, _ = collections
    log = tmp_path_factory.mktemp("log") / "server.log"
    with running([notes, pics], log, "--log-level", "warning") as s:
        yield s


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("LATENTSEARCH_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


class Page:
    """A browser page that collects console errors and page errors (a CSP violation is one)."""

    def __init__(self, browser: Any, url: str):
        self.page = browser.new_page(viewport={"width": 1300, "height": 900})
        self.errors: list[str] = []
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.goto(url)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.page, name)


def expect(locator: Any) -> Any:
    return playwright.expect(locator)


def test_text_search_filters_clusters_and_the_map(browser: Any, server: Any, shots: Path) -> None:
    page = Page(browser, server.url + "/")
    expect(page.locator("#map-info")).to_contain_text("120 of 120 items")
    expect(page.locator("#info")).to_contain_text("120 items")
    assert page.locator("#token-form").is_hidden()
    page.fill("#query", "cat kitten whiskers")
    page.click("#search-button")
    expect(page.locator("#status")).to_contain_text("12 hits in")
    hits = page.locator("#results .hit")
    expect(hits).to_have_count(12)
    assert "cat" in hits.first.inner_text()
    expect(page.locator("#clusters .cluster").first).to_be_visible()
    expect(page.locator("#map-info")).to_contain_text("quick k-means")
    page.screenshot(path=str(shots / "ui-text-search.png"), full_page=True)

    # a filter: every hit has the topic, and the status line says how many items matched
    page.fill("#query", "harbour boat")
    page.fill("#where", '{"topic": "cats"}')
    page.click("#search-button")
    expect(page.locator("#status")).to_contain_text("30 items match the filter")
    expect(hits).to_have_count(12)
    assert all('"topic":"cats"' in t for t in hits.all_inner_texts())
    # a bad filter is named, nothing is sent
    page.fill("#where", '{"topic": ')
    page.click("#search-button")
    expect(page.locator("#status")).to_contain_text("'where' is not valid JSON")
    assert "error" in (page.locator("#status").get_attribute("class") or "")
    page.fill("#where", "")

    # a click on a hit shows its item; a click on the map shows the point under the pointer
    hits.nth(2).click()
    detail = page.locator("#detail")
    expect(detail).to_be_visible()
    hit_id = hits.nth(2).get_attribute("data-id")
    expect(detail).to_contain_text(f"#{hit_id}")
    # a point of the map away from the item shown now: the panel must change to one under the pointer
    x, y, near = page.evaluate(
        "() => { const m = state.map, at = (i) => state.view.at(m.x[i], m.y[i]);"
        " const close = (x0, y0) => m.ids.filter((id, j) => { const [x, y] = at(j); return (x - x0) ** 2 + (y - y0) ** 2 < 64; });"
        " for (let i = 0; i < m.ids.length; i++) { const [x, y] = at(i), c = close(x, y);"
        " if (!c.includes(state.selected)) return [x, y, c]; } return null; }"
    )
    page.locator("#map").click(position={"x": x, "y": y})
    expect(detail.locator(".head strong")).to_have_text(re.compile("^#(" + "|".join(map(str, near)) + ")$"))
    page.screenshot(path=str(shots / "ui-map-click.png"), full_page=True)
    assert page.errors == []


def test_image_search_by_upload(browser: Any, server: Any, collections: tuple[Path, Path, Path], shots: Path) -> None:
    page = Page(browser, server.url + "/#collection=pics")
    expect(page.locator("#map-info")).to_contain_text("24 of 24 items")
    assert page.locator("#drop").is_visible()
    page.set_input_files("#image", str(collections[2]))
    expect(page.locator("#image-name")).to_have_text("img04.png")
    images = page.locator("#results.grid .hit img")
    expect(images).to_have_count(12)
    page.wait_for_selector("#results .hit img[src^='blob:']")
    first = page.locator("#results .hit").first
    expect(first).to_contain_text("img04.png")  # the query image itself is indexed: the first hit
    expect(first).to_contain_text("1.0000")
    loaded = page.evaluate("() => [...document.querySelectorAll('#results img')].filter(i => i.naturalWidth > 0).length")
    assert loaded >= 1
    expect(page.locator("#clusters .cluster").first).to_be_visible()
    page.screenshot(path=str(shots / "ui-image-search.png"), full_page=True)
    assert page.errors == []


def test_a_read_token_is_asked_for(browser: Any, collections: tuple[Path, Path, Path], tmp_path: Path, shots: Path) -> None:
    with running([collections[0]], tmp_path / "server.log", "--read-token", READ, "--log-level", "warning") as s:
        page = Page(browser, s.url + "/")
        expect(page.locator("#status")).to_contain_text("needs a token")
        expect(page.locator("#token-form")).to_be_visible()
        page.fill("#token", READ)
        page.click("#token-form button")
        expect(page.locator("#map-info")).to_contain_text("120 of 120 items")
        page.fill("#query", "bread oven")
        page.press("#query", "Enter")
        expect(page.locator("#results .hit")).to_have_count(12)
        page.screenshot(path=str(shots / "ui-token.png"), full_page=True)
        # the failed first load is the only error the page logged
        assert all("401" in e for e in page.errors), page.errors
