#!/usr/bin/env bash
# Back up im: the database (pg_dump, custom format) and the uploaded files (files_dir).
#
#   scripts/backup.sh [-c CONFIG] DEST_DIR      → DEST_DIR/im-<UTC time>/{db.dump,files.tar.gz}
#
# Reads the same configuration as `im` (CONFIG, IM_CONFIG or etc/im.toml, IM_* variables). The
# server may keep running: pg_dump takes a consistent snapshot. With the embedded database
# (database_url = "") the server must be running. Restore with scripts/restore.sh.
# IM_PYTHON: the Python that has im installed (default: /opt/im/venv/bin/python, else python3).
# PG_BIN: directory of pg_dump/pg_restore (default: pgserver's, else the system's).
set -euo pipefail
source "$(dirname "$0")/pg_common.sh"

config=""
while getopts "c:" opt; do
    case "$opt" in
        c) config=$OPTARG ;;
        *) echo "usage: $0 [-c CONFIG] DEST_DIR" >&2; exit 2 ;;
    esac
done
shift $((OPTIND - 1))
[ $# -eq 1 ] || { echo "usage: $0 [-c CONFIG] DEST_DIR" >&2; exit 2; }

read_config "$config"
dest="$1/im-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$dest"
"$(pg_tool pg_dump)" --format=custom --no-owner --file="$dest/db.dump" --dbname="$DATABASE_URL"
if [ -d "$FILES_DIR" ]; then
    tar -C "$FILES_DIR" -czf "$dest/files.tar.gz" .
else
    tar -czf "$dest/files.tar.gz" -T /dev/null
fi
printf 'created=%s\nfiles_dir=%s\n' "$(date -u +%FT%TZ)" "$FILES_DIR" > "$dest/MANIFEST"
echo "$dest"
