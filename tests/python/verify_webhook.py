"""Verify webhooks with the official Standard Webhooks library (PyPI `standardwebhooks`,
pinned in infra/python/webhooks.txt), for tests/tests/notify.rs: a verifier we did not write.

stdin: {"secret": "whsec_...", "requests": [{"headers": {...}, "body": "..."}, ...]}
stdout: one JSON line per request: {"ok": true, "payload": <the verified JSON>} or
{"ok": false, "error": "..."}.
"""

import json
import sys

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


def main() -> None:
    job = json.load(sys.stdin)
    webhook = Webhook(job["secret"])
    for request in job["requests"]:
        try:
            payload = webhook.verify(request["body"], request["headers"])
            print(json.dumps({"ok": True, "payload": payload}))
        except WebhookVerificationError as e:
            print(json.dumps({"ok": False, "error": str(e)}))


if __name__ == "__main__":
    main()
