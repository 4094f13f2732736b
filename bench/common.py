"""What the bench harnesses share: the local emulator, the resources the functions expect, a
loopback Lambda Runtime API, signed API Gateway events, and process statistics.

Run the harnesses with the Python of `.venv/emulator` (moto[server], boto3 and requests).
"""
import base64, hashlib, hmac, http.server, json, os, queue, socket, subprocess, sys, tempfile, threading, time, uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
FIXTURE = ROOT / "fixtures/callbacks/separate-vocals__seed-000__200-split_stem.json"
EMULATOR = ROOT / "infra/local/emulator.py"
KEY = "bench-hmac-key"
TOKEN = "bench-callback-token-0123456789"
CREDS = dict(AWS_REGION="us-east-1", AWS_DEFAULT_REGION="us-east-1", AWS_ACCESS_KEY_ID="test",
             AWS_SECRET_ACCESS_KEY="test", AWS_EC2_METADATA_DISABLED="true")
# Everything here talks to loopback: a proxy in the environment (HTTP_PROXY on a corporate
# machine) must not take those requests, from this process or the ones it starts.
for _name in ("NO_PROXY", "no_proxy"):
    os.environ[_name] = ",".join(filter(None, [os.environ.get(_name, ""), "127.0.0.1", "localhost"]))
# Nothing of the caller's AWS setup reaches the functions, the peers or boto3 here (as
# infra/local/emulator.sh): a per-service endpoint such as AWS_ENDPOINT_URL_S3 would win over
# the emulator's AWS_ENDPOINT_URL, a profile or real credentials would be read. The aws-lc
# crates' build settings (AWS_LC_*) are not the SDK's: kept.
for _name in [n for n in os.environ if n.startswith("AWS_") and not n.startswith("AWS_LC_")]:
    del os.environ[_name]
os.environ.update(AWS_CONFIG_FILE="/dev/null", AWS_SHARED_CREDENTIALS_FILE="/dev/null")
# The table's keys as the project's functions expect them (template.yaml): task_id + sk.
TABLE_KEY, SORT_KEY = "task_id", "sk"
TASK_SK = "task"


def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p


