"""WebSocket echo peer for pimesh integration tests (websockets >= 15).

Usage:
    python3 ws_echo.py serve [--port 0]
        Listens on 127.0.0.1 or --host (port 0 picks a free port), prints ``PORT <n>``
        on stdout, then echoes every text and binary message back unchanged
        (any request path) until SIGTERM/SIGINT.
    python3 ws_echo.py client --url ws://HOST:PORT/path [--messages N]
                              [--header NAME:VALUE ...]
        Sends N messages alternating text and binary (sizes vary; includes a
        100 KiB binary and a non-ASCII text), checks each echo is identical
        and of the same type, closes with 1000 and checks the close code.
        Prints ``{"echoed": N, "close_code": 1000}`` and exits 0; on any
        failure explains on stderr and exits 1.

        ``--header`` (repeatable) adds a handshake request header. ``Host`` is
        special-cased: it replaces the Host header (the TCP connection still
        goes to the address in --url) instead of adding a second one.

Env proxies (HTTP(S)_PROXY etc.) are ignored; every step has a timeout.
"""

import argparse
import asyncio
import json
import signal
import sys
from urllib.parse import urlsplit, urlunsplit

from websockets.asyncio.client import connect
from websockets.asyncio.server import serve as ws_serve
from websockets.exceptions import ConnectionClosed

TIMEOUT = 10.0  # seconds: open, each echo, close


# ---------------------------------------------------------------- server


async def echo(ws):
    try:
        async for message in ws:  # str for text frames, bytes for binary
            await ws.send(message)
    except ConnectionClosed:
        pass


async def serve(port, host="127.0.0.1"):
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set_result, None)
    async with ws_serve(echo, host, port) as server:
        bound = server.sockets[0].getsockname()[1]
        print(f"PORT {bound}", flush=True)
        await stop
    return 0


# ---------------------------------------------------------------- client


class CheckFailed(Exception):
    pass


def messages(n):
    """N payloads alternating text (even i) and binary (odd i)."""
    texts = ["hello", "", "héllo wörld ✓ 你好 🚀", "t" * 70000, "x\n\ty"]
    binaries = [b"\x00\xff" * 3, bytes(range(256)) * 40, b"",
                bytes(i % 251 for i in range(100 * 1024 - 4)), b"\x01"]
    for i in range(n):
        if i % 2 == 0:
            yield f"{i}:" + texts[(i // 2) % len(texts)]
        else:
            # 4-byte index prefix: the 100 KiB - 4 body makes exactly 100 KiB.
            yield i.to_bytes(4, "big") + binaries[(i // 2) % len(binaries)]


def connect_args(url, headers):
    """Map --url/--header to websockets.connect() arguments."""
    extra, kwargs = [], {"proxy": None, "open_timeout": TIMEOUT,
                         "close_timeout": TIMEOUT}
    for header in headers:
        name, sep, value = header.partition(":")
        if not sep or not name.strip():
            raise CheckFailed(f"bad --header {header!r}, want NAME:VALUE")
        name, value = name.strip(), value.strip()
        if name.lower() == "host":
            # The Host header comes from the URI; host/port set the TCP peer.
            parts = urlsplit(url)
            kwargs["host"] = parts.hostname
            kwargs["port"] = parts.port or (443 if parts.scheme == "wss" else 80)
            url = urlunsplit(parts._replace(netloc=value))
        else:
            extra.append((name, value))
    if extra:
        kwargs["additional_headers"] = extra
    return url, kwargs


async def client(url, n, headers):
    uri, kwargs = connect_args(url, headers)
    async with connect(uri, **kwargs) as ws:
        for i, sent in enumerate(messages(n)):
            await ws.send(sent)
            try:
                got = await asyncio.wait_for(ws.recv(), TIMEOUT)
            except TimeoutError:
                raise CheckFailed(f"message #{i}: no echo within {TIMEOUT}s")
            if type(got) is not type(sent):
                raise CheckFailed(f"message #{i}: sent {type(sent).__name__}, "
                                  f"got {type(got).__name__}")
            if got != sent:
                raise CheckFailed(f"message #{i}: echo differs "
                                  f"({len(got)} vs {len(sent)} items)")
        await ws.close(1000)
    if ws.close_code != 1000:
        raise CheckFailed(f"close code {ws.close_code} ({ws.close_reason!r}), "
                          "want 1000")
    return {"echoed": n, "close_code": ws.close_code}


def run_client(args):
    try:
        result = asyncio.run(client(args.url, args.messages, args.header))
    except CheckFailed as err:
        print(f"ws_echo client: FAILED: {err}", file=sys.stderr)
        return 1
    except Exception as err:  # refused, timed out, handshake rejected, ...
        print(f"ws_echo client: FAILED against {args.url}: "
              f"{type(err).__name__}: {err}", file=sys.stderr)
        return 1
    print(json.dumps(result), flush=True)
    return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_serve = sub.add_parser("serve")
    p_serve.add_argument("--port", type=int, default=0)
    p_serve.add_argument("--host", default="127.0.0.1")
    p_client = sub.add_parser("client")
    p_client.add_argument("--url", required=True)
    p_client.add_argument("--messages", type=int, default=10)
    p_client.add_argument("--header", action="append", default=[],
                          metavar="NAME:VALUE")
    args = parser.parse_args()
    if args.cmd == "serve":
        return asyncio.run(serve(args.port, args.host))
    return run_client(args)


if __name__ == "__main__":
    sys.exit(main())
