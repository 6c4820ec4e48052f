"""Every error class of the library maps to one stable HTTP status and code."""

from __future__ import annotations

from memwise.exceptions import ConfigError, MemoryNotFoundError, NotFoundError, StoreError
from memwise.server.errors import classify


def test_library_not_found_errors_are_404_not_500() -> None:
    assert classify(NotFoundError("no job 7")) == (404, "not_found")
    assert classify(MemoryNotFoundError("no memory 'x' for user 'u'")) == (404, "not_found")
    assert classify(StoreError("disk full")) == (500, "store_error")
    assert classify(ConfigError("bad limit")) == (400, "invalid_request")
