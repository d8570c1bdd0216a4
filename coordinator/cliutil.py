"""What every operator command shares: the connection and token, errors that say what to
do, name completion from the API, ``--json`` and table output, spec files."""

from __future__ import annotations

import contextlib
import json
import os
import ssl
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import click
from click.core import ParameterSource
from click.shell_completion import CompletionItem

from coordinator.addresses import AddressError
from coordinator.client import ApiClient, ApiError
from coordinator.follow import progress_line
from coordinator.specfile import SpecFileError, load_spec_file
from shared.nodes import clean_text

EXIT_OK, EXIT_ROLLOUT_FAILED, EXIT_USAGE = 0, 1, 2
EXIT_INTERRUPTED = 130
DEFAULT_ADDR = "http://127.0.0.1:7400"


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    click.echo(f"Error: {message}", err=True)
    sys.exit(code)


def explain(exc: ApiError, token_given: bool = True) -> str:
    """The API error as an operator reads it: what went wrong, then what to do."""
    lines = [exc.message]
    for item in exc.details.get("errors", []):
        lines.append(f"  - {item.get('field')}: {item.get('message')}")
    if exc.status == 401:
        lines[0] = (
            f"the coordinator refused the token ({exc.message})"
            if token_given
            else "no token given: the coordinator needs an operator token"
        )
        if "token_id" in exc.details:  # a managed token that was revoked or expired
            lines.append("  Ask an admin for a new token (`fleetwave token create`).")
        lines.append(
            "  Set FLEETWAVE_TOKEN (or --token) to an operator token (one from `fleetwave token"
            " create`, or the admin token), or point --token-file / FLEETWAVE_TOKEN_FILE at the"
            " coordinator's admin.token file (<data-dir>/admin.token, default"
            " /var/lib/fleetwave/admin.token)."
        )
    elif exc.status == 403:
        lines[0] = f"permission denied: {exc.message}"
        lines.append(
            "  Use a token whose role has that right (an admin makes one with `fleetwave token"
            " create --role ...`); `fleetwave token whoami` shows the token in use."
        )
    elif exc.status == 404 and "version" in exc.details:
        job = exc.details.get("job", "")
        lines[0] = f"{exc.message}; see `fleetwave job history {job}`"
    elif exc.status == 404 and "job" in exc.details:
        lines[0] = f"no job named {exc.details['job']}; see `fleetwave job list`"
    elif exc.status == 404 and "node" in exc.details:
        lines[0] = f"no node named {exc.details['node']}; see `fleetwave node list`"
    elif exc.status == 404 and "token" in exc.details:
        lines[0] = f"no token {exc.details['token']!r}; see `fleetwave token list`"
    return shown("\n".join(lines), keep_newlines=True)


def shown(value: object, keep_newlines: bool = False) -> str:
    """``value`` as text safe for a terminal: what agents, specs or other operators wrote
    may hold control characters (escape sequences), which are shown as spaces."""
    text = str(value)
    if keep_newlines:
        return "\n".join(clean_text(line) for line in text.split("\n"))
    return clean_text(text)


def resolve_token(
    token: str | None,
    token_file: str | None,
    token_explicit: bool = False,
    file_explicit: bool = False,
) -> str | None:
    """A flag beats an environment variable; with both from the same source the token wins."""
    if token and token_explicit:
        return token
    if token_file and (file_explicit or not token):
        try:
            return Path(token_file).read_text().strip()
        except OSError as exc:
            fail(f"cannot read token file {token_file}: {exc.strerror}")
    return token


