"""im: an enterprise instant-messaging server (TCP long connections, HTTP API, files)."""

__version__ = "0.1.0"
