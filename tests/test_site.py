"""The course site built from the tiny run, checked in headless Chromium (marker: ``notebooks``).

Every page must load without console errors, every image must have loaded, every
internal link must resolve, no request may leave the machine, and the landing page
must hold the ablation table with the run's rows. A screenshot of each page at a
laptop and a phone width goes to the test's output folder. At both widths every page
must hold to its column (no horizontal overflow but inside a table's own scroll box,
no figure wider than the column) with one search box and no development language; the
site is built from a copy of the run whose chapter 02 carries a 4,000 px figure, a
40-column table and a long unbroken word, so that the column is tested, not the run.
"""

from __future__ import annotations

import base64
import io
import json
import re
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


WIDE_FIGURE = 4000
"""The width in pixels of the figure planted in chapter 02 (a stitched strip of a long scene is wider still)."""


def plant_wide_content(run_dir: Path, to: Path) -> Path:
    """A copy of what ``build-site`` reads from ``run_dir``, with chapter 02 carrying what a column must hold:
    a :data:`WIDE_FIGURE` px figure, a 40-column table and a long unbroken word."""
    from PIL import Image

    for name in ("notebooks", "metrics"):
        shutil.copytree(run_dir / name, to / name)
    for name in ("run.json", "series.json"):
        if (run_dir / name).is_file():
            shutil.copy2(run_dir / name, to / name)
    buffer = io.BytesIO()
    Image.new("RGB", (WIDE_FIGURE, 120), (40, 90, 200)).save(buffer, "PNG")
    table = "<table><tr>" + "".join(f"<th>column {i}</th>" for i in range(40)) + "</tr><tr>"
    table += "".join(f"<td>{i * 1000.5:.4f}</td>" for i in range(40)) + "</tr></table>"
    path = next((to / "notebooks").glob("02_*.ipynb"))
    nb = nbformat.read(path, as_version=4)
    nb.cells.append(nbformat.v4.new_markdown_cell("A long name: `" + "stitched_strip_of_one_scene." * 8 + "end` and "
                                                  + "x" * 150 + "."))
    nb.cells.append(nbformat.v4.new_code_cell("show_wide()", outputs=[
        nbformat.v4.new_output("display_data", data={"image/png": base64.b64encode(buffer.getvalue()).decode(),
                                                     "text/plain": "<Figure>"}),
        nbformat.v4.new_output("display_data", data={"text/html": table, "text/plain": "table"})]))
    nbformat.write(nb, path)
    return to


@pytest.fixture(scope="module")
def site(tiny_series, tmp_path_factory):
    run_dir, _ = tiny_series
    planted = plant_wide_content(run_dir, tmp_path_factory.mktemp("planted") / "run")
    return build_site(planted, REPO / "notebooks", tmp_path_factory.mktemp("site") / "site", log=lambda *_: None)


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


FIT = """
const col = document.querySelector('article.bd-article'), main = document.querySelector('main.bd-main');
const doc = document.documentElement, box = col.getBoundingClientRect();
const shown = e => { const r = e.getBoundingClientRect(); return r.width > 0 && r.height > 0
  && getComputedStyle(e).visibility !== 'hidden' && !e.closest('dialog:not([open])'); };
return {doc: [doc.scrollWidth, doc.clientWidth], main: [main.scrollWidth, main.clientWidth],
        column: [col.scrollWidth, col.clientWidth],
        wide: [...col.querySelectorAll('img')].filter(shown).map(i => [i.src.slice(-40), i.getBoundingClientRect()])
               .filter(([, r]) => r.width > box.width + 0.5 || r.right > box.right + 0.5).map(([s, r]) => [s, r.width]),
        column_width: box.width,
        search: [...document.querySelectorAll('.search-button__button, input[type=search], #searchbox input')]
                .filter(shown).length,
        text: document.body.innerText};
"""
DEVELOPMENT_WORDS = re.compile(r"not set|\bissues?\b|\bTODO\b|\bFIXME\b", re.I)


