"""Markdown tables, as the bench/ scripts print them (docs/quality.md and docs/benchmarks.md take them as printed)."""

from __future__ import annotations


def format_number(value: float | None, digits: int) -> str:
    """``value`` with ``digits`` decimals; ``-`` for None (a measure that is undefined, e.g. Dice 0/0)."""
    return "-" if value is None else f"{value:.{digits}f}"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table: ``header`` and one line per row (cells already text), without a trailing newline."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])
