"""Markdown for the reports a person reads (summary.md, the sweep's and the int8 variants' tables)."""

from typing import Any


def table(header: list[str], rows: list[list[Any]]) -> str:
    """A Markdown table.

    Args:
        header: the column titles.
        rows: the cells, one list per row (any value, shown with ``str``).

    Returns:
        str: the table's lines.
    """
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])
