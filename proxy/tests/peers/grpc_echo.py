"""gRPC echo peer for pimesh integration tests (raw bytes, no protoc).

Service ``pimesh.test.Echo`` with two methods whose messages are raw bytes:

* ``Unary``: echoes the request; trailer ``x-echo-trailer: unary-<len>``.
  A request ``b"status:<code>"`` instead aborts with that status code,
  details ``requested status <code>`` and trailer ``x-echo-trailer: failed``.
* ``BidiStream``: echoes every message as soon as it arrives; trailer
  ``x-echo-trailer: bidi-<count>`` when the client half-closes.
* ``Whoami``: answers the server's ``--name``.

With ``--name``, every answer's initial metadata carries ``x-echo-server:
<name>`` (which of several servers answered, e.g. behind a GRPCRoute).

Usage:
    python3 grpc_echo.py serve [--port 0] [--name NAME]
        Listens on 127.0.0.1 or --host (port 0 picks a free port), prints ``PORT <n>``
        on stdout, then serves until SIGTERM/SIGINT.
    python3 grpc_echo.py client --target HOST:PORT [--unary N] [--messages M]
                                [--authority NAME:PORT]
        Runs N unary echoes, one expected-failure call and an interleaved
        bidi stream of M messages. Prints one JSON summary line on stdout and
        exits 0 if every check passed; otherwise explains on stderr, exits 1.
    python3 grpc_echo.py calls --target HOST:PORT [--authority NAME:PORT]
                               /SERVICE/METHOD...
        One unary call per path, in order, on one channel (one HTTP/2
        connection while it lasts); prints one JSON line per call: path,
        code name, details and the ``x-echo-server`` that answered (null
        when none did, e.g. an answer of the proxy itself). Exits 0.
"""

import argparse
import json
import queue
import signal
import sys
from concurrent import futures

import grpc

SERVICE = "pimesh.test.Echo"
TRAILER = "x-echo-trailer"
SERVER = "x-echo-server"
TIMEOUT = 10.0  # seconds: deadline of every RPC (the whole bidi stream too)
STATUS_BY_CODE = {s.value[0]: s for s in grpc.StatusCode}
NAME = ""  # serve --name


# ---------------------------------------------------------------- server


def unary(request, context):
    if NAME:
        context.send_initial_metadata(((SERVER, NAME),))
    if request.startswith(b"status:"):
        code = int(request[len(b"status:"):])
        status = STATUS_BY_CODE.get(code, grpc.StatusCode.UNKNOWN)
        context.set_trailing_metadata(((TRAILER, "failed"),))
        context.abort(status, f"requested status {code}")
    context.set_trailing_metadata(((TRAILER, f"unary-{len(request)}"),))
    return request


def whoami(_request, context):
    if NAME:
        context.send_initial_metadata(((SERVER, NAME),))
    return NAME.encode()


def bidi_stream(request_iterator, context):
    if NAME:
        context.send_initial_metadata(((SERVER, NAME),))
    count = 0
    for message in request_iterator:
        count += 1
        yield message
    context.set_trailing_metadata(((TRAILER, f"bidi-{count}"),))


def serve(port, host="127.0.0.1"):
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    handler = grpc.method_handlers_generic_handler(SERVICE, {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "BidiStream": grpc.stream_stream_rpc_method_handler(bidi_stream),
        "Whoami": grpc.unary_unary_rpc_method_handler(whoami),
    })
    server.add_generic_rpc_handlers((handler,))
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        sys.exit(f"grpc_echo: could not bind {host}:{port}")
    server.start()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: server.stop(grace=1))
    print(f"PORT {bound}", flush=True)
    server.wait_for_termination()
    return 0


# ---------------------------------------------------------------- client


class CheckFailed(Exception):
    pass


def check(condition, message):
    if not condition:
        raise CheckFailed(message)


def trailer_of(call):
    return dict(call.trailing_metadata() or ()).get(TRAILER)


def run_unary(channel, n):
    method = channel.unary_unary(f"/{SERVICE}/Unary")
    sizes = [1, 0, 100 * 1024, 7, 1000, 16 * 1024 + 5, 65536, 3, 300, 4096]
    for i in range(n):
        size = sizes[i % len(sizes)] + i // len(sizes)
        # Consecutive bytes differ by 7, so a payload never starts "status:".
        payload = bytes((i + 7 * j) % 251 for j in range(size))
        reply, call = method.with_call(payload, timeout=TIMEOUT)
        check(reply == payload,
              f"unary #{i}: echo mismatch ({len(reply)} vs {len(payload)} bytes)")
        want = f"unary-{len(payload)}"
        check(trailer_of(call) == want,
              f"unary #{i}: trailer {trailer_of(call)!r}, want {want!r}")
    return n


