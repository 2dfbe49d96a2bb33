"""What a module imports, read from its source (for the purity tests of the decision cores)."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def imported_modules(package: str, module: str) -> set[str]:
    """Every module ``package/module.py`` imports (``import a.b`` and ``from a.b import c``: a.b)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse((REPO / package / f"{module}.py").read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names
