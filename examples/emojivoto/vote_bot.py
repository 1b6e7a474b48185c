"""The vote bot: drives traffic to the web frontend, like emojivoto's.

python3 vote_bot.py [--rate PER_SECOND] [--duration SECONDS]

Lists the emoji, then votes for random ones at a fixed rate (plus a
leaderboard look now and then) with urllib to
$WEB_SERVICE_HOST:$WEB_SERVICE_PORT (urllib honours http_proxy, as most HTTP
clients do); prints a JSON line of counts every 10 s and at the end.
Connection errors are counted and retried.
"""

import json
import random
import sys
import time
import urllib.error
import urllib.request

from emojivoto import service_addr


def arg(name, default):
    args = sys.argv[1:]
    return float(args[args.index(name) + 1]) if name in args else default


def main():
    rate = arg("--rate", 5.0)
    duration = arg("--duration", 0.0)
    web = "http://" + service_addr("web")
    counts = {"requests": 0, "ok": 0, "failed": 0, "errors": 0}
    codes = [":joy:"]
    start = last = time.monotonic()
    while duration == 0 or time.monotonic() - start < duration:
        n = counts["requests"]
        if n == 0 or n % 50 == 0:
            path = "/api/list"
        elif n % 10 == 0:
            path = "/api/leaderboard"
        else:
            path = "/api/vote?choice=" + random.choice(codes)
        req = urllib.request.Request(web + path, headers={"User-Agent": "emojivoto-vote-bot"})
        try:
            with urllib.request.urlopen(req, timeout=5) as rsp:
                body = rsp.read()
            counts["requests"] += 1
            counts["ok"] += 1
            if path == "/api/list":
                codes = [e["shortcode"] for e in json.loads(body)] or codes
        except urllib.error.HTTPError as e:
            e.read()
            counts["requests"] += 1
            counts["failed"] += 1
        except OSError:
            counts["errors"] += 1
            time.sleep(0.5)
        now = time.monotonic()
        if now - last >= 10:
            print(json.dumps(counts), flush=True)
            last = now
        time.sleep(1.0 / rate)
    print(json.dumps(counts), flush=True)


if __name__ == "__main__":
    main()
