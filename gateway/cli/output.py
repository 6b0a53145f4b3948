"""Output in the two shapes the CLI offers: rich tables for people, JSON for scripts."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

console = Console()


def emit(data: Any, fmt: str, columns: Sequence[tuple[str, str]] | None = None) -> None:
    if fmt == "json" or columns is None:
        print(json.dumps(data, indent=2, sort_keys=False))
        return
    rows = data if isinstance(data, list) else [data]
    table = Table(show_header=True, header_style="bold")
    for title, _ in columns:
        table.add_column(title)
    for row in rows:
        table.add_row(*(_cell(row.get(key)) for _, key in columns))
    console.print(table)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)
