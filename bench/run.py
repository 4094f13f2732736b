#!/usr/bin/env python3
"""`make bench`: every side-by-side measurement of issue 9 in one run on this machine, ending
with one summary table (each number next to its target) on stdout. Progress and the harnesses'
JSON lines go to stderr; all of it is also written as JSON to --out.

  run.py --ingest target/release/ingest --download target/release/download \
         --scratch DIR --out DIR/last.json

1. runtime_api.py: the ingest bootstrap on --events signed callbacks (CPU per callback, init),
   then the Node SDK v3 peer on the same (when `node` and `npm` exist; installed with `npm ci`
   under --scratch).
2. pipeline_bench.py --meter, 1 round: AWS operations, DynamoDB request bytes, WCU, RCU and
   failed conditions for one 12-file split_stem task.
3. pipeline_bench.py --instances 3 --rounds 2: download CPU per GiB against the boto3 peer and
   throughput against the emulator's raw PutObject rate, in the same run.
4. pipeline_bench.py --big-mib 1024: peak RSS of one 1 GiB copy.

Benchmarks, not tests: a missed target is reported, not failed; a harness that breaks (a
callback refused, a file not stored) makes the exit status non-zero.
"""
import argparse, json, os, platform, shutil, subprocess, sys, time
from pathlib import Path

HERE = Path(__file__).resolve().parent
GIB = 1 << 30


def log(*parts):
    print(*parts, file=sys.stderr, flush=True)


def harness(script, *args, logfile):
    """Run one harness with this Python; its JSON lines."""
    cmd = [sys.executable, str(HERE / script), "--log", str(logfile), *map(str, args)]
    log("$", " ".join(cmd[1:]))
    t = time.perf_counter()
    p = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, cwd=HERE)
    lines = []
    for line in p.stdout.splitlines():
        log("  " + line)
        try:
            lines.append(json.loads(line))
        except ValueError:
            pass
    log(f"  ({time.perf_counter() - t:.0f} s, exit {p.returncode}; function logs: {logfile})")
    if p.returncode != 0:
        lines.append({"error": f"{script} exited {p.returncode}"})
    return lines


def node_peer(scratch):
    """The Node peer's directory, installed; or why it is skipped."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if not (node and npm):
        return None, "node and npm not both on PATH"
    target = scratch / "node-ingest"
    target.mkdir(parents=True, exist_ok=True)
    for name in ("package.json", "package-lock.json", "index.mjs"):
        shutil.copyfile(HERE / "node-ingest" / name, target / name)
    stamp = target / "node_modules/.bench-lock"
    lock = (HERE / "node-ingest/package-lock.json").read_text()
    if not (stamp.exists() and stamp.read_text() == lock):
        log(f"$ npm ci (in {target})")
        p = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=target,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if p.returncode != 0:
            return None, "npm ci failed: " + (p.stdout.strip().splitlines() or ["?"])[-1]
        stamp.write_text(lock)
    return [node, str(target / "index.mjs")], None


def last_line(path, limit=300):
    """The last line a function logged (its reason when it would not start), shortened."""
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1][:limit] if lines else ""


def first(lines, **match):
    return next((l for l in lines if all(l.get(k) == v for k, v in match.items())), {})


def broken(lines, check):
    """Why a harness's output is not a valid measurement (None when it is)."""
    errors = [l["error"] for l in lines if "error" in l]
    if errors:
        return "; ".join(errors)
    if not lines:
        return "no output"
    return check(lines)


def ingest_broken(lines):
    r = lines[0]
    if r.get("answered") != r.get("events") or set(r.get("statuses", {})) != {"200"}:
        return f"answered {r.get('answered')}/{r.get('events')}, statuses {r.get('statuses')}"


def pipeline_broken(lines):
    for r in lines:
        # A message per batch but one may come back by design: a batch that finished files but
        # not the task's last one defers its settle check to the worker that did (one message
        # back; the harness does not redeliver it, the vault settled).
        if r.get("who") == "project" and (r.get("verified") != r.get("files") or r.get("vault") != "complete"
                                         or r.get("batch_failures", 0) > r.get("batches", 1) - 1):
            return f"round {r.get('round')}: {r.get('verified')}/{r.get('files')} verified, vault {r.get('vault')}, " \
                   f"{r.get('batch_failures')} batch failures"
        if r.get("who") == "boto3-peer" and (r.get("rc") or r.get("stored") != r.get("files")):
            return f"boto3 peer round {r.get('round')}: exit {r.get('rc')}, {r.get('stored')} stored"


def big_broken(lines):
    if not lines[0].get("complete"):
        return f"stored sizes {lines[0].get('stored_sizes')}"


def ops_text(meter):
    ops = {k[4:]: v for k, v in meter["ops"].items() if k.startswith("ddb:")}
    return ", ".join(f"{v} {k}" for k, v in ops.items()) or "none"


def bytes_text(meter):
    b = meter["ddb_request_bytes"]
    return f"{sum(b.values()):,} B (" + ", ".join(f"{k[4:]} {v:,}" for k, v in b.items()) + ")"


