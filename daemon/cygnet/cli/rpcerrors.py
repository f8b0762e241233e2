"""gRPC failures as CliErrors: status code to exit code, transport noise to one line."""

from __future__ import annotations

import grpc

from cygnet.cli.errors import CliError, Exit

_BY_STATUS: dict[grpc.StatusCode, Exit] = {
    grpc.StatusCode.INVALID_ARGUMENT: Exit.INVALID,
    grpc.StatusCode.OUT_OF_RANGE: Exit.INVALID,
    grpc.StatusCode.NOT_FOUND: Exit.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS: Exit.CONFLICT,
    grpc.StatusCode.FAILED_PRECONDITION: Exit.CONFLICT,
    grpc.StatusCode.ABORTED: Exit.CONFLICT,
    grpc.StatusCode.UNAVAILABLE: Exit.UNREACHABLE,
    grpc.StatusCode.PERMISSION_DENIED: Exit.DENIED,
    grpc.StatusCode.UNAUTHENTICATED: Exit.DENIED,
}


def exit_for_status(code: grpc.StatusCode) -> Exit:
    return _BY_STATUS.get(code, Exit.ERROR)


def from_rpc(exc: grpc.RpcError, target: str, connected: bool) -> CliError:
    """A CliError for a failed call. `connected`: whether the channel ever reached the daemon."""
    code: grpc.StatusCode = exc.code()
    details = (exc.details() or code.name.lower()).strip()
    if code == grpc.StatusCode.UNAUTHENTICATED:
        who = "the coordinator" if target.startswith("coordinator") else "the daemon"
        return CliError(f"{who} refused this client's certificate: {details}", Exit.DENIED)
    if not connected and code in (grpc.StatusCode.UNAVAILABLE,
                                  grpc.StatusCode.DEADLINE_EXCEEDED):
        return CliError(f"cygnetd not answering at {target}: {_short(details)}",
                        Exit.UNREACHABLE)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return CliError(f"cygnetd did not answer in time ({details}); see --timeout")
    if code == grpc.StatusCode.UNIMPLEMENTED:
        return CliError(f"cygnetd at {target} does not support this call; is it older "
                        f"than this client? ({details})")
    return CliError(details, exit_for_status(code))


def _short(details: str) -> str:
    # gRPC's "failed to connect to all addresses; last error: UNKNOWN: unix:/x: No such file"
    # buries the cause at the end.
    marker = "last error: "
    if marker in details:
        details = details.split(marker, 1)[1]
        for prefix in ("UNKNOWN: ", "UNAVAILABLE: ", "FAILED_PRECONDITION: "):
            details = details.removeprefix(prefix)
    return details.removesuffix(": OK")
