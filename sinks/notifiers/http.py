"""One JSON POST over the standard library, with failures sorted into retryable and not.

Redirects are not followed (a webhook that redirects is misconfigured, and following would send
the payload, and maybe our signature, somewhere else). Nothing here logs; error messages carry the
receiver's name and the HTTP status, and any echo of the URL in a response body is blanked out.
"""

from __future__ import annotations

import email.utils
import http.client
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from pydantic import SecretStr

from sinks.notifiers.base import NotifyError

USER_AGENT = "salespulse-notifier/1"
_EXCERPT_CHARS = 200
# Retried: the receiver is overloaded, throttling us, or briefly down.
_RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class HttpResponse:
    status: int
    body: bytes


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


class HttpPoster:
    """POSTs bodies; ``clock`` (Unix seconds) is only used to read an HTTP-date ``Retry-After``."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._opener = urllib.request.build_opener(_NoRedirects())

    def post(
        self,
        url: SecretStr,
        body: bytes,
        *,
        receiver: str,
        timeout: float,
        headers: Mapping[str, str] | None = None,
    ) -> HttpResponse:
        target = url.get_secret_value()
        try:
            request = urllib.request.Request(target, data=body, method="POST")  # noqa: S310 - http(s) only, validated
            request.add_header("Content-Type", "application/json; charset=utf-8")
            request.add_header("User-Agent", USER_AGENT)
            for name, value in (headers or {}).items():
                request.add_header(name, value)
            with self._opener.open(request, timeout=timeout) as response:
                return HttpResponse(response.status, response.read())
        except urllib.error.HTTPError as error:
            status = error.code
            excerpt = _redacted(_read_quietly(error), target)
            retry_after = _retry_after(error.headers.get("Retry-After"), self._clock())
            reason = f"receiver {receiver}: HTTP {status} {error.reason}" + (
                f": {excerpt}" if excerpt else ""
            )
            raise NotifyError(
                reason, retryable=status in _RETRYABLE_STATUS, retry_after=retry_after, status=status
            ) from None
        except urllib.error.URLError as error:
            cause = error.reason if isinstance(error.reason, BaseException) else None
            detail = _describe(cause) if cause is not None else str(error.reason)
            raise NotifyError(f"receiver {receiver}: cannot connect: {detail}", retryable=True) from None
        except (ValueError, http.client.InvalidURL):
            # urllib and http.client quote the offending URL (or part of it) in these messages.
            raise NotifyError(
                f"receiver {receiver}: the URL is not usable (e.g. a bad port); value not shown",
                retryable=False,
            ) from None
        except (TimeoutError, ConnectionError, http.client.HTTPException, OSError) as error:
            raise NotifyError(f"receiver {receiver}: {_describe(error)}", retryable=True) from None


def _describe(error: BaseException) -> str:
    if isinstance(error, TimeoutError):
        return "timed out"
    text = getattr(error, "strerror", None) or str(error) or type(error).__name__
    return f"{type(error).__name__}: {text}"


def _read_quietly(error: urllib.error.HTTPError) -> bytes:
    try:
        return error.read(4096)
    except (OSError, http.client.HTTPException):
        return b""


def _redacted(body: bytes, url: str) -> str:
    text = body.decode("utf-8", errors="replace").strip().replace("\n", " ")
    parts = urlsplit(url)
    for secret in (url, parts.path, parts.query):
        if len(secret) > 1:
            text = text.replace(secret, "<redacted>")
    return text[:_EXCERPT_CHARS]


def _retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait: ``Retry-After`` is either a number of seconds or an HTTP date."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            moment = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = moment.timestamp() - now
    return max(0.0, seconds) if seconds == seconds else None  # NaN is not a delay
