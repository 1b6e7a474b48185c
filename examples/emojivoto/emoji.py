"""The emoji service (gRPC `emojivoto.EmojiService`): the emoji catalogue.

ListAll {} -> {"list": [{"shortcode", "unicode"}]}
FindByShortcode {"shortcode"} -> {"emoji": {...}}  (NOT_FOUND if unknown)
"""

import grpc

from emojivoto import port_arg, serve

EMOJI = {
    ":joy:": "\U0001F602",
    ":sunglasses:": "\U0001F60E",
    ":doughnut:": "\U0001F369",
    ":rocket:": "\U0001F680",
    ":pizza:": "\U0001F355",
    ":strawberry:": "\U0001F353",
    ":tada:": "\U0001F389",
    ":raspberry_pi:": "\U0001F967",
}


def list_all(_request, _context):
    return {"list": [{"shortcode": s, "unicode": u} for s, u in EMOJI.items()]}


def find(request, context):
    code = request.get("shortcode", "")
    if code not in EMOJI:
        context.abort(grpc.StatusCode.NOT_FOUND, f"no emoji {code}")
    return {"emoji": {"shortcode": code, "unicode": EMOJI[code]}}


if __name__ == "__main__":
    serve(
        "emojivoto.EmojiService",
        {"ListAll": list_all, "FindByShortcode": find},
        port_arg(),
    )
