"""The course site built from the tiny run, checked in headless Chromium (marker: ``notebooks``).

Every page must load without console errors, every image must have loaded, every
internal link must resolve, no request may leave the machine, and the landing page
must hold the ablation table with the run's rows. A screenshot of each page at a
laptop and a phone width goes to the test's output folder.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from urllib.parse import unquote, urlparse

import nbformat
import pytest

from isp_support.site import SiteError, build_site

from .conftest import REPO

pytestmark = pytest.mark.notebooks

WIDTHS = {"laptop": (1366, 900), "phone": (390, 844)}
LOCAL_SCHEMES = {"file", "data", "blob", "about", "chrome-extension", "devtools"}


def browser():
    """Headless Chromium through chromedriver, both from the system (no driver download), DNS switched off."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver = shutil.which("chromium") or shutil.which("chromium-browser"), shutil.which("chromedriver")
    if not (chromium and driver):
        pytest.fail("chromium and chromedriver are missing: `make test` installs them (Debian chromium, "
                    "chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=driver), options=options)


def requested_urls(driver) -> list[str]:
    """The URLs the page asked for since the performance log was last read (Chrome DevTools' network events)."""
    messages = [json.loads(entry["message"])["message"] for entry in driver.get_log("performance")]
    return [m["params"]["request"]["url"] for m in messages if m["method"] == "Network.requestWillBeSent"]


def check_page(driver, page: Path, site: Path, shots: Path) -> dict:
    """Load ``page`` at every width; what it found (problems are assertion messages)."""
    found: dict = {"errors": [], "external": [], "broken_images": [], "broken_links": []}
    for label, (w, h) in WIDTHS.items():
        driver.set_window_size(w, h)
        driver.get_log("performance")
        driver.get(page.as_uri())
        driver.execute_script("return document.readyState")
        found["errors"] += [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        found["external"] += [url for url in requested_urls(driver) if urlparse(url).scheme not in LOCAL_SCHEMES]
        images = driver.execute_script(
            "return Array.from(document.images).map(i => [i.currentSrc || i.src, i.complete, i.naturalWidth])")
        found["broken_images"] += [src for src, complete, width in images if not (complete and width > 0)]
        rel = page.relative_to(site).with_suffix("")
        driver.save_screenshot(str(shots / f"{str(rel).replace('/', '_')}_{label}.png"))
    hrefs = driver.execute_script("return Array.from(document.querySelectorAll('a[href]')).map(a => a.href)")
    for href in hrefs:
        parsed = urlparse(href)
        if parsed.scheme == "file" and not Path(unquote(parsed.path)).exists():
            found["broken_links"].append(href)
    return found


@pytest.fixture(scope="module")
def site(tiny_series, tmp_path_factory):
    run_dir, _ = tiny_series
    return build_site(run_dir, REPO / "notebooks", tmp_path_factory.mktemp("site") / "site", log=lambda *_: None)


def test_every_page_loads_offline_with_its_images_and_links(site, tmp_path):
    pages = sorted(p for p in site.rglob("*.html") if "_static" not in p.parts)
    chapters = {p.stem for p in (site / "notebooks").glob("*.html")}
    assert chapters == {p.stem for p in REPO.glob("notebooks/[0-9][0-9]_*.ipynb")}
    assert {"index", "run", "search"} <= {p.stem for p in site.glob("*.html")}
    driver = browser()
    try:
        for page in pages:
            found = check_page(driver, page, site, tmp_path)
            assert not found["errors"], f"{page.name}: console errors {found['errors']}"
            assert not found["external"], f"{page.name}: requests leave the machine: {found['external']}"
            assert not found["broken_images"], f"{page.name}: images not loaded: {found['broken_images']}"
            assert not found["broken_links"], f"{page.name}: links to missing files: {found['broken_links']}"
    finally:
        driver.quit()
    assert len(list(tmp_path.glob("*.png"))) == len(pages) * len(WIDTHS)


def test_landing_page_holds_the_ablation_table_and_links_every_chapter(site, tiny_series):
    from selenium.webdriver.common.by import By

    run_dir, _ = tiny_series
    rows = json.loads((run_dir / "metrics" / "06_evaluate.json").read_text())["table"]
    driver = browser()
    try:
        driver.get((site / "index.html").as_uri())
        tables = driver.find_elements(By.CSS_SELECTOR, "table")
        shown = {tr.find_elements(By.TAG_NAME, "td")[0].get_attribute("textContent").strip() for t in tables
                 for tr in t.find_elements(By.CSS_SELECTOR, "tbody tr")}
        links = {a.get_attribute("href").split("#")[0] for a in driver.find_elements(By.CSS_SELECTOR, "article a")}
    finally:
        driver.quit()
    assert set(rows) <= shown, f"ablation rows missing from the landing page: {set(rows) - shown}"
    assert all(any(link.endswith(f"notebooks/{p.stem}.html") for link in links)
               for p in REPO.glob("notebooks/[0-9][0-9]_*.ipynb"))


def test_search_works_from_file_urls_and_the_site_over_http(site):
    import functools
    import http.server
    import threading
    import time

    from selenium.webdriver.common.by import By

    driver = browser()
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        driver.get((site / "search.html").as_uri() + "?q=transport")
        hits = []
        for _ in range(80):
            hits = driver.find_elements(By.CSS_SELECTOR, "ul.search li a")
            if hits:
                break
            time.sleep(0.25)
        pages = {h.get_attribute("href").split("/")[-1].split("#")[0] for h in hits}
        assert "03_embed_match.html" in pages, pages
        assert not [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        driver.get_log("performance")
        driver.get(f"http://127.0.0.1:{server.server_port}/notebooks/03_embed_match.html")
        assert "03" in driver.title
        assert not [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        urls = requested_urls(driver)
        assert urls and all(urlparse(u).scheme in LOCAL_SCHEMES or u.startswith("http://127.0.0.1:") for u in urls)
    finally:
        driver.quit()
        server.shutdown()


def test_a_run_with_a_missing_or_failed_notebook_is_refused(tiny_series, tmp_path):
    run_dir, executed = tiny_series
    with pytest.raises(SiteError, match="no executed"):
        build_site(tmp_path / "empty", REPO / "notebooks", tmp_path / "out")
    broken = tmp_path / "broken"
    shutil.copytree(run_dir / "notebooks", broken / "notebooks")
    nb = nbformat.read(broken / "notebooks" / executed[2].name, as_version=4)
    code = next(c for c in nb.cells if c.cell_type == "code")
    code.outputs.append(nbformat.v4.new_output("error", ename="ValueError", evalue="boom", traceback=[]))
    nbformat.write(nb, broken / "notebooks" / executed[2].name)
    with pytest.raises(SiteError, match="ended in an error.*ValueError: boom"):
        build_site(broken, REPO / "notebooks", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_cli_build_site_names_a_run_without_notebooks(tmp_path, capsys):
    from isp_support.cli import main

    assert main(["build-site", "--run-dir", str(tmp_path / "nowhere")]) == 2
    assert "no executed 01_preprocess.ipynb" in capsys.readouterr().err
