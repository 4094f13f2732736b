"""The local AWS emulator: moto's server, with DynamoDB requests made atomic.

moto serves requests on threads and its DynamoDB backend takes no lock, so two conditional
writes that arrive together can both pass their condition; real DynamoDB never allows that,
and stemvault's idempotency rests on it. This runs moto's own WSGI application with one
lock around DynamoDB requests (SQS long polls and S3 transfers stay concurrent).

    python emulator.py --host 127.0.0.1 --port 5000
"""

import argparse
import os
import signal
import sys
import threading

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import run_simple


class DynamoDbSerialised:
    """WSGI middleware: one DynamoDB request at a time."""

    def __init__(self, app):
        self.app = app
        self.lock = threading.Lock()

    def __call__(self, environ, start_response):
        if environ.get("HTTP_X_AMZ_TARGET", "").startswith("DynamoDB_"):
            with self.lock:
                # Materialise the response inside the lock: the write happens while iterating.
                return list(self.app(environ, start_response))
        return self.app(environ, start_response)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    os.environ.setdefault("MOTO_PORT", str(args.port))  # moto builds some URLs (SQS queues) from it
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    app = DomainDispatcherApplication(create_backend_app)
    run_simple(args.host, args.port, DynamoDbSerialised(app), threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
