"""Endpoint names: which branch a name means, and the connection string that carries one.

A name is `DB` (the database's main branch), `DB--BRANCH`, or a branch id.
It carries no host name, so it stays right wherever the branch runs; with
`endpoint_domain` set it is the first label of the host name clients dial
(`DB--BRANCH.DOMAIN`, read from TLS SNI), otherwise clients pass it in
`options=endpoint=NAME` (also `DB/BRANCH` there).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote

from cygnet.names import ID_RE

SEPARATOR = "--"
# What fits in one DNS label (and so under a wildcard certificate *.DOMAIN).
_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9_-]{0,61}[A-Za-z0-9])?")


@dataclass(frozen=True)
class Candidate:
    """One reading of a name: a database (id or name) and a branch (id, name, or "" for main)."""

    database: str
    branch: str


def candidates(name: str) -> list[Candidate]:
    """Every (database, branch) a name can mean, most specific last-resort last.

    `a--b--c` may be database `a--b`, branch `c` or database `a`, branch `b--c`;
    the router takes the one reading that exists and refuses an ambiguous one.
    """
    if ID_RE.fullmatch(name):
        return [Candidate("", name)] if name.startswith("br") else [Candidate(name, "")]
    if "/" in name:
        db, _, branch = name.partition("/")
        return [Candidate(db, branch)]
    found = [Candidate(name, "")]
    start = 0
    while (i := name.find(SEPARATOR, start)) != -1:
        if i > 0 and i + len(SEPARATOR) < len(name):
            found.append(Candidate(name[:i], name[i + len(SEPARATOR):]))
        start = i + 1
    return found


def name_in_host(server_name: str, domain: str) -> str | None:
    """The endpoint name in a TLS server name under `domain`, else None."""
    if not domain or not server_name:
        return None
    host = server_name.rstrip(".").lower()
    suffix = "." + domain.strip(".").lower()
    if not host.endswith(suffix):
        return None
    label = server_name[:len(host) - len(suffix)]
    return label if label and "." not in label else None


def endpoint_name(database: str, branch: str, branch_id: str, is_main: bool) -> str:
    """The name `cygnet connect` prints: DB for main, DB--BRANCH, or the branch id
    when the names do not fit a DNS label (an id does not survive a promote)."""
    name = database if is_main else f"{database}{SEPARATOR}{branch}"
    if _LABEL.fullmatch(name) and SEPARATOR not in database and SEPARATOR not in branch:
        return name
    return branch_id


def endpoint_uri(host: str, port: int, domain: str, name: str, user: str, password: str,
                 dbname: str, tls: dict[str, str]) -> str:
    """postgresql://USER:PASSWORD@NAME.DOMAIN:PORT/DBNAME, or with options=endpoint=NAME."""
    userinfo = f"{quote(user, safe='')}:{quote(password, safe='')}"
    params = dict(tls)
    if domain:
        netloc = f"{name}.{domain.strip('.')}"
    else:
        netloc = f"[{host}]" if ":" in host else quote(host, safe="")
        params = {"options": f"endpoint={name}", **params}
    query = "&".join(f"{k}={quote(v, safe='/')}" for k, v in params.items())
    return f"postgresql://{userinfo}@{netloc}:{port}/{quote(dbname, safe='')}" \
           + (f"?{query}" if query else "")
