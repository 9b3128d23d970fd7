"""The `im` command: serve, tcp, initdb, user, check-config, online, status, chat."""

import argparse
import getpass
import sys


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="im", description="im instant-messaging server")
    p.add_argument("--config", help="configuration file (default etc/im.toml if present)")
    sub = p.add_subparsers(dest="command", required=True)
    for name, text in (("serve", "TCP server and HTTP API in one process"),
                       ("tcp", "the TCP server alone")):
        s = sub.add_parser(name, help=text)
        s.add_argument("--config", dest="sub_config")
        s.add_argument("--tcp-port", type=int)
        if name == "serve":
            s.add_argument("--http-port", type=int)
        s.add_argument("--database-url")
        s.add_argument("--data-dir")
    sub.add_parser("initdb", help="create or upgrade the schema")
    sub.add_parser("check-config", help="validate the configuration and print it")
    chat = sub.add_parser("chat", help="a terminal chat client (asks the password)")
    chat.add_argument("uid")
    chat.add_argument("--host", default="127.0.0.1")
    chat.add_argument("--port", type=int, default=7070)
    chat.add_argument("--res", default="chat", help="resource name of this terminal")
    chat.add_argument("--tls", action="store_true")
    for name, text in (("online", "who is connected to the running server"),
                       ("status", "the running server's version, readiness, pool and counts")):
        s = sub.add_parser(name, help=text)
        s.add_argument("--url", help="the server's ops endpoint (default: metrics_port, else "
                                     "http_port, on localhost)")
    u = sub.add_parser("user", help="manage users").add_subparsers(dest="action", required=True)
    add = u.add_parser("add", help="create a user")
    add.add_argument("uid")
    add.add_argument("--name", default="")
    add.add_argument("--deptid", default="")
    add.add_argument("--password", help="(default: ask, or read one line from stdin)")
    pw = u.add_parser("passwd", help="set a user's password (kicks their connections)")
    pw.add_argument("uid")
    pw.add_argument("--password")
    dis = u.add_parser("disable", help="disable a user (kicks their connections)")
    dis.add_argument("uid")
    dis.add_argument("--enable", action="store_true", help="enable again instead")
    u.add_parser("list", help="list users")
    for name, columns in (("dept", "deptid,pid,name[,ord]"),
                          ("contacts", "uid,name,deptid,position,telephone,cellphone,email[,pwd]")):
        kind = sub.add_parser(name, help=f"{name} from CSV").add_subparsers(dest="action", required=True)
        kind.add_parser("import", help=f"create or update from a CSV file with the header {columns}; "
                                       "all rows or none").add_argument("file")
    return p


def _password(given: str | None) -> str:
    if given:
        return given
    if sys.stdin.isatty():
        return getpass.getpass("password: ")
    return sys.stdin.readline().rstrip("\n")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "chat":
        from im.chat_cli import run as chat
        return chat(args)
    if args.command in ("serve", "tcp"):
        from gevent import monkey
        monkey.patch_all()
    from im import config
    overrides = {k: getattr(args, k, None) for k in ("tcp_port", "http_port", "database_url", "data_dir")}
    try:
        cfg = config.load(getattr(args, "sub_config", None) or args.config, overrides=overrides)
    except config.ConfigError as err:
        print(f"im: {err}", file=sys.stderr)
        return 2
    if args.command == "check-config":
        for key, value, doc in config.describe(cfg):
            print(f"{key} = {value!r}    # {doc}")
        return 0
    if args.command in ("online", "status"):
        return _ops_command(args.command, cfg, args.url)
    from im import runtime
    from im.errors import Unavailable
    runtime.setup_logging(cfg)
    try:
        if args.command in ("serve", "tcp"):
            from im.serve import run
            path = getattr(args, "sub_config", None) or args.config
            return run(cfg, with_http=args.command == "serve",
                       load_config=lambda: config.load(path, overrides=overrides))
        runtime.start(cfg, listen=False, with_router=args.command == "user")
    except Unavailable as err:
        print(f"im: {err.text}: {runtime.database_label}", file=sys.stderr)
        return 1
    except config.ConfigError as err:  # a setting the database refuses
        print(f"im: {err}", file=sys.stderr)
        runtime.stop()
        return 2
    try:
        return _admin_command(args)
    finally:
        runtime.stop()


