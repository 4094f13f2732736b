#!/usr/bin/env python3
"""Side-by-side vault bench: the project's ingest + download Lambda bootstraps, run as Lambda
runs them (a loopback Runtime API), against a boto3 peer, on one emulator and one source server.

  pipeline_bench.py --ingest BIN --download BIN [--files 12 --mib 8 --instances 1 --rounds 2]
  pipeline_bench.py --ingest BIN --download BIN --rounds 1 --meter    # AWS operations per task
  pipeline_bench.py --ingest BIN --download BIN --big-mib 1024        # peak RSS of one 1 GiB copy

Per round: the emulator's raw PutObject rate for the same bytes (the ceiling: the better of one
PutObject at a time and `--instances` at once, as the download uploads), then the project
(ingest one signed split_stem callback whose URLs point at the source server; hand the queued
SQS messages to `--instances` download processes in batches of 5, like the event source
mapping; wall = first batch handed -> last batch answered; every object's sha256 checked),
then the boto3 peer (py-download/peer.py) on the same URLs. Prints one JSON line per
measurement and a summary line with the ratios.

`--meter` puts a counting proxy in front of the emulator for the project's functions: AWS
operations, DynamoDB request bytes per operation, and DynamoDB capacity units as DynamoDB bills
them (item sizes read before and after every write; failed conditions counted). It slows the
run: ignore its times.
"""
import argparse, hashlib, http.server, json, os, subprocess, sys, tempfile, threading, time, uuid

from common import FIXTURE, HERE, SORT_KEY, TASK_SK, CREDS, Emulator, RuntimeAPI, api_event, proc_stats, spawn


def block(name, size):
    """Deterministic bytes of one source file."""
    seed = hashlib.sha256(name.encode()).digest()
    unit = (seed * 32768)[: 1 << 20]  # 1 MiB
    return unit, size


class Source:
    """Serves GET /<name>: `size` deterministic bytes, with Content-Length."""

    def __init__(self, size):
        self.size = size
        outer = self

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            def log_message(self, *a): pass
            def do_GET(self):
                unit, size = block(self.path, outer.size)
                self.send_response(200); self.send_header("Content-Type", "audio/mpeg")
                self.send_header("Content-Length", str(size)); self.end_headers()
                left = size
                try:
                    while left:
                        k = min(left, len(unit)); self.wfile.write(unit[:k]); left -= k
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.srv.daemon_threads = True
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()
        self.origin = f"http://127.0.0.1:{self.srv.server_address[1]}"

    def sha(self, path):
        unit, size = block(path, self.size)
        h = hashlib.sha256(); left = size
        while left:
            k = min(left, len(unit)); h.update(unit[:k]); left -= k
        return h.hexdigest()


def sqs_event(msgs, queue_arn):
    return {"Records": [{"messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
                         "attributes": {k: str(v) for k, v in m.get("Attributes", {}).items()},
                         "messageAttributes": {}, "md5OfBody": m.get("MD5OfBody", ""), "eventSource": "aws:sqs",
                         "eventSourceARN": queue_arn, "awsRegion": "us-east-1"} for m in msgs]}


def operation(target, method, path, body):
    """The AWS operation a request to the emulator is, e.g. `ddb:PutItem`, `s3:PutObject`."""
    if target:
        service, op = target.split(".", 1) if "." in target else (target, "")
        prefix = {"DynamoDB_20120810": "ddb", "AmazonSQS": "sqs", "secretsmanager": "secretsmanager",
                  "AWSEvents": "events"}.get(service, service)
        return f"{prefix}:{op}"
    if b"Action=" in body[:200]:
        return "sqs:" + body.split(b"Action=")[1].split(b"&")[0].decode()
    q = path.split("?", 1)[1] if "?" in path else ""
    if method == "PUT":
        return "s3:UploadPart" if "partNumber" in q else "s3:PutObject"
    return "s3:" + method + (":" + q.split("=")[0] if q else "")


