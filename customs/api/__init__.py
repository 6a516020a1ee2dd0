"""The intake HTTP API (FastAPI): the app, one router per resource, auth, schemas, errors."""

from customs.api.app import create_app

__all__ = ["create_app"]
