#!/usr/bin/env bash
# Install im on a host (as root): a virtualenv under PREFIX, the `im` user, data and log
# directories, the configuration, systemd units (or the LSB init script), logrotate, the schema.
#
#   sudo scripts/install.sh [--no-initdb]
#
# Settings (environment): PREFIX=/opt/im CONF_DIR=/etc/im DATA_DIR=/var/lib/im
# LOG_DIR=/var/log/im PYTHON=python3. An existing CONF_DIR/im.toml is kept. Re-running upgrades
# the package and the schema in place.
set -euo pipefail

PREFIX=${PREFIX:-/opt/im}
CONF_DIR=${CONF_DIR:-/etc/im}
DATA_DIR=${DATA_DIR:-/var/lib/im}
LOG_DIR=${LOG_DIR:-/var/log/im}
PYTHON=${PYTHON:-python3}
IM_USER=im
SRC=$(cd "$(dirname "$0")/.." && pwd)
initdb=1
[ "${1:-}" = "--no-initdb" ] && initdb=""

[ "$(id -u)" = 0 ] || { echo "install.sh: run as root" >&2; exit 1; }

echo "== user $IM_USER"
id -u "$IM_USER" >/dev/null 2>&1 || \
    useradd --system --user-group --home-dir "$DATA_DIR" --shell /usr/sbin/nologin "$IM_USER"

echo "== virtualenv $PREFIX/venv"
[ -x "$PREFIX/venv/bin/python" ] || "$PYTHON" -m venv "$PREFIX/venv"
"$PREFIX/venv/bin/pip" install -q --upgrade pip
"$PREFIX/venv/bin/pip" install -q "$SRC"
install -d "$PREFIX/app" "$PREFIX/scripts"
install -m 644 "$SRC/wsgi.py" "$SRC/etc/gunicorn.conf.py" "$SRC/README.md" "$PREFIX/app/"
install -m 755 "$SRC/scripts/backup.sh" "$SRC/scripts/restore.sh" "$SRC/scripts/pg_common.sh" \
    "$PREFIX/scripts/"

echo "== directories"
install -d -o "$IM_USER" -g "$IM_USER" -m 750 "$DATA_DIR" "$DATA_DIR/files" "$LOG_DIR"

echo "== configuration $CONF_DIR/im.toml"
install -d -m 755 "$CONF_DIR"
if [ ! -e "$CONF_DIR/im.toml" ]; then
    { cat "$SRC/etc/im.toml"
      printf '\n# set by install.sh\ndata_dir = "%s"\nlog_file = "%s/im.log"\n' "$DATA_DIR" "$LOG_DIR"
    } > "$CONF_DIR/im.toml"
    chown "root:$IM_USER" "$CONF_DIR/im.toml"
    chmod 640 "$CONF_DIR/im.toml"
fi

paths() { sed -e "s|/opt/im|$PREFIX|g" -e "s|/etc/im/|$CONF_DIR/|g" -e "s|/var/lib/im|$DATA_DIR|g" "$1"; }
if [ -d /run/systemd/system ]; then
    echo "== systemd units im-tcp, im-http"
    for unit in im-tcp im-http; do
        paths "$SRC/etc/systemd/$unit.service" > "/etc/systemd/system/$unit.service"
    done
    systemctl daemon-reload
else
    echo "== init script /etc/init.d/im"
    install -m 755 "$SRC/etc/init.d/im" /etc/init.d/im
    [ -e /etc/default/im ] || printf 'IM_PREFIX=%s\nIM_CONFIG_FILE=%s/im.toml\nIM_WORKDIR=%s\nIM_LOGDIR=%s\n' \
        "$PREFIX" "$CONF_DIR" "$DATA_DIR" "$LOG_DIR" > /etc/default/im
fi
[ -d /etc/logrotate.d ] && sed "s|/var/log/im|$LOG_DIR|g" "$SRC/etc/logrotate.d/im" > /etc/logrotate.d/im

runuser -u "$IM_USER" -- "$PREFIX/venv/bin/im" --config "$CONF_DIR/im.toml" check-config >/dev/null
if [ -n "$initdb" ]; then
    echo "== schema"
    (cd "$DATA_DIR" && runuser -u "$IM_USER" -- "$PREFIX/venv/bin/im" --config "$CONF_DIR/im.toml" initdb)
fi

cat <<DONE
== done. Next: edit $CONF_DIR/im.toml (database_url, admin_key, ports), then
   systemctl enable --now im-tcp im-http     (or: /etc/init.d/im start, which runs \`im serve\`)
   $PREFIX/venv/bin/im --config $CONF_DIR/im.toml status
DONE
