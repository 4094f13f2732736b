#!/usr/bin/env python3
"""Run a Lambda bootstrap like Lambda does, behind a loopback Runtime API, and measure it.

It starts the local emulator, provisions the table, bucket, queue and callback secret, spawns
the function with AWS_LAMBDA_RUNTIME_API pointing here, and feeds it N API Gateway v2 events
carrying signed split_stem callbacks (a fresh task each). Prints one JSON line: init_ms (spawn
-> first GET /next, so reading the callback secret included), invoke p50/p99 ms (event handed
out -> response posted), cpu_ms_per_1000 callbacks (user+sys of the function process) and its
peak RSS.

  runtime_api.py --events 300 -- target/release/ingest
  runtime_api.py --events 300 --table-key pk --sort-key '' -- node node-ingest/index.mjs
"""
import argparse, json, os, tempfile, threading, time, uuid

from common import FIXTURE, SORT_KEY, TABLE_KEY, Emulator, RuntimeAPI, api_event, proc_stats, spawn


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=300)
    ap.add_argument("--table-key", default=TABLE_KEY, help="hash key attribute of the table the function expects")
    ap.add_argument("--sort-key", default=SORT_KEY, help="range key attribute of the table ('' for none)")
    ap.add_argument("--env", action="append", default=[], help="extra KEY=VALUE for the function")
    ap.add_argument("--log", default=os.path.join(tempfile.gettempdir(), "runtime_api_fn.log"))
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    cmd = a.cmd[1:] if a.cmd and a.cmd[0] == "--" else a.cmd
    if not cmd:
        ap.error("give the function's command after --")

    w = Emulator()
    try:
        env = w.provision(a.table_key, a.sort_key, index=a.table_key == TABLE_KEY)
        env["AWS_ENDPOINT_URL"] = w.url
        env.update(kv.split("=", 1) for kv in a.env)
        api = RuntimeAPI(30)
        fixture = json.loads(FIXTURE.read_text())
        rids = []
        for i in range(a.events):
            task_id = uuid.uuid4().hex
            fixture["data"]["task_id"] = task_id
            rids.append(api.put(api_event(json.dumps(fixture), task_id, f"req{i}")))
        # moto's SendMessage gets slower with every message the queue holds (real SQS does not):
        # empty the queue as the callbacks fill it, so invoke latency stays what it would be.
        stop = threading.Event()
        purges = []
        def purge():
            while not stop.wait(2):
                w.sqs.purge_queue(QueueUrl=env["QUEUE_URL"]); purges.append(1)
        threading.Thread(target=purge, daemon=True).start()
        served_before = w.requests_served()
        t0 = time.perf_counter()
        proc = spawn(cmd, api, env, "ingest", a.log, memory_mb=256)
        api.wait(rids, 600, [proc])
        stop.set()
        time.sleep(0.2)
        # The function's AWS requests: all the emulator served meanwhile but the purges above
        # (the callback secret's read at init included, spread over the callbacks).
        aws_requests = w.requests_served() - served_before - len(purges)
        cpu_ms, rss = proc_stats(proc.pid)  # while it is still alive, waiting on /next
        proc.kill(); proc.wait()
        api.close()
    finally:
        w.close()

    done = [r for r in rids if r in api.done]
    lat = sorted((api.done[r] - api.handed[r]) * 1000 for r in done)
    pct = lambda p: round(lat[min(len(lat) - 1, int(p * len(lat)))], 2) if lat else None
    statuses = [str(api.status(r)) for r in done]
    if "init-error" in api.responses:
        statuses.append("init-error:" + api.responses["init-error"][1].decode(errors="replace")[:200])
    print(json.dumps({
        "cmd": " ".join(cmd), "events": a.events, "answered": len(done),
        "statuses": {s: statuses.count(s) for s in sorted(set(statuses))},
        "init_ms": round((api.first_next - t0) * 1000, 1) if api.first_next else None,
        "first_invoke_ms": round((api.done[rids[0]] - api.handed[rids[0]]) * 1000, 1) if rids[0] in api.done else None,
        "invoke_p50_ms": pct(0.5), "invoke_p99_ms": pct(0.99),
        "cpu_ms_per_1000": round(cpu_ms * 1000 / max(1, len(done)), 1), "peak_rss_mib": round(rss, 1),
        "aws_requests_per_callback": round(aws_requests / max(1, len(done)), 2),
    }), flush=True)


if __name__ == "__main__":
    main()
