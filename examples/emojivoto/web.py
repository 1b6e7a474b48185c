"""The web frontend (HTTP/1.1): calls the emoji and voting gRPC services.

GET /                      a page with the emoji to vote for
GET /api/list              the catalogue (emoji service: ListAll)
GET /api/vote?choice=:x:   FindByShortcode, then Vote (404 unknown, 500 failed)
GET /api/leaderboard       Results joined with the catalogue
GET /healthz               200
"""

import html
import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import grpc

from emojivoto import Client, port_arg, service_addr

emoji = Client(service_addr("emoji"), "emojivoto.EmojiService")
voting = Client(service_addr("voting"), "emojivoto.VotingService")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def reply(self, status, body, ctype="application/json"):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        url = urlparse(self.path)
        try:
            if url.path == "/healthz":
                self.reply(200, {"ok": True})
            elif url.path == "/api/list":
                self.reply(200, emoji.call("ListAll", {})["list"])
            elif url.path == "/api/vote":
                choice = parse_qs(url.query).get("choice", [""])[0]
                found = emoji.call("FindByShortcode", {"shortcode": choice})
                voting.call("Vote", {"shortcode": choice})
                self.reply(200, {"voted": found["emoji"]})
            elif url.path == "/api/leaderboard":
                cat = {e["shortcode"]: e["unicode"] for e in emoji.call("ListAll", {})["list"]}
                res = voting.call("Results", {})["results"]
                self.reply(200, [dict(r, unicode=cat.get(r["shortcode"])) for r in res])
            elif url.path == "/":
                items = emoji.call("ListAll", {})["list"]
                links = "".join(
                    f'<a href="/api/vote?choice={html.escape(e["shortcode"])}">{e["unicode"]}</a> '
                    for e in items
                )
                page = f"<!doctype html><title>emojivoto</title><h1>Vote!</h1><p>{links}</p>"
                self.reply(200, page.encode(), "text/html; charset=utf-8")
            else:
                self.reply(404, {"error": "not found"})
        except grpc.RpcError as e:
            status = 404 if e.code() == grpc.StatusCode.NOT_FOUND else 500
            self.reply(status, {"error": e.code().name, "detail": e.details()})

    def log_message(self, *_args):
        pass


if __name__ == "__main__":
    port = port_arg()
    server = ThreadingHTTPServer(("0.0.0.0", port), Handler)
    print(f"web listening on :{port}", flush=True)
    server.serve_forever()
