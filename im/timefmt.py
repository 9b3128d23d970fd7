"""Time as the contract writes it: "YYYY-MM-DD HH:MM:SS" in the configured timezone."""

import time
from datetime import datetime, timezone, tzinfo
from zoneinfo import ZoneInfo

_tz: tzinfo = timezone.utc
_tz_name = "UTC"
FORMAT = "%Y-%m-%d %H:%M:%S"


_now_text: tuple[int, str] = (-1, "")


def set_timezone(name: str) -> None:
    global _tz, _tz_name, _now_text
    _tz = timezone.utc if name.upper() == "UTC" else ZoneInfo(name)
    _tz_name = "UTC" if _tz is timezone.utc else name
    _now_text = (-1, "")


def zone_name() -> str:
    """The timezone's name, for PostgreSQL to write wire times in it (AT TIME ZONE)."""
    return _tz_name


def now() -> datetime:
    return datetime.now(timezone.utc)


def now_text() -> str:
    """fmt(now()), formatted once per second: every ACK and heartbeat answer carries it."""
    global _now_text
    second = int(time.time())
    if _now_text[0] != second:
        _now_text = (second, fmt(datetime.fromtimestamp(second, timezone.utc)))
    return _now_text[1]


def fmt(value: datetime | None) -> str:
    """Format an aware datetime for the wire; None → ""."""
    if value is None:
        return ""
    return value.astimezone(_tz).isoformat(" ", "seconds")[:19]  # FORMAT; a third of strftime's cost


def parse(text: str) -> datetime:
    """Parse a wire time (seconds optional) in the configured timezone; ValueError if bad."""
    for pattern in (FORMAT, "%Y-%m-%d %H:%M", "%Y-%m-%d"):
        try:
            return datetime.strptime(text, pattern).replace(tzinfo=_tz)
        except ValueError:
            continue
    raise ValueError(f"bad time {text!r}")
