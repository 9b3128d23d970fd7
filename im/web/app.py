"""Flask application factory: JSON errors everywhere (never HTML, never a stack trace)."""

import logging

import orjson
from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from im import config, runtime
from im.errors import ImError

log = logging.getLogger("im.web")

HTTP_CODES = {400: "bad_request", 401: "not_authenticated", 403: "forbidden", 404: "not_found",
              405: "bad_request", 409: "already_exists", 413: "too_large", 429: "rate_limited",
              503: "unavailable"}


def json_response(data: dict, status: int = 200, headers: dict | None = None) -> Response:
    return Response(orjson.dumps(data), status=status, headers=headers,
                    mimetype="application/json")


def error_body(code: str, text: str) -> bytes:
    return orjson.dumps({"type": "error", "err": text, "code": code})


def error_response(code: str, text: str, status: int) -> Response:
    return Response(error_body(code, text), status=status, mimetype="application/json")


def create_app(cfg: config.Config | None = None) -> Flask:
    """Build the app; starts the process's runtime (pool, schema, router) if not started."""
    if runtime.cfg is None:
        cfg = cfg or config.load()
        runtime.setup_logging(cfg)
        runtime.start(cfg, listen=True)  # an HTTP-only process (gunicorn worker)
    app = Flask("im")
    app.config["MAX_CONTENT_LENGTH"] = runtime.cfg.max_file_bytes * 2 + 1024 * 1024

    from im.web import admin, api
    app.register_blueprint(api.bp)
    app.register_blueprint(admin.bp)
    _register_optional(app)
    app.wsgi_app = api.QidFastPath(app.wsgi_app)

    @app.errorhandler(ImError)
    def on_im_error(err: ImError):
        return error_response(err.code, err.text, err.status)

    @app.errorhandler(HTTPException)
    def on_http_error(err: HTTPException):
        status = err.code or 500
        return error_response(HTTP_CODES.get(status, "internal"), err.description or err.name, status)

    @app.errorhandler(Exception)
    def on_crash(err: Exception):
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response("internal", "internal error", 500)

    return app


def _register_optional(app: Flask) -> None:
    """Blueprints of areas that may not exist yet in this build (files, ops)."""
    import importlib
    for name in ("files", "ops"):
        try:
            module = importlib.import_module(f"im.web.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"im.web.{name}":
                raise
            continue
        app.register_blueprint(module.bp)
