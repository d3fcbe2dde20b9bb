"""HTTP routes: ``api`` (REST under /api/v1, plus /metrics) and ``dashboard`` (HTML)."""
