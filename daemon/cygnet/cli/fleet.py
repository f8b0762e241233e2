"""Reaching cygnet-coordinator from the CLI: `--coordinator HOST:PORT[,HOST:PORT...]`.

Several coordinators (comma-separated, as cygnetd's `coordinator` setting)
share one store and all serve the whole API: a call that finds one
unavailable (down, or no longer leading) goes to the next in the list, and
the rest of the command stays with the one that answered. The list needs no
change when the leader changes.

The coordinator wants an authenticated caller: a fleet client certificate
(--cert/--key or CYGNET_CERT and CYGNET_KEY, made by `cygnet-coordinator pki
issue --role client`) on its mutual-TLS port, or a token (CYGNET_TOKEN) on its token port.
The CA to trust is the global --ca (CYGNET_CA).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from cygnet.cli.errors import CliError, Exit
from cygnet.cli.state import State

T = TypeVar("T")

META_KEY = "cygnet.coordinator"
DEFAULT_PORT = 7434
TIMEOUT = 30.0


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise CliError(f"{what}: cannot read {path}: {exc.strerror}", Exit.INVALID) from exc


def addresses(value: str) -> list[str]:
    """`a,b:7435` -> ["a:7434", "b:7435"]; an empty list is bad input."""
    found = [a if ":" in a else f"{a}:{DEFAULT_PORT}"
             for a in (part.strip() for part in value.split(",")) if a]
    if not found:
        raise CliError("--coordinator: give HOST[:PORT], or several comma-separated",
                       Exit.INVALID)
    return found


class Coordinator:
    def __init__(self, address: str, ca: Path | None, timeout: float | None,
                 client: tuple[Path | None, Path | None] = (None, None)) -> None:
        self.addresses = addresses(address)
        self.address = self.addresses[0]
        self.timeout = timeout or TIMEOUT
        root = _read(str(ca), "--ca") if ca else None
        grpc = grpc_module()
        cert, key, token = (os.environ.get(k) for k in ("CYGNET_CERT", "CYGNET_KEY",
                                                         "CYGNET_TOKEN"))
        # --cert/--key (which also read CYGNET_CERT/CYGNET_KEY) win.
        cert, key = (str(client[0]) if client[0] else cert), (str(client[1]) if client[1] else key)
        self.metadata: tuple[tuple[str, str], ...] = ()
        if cert and key:
            creds = grpc.ssl_channel_credentials(root, _read(key, "CYGNET_KEY"),
                                                 _read(cert, "CYGNET_CERT"))
        elif token:
            creds = grpc.ssl_channel_credentials(root)
            self.metadata = (("authorization", f"Bearer {token}"),)
        else:
            raise CliError("--coordinator needs a client certificate (CYGNET_CERT and "
                           "CYGNET_KEY) or a token (CYGNET_TOKEN)", Exit.INVALID)
        self.creds = creds
        self.channel: Any = None
        self.stub: Any = None
        self._connect(self.address)

    def _connect(self, address: str) -> None:
        from cygnet.api.v1 import coordinator_pb2_grpc

        if self.channel is not None:
            self.channel.close()
        self.address = address
        self.channel = grpc_module().secure_channel(address, self.creds)
        self.stub = coordinator_pb2_grpc.CoordinatorStub(self.channel)  # type: ignore[no-untyped-call]

    def call(self, method: str, request: Any) -> Any:
        """One call, to the first coordinator of the list that is available."""
        grpc = grpc_module()
        from cygnet.cli.rpcerrors import from_rpc

        start = self.addresses.index(self.address)
        order = self.addresses[start:] + self.addresses[:start]
        last: Any = None
        for address in order:
            if address != self.address:
                self._connect(address)
            try:
                return getattr(self.stub, method)(request, timeout=self.timeout,
                                                  metadata=self.metadata)
            except grpc.RpcError as exc:
                # UNAVAILABLE: down, or fenced after a leader change. The fleet commands
                # (list, drain, undrain) are idempotent: the next coordinator may redo it.
                if exc.code() != grpc.StatusCode.UNAVAILABLE:
                    raise from_rpc(exc, f"coordinator {self.address}", True) from exc
                last = exc
        raise CliError(f"no coordinator answered ({', '.join(self.addresses)}): "
                       f"{last.details()}", Exit.UNREACHABLE)

    def close(self) -> None:
        if self.channel is not None:
            self.channel.close()


def grpc_module() -> Any:
    # Loaded on use, not at import: `cygnet --help` must not pay for grpc.
    import grpc

    return grpc


def coordinator(ctx: click.Context, state: State) -> Coordinator:
    address = ctx.find_root().meta.get(META_KEY) or os.environ.get("CYGNET_COORDINATOR")
    if not address:
        raise CliError("give --coordinator HOST[:PORT] (or CYGNET_COORDINATOR)", Exit.INVALID)
    client = Coordinator(address, state.ca, state.timeout, (state.cert, state.key))
    ctx.call_on_close(client.close)
    return client


def remember(ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    """Callback of the global --coordinator option."""
    if value:
        ctx.meta[META_KEY] = value
    return value


def coordinator_option(f: Callable[..., T]) -> Callable[..., T]:
    return click.option("--coordinator", metavar="HOST[:PORT][,...]",
                        envvar="CYGNET_COORDINATOR", show_envvar=True, expose_value=False,
                        callback=remember,
                        help="cygnet-coordinator(s) to ask for fleet commands (`hosts`); "
                             "several, comma-separated: the first that answers.")(f)
