#!/usr/bin/env bash
# Restore an im backup made by scripts/backup.sh: the database, then the uploaded files.
#
#   scripts/restore.sh [-c CONFIG] -y BACKUP_DIR
#
# Stop the servers first (systemctl stop im-tcp im-http, or /etc/init.d/im stop). The target
# database (database_url of the configuration) must exist, empty or not: the dump's objects
# replace existing ones in one transaction. Files are extracted into files_dir over what is
# there. -y confirms that the database will be overwritten.
set -euo pipefail
source "$(dirname "$0")/pg_common.sh"

usage() { echo "usage: $0 [-c CONFIG] -y BACKUP_DIR" >&2; exit 2; }
config=""
yes=""
while getopts "c:y" opt; do
    case "$opt" in
        c) config=$OPTARG ;;
        y) yes=1 ;;
        *) usage ;;
    esac
done
shift $((OPTIND - 1))
[ $# -eq 1 ] || usage
backup="$1"
[ -f "$backup/db.dump" ] || { echo "restore: no db.dump in $backup" >&2; exit 1; }
[ -n "$yes" ] || { echo "restore: this overwrites the database; add -y to confirm" >&2; exit 1; }

read_config "$config"
"$(pg_tool pg_restore)" --clean --if-exists --no-owner --single-transaction --exit-on-error \
    --dbname="$DATABASE_URL" "$backup/db.dump"
if [ -f "$backup/files.tar.gz" ]; then
    mkdir -p "$FILES_DIR"
    tar -C "$FILES_DIR" -xzf "$backup/files.tar.gz"
fi
echo "restored $backup (database and $FILES_DIR)"
