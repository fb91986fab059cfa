"""crmhub's web app for customers and ops: ``create_app(settings)`` (FastAPI + Jinja2, OpenAPI at
``/openapi.json``), served by ``crmhub web``."""

from api.web.app import create_app

__all__ = ["create_app"]
