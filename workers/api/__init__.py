"""The HTTP API (FastAPI + uvicorn): ``create_api`` builds it, ``app_factory`` serves it."""

from workers.api.app import app_factory, create_api

__all__ = ["app_factory", "create_api"]
