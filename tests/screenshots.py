"""Screenshots of a run's course site for docs/screenshots: the landing page and two chapters, laptop and phone.

    .venv/bin/python -m tests.screenshots --run-dir runs/demo

builds the run's site into a temporary folder (the run folder is only read), checks each page as the browser
test does (no console error, images loaded, links resolved, nothing fetched from the network, every page held
to its column with one search box and no development language), and writes, at 1366 x 768 and 390 x 844,
``PAGE_WIDTH.png`` (the top of the page) and ``PAGE_WIDTH_figure.png`` (the landing page's table, a
chapter's first figure) into ``--out`` (default docs/screenshots). Needs chromium and chromedriver
(``make browser``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from isp_support.site import build_site

from .conftest import REPO
from .test_site import browser, check_page, fit_problems

PAGES = {"index": "index.html", "notebooks_03_embed_match": "notebooks/03_embed_match.html",
         "notebooks_06_evaluate": "notebooks/06_evaluate.html"}
WIDTHS = {"laptop": (1366, 768), "phone": (390, 844)}
FOCUS = {"index": "table.ablation", "notebooks_03_embed_match": ".cell_output img",
         "notebooks_06_evaluate": ".cell_output img"}
"""What the second shot of each page scrolls to."""


def shoot(site: Path, out: Path) -> list[str]:
    """Screenshots of :data:`PAGES` at :data:`WIDTHS` into ``out``; the problems the checks found."""
    out.mkdir(parents=True, exist_ok=True)
    problems: list[str] = []
    driver = browser()
    try:
        for name, rel in PAGES.items():
            found = check_page(driver, site / rel, site, Path(tempfile.mkdtemp(prefix="isp-shots-")))
            problems += [f"{rel}: {kind} {items}" for kind, items in found.items() if items]
            for label, (w, h) in WIDTHS.items():
                driver.set_window_size(w, h)
                driver.get((site / rel).as_uri())
                problems += fit_problems(driver, site / rel, label)
                driver.save_screenshot(str(out / f"{name}_{label}.png"))
                driver.execute_script("const e = document.querySelector(arguments[0]); if (e) { e.scrollIntoView();"
                                      " window.scrollBy(0, -70); }", FOCUS[name])
                driver.save_screenshot(str(out / f"{name}_{label}_figure.png"))
    finally:
        driver.quit()
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir", default="runs/demo", help="the run whose site to show (default runs/demo)")
    parser.add_argument("--out", default=str(REPO / "docs" / "screenshots"), help="where the PNGs go")
    parser.add_argument("--course", default=None, help="the course file (default: the project's course.toml)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="isp-site-shots-") as tmp:
        site = build_site(args.run_dir, REPO / "notebooks", Path(tmp) / "site", course=args.course)
        problems = shoot(site, Path(args.out))
    print("\n".join(problems) or f"all checks passed; screenshots in {args.out}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
