"""`POST /api/login` and `POST /api/<QID>`: authenticate, look up the QID, call it.

A QID with a JSON (or empty) body, the API's hot path, is served by `QidFastPath` straight from
the WSGI environ: Flask's request context, routing and response objects cost as much as the
token check and the QID's query together (issue 7). Everything else goes through Flask.
"""

import logging

import orjson
from flask import Blueprint, request

from im import registry
from im.errors import ImError
from im.features import accounts
from im.web.app import error_body, json_response

log = logging.getLogger("im.web")

bp = Blueprint("api", __name__, url_prefix="/api")

MAX_PARAMS_BYTES = 8 * 1024 * 1024


def parse_params(raw: bytes, form: dict | None = None) -> dict:
    """A JSON object body; an empty body is {}. A body that is not JSON may be `form` fields."""
    if not raw.strip():
        return form or {}
    try:
        params = orjson.loads(raw)
    except orjson.JSONDecodeError:
        if form:
            return form
        raise ImError("bad_request", "body: not valid JSON") from None
    if not isinstance(params, dict):
        raise ImError("bad_request", "body: must be a JSON object")
    return params


def json_params() -> dict:
    """The request's JSON object (an empty body is {}); form fields are accepted too. Bodies
    over MAX_PARAMS_BYTES are refused with 413 before being read (the app-wide limit is sized
    for file uploads)."""
    request.max_content_length = MAX_PARAMS_BYTES
    raw = request.get_data(cache=True)
    return parse_params(raw, request.form.to_dict())


def token_of(authorization: str) -> str | None:
    if authorization[:7].lower() == "bearer ":
        return authorization[7:].strip()
    return None


def bearer_token() -> str | None:
    return token_of(request.headers.get("Authorization", ""))


def call(name: str, token: str | None, addr: str, params_of) -> dict:
    """Authenticate the caller, then run QID `name` with `params_of()`."""
    if token is None:
        raise ImError("not_authenticated", "missing bearer token")
    uid, digest = accounts.authenticate(token)
    handler = registry.QIDS.get(name)
    if handler is None:
        raise ImError("not_found", f"unknown QID {name}")
    return handler(registry.Caller(uid, digest, addr), params_of())


@bp.post("/login")
def login():
    params = json_params()
    uid, token = accounts.login_password(params.get("uid"), params.get("pwd"),
                                         request.remote_addr or "")
    return json_response({"type": "text", "result": token})


@bp.post("/<name>")
def call_qid(name: str):
    return json_response(call(name, bearer_token(), request.remote_addr or "", json_params))


class QidFastPath:
    """WSGI middleware: `POST /api/<QID>` with a JSON or empty body of a known length, answered
    without Flask, with the same checks, shapes and errors as `call_qid`."""

    def __init__(self, app):
        self.app = app

    def __call__(self, environ: dict, start_response):
        name = self._qid_name(environ)
        if name is None:
            return self.app(environ, start_response)
        status, body = self._answer(environ, name)
        start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]

    @staticmethod
    def _qid_name(environ: dict) -> str | None:
        """The QID's name if the fast path can serve this request, else None."""
        path = environ.get("PATH_INFO", "")
        if environ.get("REQUEST_METHOD") != "POST" or not path.startswith("/api/"):
            return None
        name = path[5:].encode("latin-1").decode("utf-8", "replace")
        kind = environ.get("CONTENT_TYPE", "")
        length = environ.get("CONTENT_LENGTH", "")
        if not name or name == "login" or "/" in name or kind and not kind.startswith("application/json"):
            return None
        if length:
            return name if length.isdigit() and int(length) <= MAX_PARAMS_BYTES else None
        return None if environ.get("HTTP_TRANSFER_ENCODING") else name

    def _answer(self, environ: dict, name: str) -> tuple[str, bytes]:
        def params() -> dict:
            length = int(environ.get("CONTENT_LENGTH") or 0)
            return parse_params(environ["wsgi.input"].read(length) if length else b"")
        try:
            result = call(name, token_of(environ.get("HTTP_AUTHORIZATION", "")),
                          environ.get("REMOTE_ADDR", ""), params)
            return "200 OK", orjson.dumps(result)
        except ImError as err:
            return f"{err.status} {_REASONS.get(err.status, 'Error')}", error_body(err.code, err.text)
        except Exception:
            log.exception("unhandled error on POST %s", environ.get("PATH_INFO", ""))
            return "500 Internal Server Error", error_body("internal", "internal error")


_REASONS = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
            409: "Conflict", 413: "Payload Too Large", 429: "Too Many Requests", 503: "Service Unavailable"}
