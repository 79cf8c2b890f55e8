"""Verifies one hdls webhook delivery the way a receiver would: the Standard Webhooks
signature with the stock `standardwebhooks` library, and X-Hdls-Signature with the README's
standard-library check. Reads {"secret", "headers", "body_b64"} as JSON on stdin; exits
non-zero unless the delivery verifies and the same body altered by one byte does not."""

import base64
import hashlib
import hmac
import json
import sys

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

given = json.load(sys.stdin)
secret, headers = given["secret"], given["headers"]
body = base64.b64decode(given["body_b64"])


def verdicts(payload):
    try:
        Webhook(secret).verify(payload, headers)
        standard = True
    except WebhookVerificationError:
        standard = False
    mine = "v1=" + hmac.new(secret.encode(), payload, hashlib.sha256).hexdigest()
    seed = hmac.compare_digest(mine, headers.get("x-hdls-signature", ""))
    return standard, seed


assert verdicts(body) == (True, True), ("the delivery does not verify", verdicts(body))
altered = bytearray(body)
altered[len(altered) // 2] ^= 1
assert verdicts(bytes(altered)) == (False, False), ("an altered body verifies", verdicts(bytes(altered)))
print("ok: verified", headers["x-hdls-event-id"])