def summarise(a, runs, problems):
    """The rows of the summary table: (measure, measured, target, verdict)."""
    rows = []
    def row(measure, measured, target="", ok=None):
        rows.append((measure, measured, target, "" if ok is None else ("met" if ok else "MISSED")))
    def unavailable(measure, run, target=""):
        rows.append((measure, "no measurement: " + problems[run], target, "ERROR"))

    files = 12
    if "meter" in problems:
        unavailable("DynamoDB per 12-file task", "meter", "≤ 40 WCU, ≤ 15 RCU, 0 failed conditions")
    else:
        r = first(runs["meter"], who="project")
        mi, md = r["aws_ingest"], r["aws_download"]
        row("DynamoDB operations, ingest", ops_text(mi), "design: 15 writes, 1 Query")
        row("DynamoDB operations, download", ops_text(md), "design: 25 writes, ≤ 1 Query per task per batch")
        row("DynamoDB request bytes, ingest", bytes_text(mi))
        row("DynamoDB request bytes, download", bytes_text(md))
        wcu, rcu = mi["wcu"] + md["wcu"], mi["rcu"] + md["rcu"]
        row("WCU per task", f"{wcu} (ingest {mi['wcu']}, download {md['wcu']})", "≤ 40", wcu <= 40)
        row("RCU per task", f"{rcu:g} (ingest {mi['rcu']:g}, download {md['rcu']:g})", "≤ 15", rcu <= 15)
        failed = mi["conditional_failures"] + md["conditional_failures"]
        row("Failed conditions per task", f"{failed}", "0 (no conflicts between files of one task)", failed == 0)
        # Both functions' counts, summed (both publish events and write S3 objects).
        other = {}
        for m in (mi, md):
            for k, v in m["ops"].items():
                if not k.startswith("ddb:"):
                    other[k] = other.get(k, 0) + v
        row("Other AWS operations per task", ", ".join(f"{v} {k}" for k, v in sorted(other.items())))

    if "download" in problems:
        unavailable("Download CPU per GiB", "download", "≤ 1/8 of the boto3 peer's")
    else:
        lines = runs["download"]
        project = [l for l in lines if l.get("who") == "project"]
        peer = [l for l in lines if l.get("who") == "boto3-peer"]
        gib = files * a.mib * (1 << 20) / GIB
        cpu = min(l["cpu_ms"] for l in project) / 1000 / gib
        peer_cpu = min(l["cpu_ms"] for l in peer) / 1000 / gib
        row(f"Download CPU per GiB ({files} × {a.mib} MiB, {a.instances} instances, best of {len(project)})",
            f"{cpu:.2f} s/GiB (boto3 peer {peer_cpu:.2f} s/GiB, {peer_cpu / cpu:.1f}×)",
            f"≤ {peer_cpu / 8:.2f} s/GiB (peer / 8)", cpu <= peer_cpu / 8)
        ceiling = max(l["ceiling_mb_s"] for l in project)
        serial = max(l.get("ceiling_serial_mb_s", l["ceiling_mb_s"]) for l in project)
        parallel = max(l.get("ceiling_parallel_mb_s", 0) for l in project)
        rate = max(l["mb_s"] for l in project)
        share = rate / ceiling
        row("Download throughput", f"{rate:.0f} MB/s = {share:.0%} of the emulator's raw PutObject {ceiling:.0f} MB/s "
            f"(best of one at a time {serial:.0f}, {a.instances} at once {parallel:.0f})",
            "≥ 80 % of raw PutObject, same run", share >= 0.8)
        wall, peer_wall = min(l["wall_s"] for l in project), min(l["wall_s"] for l in peer)
        row("Download wall vs the boto3 peer", f"{wall:.2f} s vs {peer_wall:.2f} s ({wall / peer_wall:.2f}×)")

    if "ingest" in problems:
        unavailable("Ingest CPU per callback", "ingest", "≤ 1/5 of the Node peer's")
    else:
        r = runs["ingest"][0]
        cpu = r["cpu_ms_per_1000"] / 1000
        node = runs.get("node-ingest") or []
        if "node-ingest" in problems:
            row(f"Ingest CPU per callback ({r['events']} callbacks)", f"{cpu:.2f} ms",
                f"≤ 1/5 of the Node peer's (peer not run: {problems['node-ingest']})")
            node_init = ""
        else:
            ncpu = node[0]["cpu_ms_per_1000"] / 1000
            row(f"Ingest CPU per callback ({r['events']} callbacks)", f"{cpu:.2f} ms (Node peer {ncpu:.2f} ms, "
                f"{ncpu / cpu:.1f}×)", f"≤ {ncpu / 5:.2f} ms (peer / 5)", cpu <= ncpu / 5)
            node_init = f" (Node peer {node[0]['init_ms']:.0f} ms)"
            # What stands between the two: the work per request, and how many requests a callback makes.
            reqs, nreqs = r.get("aws_requests_per_callback"), node[0].get("aws_requests_per_callback")
            if reqs and nreqs:
                row("Ingest AWS requests per callback, CPU per request",
                    f"{reqs:.0f} requests, {cpu / reqs:.2f} ms each (Node peer {nreqs:.0f} requests, "
                    f"{ncpu / nreqs:.2f} ms each, {ncpu / nreqs / (cpu / reqs):.1f}×)")
        row("Ingest init (spawn → first /next, secret read)", f"{r['init_ms']:.0f} ms{node_init}")
        row("Ingest invoke p50 / p99", f"{r['invoke_p50_ms']:.1f} / {r['invoke_p99_ms']:.1f} ms, "
            f"peak RSS {r['peak_rss_mib']:.0f} MiB")

    if "big" in problems:
        unavailable(f"Peak RSS, one {a.big_mib} MiB copy", "big", "≤ 40 MiB")
    else:
        r = runs["big"][0]
        small = max((l["peak_rss_mib"] for l in runs.get("download", []) if l.get("who") == "project"), default=None)
        flat = f" ({files} × {a.mib} MiB run: {small:.0f} MiB)" if small is not None else ""
        row(f"Peak RSS, one {a.big_mib} MiB copy", f"{r['peak_rss_mib']:.1f} MiB{flat}, {r['mb_s']:.0f} MB/s",
            "≤ 40 MiB, flat in file size", r["peak_rss_mib"] <= 40)
    return rows


