"""A fault proxy between agents and the coordinator: latency and seeded request loss.

Run as a script (``python tests/faults/proxy.py --listen 127.0.0.1:P --upstream URL
[--latency 0.5] [--jitter 0.1] [--drop 0.1] [--hold 12] [--seed N]``). Every request is
forwarded to ``--upstream`` after ``latency`` (+ up to ``jitter``) seconds. A seeded
fraction ``drop`` of requests is lost, in three equal shares:

- ``lost_request``: the connection is closed before anything is forwarded;
- ``lost_answer``: the request is forwarded (the coordinator acts on it) and the
  connection is closed instead of answering;
- ``late_answer``: forwarded, and the answer is held for ``hold`` seconds (longer than
  the agent's request timeout) before the connection is closed.

``GET /_proxy/stats`` (not forwarded) answers the counts as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
from collections import Counter

from aiohttp import ClientError, ClientSession, ClientTimeout, web

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}
STATS = web.AppKey("stats", Counter)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--listen", required=True, help="HOST:PORT")
    parser.add_argument("--upstream", required=True, help="the coordinator's URL")
    parser.add_argument("--latency", type=float, default=0.5)
    parser.add_argument("--jitter", type=float, default=0.1)
    parser.add_argument("--drop", type=float, default=0.1)
    parser.add_argument("--hold", type=float, default=12.0)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def create_app(args: argparse.Namespace) -> web.Application:
    rng = random.Random(args.seed)  # noqa: S311 - seeded fault choices, no secrets
    stats: Counter[str] = Counter()
    session: ClientSession | None = None

    async def open_session(app: web.Application) -> None:
        nonlocal session
        # Long enough for the agents' blocking queries (their wait plus a margin).
        session = ClientSession(timeout=ClientTimeout(total=120))

    async def close_session(app: web.Application) -> None:
        if session is not None:
            await session.close()

    async def handle_stats(request: web.Request) -> web.Response:
        return web.json_response(dict(stats))

    def drop_connection(request: web.Request) -> web.Response:
        if request.transport is not None:
            request.transport.close()
        return web.Response(status=499)  # never reaches the client: the socket is closed

    async def handle(request: web.Request) -> web.StreamResponse:
        # One draw per request, in arrival order: the same seed makes the same choices.
        draw, delay = rng.random(), args.latency + rng.uniform(0, args.jitter)
        share = args.drop / 3
        fault = (
            "lost_request"
            if draw < share
            else "lost_answer"
            if draw < 2 * share
            else "late_answer"
            if draw < args.drop
            else "forwarded"
        )
        stats["requests"] += 1
        stats[fault] += 1
        body = await request.read()
        await asyncio.sleep(delay)
        if fault == "lost_request":
            return drop_connection(request)
        assert session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        try:
            async with session.request(
                request.method,
                args.upstream.rstrip("/") + request.rel_url.path_qs,
                headers=headers,
                data=body,
                allow_redirects=False,
            ) as upstream:
                payload = await upstream.read()
                status = upstream.status
                answer_headers = {
                    k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP
                }
        except (ClientError, TimeoutError):
            stats["upstream_errors"] += 1
            return drop_connection(request)
        if fault == "lost_answer":
            return drop_connection(request)
        if fault == "late_answer":
            await asyncio.sleep(args.hold)
            return drop_connection(request)
        return web.Response(status=status, body=payload, headers=answer_headers)

    app = web.Application()
    app[STATS] = stats
    app.on_startup.append(open_session)
    app.on_cleanup.append(close_session)
    app.router.add_get("/_proxy/stats", handle_stats)
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    host, _, port = args.listen.rpartition(":")
    print(json.dumps({"proxy": args.listen, "upstream": args.upstream}), flush=True)
    # Held answers and blocking queries must not delay a SIGTERM.
    web.run_app(
        create_app(args),
        host=host,
        port=int(port),
        print=None,
        access_log=None,
        shutdown_timeout=0.5,
    )


if __name__ == "__main__":
    main()
