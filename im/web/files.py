"""The file server's HTTP face (PROTOCOL.md §3): /file/upload, /file/download, /file/check,
/file/download/head. Parameters come from the query string or form fields; every request is
authorised by token and signature; errors are plain-text bodies."""

import logging
import os

from flask import Blueprint, Response, request
from werkzeug.exceptions import HTTPException

from im import validate
from im.errors import ImError
from im.features import accounts, files
from im.web import multipart
from im.web.api import bearer_token

log = logging.getLogger("im.web.files")

bp = Blueprint("files", __name__, url_prefix="/file")

OCTET = "application/octet-stream;charset=utf-8"
RAW = "application/octet-stream"
FORMS = ("multipart/form-data", "application/x-www-form-urlencoded")
FORM_LIMIT = files.MAX_CHUNK_BYTES * 4 // 3 + 64 * 1024
CACHE_BY_NAME = "private, max-age=86400"  # a complete file never changes
CACHE_BY_UID = "private, no-cache"  # the user's avatar may change: revalidate with the ETag


def _text(body: str, status: int, headers: dict | None = None) -> Response:
    return Response(body + "\n", status, headers=headers, mimetype="text/plain")


@bp.errorhandler(ImError)
def _on_im_error(err: ImError) -> Response:
    headers = {"FI": str(err.stored)} if isinstance(err, files.OffsetConflict) else None
    return _text(err.text, err.status, headers)


@bp.errorhandler(HTTPException)
def _on_http_error(err: HTTPException) -> Response:
    return _text(err.description or err.name, err.code or 500)


@bp.errorhandler(Exception)
def _on_crash(err: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.path)
    return _text("internal error", 500)


def _params() -> dict:
    """Query string and form fields (a form may carry one base64 chunk); only the query string
    beside any other body, a raw chunk's included (its form machinery cost ~10% of a raw chunk's
    server CPU). A form of a known length is read whole (`multipart`), else by werkzeug."""
    if request.mimetype not in FORMS:
        return request.args.to_dict()
    length = request.content_length
    if length and length <= FORM_LIMIT:
        fields = multipart.read_fields(request.stream, length, request.mimetype, request.mimetype_params)
        return {**fields, **request.args.to_dict()}  # the query string first, as in request.values
    request.max_form_memory_size = FORM_LIMIT
    return request.values.to_dict()


def _authorise(params: dict, subject_field: str = "filename") -> str:
    """The uid of a request carrying a live token and a good signature."""
    token = bearer_token() or params.get("token")
    uid, _ = accounts.authenticate(token)
    files.check_signature(token, params.get(subject_field, ""), params.get("offset", ""),
                          params.get("signature"))
    return uid


@bp.post("/upload")
def upload() -> Response:
    """The contract's base64 `bin` form field, or *(ext)* the chunk as a raw
    `application/octet-stream` body with the parameters in the query string."""
    params = _params()
    uid = _authorise(params)
    name = files.check_name(params.get("filename"))
    filesize = validate.integer(params, "filesize", lo=0)
    offset = validate.integer(params, "offset", default=0, lo=0)
    if request.mimetype == RAW:
        stored = _upload_raw(uid, name, filesize, offset)
    else:
        stored = files.upload(uid, name, filesize, offset, files.decode_chunk(params.get("bin")))
    return _text("ok", 200, {"FI": str(stored)})


def _upload_raw(uid: str, name: str, filesize: int, offset: int) -> int:
    """The body, of the announced Content-Length, spooled to disk before the upload proper."""
    length = request.content_length
    if length is None and request.headers.get("Transfer-Encoding"):
        raise ImError("length_required", "Content-Length required", 411)
    if not length:
        return files.upload(uid, name, filesize, offset, b"")  # a probe
    files.check_chunk(filesize, offset, length, "body")
    with files.Spool(request.stream, length) as chunk:
        return files.upload(uid, name, filesize, offset, chunk)


@bp.route("/download", methods=["GET", "POST"])
def download() -> Response:
    params = _params()
    _authorise(params)
    return _serve(files.check_name(params.get("filename")), params)


@bp.route("/check", methods=["GET", "POST"])
def check() -> Response:
    params = _params()
    _authorise(params)
    name = files.check_name(params.get("filename"))
    if files.matches_md5(name, files.check_md5(params.get("md5"))):
        return _text("ok", 200)
    return _text("md5 differs", 409)


@bp.route("/download/head", methods=["GET", "POST"])
def download_head() -> Response:
    params = _params()
    by_uid = bool(params.get("uid"))
    _authorise(params, "uid" if by_uid else "filename")
    if by_uid:
        name = files.avatar_name(validate.uid(params["uid"]))
    else:
        name = files.check_name(params.get("filename"))
    return _serve(name, params, cache=CACHE_BY_UID if by_uid else CACHE_BY_NAME)


def _serve(name: str, params: dict, cache: str | None = None) -> Response:
    """Stream a block of a complete file: the Range header's (206), else offset/block-size."""
    opened = files.open_complete(name)
    try:
        headers = {"FI": str(opened.size), "Accept-Ranges": "bytes"}
        if cache:
            headers.update({"ETag": f'"{name}-{opened.size:x}"', "Cache-Control": cache})
            if request.if_none_match.contains(headers["ETag"].strip('"')):
                os.close(opened.fd)
                return Response(status=304, headers=headers)
        span = _block(params, opened.size, headers)
        if span is None:
            os.close(opened.fd)
            return _text("range not satisfiable", 416, {"Content-Range": f"bytes */{opened.size}"})
        start, length, status = span
    except BaseException:
        os.close(opened.fd)
        raise
    headers["Content-Length"] = str(length)
    return Response(files.Blocks(opened.fd, start, length), status, headers=headers,
                    content_type=OCTET, direct_passthrough=True)


def _block(params: dict, size: int, headers: dict) -> tuple[int, int, int] | None:
    """(start, length, status) of what to send, adding Content-Range for a range request;
    None for a range that cannot be satisfied."""
    ranges = request.range
    if ranges is not None and ranges.units == "bytes" and len(ranges.ranges) == 1:
        span = ranges.range_for_length(size)
        if span is None:
            return None
        headers["Content-Range"] = f"bytes {span[0]}-{span[1] - 1}/{size}"
        return span[0], span[1] - span[0], 206
    offset = validate.integer(params, "offset", default=0, lo=0, hi=size)
    block = validate.integer(params, "block-size", default=0, lo=0)
    return offset, min(block or size, size - offset), 200
