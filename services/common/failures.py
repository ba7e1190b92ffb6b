"""Which failures are worth waiting out, and which are not.

A consumer treats the two very differently: a *transient* failure (a dependency that does not
answer: the database, the object store, the LLM endpoint, the broker) pauses the partition and
retries later, however long the outage lasts, because the event itself is fine. Anything else is
a property of the event (or a bug in handling it): it is retried a few times and then
dead-lettered. Misclassifying a transient failure as permanent loses work in an outage, so the
list below errs towards transient for transport-level errors only, never for content errors.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import psycopg
import urllib3.exceptions
from minio.error import S3Error, ServerError

# S3 error codes that mean "the server is busy or broken", not "your request is wrong".
_S3_TRANSIENT_CODES = frozenset({"SlowDown", "InternalError", "ServiceUnavailable", "RequestTimeout",
                                 "RequestTimeTooSkewed", "OperationAborted"})
_HTTP_TRANSIENT_STATUS = frozenset({408, 409, 425, 429})
# An LLM endpoint refusing our credentials is a configuration fault the operator fixes; the
# reports waiting for it are fine and must not be dead-lettered meanwhile.
_LLM_TRANSIENT_STATUS = _HTTP_TRANSIENT_STATUS | {401, 403}


class PermanentError(Exception):
    """The event can never be applied (bad content); retrying is pointless."""


class TransientError(Exception):
    """A dependency is unavailable; the same event will succeed once it answers again."""


def is_transient(exc: BaseException) -> bool:
    """True when `exc` (or an exception it was raised from) says a dependency did not answer."""
    for err in _chain(exc):
        if isinstance(err, PermanentError):
            return False
        if _is_transient_one(err):
            return True
    return False


def _is_transient_one(err: BaseException) -> bool:
    if isinstance(err, TransientError | ConnectionError | TimeoutError):
        return True
    if isinstance(err, OSError) and not isinstance(err, FileNotFoundError | PermissionError):
        return True  # socket-level errors that are not ConnectionError subclasses (EHOSTUNREACH...)
    if isinstance(err, psycopg.OperationalError):  # connection lost, server shutting down, pool timeout
        return True
    if isinstance(err, psycopg.errors.SerializationFailure | psycopg.errors.DeadlockDetected):
        return True
    if isinstance(err, urllib3.exceptions.HTTPError):  # the minio client's transport
        return True
    if isinstance(err, ServerError):  # S3 answered 5xx without an error document
        return True
    if isinstance(err, S3Error):
        return err.code in _S3_TRANSIENT_CODES
    # httpx's and openai's errors are looked up, not imported: an error of their classes cannot
    # exist in a process that never imported them. Importing openai here cost every service ~1 s
    # of CPU at start-up (openai.types), also the three that never call an LLM; httpx ~0.15 s in
    # the extractor, mapper and sampler, which do not use it.
    httpx = sys.modules.get("httpx")
    if httpx is not None and isinstance(err, httpx.TransportError):
        return True
    if httpx is not None and isinstance(err, httpx.HTTPStatusError):
        return err.response.status_code >= 500 or err.response.status_code in _HTTP_TRANSIENT_STATUS
    openai = sys.modules.get("openai")
    if openai is not None and isinstance(err, openai.APIConnectionError):  # includes APITimeoutError
        return True
    if openai is not None and isinstance(err, openai.APIStatusError):
        return err.status_code >= 500 or err.status_code in _LLM_TRANSIENT_STATUS
    return False


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        # Only explicit causes (`raise X from err`): an error raised while *handling* a network
        # error is not itself a network error, and calling it transient would stall a partition.
        current = current.__cause__
