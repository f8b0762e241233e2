"""Runs in the client's network namespace: calls the coordinator's token listener.

argv: ADDRESS CA_FILE TOKEN. Prints JSON: the status of a call without a token,
with a wrong token, and with the right one (plus the hosts it saw).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import grpc

from cygnet.api.v1 import coordinator_pb2 as cpb
from cygnet.api.v1 import coordinator_pb2_grpc as cpb_grpc


def main() -> None:
    address, ca, token = sys.argv[1], Path(sys.argv[2]).read_bytes(), sys.argv[3]
    out: dict[str, object] = {}
    with grpc.secure_channel(address, grpc.ssl_channel_credentials(ca)) as ch:
        stub = cpb_grpc.CoordinatorStub(ch)  # type: ignore[no-untyped-call]
        for label, metadata in (("none", ()), ("wrong", (("authorization", "Bearer x" * 4),)),
                                ("right", (("authorization", f"Bearer {token}"),))):
            try:
                resp = stub.ListHosts(cpb.ListHostsRequest(), metadata=metadata, timeout=10)
                out[label] = "OK"
                out["hosts"] = sorted(h.id for h in resp.hosts)
            except grpc.RpcError as exc:
                out[label] = exc.code().name
    print(json.dumps(out))


if __name__ == "__main__":
    main()
