"""The memwise error tree as HTTP statuses and stable error codes.

Every error body is ``{"error": {"code": "<code>", "message": "<what and what to do>"}}``. Codes are
part of the API: clients branch on them, so a code never changes meaning.

=====================  ======  ===================
error                  status  code
=====================  ======  ===================
missing / bad API key  401     unauthorized
MemoryNotFound, job    404     not_found
MemoryConflict         409     conflict
ImportConflict         409     conflict
ConfigError            400     invalid_request
DatasetError           400     invalid_dataset
request validation     422     invalid_request
body too large         413     too_large
LLMError / ParseError  502     model_error
EmbeddingError         502     embedding_error
other StoreError       500     store_error
store/embedder down    503     not_ready
=====================  ======  ===================
"""

from __future__ import annotations

from typing import Any

from memwise.exceptions import (
    ConfigError,
    DatasetError,
    EmbeddingError,
    LLMError,
    MemwiseError,
    NotFoundError,
    ParseError,
    StoreError,
)
from memwise.facts.transfer import ImportConflict
from memwise.server.service import MemoryConflict, MemoryNotFound


class ApiError(Exception):
    """An error raised by the HTTP layer itself (auth, size, unknown job), with its status and code."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


# Most specific first: the first matching class decides.
_MAP: tuple[tuple[type[MemwiseError], int, str], ...] = (
    (MemoryNotFound, 404, "not_found"),
    (NotFoundError, 404, "not_found"),
    (MemoryConflict, 409, "conflict"),
    (ImportConflict, 409, "conflict"),
    (ConfigError, 400, "invalid_request"),
    (DatasetError, 400, "invalid_dataset"),
    (LLMError, 502, "model_error"),
    (ParseError, 502, "model_error"),
    (EmbeddingError, 502, "embedding_error"),
    (StoreError, 500, "store_error"),
)


def classify(exc: MemwiseError) -> tuple[int, str]:
    """The HTTP status and stable code for a memwise error.

    Example:
        >>> classify(ConfigError("bad"))
        (400, 'invalid_request')
        >>> classify(NotFoundError("no such thing"))
        (404, 'not_found')
    """
    for cls, status, code in _MAP:
        if isinstance(exc, cls):
            return status, code
    return 500, "internal_error"


def error_body(exc: MemwiseError | ApiError) -> dict[str, Any]:
    """The JSON body for an error."""
    if isinstance(exc, ApiError):
        return {"error": {"code": exc.code, "message": exc.message}}
    _, code = classify(exc)
    return {"error": {"code": code, "message": str(exc)}}
