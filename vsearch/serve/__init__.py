"""``vsearch serve``: a local web page over the Python API (search, thumbnails, judgments).

Starlette and uvicorn are optional: ``pip install 'vsearch[serve]'``.
"""

from vsearch.serve.app import DEFAULT_HOST, DEFAULT_PORT, check_host, create_app

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "check_host", "create_app"]
