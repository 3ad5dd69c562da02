"""The package's shape (docs/architecture.md): short modules, short functions, imports that point down."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "isp_support"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60

LEAVES = {"config", "config_rules", "profiles", "io", "data", "artifacts", "colour", "metrics", "runs", "paper"}
"""Shared by every stage; a leaf imports only other leaves."""
STAGES = ["pipeline", "embed", "ot", "pairing", "train", "evaluate"]
"""In the series' order (01-02, 03, 03, 03, 04-05, 06): a stage imports leaves and earlier stages only."""
APART = {"demo_data": LEAVES}
"""The demo-data builder stands beside the pipeline: it imports leaves only."""
FRONT = {"viz", "series", "site", "cli", "prose"}
"""What notebooks and the command line call; no stage or leaf imports them."""


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def group(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return parts[0]


def imported_groups(path: Path) -> set[str]:
    """The package's top-level modules and subpackages that ``path`` imports (relative imports)."""
    package = list(path.relative_to(PACKAGE).parent.parts)
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[: len(package) - (node.level - 1)]
            target = base + (node.module.split(".") if node.module else [])
            heads = [target[0]] if target else [alias.name for alias in node.names]
            found.update(h for h in heads if h != "__version__")
    return found


def allowed(source: str) -> set[str]:
    if source in LEAVES:
        return LEAVES
    if source in STAGES:
        return LEAVES | set(STAGES[: STAGES.index(source) + 1])
    if source in APART:
        return APART[source] | {source}
    return LEAVES | set(STAGES) | set(APART) | FRONT


def test_every_module_is_placed():
    groups = {group(p) for p in modules()} - {"__init__"}
    assert groups <= LEAVES | set(STAGES) | set(APART) | FRONT, groups - (LEAVES | set(STAGES) | set(APART) | FRONT)


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down(path):
    source = group(path)
    if source == "__init__":
        return
    assert imported_groups(path) <= allowed(source), f"{source} imports {imported_groups(path) - allowed(source)}"


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_modules_and_functions_are_short(path):
    text = path.read_text()
    assert len(text.splitlines()) <= MAX_MODULE_LINES
    long = [f"{node.name} ({node.end_lineno - node.lineno + 1} lines)" for node in ast.walk(ast.parse(text))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long


def test_the_checker_sees_an_upward_import(tmp_path):
    """The arrow test is not vacuous: a stage importing a later stage is caught."""
    assert "train" in imported_groups(PACKAGE / "evaluate" / "scoring.py")
    assert "train" not in allowed("pairing")
