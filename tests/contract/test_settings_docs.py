"""Drift guard: the README's variable table is the settings registry, rendered."""

from __future__ import annotations

from pathlib import Path

from mlflow_ext import settings

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_table_matches_the_registry():
    text = README.read_text()
    begin, end = "<!-- settings:begin -->\n", "<!-- settings:end -->"
    assert begin in text and end in text, "README lost its settings markers"
    table = text.split(begin, 1)[1].split(end, 1)[0]
    assert table == settings.render_markdown_table(), (
        "README settings table is stale: regenerate it with `mlflow-ext server settings --format markdown`"
    )
