"""The vote bot: drives traffic to the web frontend, like emojivoto's.

python3 vote_bot.py [--rate PER_SECOND] [--duration SECONDS]

Lists the emoji, then votes for random ones at a fixed rate (plus a
leaderboard look now and then) over one keep-alive HTTP/1.1 connection to
$WEB_SERVICE_HOST:$WEB_SERVICE_PORT; prints a JSON line of counts every 10 s
and at the end. Connection errors are counted and retried.
"""

import http.client
import json
import random
import sys
import time

from emojivoto import service_addr


def arg(name, default):
    args = sys.argv[1:]
    return float(args[args.index(name) + 1]) if name in args else default


def main():
    rate = arg("--rate", 5.0)
    duration = arg("--duration", 0.0)
    host, port = service_addr("web").rsplit(":", 1)
    counts = {"requests": 0, "ok": 0, "failed": 0, "errors": 0}
    conn = None
    codes = [":joy:"]
    start = last = time.monotonic()
    while duration == 0 or time.monotonic() - start < duration:
        if conn is None:
            conn = http.client.HTTPConnection(host, int(port), timeout=5)
        n = counts["requests"]
        if n == 0 or n % 50 == 0:
            path = "/api/list"
        elif n % 10 == 0:
            path = "/api/leaderboard"
        else:
            path = "/api/vote?choice=" + random.choice(codes)
        try:
            conn.request("GET", path, headers={"User-Agent": "emojivoto-vote-bot"})
            rsp = conn.getresponse()
            body = rsp.read()
            counts["requests"] += 1
            counts["ok" if rsp.status == 200 else "failed"] += 1
            if path == "/api/list" and rsp.status == 200:
                codes = [e["shortcode"] for e in json.loads(body)] or codes
        except (OSError, http.client.HTTPException):
            counts["errors"] += 1
            conn.close()
            conn = None
            time.sleep(0.5)
        now = time.monotonic()
        if now - last >= 10:
            print(json.dumps(counts), flush=True)
            last = now
        time.sleep(1.0 / rate)
    print(json.dumps(counts), flush=True)


if __name__ == "__main__":
    main()