def table(rows):
    head = ("measure", "measured", "target", "verdict")
    widths = [max(len(str(r[i])) for r in rows + [head]) for i in range(4)]
    line = lambda r: "| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |"
    return "\n".join([line(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [line(r) for r in rows])


def machine():
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    git = lambda *args: subprocess.run(["git", *args], cwd=HERE, capture_output=True, text=True).stdout.strip()
    return {"cpu": cpu, "cpus": os.cpu_count(), "load_before": os.getloadavg(), "python": platform.python_version(),
            "commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def main():
    if not os.path.exists("/proc/self/stat"):
        # CPU time and peak RSS are read from /proc/<pid>: without it every figure would be nan.
        sys.exit("make bench measures through /proc: it runs on Linux only")
    ap = argparse.ArgumentParser()
    ap.add_argument("--ingest", required=True)
    ap.add_argument("--download", required=True)
    ap.add_argument("--scratch", type=Path, required=True, help="for the Node peer's install and the logs")
    ap.add_argument("--out", type=Path, required=True, help="the raw results, as JSON")
    ap.add_argument("--events", type=int, default=300)
    ap.add_argument("--mib", type=int, default=8)
    ap.add_argument("--instances", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--big-mib", type=int, default=1024)
    ap.add_argument("--no-node", action="store_true", help="skip the Node peer")
    a = ap.parse_args()
    a.scratch.mkdir(parents=True, exist_ok=True)
    logs = a.scratch / "logs"
    shutil.rmtree(logs, ignore_errors=True); logs.mkdir()
    info = machine()
    log(f"bench on {info['cpu']} ×{info['cpus']}, load {info['load_before'][0]:.2f}, commit {info['commit'][:10]}"
        f"{' + uncommitted changes' if info['dirty'] else ''}")

    runs, problems = {}, {}
    def measure(name, check, script, *args):
        runs[name] = harness(script, *args, logfile=logs / f"{name}.log")
        why = broken(runs[name], check)
        if why:
            last = last_line(logs / f"{name}.log")
            why += f" (function log: {last})" if last else ""
            problems[name] = why
            log(f"  {name}: {why}")

    measure("ingest", ingest_broken, "runtime_api.py", "--events", a.events, "--", a.ingest)
    node, skipped = (None, "--no-node") if a.no_node else node_peer(a.scratch)
    if node:
        measure("node-ingest", ingest_broken, "runtime_api.py", "--events", a.events, "--table-key", "pk",
                "--sort-key", "", "--", *node)
    else:
        problems["node-ingest"] = f"skipped: {skipped}"
        log(f"Node peer skipped: {skipped}")
    pipeline = ("--ingest", a.ingest, "--download", a.download, "--mib", a.mib)
    measure("meter", pipeline_broken, "pipeline_bench.py", *pipeline, "--instances", a.instances,
            "--rounds", 1, "--meter", "--no-peer")
    measure("download", pipeline_broken, "pipeline_bench.py", *pipeline, "--instances", a.instances,
            "--rounds", a.rounds)
    measure("big", big_broken, "pipeline_bench.py", *pipeline, "--big-mib", a.big_mib)

    rows = summarise(a, runs, problems)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps({"machine": info, "runs": runs, "problems": problems,
                                 "summary": [dict(zip(("measure", "measured", "target", "verdict"), r)) for r in rows]},
                                indent=2) + "\n")
    print(f"\nstemvault bench: {info['cpu']} ×{info['cpus']}, commit {info['commit'][:10]}"
          f"{' (dirty)' if info['dirty'] else ''}, {info['date']}; raw results: {a.out}\n")
    print(table(rows), flush=True)
    return 1 if any(k != "node-ingest" for k in problems) else 0


if __name__ == "__main__":
    sys.exit(main())
