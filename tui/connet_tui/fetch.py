"""Fetching one status report: a plain HTTP/1.1 GET over asyncio streams.

The dashboard polls a handful of loopback endpoints every second; a client library would be a
dependency for forty lines. Every way a fetch can fail ends as :class:`StatusUnavailable`,
which the dashboard shows as the endpoint being down.
"""

from __future__ import annotations

import asyncio
import json
from urllib.parse import urlsplit

from connet_core.errors import ConnetError

FETCH_TIMEOUT = 2.0  # seconds for connect + answer: a status answer is immediate when all is well
MAX_ANSWER = 4 * 1024 * 1024  # a client with many peers writes a few hundred KiB at most


class StatusUnavailable(ConnetError):
    """The status endpoint could not be reached or answered something unusable."""


def normalize_url(url: str) -> str:
    """``host:port`` -> ``http://host:port/``; a URL with no path gets ``/``."""
    if "://" not in url:
        url = "http://" + url
    parts = urlsplit(url)
    return parts._replace(path=parts.path or "/").geturl()


async def fetch_status(url: str, timeout: float = FETCH_TIMEOUT) -> dict:
    """The JSON object at ``url``; StatusUnavailable on any failure, with a short reason."""
    parts = urlsplit(normalize_url(url))
    if parts.scheme != "http" or not parts.hostname:
        raise StatusUnavailable(f"not an http:// URL: {url}")
    try:
        port = parts.port or 80
    except ValueError as exc:
        raise StatusUnavailable(f"bad port in {url}") from exc
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(parts.hostname, port)
            try:
                writer.write(
                    f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nAccept: application/json\r\n"
                    "Connection: close\r\n\r\n".encode("ascii", "replace")
                )
                await writer.drain()
                chunks: list[bytes] = []
                size = 0
                while chunk := await reader.read(65536):
                    size += len(chunk)
                    if size > MAX_ANSWER:
                        raise StatusUnavailable(f"answer larger than {MAX_ANSWER} bytes")
                    chunks.append(chunk)
                data = b"".join(chunks)
            finally:
                writer.close()
    except TimeoutError as exc:
        raise StatusUnavailable(f"no answer within {timeout:g}s") from exc
    except ConnectionRefusedError as exc:
        raise StatusUnavailable("connection refused") from exc
    except OSError as exc:
        raise StatusUnavailable(exc.strerror or str(exc)) from exc
    return parse_answer(data)


def parse_answer(data: bytes) -> dict:
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        raise StatusUnavailable("incomplete HTTP answer")
    status_line = head.split(b"\r\n", 1)[0].decode("latin-1")
    fields = status_line.split(" ", 2)
    if len(fields) < 2 or not fields[0].startswith("HTTP/1.") or not fields[1].isdigit():
        raise StatusUnavailable(f"not an HTTP answer: {status_line[:60]!r}")
    if fields[1] != "200":
        raise StatusUnavailable(f"HTTP {' '.join(fields[1:])}")
    try:
        report = json.loads(body)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError both
        raise StatusUnavailable(f"not JSON: {exc}") from exc
    if not isinstance(report, dict):
        raise StatusUnavailable("the JSON is not an object")
    return report
