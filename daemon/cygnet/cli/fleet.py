"""Reaching cygnet-coordinator from the CLI: `--coordinator HOST:PORT`.

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


class Coordinator:
    def __init__(self, address: str, ca: Path | None, timeout: float | None,
                 client: tuple[Path | None, Path | None] = (None, None)) -> None:
        # Loaded here, not at import: `cygnet --help` must not pay for grpc.
        import grpc

        from cygnet.api.v1 import coordinator_pb2_grpc
        self.address = address if ":" in address else f"{address}:{DEFAULT_PORT}"
        self.timeout = timeout or TIMEOUT
        root = _read(str(ca), "--ca") if ca else None
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
        self.channel: Any = grpc.secure_channel(self.address, creds)
        self.stub: Any = coordinator_pb2_grpc.CoordinatorStub(self.channel)  # type: ignore[no-untyped-call]

    def call(self, method: str, request: Any) -> Any:
        import grpc

        from cygnet.cli.rpcerrors import from_rpc

        try:
            return getattr(self.stub, method)(request, timeout=self.timeout,
                                              metadata=self.metadata)
        except grpc.RpcError as exc:
            raise from_rpc(exc, f"coordinator {self.address}", True) from exc

    def close(self) -> None:
        self.channel.close()


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
    return click.option("--coordinator", metavar="HOST[:PORT]", envvar="CYGNET_COORDINATOR",
                        show_envvar=True, expose_value=False, callback=remember,
                        help="cygnet-coordinator to ask for fleet commands (`hosts`).")(f)
