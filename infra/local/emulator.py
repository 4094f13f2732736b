"""The local AWS emulator: moto's application, with DynamoDB requests and S3 conditional writes
made atomic, served with keep-alive connections.

moto serves requests on threads and its DynamoDB backend takes no lock, so two conditional
writes that arrive together can both pass their condition; real DynamoDB never allows that,
and stemvault's idempotency rests on it. Nor does its S3 backend: a PutObject (or a
CompleteMultipartUpload) with If-None-Match or If-Match checks the key, then writes, so two at
once could both land (the manifest's fence and the write-once archives rest on S3 refusing
the second). This runs moto's own WSGI application with one lock around DynamoDB requests and
another around S3 conditional writes (SQS long polls and other S3 transfers stay
concurrent).

It is served by waitress, not by moto's own server (werkzeug's development server): that one
answers every request with `Connection: close`, so each AWS request paid a TCP connect and
close that AWS's keep-alive endpoints never cost. They were about half of the CPU a
callback cost the ingest function in `make bench` (one connection per request, strace), and
any peer measured against the emulator paid them per request too.

    python emulator.py --host 127.0.0.1 --port 5000

One line per request goes to stderr (`"METHOD /path HTTP/1.1" status`): the bench counts
AWS requests with it.
"""

import argparse
import os
import signal
import sys
import threading
import time

import waitress
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app


class Serialised:
    """WSGI middleware: one DynamoDB request at a time, and one S3 conditional write at a time
    (a PUT or POST carrying If-None-Match or If-Match: only S3 takes them here)."""

    def __init__(self, app):
        self.app = app
        self.dynamodb = threading.Lock()
        self.s3_conditional = threading.Lock()

    def lock_for(self, environ):
        if environ.get("HTTP_X_AMZ_TARGET", "").startswith("DynamoDB_"):
            return self.dynamodb
        conditional = "HTTP_IF_NONE_MATCH" in environ or "HTTP_IF_MATCH" in environ
        if conditional and environ.get("REQUEST_METHOD") in ("PUT", "POST"):
            return self.s3_conditional
        return None

    def __call__(self, environ, start_response):
        lock = self.lock_for(environ)
        if lock is None:
            return self.app(environ, start_response)
        with lock:
            # Materialise the response inside the lock: the write happens while iterating.
            return list(self.app(environ, start_response))


class MotoEnviron:
    """WSGI middleware: the environ moto's own request handler gave it. moto reads a request's
    undecoded path from `RAW_URI` (werkzeug's name; waitress calls it `REQUEST_URI`), and
    falls back to the decoded path, which S3 would decode a second time."""

    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        environ.setdefault("RAW_URI", environ.get("REQUEST_URI", ""))
        return self.app(environ, start_response)


class Identity:
    """WSGI middleware: `GET /stemvault-emulator/pid` answers this process's id, so whoever
    started it knows the server answering on its port is this one (a port picked free can be
    taken by another process before this one binds it)."""

    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        if environ.get("PATH_INFO") == "/stemvault-emulator/pid":
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [str(os.getpid()).encode()]
        return self.app(environ, start_response)


class RequestLog:
    """WSGI middleware: one line per request the application answers (or fails: 500) on
    stderr, as moto's own server wrote. Requests waitress refuses before the application
    (a malformed or ambiguous request: 400, 413, 431) are not logged."""

    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        def log(status):
            sys.stderr.write(f'"{environ["REQUEST_METHOD"]} {environ.get("PATH_INFO", "")} HTTP/1.1" {status}\n')
            sys.stderr.flush()

        def logged(status, headers, exc_info=None):
            log(status.split(" ", 1)[0])
            return start_response(status, headers, exc_info)

        try:
            return self.app(environ, logged)
        except Exception:
            log(500)  # waitress answers it; its traceback follows on stderr
            raise


def exit_when_orphaned(interval: float = 1.0) -> None:
    """Exit once the process that started this one is gone (this one handed to another
    parent): emulator.sh killed outright (SIGKILL runs no trap) must not leave an emulator
    behind for good."""
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(interval)
            if os.getppid() != parent:
                os._exit(0)

    threading.Thread(target=watch, name="orphan-watch", daemon=True).start()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    os.environ.setdefault("MOTO_PORT", str(args.port))  # moto builds some URLs (SQS queues) from it
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    exit_when_orphaned()
    app = DomainDispatcherApplication(create_backend_app)
    waitress.serve(
        RequestLog(Identity(MotoEnviron(Serialised(app)))),
        host=args.host,
        port=args.port,
        # A thread per request in flight: SQS long polls hold theirs for up to 20 s.
        threads=64,
        connection_limit=1000,
        asyncore_use_poll=True,
        # Request bodies (S3 parts of 8 MiB and more) read in large pieces and kept in memory,
        # not spooled to a temporary file past 512 KiB; objects up to 5 GiB in one PUT.
        recv_bytes=1 << 18,
        inbuf_overflow=64 << 20,
        max_request_body_size=5 << 30,
        # No "Serving on ..." banner (its warnings and tracebacks still go to stderr).
        _quiet=True,
    )


if __name__ == "__main__":
    main()
