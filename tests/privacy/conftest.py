"""Fixtures shared with the web tests (the red-team test drives the web app)."""

from tests.web.conftest import make_client, records

__all__ = ["make_client", "records"]
