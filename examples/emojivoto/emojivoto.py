"""Shared plumbing of the demo: gRPC with JSON messages.

grpcio's generic handlers carry JSON bytes instead of protobuf, so the demo
needs no code generation and no .proto compiler: `serve` runs a gRPC service
from a dict of functions, `Client` calls one. The apps know nothing about
pimesh: they talk plaintext gRPC / HTTP to the addresses they are given
(`<NAME>_SERVICE_HOST` / `_PORT`, as Kubernetes sets them); in the mesh lab
the pod's iptables send that traffic through its proxy, which adds mTLS.
Without redirection (the lab's loopback mode) `GRPC_PROXY_ADDR` names an
explicit HTTP/2 proxy: gRPC goes to it with `:authority` naming the service,
as HTTP requests go to `http_proxy` (grpcio itself would only tunnel through
`http_proxy` with CONNECT, which a proxy can carry only as opaque bytes).
"""

import json
import os
import sys
from concurrent import futures

import grpc


def _encode(obj):
    return json.dumps(obj).encode()


def _decode(data):
    return json.loads(data) if data else {}


def serve(service, methods, port):
    """Serves `methods` ({name: fn(request_dict, context) -> dict}) as gRPC
    service `service` on 0.0.0.0:`port` until killed."""
    handlers = {
        name: grpc.unary_unary_rpc_method_handler(
            fn, request_deserializer=_decode, response_serializer=_encode
        )
        for name, fn in methods.items()
    }
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service, handlers),)
    )
    server.add_insecure_port(f"0.0.0.0:{port}")
    server.start()
    print(f"{service} listening on :{port}", flush=True)
    server.wait_for_termination()


class Client:
    """A plaintext gRPC client of `service` at `target` (`host:port`)."""

    def __init__(self, target, service):
        self.service = service
        proxy = os.environ.get("GRPC_PROXY_ADDR")
        if proxy:
            self.channel = grpc.insecure_channel(
                proxy,
                options=[
                    ("grpc.default_authority", target),
                    ("grpc.enable_http_proxy", 0),
                ],
            )
        else:
            self.channel = grpc.insecure_channel(target)

    def call(self, method, request, timeout=5.0):
        rpc = self.channel.unary_unary(
            f"/{self.service}/{method}",
            request_serializer=_encode,
            response_deserializer=_decode,
        )
        return rpc(request, timeout=timeout)


def service_addr(name, default_port=8080):
    """`host:port` of service `name` from `<NAME>_SERVICE_HOST` / `_PORT`."""
    key = name.upper().replace("-", "_")
    host = os.environ.get(f"{key}_SERVICE_HOST")
    if not host:
        sys.exit(f"{key}_SERVICE_HOST is not set: where is the {name} service?")
    port = os.environ.get(f"{key}_SERVICE_PORT", str(default_port))
    return f"{host}:{port}"


def port_arg(default=8080):
    """The port to listen on: `--port N`, else $PORT, else `default`."""
    args = sys.argv[1:]
    if "--port" in args:
        return int(args[args.index("--port") + 1])
    return int(os.environ.get("PORT", default))
