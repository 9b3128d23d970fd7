"""Typed errors carrying the contract's machine code (PROTOCOL.md §1.4, §2.1).

Feature code raises `ImError`; each transport turns it into an error ACK or an HTTP error
in exactly one place.
"""

HTTP_STATUS = {
    "bad_request": 400,
    "body_too_long": 400,
    "not_authenticated": 401,
    "auth_failed": 401,
    "forbidden": 403,
    "not_member": 403,
    "not_friend": 403,
    "cannot_exit": 403,
    "not_found": 404,
    "no_such_user": 404,
    "no_such_group": 404,
    "unknown_type": 400,
    "already_exists": 409,
    "already_friends": 409,
    "already_member": 409,
    "already_handled": 409,
    "frame_too_large": 413,
    "too_large": 413,
    "rate_limited": 429,
    "unavailable": 503,
    "internal": 500,
}


class ImError(Exception):
    """An error the client should see, with a code from the contract."""

    def __init__(self, code: str, text: str = "", status: int | None = None):
        super().__init__(text or code)
        self.code = code
        self.text = text or code.replace("_", " ")
        self.status = status or HTTP_STATUS.get(code, 400)


def bad_request(field: str, why: str = "invalid") -> ImError:
    """A 400 naming the offending field."""
    return ImError("bad_request", f"{field}: {why}")


class Unavailable(ImError):
    """The database (or another dependency) cannot be reached right now."""

    def __init__(self, text: str = "service unavailable"):
        super().__init__("unavailable", text, 503)
