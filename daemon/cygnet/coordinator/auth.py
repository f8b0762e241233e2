"""The coordinator's callers: fleet certificates (mutual TLS) or bearer tokens.

Authentication, roles and the audit log are the shared ones (rpc/auth.py,
rpc/roles.py). Here: the tokens file, and the rule that a host certificate may
register and beat only for the host it names.
"""

from __future__ import annotations

from pathlib import Path

from cygnet.errors import InvalidArgument
from cygnet.rpc.auth import CALLER
from cygnet.rpc.roles import Role


def load_tokens(path: Path | None) -> dict[str, tuple[str, str]]:
    """token -> (name, role), from lines of "NAME TOKEN [ROLE]" ('#' starts a comment).

    Without ROLE, the `roles` setting decides (token/NAME or token/*).
    """
    if path is None:
        return {}
    tokens: dict[str, tuple[str, str]] = {}
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise InvalidArgument("tokens_file", f"{path}: {exc}") from exc
    known = {r.value for r in Role}
    for number, line in enumerate(lines, 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) not in (2, 3) or len(parts[1]) < 16:
            raise InvalidArgument("tokens_file", f"line {number}: want NAME TOKEN [ROLE] "
                                  "(a token of 16+ chars)")
        role = parts[2] if len(parts) == 3 else ""
        if role and role not in known:
            raise InvalidArgument("tokens_file", f"line {number}: {role!r} is not one of "
                                  f"{', '.join(sorted(known))}")
        tokens[parts[1]] = (parts[0], role)
    return tokens


def host_refusal(host_id: str) -> str | None:
    """Why the caller may not register or beat for `host_id`, or None if it may.

    Only the host's own certificate may act for it.
    """
    caller = CALLER.get()
    if caller is not None and caller.identity == f"host/{host_id}":
        return None
    who = caller.identity if caller else "nobody"
    return f"{who} may not act for host {host_id!r}: that host's certificate is needed"
