"""Result shapes of the HTTP API (PROTOCOL.md §2.1): text, table and list of n/v rows."""

from datetime import date, datetime
from typing import Any
from collections.abc import Iterable

from im.timefmt import fmt


def as_str(value: Any) -> str:
    """Every value is a string on the wire; null is ""."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, datetime):
        return fmt(value)
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def row(fields: dict) -> list[dict]:
    return [{"n": k, "v": as_str(v)} for k, v in fields.items()]


def text(value: Any, **extra) -> dict:
    return {"type": "text", "result": as_str(value), **extra}


def one(fields: dict) -> dict:
    return {"type": "list", "result": row(fields)}


def table(rows: Iterable[dict], more: bool | None = None) -> dict:
    out = {"type": "table", "result": [row(r) for r in rows]}
    if more is not None:
        out["more"] = "1" if more else "0"
    return out


def page(rows: list, limit: int) -> tuple[list, bool]:
    """Split rows fetched with LIMIT limit+1 into (the page, whether there are more)."""
    return rows[:limit], len(rows) > limit
