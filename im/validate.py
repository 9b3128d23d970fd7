"""Parameter checks shared by the TCP handlers, the QIDs and the admin API (PROTOCOL.md §6).

Each check returns the normalised value or raises a 400 `bad_request` naming the field.
"""

import re
from datetime import date
from typing import Any

from im.errors import ImError, bad_request

UID_RE = re.compile(r"^[A-Za-z0-9._@-]{1,50}$")
PHONE_RE = re.compile(r"^[0-9 +\-()]{0,30}$")
INT_RE = re.compile(r"^-?[0-9]{1,18}$")
ZIP_RE = re.compile(r"^[A-Za-z0-9]{0,10}$")
RESERVED_UIDS = {"system"}
BIGINT = (-2 ** 63, 2 ** 63 - 1)  # what PostgreSQL stores

def string(params: dict, field: str, max_len: int, required: bool = True,
           min_len: int = 0, default: str = "") -> str:
    value = params.get(field)
    if value is None:
        if required:
            raise bad_request(field, "required")
        return default
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise bad_request(field, "must be a string")
    value = str(value)
    if len(value) > max_len:
        raise bad_request(field, f"longer than {max_len} characters")
    if "\x00" in value:
        raise bad_request(field, "must not contain NUL characters")
    if len(value) < min_len:
        raise bad_request(field, "required" if not value else f"shorter than {min_len} characters")
    return value


def integer(params: dict, field: str, default: int | None = None, lo: int | None = None,
            hi: int | None = None) -> int:
    value = params.get(field)
    if value is None or value == "":
        if default is None:
            raise bad_request(field, "required")
        return default
    if isinstance(value, str) and INT_RE.match(value.strip()):
        value = int(value)
    elif isinstance(value, bool) or not isinstance(value, int) or not BIGINT[0] <= value <= BIGINT[1]:
        raise bad_request(field, "must be an integer")
    if lo is not None and value < lo or hi is not None and value > hi:
        raise bad_request(field, f"must be between {lo} and {hi}")
    return value


def uid(value: Any, field: str = "uid", allow_reserved: bool = True) -> str:
    if not isinstance(value, str) or not UID_RE.match(value):
        raise bad_request(field, "1-50 characters of A-Z a-z 0-9 . _ @ -")
    if not allow_reserved and value in RESERVED_UIDS:
        raise bad_request(field, f"{value!r} is reserved")
    return value


def _sex(v: str) -> str:
    if v not in ("", "0", "1", "2"):
        raise ValueError("must be 0, 1 or 2")
    return v


def _age(v: str) -> int | None:
    if v == "":
        return None
    if not v.isdigit() or not 0 <= int(v) <= 150:
        raise ValueError("must be an integer 0-150")
    return int(v)


def _birthday(v: str) -> date | None:
    if v == "":
        return None
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", v):
        raise ValueError("must be YYYY-MM-DD")
    return date.fromisoformat(v)


def _phone(v: str) -> str:
    if not PHONE_RE.match(v):
        raise ValueError("up to 30 digits, spaces and +-()")
    return v


def _zipcode(v: str) -> str:
    if not ZIP_RE.match(v):
        raise ValueError("up to 10 letters or digits")
    return v


def _email(v: str) -> str:
    if v and (len(v) > 100 or v.count("@") != 1 or v.startswith("@") or v.endswith("@")
              or any(c.isspace() for c in v)):
        raise ValueError("up to 100 characters with one @")
    return v


def _limited(n: int):
    def check(v: str) -> str:
        if len(v) > n:
            raise ValueError(f"longer than {n} characters")
        return v
    return check


PROFILE_FIELDS = {
    "sex": _sex, "age": _age, "birthday": _birthday, "telephone": _phone, "cellphone": _phone,
    "email": _email, "address": _limited(200), "zipcode": _zipcode, "position": _limited(100),
}


def profile(params: dict) -> dict:
    """The profile fields present in `params`, validated and converted for storage."""
    out = {}
    for field, check in PROFILE_FIELDS.items():
        if field not in params:
            continue
        value = params[field]
        if value is None:
            value = ""
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise bad_request(field, "must be a string")
        if "\x00" in str(value):
            raise bad_request(field, "must not contain NUL characters")
        try:
            out[field] = check(str(value).strip())
        except ValueError as err:
            raise bad_request(field, str(err)) from None
    return out


def json_object(value: Any, field: str = "body") -> dict:
    if not isinstance(value, dict):
        raise ImError("bad_request", f"{field}: must be a JSON object")
    return value
