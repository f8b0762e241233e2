"""Drains, undrains or shows a host through the coordinator (used by rolling-upgrade.yml).

  python fleet_host.py --coordinator HOST:PORT --pki DIR drain|undrain|show HOST_ID

Authenticates with the client certificate DIR/clients/ansible.pem (mutual TLS,
issued from the fleet CA by the playbook). Prints the host as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import grpc

from cygnet.api.v1 import coordinator_pb2 as pb
from cygnet.api.v1 import coordinator_pb2_grpc as pb_grpc


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--coordinator", required=True)
    p.add_argument("--pki", type=Path, required=True)
    p.add_argument("--server-name", default="")
    p.add_argument("action", choices=("drain", "undrain", "show"))
    p.add_argument("host_id")
    args = p.parse_args()
    creds = grpc.ssl_channel_credentials(
        (args.pki / "ca.pem").read_bytes(), (args.pki / "clients/ansible.key").read_bytes(),
        (args.pki / "clients/ansible.pem").read_bytes())
    options = [("grpc.ssl_target_name_override", args.server_name)] if args.server_name else []
    with grpc.secure_channel(args.coordinator, creds, options=options) as channel:
        stub = pb_grpc.CoordinatorStub(channel)
        if args.action == "show":
            host = stub.GetHost(pb.GetHostRequest(host_id=args.host_id), timeout=30)
        else:
            call = stub.DrainHost if args.action == "drain" else stub.UndrainHost
            host = call(pb.DrainHostRequest(host_id=args.host_id), timeout=30)
    json.dump({"id": host.id, "drained": host.drained,
               "available": host.state == pb.HOST_STATE_AVAILABLE}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
