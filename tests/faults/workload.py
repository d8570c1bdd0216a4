"""The fault suite's workload: a tiny HTTP service that writes down every start and stop.

Run by the agent as a script (``python /path/to/workload.py``; the agent gives a workload
neither the test tree on ``PYTHONPATH`` nor anything but the standard library)::

    workload.py --records FILE --port P --node ${node.name} --job ${job.name}
                --version ${job.version} [--broken] [--crash-after-ms N]

Before it does anything else it appends one JSON line to ``--records`` (``O_APPEND``, then
``fsync``): ``{"event": "start", node, job, version, generation, pid, wall, mono, broken,
crash_after_ms}``. The generation comes from ``FLEETWAVE_JOB_GENERATION``, which the agent
sets. On SIGTERM or SIGINT it appends ``"stop"`` as its very last act; with
``--crash-after-ms`` it appends ``"exit"`` and exits with code 1 after that long (a crash
loop under a restart policy). ``--broken`` answers 500 to everything, so an HTTP health
check fails. It prints nothing: its stdout may live on a full disk.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def append_record(path: str, record: dict[str, Any]) -> None:
    """Append ``record`` as one line, durably: one write() on an O_APPEND fd, then fsync."""
    line = (json.dumps(record, sort_keys=True) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--node", required=True)
    parser.add_argument("--job", required=True)
    parser.add_argument("--version", type=int, required=True)
    parser.add_argument("--broken", action="store_true", help="answer 500 to everything")
    parser.add_argument("--crash-after-ms", type=int, default=0, help="exit 1 after this long")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    identity = {
        "node": args.node,
        "job": args.job,
        "version": args.version,
        "generation": int(os.environ.get("FLEETWAVE_JOB_GENERATION", "0") or 0),
        "pid": os.getpid(),
        "broken": args.broken,
        "crash_after_ms": args.crash_after_ms,
    }

    def record(event: str, **extra: Any) -> None:
        now = {"wall": time.time(), "mono": time.monotonic()}
        append_record(args.records, {"event": event, **identity, **now, **extra})

    record("start")
    stopping = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        stopping.set()
        raise SystemExit(0)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps({**identity, "healthy": not args.broken}).encode()
            self.send_response(500 if args.broken else 200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    def crash() -> None:
        if not stopping.is_set():
            record("exit", code=1)
            os._exit(1)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        if args.crash_after_ms:
            timer = threading.Timer(args.crash_after_ms / 1000, crash)
            timer.daemon = True
            timer.start()
        try:
            server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
        except OSError as exc:
            # Another copy holds the port: a duplicate start. Say so in the records, fail.
            stopping.set()
            record("exit", code=3, error=str(exc))
            os._exit(3)
        try:
            server.serve_forever(poll_interval=0.1)
        finally:
            server.server_close()
    finally:
        # The very last act, also when SIGTERM came before the server was up.
        record("stop", code=0)


if __name__ == "__main__":
    main()