class Ctx:
    """The operator commands' connection; the token is read when the first call needs it."""

    def __init__(
        self, addr: str, token: Callable[[], str | None], ca_file: str | None = None
    ) -> None:
        self.addr = addr
        self._token = token
        self._ca_file = ca_file
        self._client: ApiClient | None = None

    @property
    def client(self) -> ApiClient:
        """The API at the coordinators of ``addr`` (comma-separated: tried in order, see
        ``coordinator.addresses``); a bad list is a usage error."""
        if self._client is None:
            try:
                self._client = ApiClient(
                    self.addr, self._token(), ssl_context=cli_ssl(self._ca_file), for_terminal=True
                )
            except AddressError as exc:
                fail(str(exc))
        return self._client

    def call(self, method: str, path: str, body: Any = None, **kw: Any) -> Any:
        try:
            return self.client.request(method, path, body, **kw)
        except ApiError as exc:
            fail(explain(exc, bool(self.client.token)))


def cli_ssl(ca_file: str | None) -> ssl.SSLContext | None:
    """The context that verifies an https:// coordinator against ``--ca-file`` (None: the
    system's CAs); an unreadable file is a usage error naming it."""
    if not ca_file:
        return None
    from shared.tls import client_context

    try:
        return client_context(Path(ca_file))
    except (OSError, ssl.SSLError) as exc:
        fail(f"cannot load the CA file {ca_file}: {exc}")


def is_explicit(ctx: click.Context, name: str) -> bool:
    return ctx.get_parameter_source(name) in {ParameterSource.COMMANDLINE, ParameterSource.PROMPT}


def _completion_client(ctx: click.Context) -> ApiClient | None:
    params = ctx.find_root().params
    addr = params.get("addr") or os.environ.get("FLEETWAVE_ADDR") or DEFAULT_ADDR
    token = params.get("token") or os.environ.get("FLEETWAVE_TOKEN")
    token_file = params.get("token_file") or os.environ.get("FLEETWAVE_TOKEN_FILE")
    if token_file and not params.get("token"):
        with contextlib.suppress(OSError):
            token = Path(token_file).read_text().strip()
    ca_file = params.get("ca_file") or os.environ.get("FLEETWAVE_CA_FILE")
    context = None
    if ca_file:
        from shared.tls import client_context

        with contextlib.suppress(OSError, ssl.SSLError):
            context = client_context(Path(ca_file))
    try:
        return ApiClient(addr, token, timeout=2, ssl_context=context, connect_timeout=1)
    except AddressError:
        return None


def complete_jobs(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
    """Job names from the API, when it answers in time (else no suggestions)."""
    client = _completion_client(ctx)
    try:
        jobs = client.request("GET", "/v1/jobs").body["jobs"] if client is not None else []
    except (ApiError, KeyError, TypeError):
        return []
    return [CompletionItem(j["name"]) for j in jobs if j["name"].startswith(incomplete)]


def complete_nodes(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
    """Node names (and ids) from the API, when it answers in time."""
    client = _completion_client(ctx)
    try:
        nodes = client.request("GET", "/v1/nodes").body["nodes"] if client is not None else []
    except (ApiError, KeyError, TypeError):
        return []
    keys = [n["name"] for n in nodes] + [n["id"] for n in nodes]
    return [CompletionItem(k) for k in keys if k.startswith(incomplete)]


def job_argument(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.argument("name", shell_complete=complete_jobs)(f)


def node_argument(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.argument("node_id", metavar="NODE", shell_complete=complete_nodes)(f)


def json_option(what: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return click.option(
        "--json",
        "as_json",
        is_flag=True,
        help=f"Print {what} as JSON (the API's response body; no colours, stable keys).",
    )


def print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2))


def table(rows: Sequence[Sequence[str]], headers: Sequence[str]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows, strict=False)]
    out = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for row in rows:
        out.append("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(out)


def load_spec(file: Path) -> tuple[str, dict[str, Any]]:
    try:
        spec = load_spec_file(file)
    except SpecFileError as exc:
        fail(str(exc))
    name = spec.get("name")
    if not isinstance(name, str) or not name:
        fail(f"{file} has no 'name'")
    return name, spec


def act(obj: Ctx, name: str, path: str, body: Any = None, what: str = "") -> None:
    status = obj.call("POST", f"/v1/jobs/{name}/{path}", body).body["status"]
    click.echo(f"{what or path}: {progress_line(status)}")
