"""The HTTP transport: a Flask application factory and one blueprint per area."""

from im.web.app import create_app

__all__ = ["create_app"]
