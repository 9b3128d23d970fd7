"""The admin API (PROTOCOL.md §4): plain JSON, `admin_key` bearer, `admin_allow` addresses.

With no key configured, or from an address not allowed, every admin path answers 404.
"""

import hmac
import ipaddress
from functools import wraps

from flask import Blueprint, request

from im import runtime, validate
from im.errors import ImError
from im.features import admin as admin_feature
from im.features import broadcast as broadcast_feature
from im.features import org
from im.web.api import bearer_token, json_params
from im.web.app import json_response

bp = Blueprint("admin", __name__, url_prefix="/admin")

MAX_BULK = 1000


def address_allowed(addr: str, allowed: list[str]) -> bool:
    """Is `addr` one of the `admin_allow` addresses or networks? An IPv4 client of a dual-stack
    listener shows as ::ffff:a.b.c.d and counts as a.b.c.d."""
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return False
    ip = getattr(ip, "ipv4_mapped", None) or ip
    return any(ip in ipaddress.ip_network(entry, strict=False) for entry in allowed)


def admin_required(fn):
    @wraps(fn)
    def wrapper(*args, **kwargs):
        cfg = runtime.cfg
        if not cfg.admin_key or not address_allowed(request.remote_addr or "", cfg.admin_allow):
            raise ImError("not_found", "not found")
        token = bearer_token() or ""
        if not hmac.compare_digest(token.encode(), cfg.admin_key.encode()):
            raise ImError("not_authenticated", "wrong admin key")
        return fn(*args, **kwargs)
    return wrapper


@bp.post("/users")
@admin_required
def create_user():
    params = json_params()
    admin_feature.create_user(params)
    return json_response({"uid": params["uid"]}, 201)


@bp.post("/users/bulk")
@admin_required
def create_users():
    users = json_params().get("users")
    if not isinstance(users, list):
        raise ImError("bad_request", "users: must be a list")
    if len(users) > MAX_BULK:
        raise ImError("too_large", f"users: at most {MAX_BULK} per call", 413)
    created, existing = admin_feature.create_users(users)
    return json_response({"created": created, "existing": existing})


@bp.get("/users/<uid>")
@admin_required
def get_user(uid: str):
    return json_response(admin_feature.get_user(validate.uid(uid)))


@bp.patch("/users/<uid>")
@admin_required
def patch_user(uid: str):
    admin_feature.patch_user(validate.uid(uid), json_params())
    return json_response({"uid": uid})


@bp.post("/depts")
@admin_required
def create_dept():
    return json_response(org.create_dept(json_params()), 201)


@bp.patch("/depts/<deptid>")
@admin_required
def patch_dept(deptid: str):
    return json_response(org.patch_dept(org.check_deptid(deptid), json_params()))


@bp.delete("/depts/<deptid>")
@admin_required
def delete_dept(deptid: str):
    org.delete_dept(org.check_deptid(deptid))
    return json_response({"deptid": deptid})


@bp.get("/online")
@admin_required
def online():
    """Sessions of this process, and per node where the router knows them (cluster mode). An
    HTTP-only process (gunicorn) hosts no sessions: `"sessions_here": false`, and without a
    cluster router it knows no nodes."""
    router, here = runtime.router, runtime.tcp_server is not None
    counts = router.counts() if router is not None else {"users": 0, "connections": 0}
    nodes = counts.pop("nodes", None)
    if nodes is None:
        nodes = {router.node_id: dict(counts)} if here else {}
    return json_response({**counts, "nodes": nodes, "sessions_here": here})


@bp.post("/broadcast")
@admin_required
def broadcast():
    """Store a message from `system` per target, delivered live by whichever process holds
    each session. `delivered`: the targets this process saw online (every node's in cluster
    mode; 0 from a gunicorn worker beside `im tcp` without Redis, which sees no sessions)."""
    params = json_params()
    return json_response(broadcast_feature.broadcast(params.get("to"), params.get("body")))
