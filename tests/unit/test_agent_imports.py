"""Layering inside the agent: branches and databases must not import each other."""

from __future__ import annotations

import ast
from pathlib import Path

AGENT = Path(__file__).resolve().parents[2] / "daemon" / "cygnet" / "agent"


def imported(module: Path) -> set[str]:
    """Every module `module` imports, at the top or inside functions."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(module.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_branches_does_not_import_databases() -> None:
    # databases builds on branches (destroy_branch, Populate); branch_props lives
    # with the inventory, which reads those properties back.
    assert "cygnet.agent.databases" not in imported(AGENT / "branches.py")
    assert "cygnet.agent.databases.branch_props" not in imported(AGENT / "reset.py")
    assert "cygnet.agent.branches" in imported(AGENT / "databases.py")
