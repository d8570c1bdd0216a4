"""A tiny HTTP service the demo deploys: says hello, tells its version, can be told to be broken.

Run as ``python -m coordinator.demo.service --port 8001 --version 2 [--broken]``. With
``--broken`` it starts but answers 500 on every request, so its health check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--version", default="1")
    parser.add_argument("--node", default=os.environ.get("NODE_NAME", ""))
    parser.add_argument("--broken", action="store_true", help="answer 500 to everything")
    parser.add_argument(
        "--broken-for",
        default="",
        metavar="NODES",
        help="comma-separated node names or ids on which to behave as --broken",
    )
    args = parser.parse_args(argv)
    if args.node and args.node in args.broken_for.split(","):
        args.broken = True
    greeting = os.environ.get("GREETING", "hello")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status = 500 if args.broken else 200
            body = json.dumps(
                {
                    "greeting": greeting,
                    "version": args.version,
                    "node": args.node,
                    "healthy": not args.broken,
                }
            ).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"demo service v{args.version} listening on 127.0.0.1:{args.port}", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