def _ops_url(cfg) -> str:
    host = cfg.http_host if cfg.http_host not in ("", "0.0.0.0", "::") else "127.0.0.1"
    if cfg.metrics_port:  # `im tcp` (the process holding the sessions) serves ops there
        return f"http://{host}:{cfg.metrics_port}"
    return f"{'https' if cfg.tls else 'http'}://{host}:{cfg.http_port}"


def _ops_get(url: str, admin_key: str = "") -> tuple[int, dict]:
    """GET a JSON ops endpoint of the running server; (0, {}) when it does not answer."""
    import json
    import ssl
    import urllib.error
    import urllib.request
    headers = {"Authorization": f"Bearer {admin_key}"} if admin_key else {}
    context = ssl._create_unverified_context() if url.startswith("https:") else None
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5,
                                    context=context) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as err:
        try:
            return err.code, json.loads(err.read() or b"{}")
        except ValueError:
            return err.code, {}
    except (OSError, ValueError):
        return 0, {}


def _ops_command(command: str, cfg, url: str | None) -> int:
    """`im online` / `im status` ask the running server (LSB-like exit: 3 = not running)."""
    base = (url or _ops_url(cfg)).rstrip("/")
    code, ready = _ops_get(base + "/readyz")
    if code == 0:
        print(f"im: no server answers at {base}", file=sys.stderr)
        return 3
    path = "/ops/sessions" if command == "online" else "/ops/status"
    code, body = _ops_get(base + path, cfg.admin_key)
    if code != 200:
        print(f"im: {base}{path} answered {code}: {body.get('err', '')} (needs admin_key and "
              "a local address in admin_allow)", file=sys.stderr)
        return 1
    if command == "online":
        for row in body["sessions"]:
            print(f"{row['uid']}\t{row['res']}\t{row['addr']}\t{row['show']}")
        print(f"{body['users']} users, {body['connections']} connections")
        return 0
    for key, value in body.items():
        print(f"{key}: {value}")
    return 0 if ready.get("status") == "ready" else 1


def _admin_command(args) -> int:
    from im import schema
    from im.errors import ImError
    from im.features import accounts, admin
    from im import runtime
    try:
        if args.command == "initdb":
            print(f"schema ready (version {schema.apply(runtime.db)}) in {runtime.database_label}")
        elif args.command in ("dept", "contacts"):
            return _import(args.command, args.file)
        elif args.action == "add":
            admin.create_user({"uid": args.uid, "pwd": _password(args.password), "name": args.name,
                               "deptid": args.deptid})
            print(f"user {args.uid} created")
        elif args.action == "passwd":
            accounts.set_password(args.uid, _password(args.password), keep_token=None)
            print(f"password of {args.uid} changed")
        elif args.action == "disable":
            admin.patch_user(args.uid, {"disabled": not args.enable})
            print(f"user {args.uid} {'enabled' if args.enable else 'disabled'}")
        elif args.action == "list":
            for uid, name, deptid, disabled in admin.list_users():
                print(f"{uid}\t{name}\t{deptid}\t{'disabled' if disabled else ''}")
    except ImError as err:
        print(f"im: {err.text}", file=sys.stderr)
        return 1
    return 0


def _import(kind: str, path: str) -> int:
    """`im dept import` / `im contacts import`: every row or none. Generated passwords of new
    users go to stdout as CSV (uid,password), everything else to stderr."""
    from im.features import org
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            report = (org.import_depts if kind == "dept" else org.import_contacts)(fh)
    except (OSError, UnicodeDecodeError) as err:
        print(f"im: cannot read {path}: {err}", file=sys.stderr)
        return 2
    for problem in report.errors:
        print(f"im: {path}: {problem}", file=sys.stderr)
    if report.errors:
        print(f"im: nothing imported: {len(report.errors)} problem(s)", file=sys.stderr)
        return 1
    if report.passwords:
        print("uid,password")
        for uid, pwd in report.passwords:
            print(f"{uid},{pwd}")
    print(f"im: {kind}: {report.created} created, {report.updated} updated, "
          f"{report.unchanged} unchanged", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
