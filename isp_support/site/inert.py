"""Run content made inert before it reaches the site (the rules are in :mod:`isp_support.site`'s docstring)."""

from __future__ import annotations

import json
import re
from typing import Any

import nbformat
import nh3

HTML_TAGS = {"table", "thead", "tbody", "tfoot", "tr", "th", "td", "caption", "colgroup", "col", "div", "span", "p",
             "br", "b", "i", "em", "strong", "code", "pre", "ul", "ol", "li", "sub", "sup", "img", "small"}
HTML_ATTRIBUTES = {"*": {"class", "title"}, "td": {"colspan", "rowspan"}, "th": {"colspan", "rowspan", "scope"},
                   "img": {"src", "alt", "width", "height"}}
KEPT_OUTPUTS = {"text/plain", "text/html", "text/markdown", "image/png", "image/jpeg"}
_CODE = re.compile(r"(^[ \t]*(?:`{3,}|~{3,}).*?^[ \t]*(?:`{3,}|~{3,})[ \t]*$|`+[^`]*?`+)", re.S | re.M)
_FENCE_INFO = re.compile(r"^([ \t]*(?:`{3,}|~{3,}|:{3,}))[ \t]*\{[^}\n]*\}", re.M)
_ROLE = re.compile(r"\{([A-Za-z][\w:+.-]*)\}(?=`)")
_LINK = re.compile(r"(!?)\[([^\]\n]*)\]\(([^)\n]*)\)")
_LINK_DEF = re.compile(r"^[ \t]*\[[^\]\n]+\]:.*$", re.M)
_SAFE_URL = re.compile(r"^\s*<?(https?://|mailto:|#)", re.I)


def inert_markdown(text: str) -> str:
    """Markdown from a run folder with nothing MyST or a browser would act on (see the module docstring)."""
    text = _FENCE_INFO.sub(r"\1text", _ROLE.sub(r"\\{\1\\}", text))
    parts = _CODE.split(text)
    for i in range(0, len(parts), 2):  # outside code spans and blocks
        part = _LINK.sub(lambda m: m[0] if _SAFE_URL.match(m[3]) else m[2], parts[i])
        part = _LINK_DEF.sub(lambda m: m[0] if _SAFE_URL.match(m[0].split("]:", 1)[1]) else "", part)
        parts[i] = re.sub(r"<(?=[A-Za-z/!?])", "&lt;", part).replace(":::", "\\:::")
    return "".join(parts)


def inert_notebook(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A copy of an executed notebook fit to publish: :func:`inert_markdown` on markdown, raw cells as text,
    HTML outputs cleaned to :data:`HTML_TAGS`, other rich outputs than :data:`KEPT_OUTPUTS` dropped."""
    nb = nbformat.from_dict(json.loads(json.dumps(nb)))
    for cell in nb.cells:
        if cell.cell_type in ("markdown", "raw"):
            cell.cell_type = "markdown"
            cell.source = inert_markdown(cell.source)
            cell.pop("attachments", None)
        for out in cell.get("outputs", []):
            data = out.get("data")
            if not data:
                continue
            for mime in [m for m in data if m not in KEPT_OUTPUTS]:
                del data[mime]
            if "text/html" in data:
                data["text/html"] = nh3.clean(_text(data["text/html"]), tags=HTML_TAGS, attributes=HTML_ATTRIBUTES,
                                              url_schemes={"https", "http", "data"})
            if "text/markdown" in data:
                data["text/markdown"] = inert_markdown(_text(data["text/markdown"]))
    return nb


def _text(value: Any) -> str:
    return "".join(value) if isinstance(value, list) else str(value)


def plain(value: Any) -> str:
    """A value from a run's records as literal text in a markdown page: one line, every markdown and HTML sign
    escaped (so no directive, role, link, table cell break or tag)."""
    text = " ".join(str(value).split())
    return re.sub(r"([\\`*_{}\[\]()#+!|:<>$&~-])", r"\\\1", text)