def run_error(channel):
    method = channel.unary_unary(f"/{SERVICE}/Unary")
    try:
        method.with_call(b"status:5", timeout=TIMEOUT)
    except grpc.RpcError as err:
        code, details, trailer = err.code(), err.details(), trailer_of(err)
    else:
        raise CheckFailed("status:5 call unexpectedly succeeded")
    check(code == grpc.StatusCode.NOT_FOUND,
          f"status:5 call: code {code}, want NOT_FOUND (details {details!r})")
    check(details == "requested status 5",
          f"status:5 call: details {details!r}")
    check(trailer == "failed", f"status:5 call: trailer {trailer!r}")
    return code.value[0], details, trailer


def run_bidi(channel, m):
    method = channel.stream_stream(f"/{SERVICE}/BidiStream")
    outbox = queue.Queue()
    done = object()

    def requests():
        while (item := outbox.get()) is not done:
            yield item

    call = method(requests(), timeout=TIMEOUT)
    try:
        for i in range(m):
            payload = b"bidi-%d:" % i + b"x" * (i * 97)
            outbox.put(payload)
            # Wait for echo i before sending i + 1: proves interleaving.
            reply = next(call)
            check(reply == payload, f"bidi #{i}: echo mismatch")
        outbox.put(done)
        extra = list(call)
        check(not extra, f"bidi: {len(extra)} unexpected extra messages")
    except StopIteration:
        raise CheckFailed(f"bidi: stream ended early: {call.code()} {call.details()}")
    finally:
        outbox.put(done)
        call.cancel()  # no-op if the call already completed
    trailer = trailer_of(call)
    check(trailer == f"bidi-{m}", f"bidi: trailer {trailer!r}, want 'bidi-{m}'")
    return m, trailer


def client(target, n, m, authority=None):
    options = [("grpc.enable_http_proxy", 0)]
    if authority:
        # The :authority names the service (a proxy's outbound listener
        # used as an explicit proxy routes on it).
        options.append(("grpc.default_authority", authority))
    phase = "connect"
    try:
        with grpc.insecure_channel(target, options=options) as channel:
            phase = "unary"
            unary_ok = run_unary(channel, n)
            phase = "status:5"
            code, details, err_trailer = run_error(channel)
            phase = "bidi"
            bidi_ok, bidi_trailer = run_bidi(channel, m)
    except CheckFailed as err:
        print(f"grpc_echo client: FAILED: {err}", file=sys.stderr)
        return 1
    except grpc.RpcError as err:
        print(f"grpc_echo client: FAILED in {phase} phase against {target}: "
              f"{err.code()}: {err.details()}", file=sys.stderr)
        return 1
    print(json.dumps({
        "unary_ok": unary_ok, "error_code": code, "error_details": details,
        "error_trailer": err_trailer, "bidi_ok": bidi_ok,
        "bidi_trailer": bidi_trailer,
    }), flush=True)
    return 0


def calls(target, paths, authority=None):
    options = [("grpc.enable_http_proxy", 0)]
    if authority:
        options.append(("grpc.default_authority", authority))
    with grpc.insecure_channel(target, options=options) as channel:
        for path in paths:
            method = channel.unary_unary(path)
            try:
                reply, call = method.with_call(b"hello", timeout=TIMEOUT)
                code, details = grpc.StatusCode.OK, None
                metadata = call.initial_metadata()
            except grpc.RpcError as err:
                reply, code, details = b"", err.code(), err.details()
                metadata = err.initial_metadata()
            server = dict(metadata or ()).get(SERVER)
            print(json.dumps({
                "path": path, "code": code.name, "details": details,
                "server": server, "reply": reply.decode("latin-1"),
            }), flush=True)
    return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_serve = sub.add_parser("serve")
    p_serve.add_argument("--port", type=int, default=0)
    p_serve.add_argument("--host", default="127.0.0.1")
    p_serve.add_argument("--name", default="")
    p_client = sub.add_parser("client")
    p_client.add_argument("--target", required=True)
    p_client.add_argument("--unary", type=int, default=10)
    p_client.add_argument("--messages", type=int, default=20)
    p_client.add_argument("--authority", default=None)
    p_calls = sub.add_parser("calls")
    p_calls.add_argument("--target", required=True)
    p_calls.add_argument("--authority", default=None)
    p_calls.add_argument("paths", nargs="+")
    args = parser.parse_args()
    if args.cmd == "serve":
        global NAME
        NAME = args.name
        return serve(args.port, args.host)
    if args.cmd == "calls":
        return calls(args.target, args.paths, args.authority)
    return client(args.target, args.unary, args.messages, args.authority)


if __name__ == "__main__":
    sys.exit(main())
