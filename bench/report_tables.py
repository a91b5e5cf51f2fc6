"""Markdown tables, as the bench/ scripts print them (docs/quality.md and docs/benchmarks.md take them as printed)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def format_number(value: float | None, digits: int) -> str:
    """``value`` with ``digits`` decimals; ``-`` for None (a measure that is undefined, e.g. Dice 0/0)."""
    return "-" if value is None else f"{value:.{digits}f}"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table: ``header`` and one line per row (cells already text), without a trailing newline."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def format_value(value: Any) -> str:
    """A cell of the speed tables: floats to 3 significant digits below 100, whole numbers from 100 on (no
    exponents); anything else as ``str``."""
    if isinstance(value, float):
        return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"
    return str(value)


def records_table(records: Iterable[dict[str, Any]]) -> str:
    """Records with the same keys as a Markdown table (:func:`markdown_table`; the keys are the header, the cells
    :func:`format_value`); ``""`` for none."""
    records = list(records)
    if not records:
        return ""
    header = list(records[0])
    return markdown_table(header, [[format_value(record[key]) for key in header] for record in records])
