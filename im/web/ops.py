"""Operations endpoints: health, readiness, metrics, and the status `im status` / `im online` read.

- `GET /healthz`: the process answers (200 `{"status": "ok"}`); no database access.
- `GET /readyz`: 200 when the database answers `SELECT 1` within READY_TIMEOUT_S and the router
  is up, else 503 — for load balancers; cheap to poll.
- `GET /metrics`: Prometheus text format (im/metrics.py), this process's registry.
- `GET /ops/status`, `GET /ops/sessions`: admin-only (admin_key, admin_allow) JSON about this
  process: version, ports, pool, counts; who is connected here.
"""

from flask import Blueprint, Flask, Response
from werkzeug.exceptions import HTTPException

from im import __version__, metrics, runtime
from im.errors import ImError
from im.web.admin import admin_required
from im.web.app import HTTP_CODES, error_response, json_response

bp = Blueprint("ops", __name__)

READY_TIMEOUT_S = 2.0


def readiness() -> dict:
    database = runtime.db is not None and runtime.db.ping(READY_TIMEOUT_S)
    router = runtime.router is not None
    return {"status": "ready" if database and router else "unavailable",
            "database": "ok" if database else "down", "router": "ok" if router else "down"}


@bp.get("/healthz")
def healthz():
    return json_response({"status": "ok"})


@bp.get("/readyz")
def readyz():
    state = readiness()
    return json_response(state, 200 if state["status"] == "ready" else 503)


@bp.get("/metrics")
def prometheus():
    return Response(metrics.exposition(), mimetype=None, content_type=metrics.CONTENT_TYPE)


@bp.get("/ops/status")
@admin_required
def status():
    cfg, tcp = runtime.cfg, runtime.tcp_server
    return json_response({
        "version": __version__,
        "node": getattr(runtime.router, "node_id", ""),
        "database": runtime.database_label,
        "tcp_port": tcp.port if tcp is not None else None,
        "metrics_port": cfg.metrics_port or None,
        "log_level": cfg.log_level.upper(),
        "ready": readiness()["status"] == "ready",
        **metrics.snapshot(),
    })


@bp.get("/ops/sessions")
@admin_required
def sessions():
    rows = [{"uid": conn.uid, "res": conn.res, "addr": conn.addr, "show": conn.presence or ""}
            for conn in runtime.router.all_connections()] if runtime.router is not None else []
    rows.sort(key=lambda row: (row["uid"], row["res"]))
    return json_response({"users": len({row["uid"] for row in rows}), "connections": len(rows),
                          "sessions": rows})


def create_ops_app() -> Flask:
    """The ops endpoints alone, served on `metrics_port` by `im tcp` (no API there)."""
    app = Flask("im-ops")
    app.register_blueprint(bp)
    app.register_error_handler(ImError, lambda err: error_response(err.code, err.text, err.status))
    app.register_error_handler(HTTPException, lambda err: error_response(
        HTTP_CODES.get(err.code or 500, "internal"), err.description or err.name, err.code or 500))
    return app
