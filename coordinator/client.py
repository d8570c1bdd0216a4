"""A small synchronous HTTP client of the operator API, used by the CLI."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any


class ApiError(Exception):
    """The API answered with an error, or could not be reached (``status`` 0)."""

    def __init__(self, status: int, code: str, message: str, details: dict[str, Any]) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details


@dataclass
class Response:
    status: int
    body: Any
    headers: dict[str, str]


class ApiClient:
    def __init__(self, addr: str, token: str | None, timeout: float = 30.0) -> None:
        self.addr = addr.rstrip("/")
        self.token = token
        self.timeout = timeout

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        query: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> Response:
        url = self.addr + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(url, data=data, method=method)  # noqa: S310 - operator URL
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        for key, value in (headers or {}).items():
            req.add_header(key, value)
        try:
            with urllib.request.urlopen(req, timeout=timeout or self.timeout) as resp:  # noqa: S310
                raw = resp.read()
                return Response(resp.status, json.loads(raw) if raw else None, dict(resp.headers))
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                err = json.loads(raw)["error"]
            except (ValueError, KeyError, TypeError):
                err = {"code": "http_error", "message": raw.decode(errors="replace")[:500]}
            raise ApiError(
                exc.code, err.get("code", ""), err.get("message", ""), err.get("details") or {}
            ) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ApiError(
                0,
                "unreachable",
                f"cannot reach the coordinator at {self.addr}: {reason}."
                " Is it running? Set FLEETWAVE_ADDR or --addr to its address.",
                {},
            ) from None
