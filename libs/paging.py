"""Opaque page tokens for keyset paging: the sort key of the last row served."""

from __future__ import annotations

import base64
from typing import Any

import orjson

from libs.errors import InvalidArgument


def encode(*key: Any) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(key, default=str)).decode()


def decode(token: str, arity: int, field: str = "page_token") -> list[Any] | None:
    """The key in `token`, None for the first page; InvalidArgument for a token we did not make."""
    if not token:
        return None
    try:
        key = orjson.loads(base64.urlsafe_b64decode(token.encode()))
    except (ValueError, orjson.JSONDecodeError):
        key = None
    if not isinstance(key, list) or len(key) != arity:
        raise InvalidArgument.field(field, "is not a token from a previous response")
    return key
