"""The throughput baseline: bare aiohttp handlers returning payloads of the coordinator's size.

``python -m bench.bare --listen 127.0.0.1:PORT --report-bytes N --assign-bytes M``.
No auth, no validation, no store: what the agent endpoints would cost if the coordinator
did nothing but HTTP. The report handler reads its body, like the real one. With
``--hold-polls`` an assignments request holds for its ``wait`` seconds (a held long-poll
with nothing to wake it: the memory baseline of ``bench.memory``).
"""

from __future__ import annotations

import argparse
import asyncio

from aiohttp import web


def payload(size: int) -> bytes:
    """A JSON object of exactly ``size`` bytes (at least 12)."""
    return b'{"pad":"' + b"x" * max(0, size - 10) + b'"}'


def create_app(report_bytes: int, assign_bytes: int, hold_polls: bool = False) -> web.Application:
    report = payload(report_bytes)
    assign = payload(assign_bytes)

    async def handle_report(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=report, content_type="application/json")

    async def handle_assignments(request: web.Request) -> web.Response:
        if hold_polls and "wait" in request.query:
            await asyncio.sleep(float(request.query["wait"]))
        return web.Response(body=assign, content_type="application/json")

    registered = 0

    async def handle_register(request: web.Request) -> web.Response:
        # A registration's answer: an id and a token per call, no store, no hashing.
        nonlocal registered
        await request.read()
        registered += 1
        body = {"node_id": f"n-{registered}", "node_token": f"t-{registered}"}
        return web.json_response(body | {"heartbeat_interval": 10}, status=201)

    async def handle_health(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/v1/agent/report", handle_report)
    app.router.add_get("/v1/agent/assignments", handle_assignments)
    app.router.add_post("/v1/agent/register", handle_register)
    app.router.add_get("/healthz", handle_health)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--listen", default="127.0.0.1:7499")
    parser.add_argument("--report-bytes", type=int, required=True)
    parser.add_argument("--assign-bytes", type=int, required=True)
    parser.add_argument("--hold-polls", action="store_true")
    args = parser.parse_args()
    host, _, port = args.listen.rpartition(":")
    web.run_app(
        create_app(args.report_bytes, args.assign_bytes, args.hold_polls),
        host=host,
        port=int(port),
        access_log=None,
        print=None,
    )


if __name__ == "__main__":
    main()
