"""gunicorn settings for the HTTP API alone: `gunicorn -c etc/gunicorn.conf.py wsgi:app`.

Reads the same configuration as `im` (IM_CONFIG or etc/im.toml, then IM_* variables): the
bind address is http_host:http_port (IM_HTTP_HOST / IM_HTTP_PORT), TLS follows tls_cert /
tls_key, the graceful timeout follows shutdown_timeout_s. Workers: WEB_CONCURRENCY (default
2 × cores + 1). gevent workers patch the standard library when they start; the app is loaded
in each worker after fork (preload_app = False), where runtime.start opens the pool and
patches psycopg2 (psycogreen).
"""

import math
import multiprocessing
import os

from im import config as _im_config  # not "config": gunicorn reads every global as a setting

_cfg = _im_config.load()

bind = [f"{_cfg.http_host}:{_cfg.http_port}"]
worker_class = "gevent"
workers = int(os.environ.get("WEB_CONCURRENCY", multiprocessing.cpu_count() * 2 + 1))
worker_connections = 1000  # per worker; override with --worker-connections
preload_app = False
timeout = 30
graceful_timeout = math.ceil(_cfg.shutdown_timeout_s)
keepalive = 5
if _cfg.tls:
    certfile, keyfile = _cfg.tls_cert, _cfg.tls_key
loglevel = _cfg.log_level.lower()
errorlog = _cfg.log_file or "-"
accesslog = None  # URLs may carry file tokens (§3); the app logs what matters
proc_name = "im-http"