class Emulator:
    """The project's local AWS emulator (infra/local/emulator.py: moto with DynamoDB
    requests serialised, as real DynamoDB's conditions are atomic), on a free port."""

    def __init__(self):
        import boto3
        from botocore.config import Config
        self.port = free_port()
        # The bench empties its queue every few seconds (runtime_api.py): moto allows that.
        env = dict(os.environ, MOTO_SQS_ENFORCE_STRICT_QUEUE_PURGE_BEHAVIOUR="false")
        # Its request log (emulator.py writes one line per request to stderr) counts AWS requests.
        self.log = tempfile.NamedTemporaryFile(prefix="emulator-", suffix=".log")
        self.proc = subprocess.Popen([sys.executable, str(EMULATOR), "--host", "127.0.0.1", "--port", str(self.port)],
                                     env=env, stdout=subprocess.DEVNULL, stderr=self.log)
        self.url = f"http://127.0.0.1:{self.port}"
        # Ready when this process answers its pid (another program that took the free port
        # meanwhile would be measured instead).
        # Never through a proxy from the environment (as emulator.sh's probe).
        import http.client
        import urllib.request
        probe = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        ready_by = time.monotonic() + 30
        while True:
            try:
                with probe.open(f"{self.url}/stemvault-emulator/pid", timeout=1) as answer:
                    if answer.read().decode().strip() == str(self.proc.pid):
                        break
                self.proc.kill()
                raise SystemExit(f"another program answers on port {self.port}, not the emulator")
            except (OSError, http.client.HTTPException):
                if self.proc.poll() is not None:
                    raise SystemExit(f"the emulator exited ({self.proc.returncode}); is moto installed (make deps)?")
                if time.monotonic() > ready_by:
                    self.proc.kill()
                    raise SystemExit("the emulator did not answer within 30 s")
                time.sleep(0.1)
        kw = dict(endpoint_url=self.url, region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test")
        self.s3 = boto3.client("s3", config=Config(s3={"addressing_style": "path"}), **kw)
        self.ddb = boto3.client("dynamodb", **kw)
        self.sqs = boto3.client("sqs", **kw)
        self.secrets = boto3.client("secretsmanager", **kw)
        self.events = boto3.client("events", **kw)

    def provision(self, table_key=TABLE_KEY, sort_key=SORT_KEY, index=True):
        """A table (hash key `table_key`, range key `sort_key` unless empty, the sparse
        `open-tasks` index), a bucket, a queue, the callback secret and an EventBridge bus.
        Returns the function environment that names them."""
        name = "b" + uuid.uuid4().hex[:10]
        keys = [{"AttributeName": table_key, "KeyType": "HASH"}]
        attrs = [table_key]
        if sort_key:
            keys.append({"AttributeName": sort_key, "KeyType": "RANGE"}); attrs.append(sort_key)
        extra = {}
        if index:
            attrs += ["open", "last_received_at"]
            extra["GlobalSecondaryIndexes"] = [{
                "IndexName": "open-tasks", "Projection": {"ProjectionType": "KEYS_ONLY"},
                "KeySchema": [{"AttributeName": "open", "KeyType": "HASH"},
                              {"AttributeName": "last_received_at", "KeyType": "RANGE"}]}]
        self.ddb.create_table(TableName=name, BillingMode="PAY_PER_REQUEST", KeySchema=keys,
                              AttributeDefinitions=[{"AttributeName": n, "AttributeType": "S"} for n in attrs], **extra)
        self.s3.create_bucket(Bucket=name)
        q = self.sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "5400"})["QueueUrl"]
        arn = self.sqs.get_queue_attributes(QueueUrl=q, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        # functions/ingest/src/secret.rs: the callback secret's JSON.
        secret = self.secrets.create_secret(
            Name=f"{name}-callback", SecretString=json.dumps({"webhook_hmac_keys": [KEY], "callback_token": TOKEN}))
        self.events.create_event_bus(Name=name)  # the task events (Task Vaulted, ...)
        return dict(TABLE_NAME=name, BUCKET_NAME=name, QUEUE_URL=q, QUEUE_ARN=arn, CALLBACK_SECRET_ARN=secret["ARN"],
                    EVENT_BUS_NAME=name,
                    WEBHOOK_HMAC_KEYS=KEY)  # the last for the Node peer; the project reads the secret

    def requests_served(self):
        """How many HTTP requests the emulator has answered so far (its request log's lines)."""
        with open(self.log.name, "rb") as f:
            return sum(1 for line in f if b'" ' in line and b"HTTP/1." in line)

    def close(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill(); self.proc.wait()
        self.log.close()


def api_event(body, task_id, request_id=None):
    """An API Gateway v2 event: `body` POSTed to /callback/<token>, HMAC-signed over task id and time."""
    ts = str(int(time.time()))
    sig = base64.b64encode(hmac.new(KEY.encode(), f"{task_id}.{ts}".encode(), hashlib.sha256).digest()).decode()
    host = "abc.execute-api.us-east-1.amazonaws.com"
    path = f"/callback/{TOKEN}"
    return {"version": "2.0", "routeKey": "POST /callback/{token}", "rawPath": path, "rawQueryString": "",
            "headers": {"content-type": "application/json", "x-webhook-timestamp": ts, "x-webhook-signature": sig,
                        "host": host, "user-agent": "bench"},
            "pathParameters": {"token": TOKEN},
            "requestContext": {"accountId": "123456789012", "apiId": "abc", "domainName": host, "domainPrefix": "abc",
                               "http": {"method": "POST", "path": path, "protocol": "HTTP/1.1",
                                        "sourceIp": "203.0.113.7", "userAgent": "bench"},
                               "requestId": request_id or uuid.uuid4().hex, "routeKey": "POST /callback/{token}",
                               "stage": "$default", "time": "01/Dec/2026:10:00:00 +0000",
                               "timeEpoch": int(time.time() * 1000)},
            "body": body, "isBase64Encoded": False}


def read_body(handler):
    if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
        body = b""
        while True:
            n = int(handler.rfile.readline().strip() or b"0", 16)
            if n == 0:
                handler.rfile.readline(); return body
            body += handler.rfile.read(n); handler.rfile.readline()
    n = int(handler.headers.get("Content-Length") or 0)
    return handler.rfile.read(n) if n else b""


class RuntimeAPI:
    """A loopback Lambda Runtime API handing out queued events to whichever process asks."""

    def __init__(self, deadline_s):
        self.events, self.handed, self.done, self.responses = queue.Queue(), {}, {}, {}
        self.first_next = None
        self.lock = threading.Lock()
        outer = self

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            def log_message(self, *a): pass
            def do_GET(self):
                if not self.path.endswith("/invocation/next"):
                    self.send_response(404); self.send_header("Content-Length", "0"); self.end_headers(); return
                with outer.lock:
                    if outer.first_next is None:
                        outer.first_next = time.perf_counter()
                rid, ev = outer.events.get()
                body = json.dumps(ev).encode()
                self.send_response(200)
                self.send_header("Lambda-Runtime-Aws-Request-Id", rid)
                self.send_header("Lambda-Runtime-Deadline-Ms", str(int(time.time() * 1000) + deadline_s * 1000))
                self.send_header("Lambda-Runtime-Invoked-Function-Arn", "arn:aws:lambda:us-east-1:123456789012:function:f")
                self.send_header("Lambda-Runtime-Trace-Id", "Root=1-5bef4de7-ad49b0e87f6ef6c87fc2e700;Sampled=0")
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body))); self.end_headers()
                outer.handed[rid] = time.perf_counter()
                self.wfile.write(body)
            def do_POST(self):
                body = read_body(self)
                parts = self.path.split("/")
                if "invocation" in parts:
                    rid = parts[-2]
                    outer.responses[rid] = (parts[-1], body)
                    outer.done[rid] = time.perf_counter()
                else:
                    outer.responses["init-error"] = ("error", body)
                self.send_response(202); self.send_header("Content-Length", "0"); self.end_headers()

        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.srv.daemon_threads = True
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()
        self.address = f"127.0.0.1:{self.srv.server_address[1]}"

    def put(self, event):
        rid = str(uuid.uuid4()); self.events.put((rid, event)); return rid

    def wait(self, rids, timeout, procs=()):
        """Whether every event in `rids` was answered within `timeout` s; gives up early when
        the function reported an init error or every process in `procs` has exited."""
        end = time.time() + timeout
        while time.time() < end:
            if all(r in self.done for r in rids) or "init-error" in self.responses:
                break
            if procs and all(p.poll() is not None for p in procs):
                time.sleep(0.1)  # a response posted just before exiting
                break
            time.sleep(0.005)
        return all(r in self.done for r in rids)

    def status(self, rid):
        """The HTTP status an API Gateway response carries (or `error`/None)."""
        kind, body = self.responses.get(rid, (None, b""))
        if kind != "response":
            return kind
        try:
            return json.loads(body or b"{}").get("statusCode")
        except ValueError:
            return "unparsable"

    def close(self):
        self.srv.shutdown()


