"""callward.web: the dashboard and REST API (FastAPI).

Public API::

    from callward.web import create_app, WebSettings
    app = create_app(load_config(), open_records("var"))   # serve with uvicorn
"""

from callward.web.app import create_app
from callward.web.settings import Principal, Role, WebSettings, load_web_settings

__all__ = ["Principal", "Role", "WebSettings", "create_app", "load_web_settings"]