class Meter:
    """A counting proxy in front of the emulator: AWS operations per service, DynamoDB request
    body bytes per operation, and DynamoDB capacity units estimated as DynamoDB bills them
    (writes: ceil(max(item before, item after) / 1 KB), twice in a transaction, failed conditions
    included; reads: ceil(bytes / 4 KB), halved when eventually consistent), from the item sizes
    the emulator holds before and after each write."""

    def __init__(self, upstream_port):
        import http.client
        self.http_client = http.client
        self.upstream = upstream_port
        self.keys = {}  # table -> key attribute names
        self.lock = threading.Lock()
        self.reset()
        outer = self

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            def log_message(self, *a): pass
            def _go(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                target = self.headers.get("X-Amz-Target", "")
                op = operation(target, self.command, self.path, body)
                writes = outer.write_keys(op, json.loads(body or b"{}")) if op.startswith("ddb:") else []
                before = [outer.item_size(t, k) for t, k, _ in writes]
                status, headers, data = outer.forward(self.command, self.path, body, self.headers)
                after = [outer.item_size(t, k) for t, k, _ in writes]
                with outer.lock:
                    outer.ops[op] = outer.ops.get(op, 0) + 1
                    if op.startswith("ddb:"):
                        outer.request_bytes[op] = outer.request_bytes.get(op, 0) + len(body)
                    for (t, k, factor), b, a in zip(writes, before, after):
                        outer.wcu += factor * max(1, -(-max(a, b) // 1024))
                    if status == 400 and (b"ConditionalCheckFailed" in data or b"TransactionCanceled" in data):
                        outer.conflicts += 1
                    if op in ("ddb:GetItem", "ddb:Query", "ddb:Scan", "ddb:BatchGetItem") and status == 200:
                        req = json.loads(body or b"{}"); res = json.loads(data or b"{}")
                        items = res.get("Items") or ([res["Item"]] if "Item" in res else [])
                        size = sum(item_bytes(i) for i in items)
                        outer.rcu += max(1, -(-size // 4096)) * (1 if req.get("ConsistentRead") else 0.5)
                self.send_response(status)
                for k, v in headers:
                    if k.lower() not in ("connection", "transfer-encoding", "content-length"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data))); self.end_headers()
                if self.command != "HEAD": self.wfile.write(data)
            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _go

        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.srv.daemon_threads = True
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.srv.server_address[1]}"

    def reset(self):
        self.ops, self.request_bytes, self.wcu, self.rcu, self.conflicts = {}, {}, 0.0, 0.0, 0

    def forward(self, method, path, body, headers):
        c = self.http_client.HTTPConnection("127.0.0.1", self.upstream, timeout=300)
        # Its own Content-Length only: a second one in another case is a request the emulator
        # (waitress) refuses as ambiguous, as a careful server should.
        hdrs = {k: v for k, v in headers.items() if k.lower() not in ("connection", "transfer-encoding", "content-length")}
        hdrs["Content-Length"] = str(len(body))
        c.request(method, path, body=body, headers=hdrs)
        r = c.getresponse(); data = r.read(); c.close()
        return r.status, r.getheaders(), data

    def ddb(self, target, payload):
        hdrs = {"X-Amz-Target": "DynamoDB_20120810." + target, "Content-Type": "application/x-amz-json-1.0",
                "Authorization": "AWS4-HMAC-SHA256 Credential=test/20261201/us-east-1/dynamodb/aws4_request, SignedHeaders=host, Signature=x"}
        status, _, data = self.forward("POST", "/", json.dumps(payload).encode(), hdrs)
        return json.loads(data or b"{}")

    def key_names(self, table):
        if table not in self.keys:
            d = self.ddb("DescribeTable", {"TableName": table})["Table"]["KeySchema"]
            self.keys[table] = [k["AttributeName"] for k in d]
        return self.keys[table]

    def write_keys(self, op, req):
        """(table, key, capacity factor) of every item a write request touches."""
        def key_of(table, item):
            return {n: item[n] for n in self.key_names(table) if n in item}
        if op == "ddb:PutItem":
            return [(req["TableName"], key_of(req["TableName"], req["Item"]), 1)]
        if op in ("ddb:UpdateItem", "ddb:DeleteItem"):
            return [(req["TableName"], req["Key"], 1)]
        if op == "ddb:TransactWriteItems":
            out = []
            for t in req.get("TransactItems", []):
                (kind, body), = t.items()
                key = key_of(body["TableName"], body["Item"]) if kind == "Put" else body["Key"]
                out.append((body["TableName"], key, 2))
            return out
        if op == "ddb:BatchWriteItem":
            out = []
            for table, reqs in req.get("RequestItems", {}).items():
                for r in reqs:
                    if "PutRequest" in r: out.append((table, key_of(table, r["PutRequest"]["Item"]), 1))
                    else: out.append((table, r["DeleteRequest"]["Key"], 1))
            return out
        return []

    def item_size(self, table, key):
        item = self.ddb("GetItem", {"TableName": table, "Key": key, "ConsistentRead": True}).get("Item")
        return item_bytes(item) if item else 0

    def take(self):
        with self.lock:
            out = dict(ops=dict(sorted(self.ops.items())), ddb_request_bytes=dict(sorted(self.request_bytes.items())),
                       wcu=round(self.wcu), rcu=round(self.rcu, 1), conditional_failures=self.conflicts)
            self.reset()
        return out

    def close(self):
        self.srv.shutdown()


def item_bytes(item):
    """DynamoDB's item size: attribute names plus values (S/B their bytes, N ~ digits/2 + 1,
    BOOL/NULL 1, M/L 3 + their contents)."""
    def value(v):
        (t, x), = v.items()
        if t == "S": return len(x.encode())
        if t == "B": return len(x) * 3 // 4
        if t == "N": return (len(x.replace("-", "").replace(".", "").lstrip("0")) + 1) // 2 + 1
        if t in ("BOOL", "NULL"): return 1
        if t == "SS": return sum(len(s.encode()) for s in x)
        if t == "NS": return sum((len(n) + 1) // 2 + 1 for n in x)
        if t == "L": return 3 + sum(value(e) + 1 for e in x)
        if t == "M": return 3 + sum(len(k.encode()) + value(e) + 1 for k, e in x.items())
        return 0
    return sum(len(k.encode()) + value(v) for k, v in item.items())


def ceiling(w, files, size, parallel=1):
    """The emulator's raw PutObject rate (MB/s) for `files` objects of `size` bytes, `parallel`
    at a time (1: one after another)."""
    from concurrent.futures import ThreadPoolExecutor
    bucket = w.provision()["BUCKET_NAME"]
    payload = os.urandom(size)
    put = lambda i: w.s3.put_object(Bucket=bucket, Key=f"c/{i}", Body=payload)
    t = time.perf_counter()
    with ThreadPoolExecutor(parallel) as pool:
        list(pool.map(put, range(files)))
    return files * size / (time.perf_counter() - t) / 1e6


def callback(origin, task_id, only_first=False):
    """The seed split_stem callback for `task_id`, its URLs pointing at `origin`."""
    cb = json.loads(FIXTURE.read_text())
    cb["data"]["task_id"] = task_id
    urls = []
    info = cb["data"].get("vocal_separation_info") or cb["data"].get("vocal_removal_info")
    for k, v in list(info.items()):
        if isinstance(v, str) and v.startswith("http"):
            if only_first and urls:
                info[k] = None
                continue
            info[k] = f"{origin}/{task_id}/{k}.mp3"; urls.append(info[k])
    return json.dumps(cb), urls


def ingest(a, env, body, task, log):
    """Run the ingest bootstrap on one callback; the HTTP status it answered."""
    api = RuntimeAPI(12)
    p = spawn([a.ingest], api, env, "ingest", log)
    rid = api.put(api_event(body, task))
    api.wait([rid], 60, [p])
    p.kill(); p.wait(); api.close()
    return api.status(rid), api.responses


def queued(w, env, count, wait_s=1):
    msgs = []
    while len(msgs) < count:
        r = w.sqs.receive_message(QueueUrl=env["QUEUE_URL"], MaxNumberOfMessages=10, AttributeNames=["All"],
                                  WaitTimeSeconds=wait_s)
        if not r.get("Messages"):
            break
        msgs += r["Messages"]
    return msgs


def stored_files(w, bucket, task):
    return [o for o in w.s3.list_objects_v2(Bucket=bucket, Prefix=f"tasks/{task}/").get("Contents", [])
            if "/callbacks/" not in o["Key"] and not o["Key"].endswith("manifest.json")]


def task_item(w, table, task, sort_key):
    """The task's item: sk = task with a sort key, else the one item."""
    items = w.ddb.query(TableName=table, KeyConditionExpression="task_id = :t", ConsistentRead=True,
                        ExpressionAttributeValues={":t": {"S": task}})["Items"]
    if sort_key:
        return next((i for i in items if i.get(sort_key, {}).get("S") == TASK_SK), {})
    return next((i for i in items if "vault" in i), {})


def run_project(a, w, src, log):
    env = w.provision(sort_key=a.sort_key)
    meter = Meter(w.port) if a.meter else None
    env.update(AWS_ENDPOINT_URL=meter.url if meter else w.url, ALLOWED_SOURCE_HOSTS=src.origin)
    task = uuid.uuid4().hex
    body, urls = callback(src.origin, task)
    status, responses = ingest(a, env, body, task, log)
    if status != 200:
        return {"error": f"ingest answered {status}: {responses}"}
    ingest_meter = meter.take() if meter else None
    msgs = queued(w, env, len(urls))
    api = RuntimeAPI(900)
    procs = [spawn([a.download], api, env, "download", log) for _ in range(a.instances)]
    time.sleep(0.5)  # let every instance reach /next: init is measured separately
    t0 = time.perf_counter()
    rids = [api.put(sqs_event(msgs[i:i + 5], env["QUEUE_ARN"])) for i in range(0, len(msgs), 5)]
    ok = api.wait(rids, 900, procs)
    wall = time.perf_counter() - t0
    stats = [proc_stats(p.pid) for p in procs]
    for p in procs: p.kill(); p.wait()
    api.close()
    download_meter = meter.take() if meter else None
    if meter:
        meter.close()
    failures = sum(len(json.loads(api.responses[r][1] or b"{}").get("batchItemFailures", []))
                   for r in rids if r in api.responses)
    bucket = env["BUCKET_NAME"]
    stored = {hashlib.sha256(w.s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()).hexdigest()
              for o in stored_files(w, bucket, task)}
    good = sum(1 for u in urls if src.sha(u[len(src.origin):]) in stored)
    item = task_item(w, env["TABLE_NAME"], task, a.sort_key)
    return {"who": "project", "files": len(urls), "messages": len(msgs), "batches": len(rids), "answered": ok,
            "batch_failures": failures,
            "verified": good, "vault": item.get("vault", {}).get("S"), "wall_s": round(wall, 3),
            "mb_s": round(len(urls) * src.size / wall / 1e6, 1),
            "cpu_ms": round(sum(s[0] for s in stats)), "peak_rss_mib": round(max(s[1] for s in stats), 1),
            **({"aws_ingest": ingest_meter, "aws_download": download_meter} if meter else {})}


def run_peer(w, src, urls):
    bucket = w.provision()["BUCKET_NAME"]
    env = dict(os.environ, **CREDS, BUCKET_NAME=bucket, AWS_ENDPOINT_URL=w.url)
    t0 = time.perf_counter()
    p = subprocess.Popen([sys.executable, str(HERE / "py-download/peer.py")] + urls, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    peak = [0.0]
    def watch():
        while p.poll() is None:
            rss = proc_stats(p.pid)[1]
            if rss == rss:
                peak[0] = max(peak[0], rss)
            time.sleep(0.05)
    threading.Thread(target=watch, daemon=True).start()
    out = p.stdout.read(); p.stderr.read()
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    n = len(out.decode().split("\n")) - 1
    return {"who": "boto3-peer", "files": len(urls), "stored": n, "rc": p.returncode, "wall_s": round(wall, 3),
            "mb_s": round(len(urls) * src.size / wall / 1e6, 1), "cpu_ms": round((ru.ru_utime + ru.ru_stime) * 1000),
            "peak_rss_mib": round(max(peak[0], ru.ru_maxrss / 1024), 1)}


def big(a, w, log):
    """One file of --big-mib MiB through ingest and one download instance: its peak RSS."""
    src = Source(a.big_mib << 20)
    env = w.provision(sort_key=a.sort_key)
    env.update(AWS_ENDPOINT_URL=w.url, ALLOWED_SOURCE_HOSTS=src.origin)
    task = uuid.uuid4().hex
    body, urls = callback(src.origin, task, only_first=True)
    status, responses = ingest(a, env, body, task, log)
    if status != 200:
        return {"who": "project-big", "error": f"ingest answered {status}: {responses}"}
    msgs = queued(w, env, 1, wait_s=2)
    api = RuntimeAPI(900)
    p = spawn([a.download], api, env, "download", log)
    t0 = time.perf_counter()
    ok = api.wait([api.put(sqs_event(msgs, env["QUEUE_ARN"]))], 900, [p])
    wall = time.perf_counter() - t0
    cpu, rss = proc_stats(p.pid); p.kill(); p.wait(); api.close()
    sizes = [o["Size"] for o in stored_files(w, env["BUCKET_NAME"], task)]
    return {"who": "project-big", "mib": a.big_mib, "messages": len(msgs), "answered": ok, "stored_sizes": sizes,
            "complete": sizes == [a.big_mib << 20], "wall_s": round(wall, 2),
            "mb_s": round((a.big_mib << 20) / wall / 1e6, 1), "cpu_ms": round(cpu), "peak_rss_mib": round(rss, 1)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ingest", required=True)
    ap.add_argument("--download", required=True)
    ap.add_argument("--mib", type=int, default=8)
    ap.add_argument("--instances", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--big-mib", type=int, default=0)
    ap.add_argument("--meter", action="store_true", help="count AWS operations through a proxy (slower)")
    ap.add_argument("--no-peer", action="store_true", help="skip the boto3 peer")
    ap.add_argument("--sort-key", default=SORT_KEY, help="range key attribute of the task table ('' for none)")
    ap.add_argument("--log", default=os.path.join(tempfile.gettempdir(), "pipeline_bench.log"))
    a = ap.parse_args()
    w = Emulator()
    try:
        if a.big_mib:
            print(json.dumps(big(a, w, a.log)), flush=True); return
        src = Source(a.mib << 20)
        rows = []
        for r in range(a.rounds):
            # The ceiling: the better of one PutObject at a time and as many at once as the
            # download runs instances (each uploads several files at once); never the lower.
            c1 = ceiling(w, 12, a.mib << 20)
            cn = ceiling(w, 12, a.mib << 20, parallel=max(1, a.instances))
            c = max(c1, cn)
            p = run_project(a, w, src, a.log)
            print(json.dumps({"round": r, "ceiling_mb_s": round(c, 1), "ceiling_serial_mb_s": round(c1, 1),
                              "ceiling_parallel_mb_s": round(cn, 1), **p}), flush=True)
            q = None
            if not a.no_peer:
                _, urls = callback(src.origin, uuid.uuid4().hex)
                q = run_peer(w, src, urls)
                print(json.dumps({"round": r, **q}), flush=True)
            rows.append((c, p, q))
        if a.no_peer or any("error" in p for _, p, _ in rows):
            return
        pw = min(x[1]["wall_s"] for x in rows); qw = min(x[2]["wall_s"] for x in rows)
        cmax = max(x[0] for x in rows); pm = max(x[1]["mb_s"] for x in rows)
        print(json.dumps({"summary": True, "project_wall_over_peer": round(pw / qw, 2),
                          "project_share_of_ceiling": round(pm / cmax, 2)}), flush=True)
    finally:
        w.close()


if __name__ == "__main__":
    main()