def proc_stats(pid):
    """(CPU ms, peak RSS MiB) of a live process."""
    try:
        st = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        cpu_ms = (int(st[11]) + int(st[12])) * 1000 / os.sysconf("SC_CLK_TCK")
        hwm = [l for l in open(f"/proc/{pid}/status") if l.startswith("VmHWM")][0].split()[1]
        return cpu_ms, int(hwm) / 1024
    except (OSError, IndexError, ValueError):
        return float("nan"), float("nan")


def spawn(cmd, api, env, name, log, memory_mb=512):
    """Start a Lambda bootstrap (or any runtime-loop command) against `api`, as Lambda does."""
    e = dict(os.environ, **CREDS, **{k: v for k, v in env.items() if k != "QUEUE_ARN"},
             AWS_LAMBDA_RUNTIME_API=api.address, AWS_LAMBDA_FUNCTION_NAME=name,
             AWS_LAMBDA_FUNCTION_MEMORY_SIZE=str(memory_mb), AWS_LAMBDA_FUNCTION_VERSION="$LATEST",
             AWS_LAMBDA_LOG_STREAM_NAME="bench", AWS_LAMBDA_LOG_GROUP_NAME=f"/aws/lambda/{name}", LOG_LEVEL="warn")
    e.pop("RUST_LOG", None)
    # In Lambda mode the functions log JSON to stdout: both streams go to the log.
    out = open(log, "a")
    return subprocess.Popen(cmd, env=e, stdout=out, stderr=out)
