"""The HTTP API as a WSGI application, for `gunicorn -c etc/gunicorn.conf.py wsgi:app`.

Imported in each worker after fork (preload_app is off), so every worker opens its own pool.
"""

from im.web import create_app

app = create_app()
