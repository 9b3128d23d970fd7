"""`POST /api/login` and `POST /api/<QID>`: authenticate, look up the QID, call it."""

import orjson
from flask import Blueprint, g, request

from im import registry
from im.errors import ImError
from im.features import accounts
from im.web.app import json_response

bp = Blueprint("api", __name__, url_prefix="/api")

MAX_PARAMS_BYTES = 8 * 1024 * 1024


def json_params() -> dict:
    """The request's JSON object (an empty body is {}); form fields are accepted too. Bodies
    over MAX_PARAMS_BYTES are refused with 413 before being read (the app-wide limit is sized
    for file uploads)."""
    request.max_content_length = MAX_PARAMS_BYTES
    raw = request.get_data(cache=True)
    if not raw.strip():
        return request.form.to_dict() if request.form else {}
    try:
        params = orjson.loads(raw)
    except orjson.JSONDecodeError:
        if request.form:
            return request.form.to_dict()
        raise ImError("bad_request", "body: not valid JSON") from None
    if not isinstance(params, dict):
        raise ImError("bad_request", "body: must be a JSON object")
    return params


def bearer_token() -> str | None:
    header = request.headers.get("Authorization", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip()
    return None


def authenticate() -> registry.Caller:
    token = bearer_token()
    if token is None:
        raise ImError("not_authenticated", "missing bearer token")
    uid, digest = accounts.authenticate(token)
    g.caller = registry.Caller(uid, digest, request.remote_addr or "")
    return g.caller


@bp.post("/login")
def login():
    params = json_params()
    uid, token = accounts.login_password(params.get("uid"), params.get("pwd"),
                                         request.remote_addr or "")
    return json_response({"type": "text", "result": token})


@bp.post("/<name>")
def call_qid(name: str):
    handler = registry.QIDS.get(name)
    caller = authenticate()
    if handler is None:
        raise ImError("not_found", f"unknown QID {name}")
    return json_response(handler(caller, json_params()))
