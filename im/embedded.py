"""An embedded PostgreSQL (the `pgserver` package) for `database_url = ""`.

Data lives under `<data_dir>/pg` and survives restarts. PostgreSQL puts its Unix socket in
that directory; when that path is too long for a socket (107 bytes), pgserver puts the socket
in a short runtime directory instead.
"""

import logging
from pathlib import Path

log = logging.getLogger("im.embedded")
logging.getLogger("pgserver").setLevel(logging.WARNING)  # it logs every command line at INFO


class EmbeddedPostgres:
    def __init__(self, data_dir: str):
        self.pgdata = Path(data_dir).expanduser().resolve() / "pg"
        self._server = None

    def start(self) -> str:
        """Start (or attach to) the server and return its connection URL."""
        import pgserver
        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        self._server = pgserver.get_server(self.pgdata, cleanup_mode="stop")
        url = self._server.get_uri()
        log.info("embedded PostgreSQL running in %s", self.pgdata)
        return url

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()
            self._server = None
            log.info("embedded PostgreSQL released (stopped if no other process uses it)")
