# Shared by backup.sh and restore.sh (sourced): where the database and the files are.

IM_PYTHON=${IM_PYTHON:-}
if [ -z "$IM_PYTHON" ]; then
    if [ -x /opt/im/venv/bin/python ]; then IM_PYTHON=/opt/im/venv/bin/python; else IM_PYTHON=python3; fi
fi

# Sets DATABASE_URL and FILES_DIR from the im configuration ($1: config file or "").
read_config() {
    local out
    out=$("$IM_PYTHON" - "$1" <<'PY'
import sys
from pathlib import Path

from im import config

cfg = config.load(sys.argv[1] or None)
url = cfg.database_url
if not url:  # the embedded PostgreSQL of `im serve`: reachable only while it runs
    from pgserver.postgres_server import PostmasterInfo
    info = PostmasterInfo.read_from_pgdata(Path(cfg.data_dir).expanduser().resolve() / "pg")
    if info is None or not info.is_running():
        sys.exit("im: the embedded PostgreSQL is not running: start im first")
    url = info.get_uri()
print(url)
print(cfg.files_path.expanduser().resolve())
PY
    )
    DATABASE_URL=$(sed -n 1p <<<"$out")
    FILES_DIR=$(sed -n 2p <<<"$out")
}

# Path of a PostgreSQL client tool: $PG_BIN, pgserver's (matches the embedded server), the system's.
pg_tool() {
    local dir
    if [ -n "${PG_BIN:-}" ]; then echo "$PG_BIN/$1"; return; fi
    dir=$("$IM_PYTHON" -c 'import pathlib, pgserver; print(pathlib.Path(pgserver.__file__).parent / "pginstall/bin")' 2>/dev/null || true)
    if [ -n "$dir" ] && [ -x "$dir/$1" ]; then echo "$dir/$1"; else command -v "$1"; fi
}