def fit_problems(driver, page: Path, label: str) -> list[str]:
    """What keeps ``page`` (loaded) from holding to its column at this width, as assertion messages."""
    found = driver.execute_script(FIT)
    where = f"{page.name} at {label} width"
    problems = [f"{where}: the {name} is {sw} px wide in a {cw} px box" for name in ("doc", "main", "column")
                for sw, cw in [found[name]] if sw > cw]
    problems += [f"{where}: figure {src} is {w:.0f} px wide in a {found['column_width']:.0f} px column"
                 for src, w in found["wide"]]
    if found["search"] != 1:
        problems.append(f"{where}: {found['search']} search boxes, not one")
    problems += [f"{where}: development language {m.group(0)!r} in ...{found['text'][m.start() - 60:m.end() + 20]!r}"
                 for m in DEVELOPMENT_WORDS.finditer(found["text"])]
    return problems


def test_every_page_holds_to_its_column_at_both_widths(site):
    import time

    from selenium.webdriver.common.by import By

    pages = [site / "index.html", site / "run.html", *sorted((site / "notebooks").glob("*.html"))]
    driver = browser()
    problems = []
    try:
        for label, (w, h) in WIDTHS.items():
            driver.set_window_size(w, h)
            for page in pages:
                driver.get(page.as_uri())
                problems += fit_problems(driver, page, label)
        chapter = next((site / "notebooks").glob("02_*.html"))
        driver.get(chapter.as_uri())  # the checker sees a figure the site's style sheet did not hold
        driver.execute_script("document.head.insertAdjacentHTML('beforeend', "
                              "'<style>img { max-width: none !important; width: auto !important; }</style>')")
        unheld = fit_problems(driver, chapter, "phone")
        driver.get((site / "index.html").as_uri())  # still the phone's width: the menu opens offline
        next(b for b in driver.find_elements(By.CSS_SELECTOR, ".primary-toggle") if b.is_displayed()).click()
        nav = []
        for _ in range(20):
            nav = [a.get_attribute("href") for a in driver.find_elements(By.CSS_SELECTOR, ".bd-sidebar-primary a")
                   if a.is_displayed()]
            if nav:
                break
            time.sleep(0.1)
    finally:
        driver.quit()
    assert not problems, "\n".join(problems)
    assert any(f"is {WIDE_FIGURE} px wide" in p for p in unheld), unheld
    assert any(href.endswith("03_embed_match.html") for href in nav), "the phone's menu did not open"


def test_landing_page_holds_the_ablation_table_and_links_every_chapter(site, tiny_series):
    """The table's rows carry the methods' labels in the order of the run's ``evaluate.methods``, its scores
    rounded (PSNR and CIEDE2000 to 2 decimals, SSIM to 3, a ± seed spread only where there is one)."""
    from selenium.webdriver.common.by import By

    from isp_support.evaluate.scoring import METHODS

    run_dir, _ = tiny_series
    rows = json.loads((run_dir / "metrics" / "06_evaluate.json").read_text())["table"]
    order = json.loads((run_dir / "run.json").read_text())["config"]["evaluate"]["methods"]
    driver = browser()
    try:
        driver.get((site / "index.html").as_uri())
        table = driver.find_element(By.CSS_SELECTOR, "table.ablation")
        heads = [th.get_attribute("textContent").strip() for th in table.find_elements(By.CSS_SELECTOR, "thead th")]
        cells = [[td.get_attribute("textContent").strip() for td in tr.find_elements(By.TAG_NAME, "td")]
                 for tr in table.find_elements(By.CSS_SELECTOR, "tbody tr")]
        links = {a.get_attribute("href").split("#")[0] for a in driver.find_elements(By.CSS_SELECTOR, "article a")}
    finally:
        driver.quit()
    expected = [k for k in order if k in rows] + [k for k in rows if k not in order]
    labels = [METHODS[k].label if k in METHODS else k for k in expected]
    assert [row[0].replace("’", "'") for row in cells] == labels  # Sphinx curls the quotes
    for head, digits in (("PSNR", 2), ("SSIM", 3), ("CIEDE2000", 2)):
        column = next(i for i, h in enumerate(heads) if h.startswith(head))
        pattern = re.compile(rf"\d+\.\d{{{digits}}}( ± \d+\.\d{{{digits}}})?")
        shown = [row[column] for row in cells]
        assert all(pattern.fullmatch(cell) or cell == "-" for cell in shown), shown
        spread = [k for k, row in zip(expected, cells) if "±" in row[column]]
        assert spread == [k for k in expected if rows[k].get("seeds", 1) > 1]
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
