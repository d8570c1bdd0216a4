"""The aiohttp session for what the agent fetches from other servers, made on first use.

HTTP health checks and artifact downloads go to the jobs' own servers through aiohttp
(redirect rules, streaming, proxies as aiohttp does them). Most agents idle with exec or TCP
checks and no artifacts, so aiohttp (13.9 MB of imports, docs/agent.md "Memory") is imported
and its session made only when the first of those requests is sent.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import aiohttp


class LazySession:
    """Stands in for an ``aiohttp.ClientSession`` in the two calls the agent makes on it,
    ``get`` and ``close``; the real session exists from the first ``get``."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    @property
    def started(self) -> bool:
        """Whether a request was made (and aiohttp imported)."""
        return self._session is not None

    def get(self, url: str, **kwargs: Any) -> Any:
        if self._session is None:
            import aiohttp  # first HTTP check or artifact download: see the module docstring

            self._session = aiohttp.ClientSession()
        return self._session.get(url, **kwargs)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
