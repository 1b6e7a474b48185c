"""The voting service (gRPC `emojivoto.VotingService`): counts votes.

Vote {"shortcode"} -> {}  (votes for :doughnut: fail with UNKNOWN, as in
                            Linkerd's emojivoto, so the metrics show failures)
Results {} -> {"results": [{"shortcode", "votes"}]}  (most votes first)
"""

import threading

import grpc

from emojivoto import port_arg, serve

votes = {}
lock = threading.Lock()


def vote(request, context):
    code = request.get("shortcode", "")
    if code == ":doughnut:":
        context.abort(grpc.StatusCode.UNKNOWN, "the doughnut vote always fails")
    with lock:
        votes[code] = votes.get(code, 0) + 1
    return {}


def results(_request, _context):
    with lock:
        ranked = sorted(votes.items(), key=lambda kv: -kv[1])
    return {"results": [{"shortcode": s, "votes": n} for s, n in ranked]}


if __name__ == "__main__":
    serve("emojivoto.VotingService", {"Vote": vote, "Results": results}, port_arg())
