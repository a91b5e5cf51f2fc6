"""bench/report_tables.py: the Markdown tables the benchmarks print, by hand."""

from __future__ import annotations

from bench.report_tables import format_number, format_value, markdown_table, records_table


def test_markdown_table_and_numbers():
    assert markdown_table(["a", "b"], [["1", "x"], ["2", "y"]]) == "| a | b |\n|---|---|\n| 1 | x |\n| 2 | y |"
    assert (format_number(0.12345, 3), format_number(None, 3), format_number(2.0, 0)) == ("0.123", "-", "2")


def test_records_table_formats_each_cell():
    rows = [{"model": "m", "patches/s": 2.468, "GFLOP/s": 134.6}, {"model": "n", "patches/s": 17.6, "GFLOP/s": 0.5}]
    assert records_table(rows) == ("| model | patches/s | GFLOP/s |\n|---|---|---|\n| m | 2.47 | 135 |\n"
                                   "| n | 17.6 | 0.5 |")
    assert records_table([]) == ""
    assert (format_value(1234.5), format_value(12.345), format_value("NHWC")) == ("1234", "12.3", "NHWC")
