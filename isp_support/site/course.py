"""The course a site is handed out for (``course.toml``) and the book's ``conf.py`` and style sheet.

``course.toml`` at the project's root (or the file ``build-site --course FILE`` names) holds the one place
for the site's metadata; every field is optional, and a site without it names no author::

    name = "Computational Photography"
    author = "A. Teacher"
    institution = "A University, Department of Computer Science"
    term = "Spring 2027"
    url = "https://example.org/course"
"""

from __future__ import annotations

import html
import re
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path

COURSE_FILE = "course.toml"
"""The course file's name at the project's root, read when ``build-site`` is given none."""
_URL = re.compile(r"^https?://[^\s\"'<>]+$")


class CourseError(ValueError):
    """A course file that cannot be read, or holds an unknown field or a value that is not text."""


@dataclass(frozen=True)
class Course:
    """Who hands the site out, and for which course; empty strings are left out everywhere."""

    name: str = ""
    author: str = ""
    institution: str = ""
    term: str = ""
    url: str = ""

    def byline(self) -> str:
        """One line for the landing page, e.g. ``Computational Photography · A University, Spring 2027 · by A.``."""
        place = ", ".join(p for p in (self.institution, self.term) if p)
        parts = [p for p in (self.name, place) if p] + ([f"by {self.author}"] if self.author else [])
        return " · ".join(parts)

    def footer_html(self) -> str:
        """The footer's line (escaped HTML): the course and its address, or what the site is when no course."""
        place = ", ".join(p for p in (self.institution, self.term) if p)
        parts = [html.escape(p) for p in (self.name, place) if p]
        if self.url:
            parts.append(f'<a href="{html.escape(self.url)}">{html.escape(self.url)}</a>')
        return " · ".join(parts) or "Course notes built from the executed notebooks of one run of the series."


def load_course(path: str | Path | None) -> Course:
    """The course in ``path`` (a TOML file of :class:`Course`'s fields); ``None``: no course."""
    if path is None:
        return Course()
    path = Path(path)
    try:
        record = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise CourseError(f"{path}: cannot read the course file ({exc})") from exc
    known = [f.name for f in fields(Course)]
    unknown = sorted(set(record) - set(known))
    if unknown:
        raise CourseError(f"{path}: unknown field(s) {', '.join(unknown)}; a course file holds {', '.join(known)}")
    bad = sorted(k for k, v in record.items() if not isinstance(v, str))
    if bad:
        raise CourseError(f"{path}: {', '.join(bad)} must be text (in quotes)")
    course = Course(**{k: " ".join(v.split()) for k, v in record.items()})
    if course.url and not _URL.match(course.url):
        raise CourseError(f"{path}: url must be an http(s) address, not {course.url!r}")
    return course


def conf_py(title: str, course: Course) -> str:
    """The book's ``conf.py``: the theme offline, one search box, the course in the footer."""
    return f"""\
project = {title!r}
author = {course.author!r}
copyright = ""
html_title = project
extensions = ["myst_nb"]
exclude_patterns = ["_build", "**/.ipynb_checkpoints"]
nb_execution_mode = "off"
nb_ipywidgets_js = {{}}
html_theme = "sphinx_book_theme"
html_theme_options = {{"use_download_button": False, "use_fullscreen_button": False,
                      "search_bar_text": "Search the series...", "show_toc_level": 2,
                      "navbar_persistent": [], "navbar_start": [], "navbar_center": [], "navbar_end": [],
                      "footer_content_items": ["author.html", "extra-footer.html"],
                      "extra_footer": {course.footer_html()!r}}}
html_context = {{"default_mode": "light"}}
html_static_path = ["_static"]
html_css_files = ["course.css"]
html_show_sourcelink = False
html_copy_source = False
html_show_search_summary = False  # summaries fetch() each page, which file:// forbids
html_favicon = "images/favicon.png"  # without one, browsers ask a server for /favicon.ico (a 404)
"""


SITE_CSS = """\
/* Figures hold to the content column, whatever size a notebook drew them at. */
.bd-article img { max-width: 100%; height: auto; }
/* Wide tables and outputs scroll inside their own box, never the page. */
.bd-article .output.text_html, .bd-article .cell_output .output { max-width: 100%; overflow-x: auto; }
.bd-article .pst-scrollable-table-container { max-width: 100%; overflow-x: auto; }
/* A long word (a path, a dotted name, a platform string) breaks rather than widening the page on a phone. */
.bd-article p, .bd-article li, .bd-article dd, .bd-article h1, .bd-article h2, .bd-article h3 {
  overflow-wrap: break-word; }
.bd-article p code, .bd-article li code, .bd-article p code span.pre, .bd-article li code span.pre {
  white-space: normal; overflow-wrap: anywhere; }
/* The ablation table: numbers right-aligned and kept on one line; the method's label wraps. */
.bd-article table td { font-variant-numeric: tabular-nums; }
.bd-article table td:not(:first-child) { white-space: nowrap; }
.bd-article table.ablation { font-size: 0.92em; }
.bd-article table.ablation td, .bd-article table.ablation th { padding: 0.4rem 0.55rem; }
.bd-article table.ablation td:first-child { min-width: 10rem; }
@media (max-width: 576px) {
  .bd-article table, .bd-article table.ablation { font-size: 0.85em; }
  .bd-article table.ablation td:first-child { min-width: 8rem; } }
"""
"""The site's own style sheet (``_static/course.css``), loaded after the theme's."""
