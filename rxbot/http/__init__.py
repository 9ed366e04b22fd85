"""HTTP nodes: :class:`HttpLoader` fetches items, :class:`HttpResponse` carries the result.

``from rxbot.http import HttpLoader`` and databot's ``from rxbot.http.http import
HttpLoader`` both work.
"""
from .http import (DEFAULT_HEADERS, HttpError, HttpLoader, HttpRequest, HttpResponse, HttpResponseTooLarge, HttpTimeoutError,
                   safe_url)

__all__ = ["HttpLoader", "HttpRequest", "HttpResponse", "HttpError", "HttpTimeoutError", "HttpResponseTooLarge",
           "safe_url", "DEFAULT_HEADERS"]
