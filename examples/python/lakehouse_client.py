#!/usr/bin/env python3
"""A Python client of the lakehouse gRPC API (service lakehouse.v1.Lakehouse).

The stubs are generated from the .proto files in proto/ at start (grpcio-tools), so the
client always matches the contract it runs against. Needs `grpcio` and `grpcio-tools`
(scripts/requirements.txt pins them).

    python examples/python/lakehouse_client.py --server 127.0.0.1:50051 --token "$TOKEN" \\
        positions --account ACC-0001 --symbol AAPL
    python examples/python/lakehouse_client.py --server 127.0.0.1:50051 \\
        bars AAPL --interval 1d --from 2024-01-02T00:00:00Z --to 2024-01-05T00:00:00Z

Each prints the response as JSON on stdout (decimals stay strings: they are exact). The token
may also come from LAKEHOUSE_TOKEN. Errors print the gRPC status code and message on stderr
and exit with 1.
"""

import argparse
import datetime as dt
import json
import os
import sys
import tempfile
from pathlib import Path

PROTO_DIR = Path(__file__).resolve().parents[2] / "proto"


def load_stubs():
    """Generates the Python modules of proto/ into a temporary directory and imports them."""
    import grpc_tools
    from grpc_tools import protoc

    out = tempfile.mkdtemp(prefix="lakehouse-stubs-")
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    files = [str(p.relative_to(PROTO_DIR)) for p in sorted(PROTO_DIR.rglob("*.proto"))]
    code = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{PROTO_DIR}",
            f"-I{well_known}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            *files,
        ]
    )
    if code != 0:
        sys.exit(f"generating the stubs from {PROTO_DIR} failed (protoc exit {code})")
    sys.path.insert(0, out)
    from lakehouse.v1 import service_pb2, service_pb2_grpc

    return service_pb2, service_pb2_grpc


def timestamp(text):
    """RFC 3339 text -> google.protobuf.Timestamp."""
    from google.protobuf.timestamp_pb2 import Timestamp

    t = Timestamp()
    t.FromDatetime(dt.datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(dt.timezone.utc))
    return t


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--server", default="127.0.0.1:50051", help="HOST:PORT of lakehouse serve")
    ap.add_argument("--token", default=os.environ.get("LAKEHOUSE_TOKEN"), help="bearer token")
    ap.add_argument("--timeout", type=float, default=30.0, help="deadline per call, seconds")
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("positions", help="merged positions (batch + speed)")
    p.add_argument("--account", action="append", default=[], help="repeatable")
    p.add_argument("--desk", action="append", default=[], help="repeatable")
    p.add_argument("--symbol", action="append", default=[], help="repeatable")
    p.add_argument("--include-flat", action="store_true")
    b = sub.add_parser("bars", help="merged OHLCV bars of one symbol")
    b.add_argument("symbol")
    b.add_argument("--interval", choices=["1m", "5m", "1d"], default="1m")
    b.add_argument("--from", dest="start", required=True, help="RFC 3339, inclusive")
    b.add_argument("--to", dest="end", required=True, help="RFC 3339, exclusive")
    args = ap.parse_args()

    import grpc
    from google.protobuf.json_format import MessageToDict

    pb, pb_grpc = load_stubs()
    metadata = [("authorization", f"Bearer {args.token}")] if args.token else []
    with grpc.insecure_channel(args.server) as channel:
        api = pb_grpc.LakehouseStub(channel)
        try:
            if args.command == "positions":
                reply = api.GetPositions(
                    pb.GetPositionsRequest(
                        accounts=args.account,
                        desks=args.desk,
                        symbols=args.symbol,
                        include_flat=args.include_flat,
                    ),
                    metadata=metadata,
                    timeout=args.timeout,
                )
            else:
                interval = {"1m": pb.INTERVAL_1M, "5m": pb.INTERVAL_5M, "1d": pb.INTERVAL_1D}
                reply = api.GetBars(
                    pb.GetBarsRequest(
                        symbol=args.symbol,
                        interval=interval[args.interval],
                        **{"from": timestamp(args.start), "to": timestamp(args.end)},
                    ),
                    metadata=metadata,
                    timeout=args.timeout,
                )
        except grpc.RpcError as e:
            print(f"{e.code().name}: {e.details()}", file=sys.stderr)
            return 1
    json.dump(MessageToDict(reply, preserving_proto_field_name=True), sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
