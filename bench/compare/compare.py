#!/usr/bin/env python3
"""pulih side by side with ClickHouse alone and with the floor, on one seeded
event set, in one run. Started by deploy/local/bench-compare.sh, which starts
the services, builds pulih and writes the gateway's configuration; see
bench/compare/README.md for what is measured and how to read it.

Steps:
  1. the event set: `pulih simulate --output ndjson` of a scaled Jakarta
     scenario, with duplicates (client retries) and late events; a clean copy
     without the duplicates;
  2. the floor: the `ndjson_floor` example splits and parses the same bytes;
  3. ClickHouse alone (clickhouse_alone.sql), on the set and on the clean copy;
  4. pulih through the HTTP gateway (`pulih simulate --output gateway`, the
     same scenario and seed) with `pulih ingest` and `pulih aggregate`;
  5. pulih through the intake of `pulih produce` straight to Kafka
     (`pulih simulate --output kafka`, the same scenario and seed) with
     `pulih aggregate`;
  6. the results compared cell by cell, the query costs, the table and JSON.
"""
import argparse
import json
import os
import re
import resource
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
PRODUCERS = ["qris_acquirer", "ewallet", "bank"]
EVENT_ID = re.compile(rb'"event_id":"([^"]*)"')
PULIH_RESULT = """
SELECT toUInt32(window_start) AS window_unix, district_code, sector,
       sum(txn_count), sum(amount_idr_sum), min(amount_idr_min), max(amount_idr_max), sum(merchants_active)
FROM activity_1m_by_producer FINAL
GROUP BY window_unix, district_code, sector
ORDER BY district_code, sector, window_unix
"""


def say(*a):
    print("compare:", *a, file=sys.stderr, flush=True)


class ClickHouse:
    def __init__(self, url):
        self.url = url

    def query(self, sql, database=None, body=None, **settings):
        params = dict(settings)
        if database:
            params["database"] = database
        if body is None:
            data = sql.encode()
        else:
            params["query"] = sql
            data = body
        url = self.url + "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=3600) as r:
                return r.read().decode()
        except urllib.error.HTTPError as e:
            raise SystemExit(f"compare: ClickHouse: {e.code}: {e.read().decode()[:2000]}\n{sql[:500]}")

    def run_file(self, path, database):
        text = "\n".join(l for l in path.read_text().splitlines() if not l.lstrip().startswith("--"))
        for stmt in (s.strip() for s in re.split(r";\s*$", text, flags=re.M)):
            if stmt:
                self.query(stmt, database)


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


class Watch:
    """CPU time and peak resident memory of named processes over an interval."""

    def __init__(self, pids):
        self.pids = dict(pids)
        self.cpu0 = {n: cpu_seconds(p) for n, p in self.pids.items()}
        self.peak = {n: 0 for n in self.pids}
        self.t0 = time.monotonic()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.sample, daemon=True)
        self.thread.start()

    def add(self, name, pid):
        self.pids[name] = pid
        self.cpu0[name] = 0.0  # started inside the interval
        self.peak[name] = 0

    def rss(self, pid):
        try:
            with open(f"/proc/{pid}/statm") as f:
                return int(f.read().split()[1]) * PAGE
        except (FileNotFoundError, ProcessLookupError):
            return 0

    def sample(self):
        while not self.stop.wait(0.2):
            for n, p in list(self.pids.items()):
                self.peak[n] = max(self.peak[n], self.rss(p))

    def finish(self):
        self.stop.set()
        self.thread.join()
        wall = time.monotonic() - self.t0
        cpu = {n: cpu_seconds(p) - self.cpu0[n] for n, p in self.pids.items()}
        return wall, cpu, dict(self.peak)


def last_cpu_of(proc):
    """CPU seconds of a process that has been waited for (its rusage)."""
    return proc.rusage.ru_utime + proc.rusage.ru_stime


class Proc(subprocess.Popen):
    """A child whose resource usage is kept when it is waited for."""

    rusage = None

    def wait_usage(self):
        _, status, self.rusage = os.wait4(self.pid, 0)
        self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode


def generate(args, out):
    """The event set and its clean copy; returns what the simulator says."""
    scenario = out / "scenario.toml"
    text = (ROOT / "deploy/scenarios/jakarta.toml").read_text()
    for key, value in (("merchants", args.merchants), ("transactions_micro", 0.4 * args.intensity),
                       ("transactions_small", 1.0 * args.intensity), ("transactions_medium", 2.0 * args.intensity)):
        text = re.sub(rf"^{key} = .*$", f"{key} = {value}", text, flags=re.M)
    scenario.write_text(text)
    dirty, clean = out / "events", out / "events-clean"
    for d in (dirty, clean):
        d.mkdir(parents=True, exist_ok=True)
        for f in d.glob("*.ndjson"):
            f.unlink()
    sim = Proc([args.pulih, "simulate", *simulate_args(args, scenario), "--output", "ndjson", "--dir", str(dirty)],
               stdout=subprocess.PIPE, text=True)
    stdout = sim.stdout.read()
    if sim.wait_usage() != 0:
        raise SystemExit("compare: pulih simulate --output ndjson failed")
    said = dict(re.findall(r"(\w+)=(\d+)", stdout))
    lines = dup = 0
    for p in PRODUCERS:
        seen = set()
        with open(dirty / f"{p}.ndjson", "rb") as src, open(clean / f"{p}.ndjson", "wb") as dst:
            for line in src:
                lines += 1
                key = EVENT_ID.search(line).group(1)
                if key in seen:
                    dup += 1
                    continue
                seen.add(key)
                dst.write(line)
    if dup != int(said["duplicates"]) or lines - dup != int(said["events"]):
        raise SystemExit(f"compare: the event set does not match the simulator's count: {said}, {lines} lines, {dup} repeated")
    size = sum(f.stat().st_size for f in dirty.glob("*.ndjson"))
    say(f"event set: {lines} events ({dup} duplicates) in {size / 1e6:.0f} MB, {said['events']} payments")
    return scenario, {"events": lines, "payments": int(said["events"]), "duplicates": dup,
                      "amount_idr": int(said["amount_idr"]), "bytes": size,
                      "generate_cpu_s": last_cpu_of(sim)}


def simulate_args(args, scenario):
    # One instant for every run: late events of yesterday that arrive
    # later today are held back alike, however long the runs take.
    return ["--scenario", str(scenario), "--as-of", args.as_of, "--from", f"-{args.days}d", "--to", "-1d",
            "--duplicates", str(args.duplicates), "--late", str(args.late)]


def floor(args, out, events):
    files = [str(out / "events" / f"{p}.ndjson") for p in PRODUCERS]
    r = subprocess.run([args.floor, *files], capture_output=True, text=True, check=True)
    result = json.loads(r.stdout)
    for k in ("split", "parse"):
        result[k]["events_per_s"] = events["events"] / result[k]["seconds"]
        result[k]["cpu_s_per_million"] = result[k]["cpu_seconds"] / events["events"] * 1e6
    return result


def alone(args, ch, out, db, source, events, services):
    ch.query(f"DROP DATABASE IF EXISTS {db}")
    ch.query(f"CREATE DATABASE {db}")
    ch.run_file(HERE / "clickhouse_alone.sql", db)
    batches = []
    for p in PRODUCERS:
        with open(out / source / f"{p}.ndjson", "rb") as f:
            lines = f.readlines()
        for i in range(0, len(lines), args.batch):
            batches.append(b"".join(lines[i:i + args.batch]))
    self_cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    watch = Watch(services)
    for body in batches:
        ch.query("INSERT INTO payments_raw FORMAT JSONEachRow", db, body=body, date_time_input_format="best_effort")
    wall, cpu, peak = watch.finish()
    self_cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    client = (self_cpu1.ru_utime - self_cpu0.ru_utime) + (self_cpu1.ru_stime - self_cpu0.ru_stime)
    n = int(ch.query("SELECT count() FROM payments_raw", db))
    if n != events:
        raise SystemExit(f"compare: {db}: {n} rows in payments_raw, {events} sent")
    return {"wall_s": wall, "queryable_s": wall, "cpu_s": cpu, "client_cpu_s": client, "peak_rss": peak,
            "batches": len(batches)}


def outcomes(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return {m.group(1): int(float(m.group(2)))
            for m in re.finditer(r'^pulih_aggregate_records_total\{outcome="(\w+)"\} (\S+)$', text, flags=re.M)}


def wait_ready(port, what, seconds=30):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"compare: {what} not ready on port {port} within {seconds} s")


def pulih_run(args, ch, out, name, events, services, scenario):
    """One pulih pipeline into its own topic, group and database."""
    stamp = int(time.time())
    db = f"pulih_compare_{name}"
    env = dict(os.environ,
               PULIH_KAFKA__TOPIC=f"pulih.compare.{stamp}.{name}",
               PULIH_KAFKA__DLQ_TOPIC=f"pulih.compare.{stamp}.{name}.dlq",
               PULIH_CLICKHOUSE__DATABASE=db,
               PULIH_AGGREGATE__GROUP_ID=f"pulih-compare-{stamp}-{name}",
               PULIH_AGGREGATE__METRICS_ADDR="127.0.0.1:9468")
    drop_pulih(ch, db)
    subprocess.run([args.pulih, "migrate"], env=env, check=True, stdout=subprocess.DEVNULL)
    logs = []

    def start(what, *argv):
        log = open(out / f"{name}-{what}.log", "w")
        logs.append(log)
        return Proc([args.pulih, *argv], env=env, stdout=log, stderr=subprocess.STDOUT)

    aggregate = start("aggregate", "aggregate")
    children = [aggregate]
    try:
        wait_ready(9468, "pulih aggregate")
        watch = Watch(services)
        watch.add("aggregator", aggregate.pid)
        if name == "gateway":
            gateway = start("ingest", "ingest")
            children.append(gateway)
            watch.add("gateway", gateway.pid)
            wait_ready(args.gateway_port, "pulih ingest")
            clients = [start("simulate", "simulate", *simulate_args(args, scenario), "--output", "gateway",
                             "--in-flight", str(args.in_flight))]
        else:
            clients = [start("simulate", "simulate", *simulate_args(args, scenario), "--output", "kafka")]
        for c in clients:
            if c.wait_usage() != 0:
                raise SystemExit(f"compare: {name}: {' '.join(c.args[1:3])} failed; see {out}/{name}-*.log")
        sent_s = time.monotonic() - watch.t0
        payments = events["payments"]
        deadline = time.monotonic() + 1800
        while sum(outcomes(9468).get(o, 0) for o in ("applied", "late")) < payments:
            if time.monotonic() > deadline:
                raise SystemExit(f"compare: {name}: the aggregator did not count {payments} payments")
            time.sleep(0.2)
        while int(ch.query("SELECT toUInt64(sum(txn_count)) FROM activity_1m_by_producer FINAL", db) or 0) < payments:
            if time.monotonic() > deadline:
                raise SystemExit(f"compare: {name}: activity_1m_by_producer did not reach {payments} transactions")
            time.sleep(0.2)
        queryable = time.monotonic() - watch.t0
        counted = outcomes(9468)
        wall, cpu, peak = watch.finish()
        client_cpu = sum(last_cpu_of(c) for c in clients)
        if name == "intake":
            # The simulator runs pulih's intake in its own process: what it
            # costs beyond generating the events is pulih's.
            cpu["intake"] = max(client_cpu - events["generate_cpu_s"], 0.0)
            client_cpu -= cpu["intake"]
            peak["intake"] = clients[0].rusage.ru_maxrss * 1024
    finally:
        for c in reversed(children):
            c.send_signal(2)
        for c in reversed(children):
            c.wait()
        for log in logs:
            log.close()
    return db, {"wall_s": wall, "sent_s": sent_s, "queryable_s": queryable, "cpu_s": cpu,
                "client_cpu_s": client_cpu, "peak_rss": peak, "records": counted}


def drop_pulih(ch, db):
    for d in (db, f"{db}_analytics", f"{db}_public"):
        ch.query(f"DROP DATABASE IF EXISTS {d}")


def result(ch, db, sql):
    rows = {}
    for line in ch.query(sql + " FORMAT TabSeparated", db).splitlines():
        w, d, s, *values = line.split("\t")
        rows[(int(w), d, s)] = tuple(int(v) for v in values)
    return rows


def query_cost(ch, db, sql, label):
    """Best of three runs of `sql`, with what ClickHouse read for it."""
    ids = []
    for i in range(3):
        qid = f"compare-{label}-{int(time.time() * 1000)}-{i}"
        ids.append(qid)
        ch.query(sql + " FORMAT Null", db, query_id=qid, log_queries=1)
    ch.query("SYSTEM FLUSH LOGS")
    rows = ch.query(
        "SELECT query_duration_ms, read_rows, read_bytes, memory_usage FROM system.query_log "
        f"WHERE type = 2 AND query_id IN ({', '.join(repr(q) for q in ids)}) ORDER BY query_duration_ms FORMAT TSV")
    best = rows.splitlines()[0].split("\t")
    return {"ms": int(best[0]), "read_rows": int(best[1]), "read_bytes": int(best[2]), "memory_bytes": int(best[3])}


def diff(a, b):
    """How two results differ: cells only in one, cells whose values differ."""
    keys = a.keys() | b.keys()
    differ = [k for k in keys if a.get(k) != b.get(k)]
    extra_txn = sum((b.get(k, (0,))[0] - a.get(k, (0,))[0]) for k in differ)
    return {"cells": len(keys), "cells_differing": len(differ), "txn_difference": extra_txn}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pulih", required=True)
    ap.add_argument("--floor", required=True, help="the ndjson_floor example binary")
    ap.add_argument("--out", required=True)
    ap.add_argument("--days", type=int, default=6, help="days of the scenario, ending yesterday (at most 6: the gateway takes events up to 7 days old)")
    ap.add_argument("--merchants", type=int, default=100000)
    ap.add_argument("--intensity", type=float, default=15.0, help="multiplies the scenario's transactions per merchant-day")
    ap.add_argument("--duplicates", type=float, default=0.03)
    ap.add_argument("--late", type=float, default=0.02)
    ap.add_argument("--batch", type=int, default=100000, help="rows per INSERT for ClickHouse alone")
    ap.add_argument("--gateway-port", type=int, default=8090)
    ap.add_argument("--in-flight", type=int, default=4,
                    help="requests of 500 events the simulator keeps in flight to the gateway")
    ap.add_argument("--clickhouse", default="http://127.0.0.1:8123/")
    ap.add_argument("--services", required=True, help="folder of the services' pid files")
    ap.add_argument("--commit", default="")
    ap.add_argument("--keep", action="store_true", help="keep the databases")
    ap.add_argument("--as-of", help="the instant every run takes as now (2026-11-30T12:00:00.000Z; default: the start)")
    args = ap.parse_args()
    if not 1 <= args.days <= 6:
        ap.error("--days must be 1 to 6")
    if args.as_of is None:
        args.as_of = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ch = ClickHouse(args.clickhouse)
    state = Path(args.services)
    services = {"broker": int((state / "tansu.pid").read_text()), "clickhouse": int((state / "clickhouse.pid").read_text())}
    ch_version = ch.query("SELECT version()").strip()

    scenario, events = generate(args, out)
    say("the floor: split and parse")
    low = floor(args, out, events)
    say("ClickHouse alone, the event set")
    alone_dirty = alone(args, ch, out, "pulih_compare_alone", "events", events["events"], {"clickhouse": services["clickhouse"]})
    say("ClickHouse alone, the clean copy")
    alone(args, ch, out, "pulih_compare_alone_clean", "events-clean", events["payments"], {"clickhouse": services["clickhouse"]})
    say("pulih through the gateway")
    gw_db, gateway = pulih_run(args, ch, out, "gateway", events, services, scenario)
    say("pulih through the intake of pulih produce")
    pr_db, intake = pulih_run(args, ch, out, "intake", events, services, scenario)

    alone_sql = (HERE / "result_alone.sql").read_text()
    alone_sql = "\n".join(l for l in alone_sql.splitlines() if not l.startswith("--")).rstrip().rstrip(";")
    results = {
        "alone": result(ch, "pulih_compare_alone", alone_sql),
        "alone_clean": result(ch, "pulih_compare_alone_clean", alone_sql),
        "gateway": result(ch, gw_db, PULIH_RESULT),
        "intake": result(ch, pr_db, PULIH_RESULT),
    }
    checks = {
        "gateway_vs_alone_clean": diff(results["alone_clean"], results["gateway"]),
        "intake_vs_alone_clean": diff(results["alone_clean"], results["intake"]),
        "alone_vs_alone_clean": diff(results["alone_clean"], results["alone"]),
    }
    costs = {
        "alone": query_cost(ch, "pulih_compare_alone", alone_sql, "alone"),
        "gateway": query_cost(ch, gw_db, PULIH_RESULT, "pulih"),
    }
    storage = {}
    for label, db in (("alone", "pulih_compare_alone"), ("gateway", gw_db)):
        storage[label] = {t: int(b) for t, b in (line.split("\t") for line in ch.query(
            f"SELECT table, sum(bytes_on_disk) FROM system.parts WHERE active AND database = '{db}' "
            "GROUP BY table HAVING sum(rows) > 0 ORDER BY table FORMAT TSV").splitlines())}

    report = {"date": time.strftime("%Y-%m-%d"), "commit": args.commit, "cores": os.cpu_count(),
              "clickhouse": ch_version, "events": events, "floor": low, "alone": alone_dirty,
              "gateway": gateway, "intake": intake, "checks": checks, "query": costs, "storage_bytes": storage,
              "settings": {k: getattr(args, k) for k in ("days", "merchants", "intensity", "duplicates", "late", "batch", "in_flight")}}
    (out / "compare.json").write_text(json.dumps(report, indent=2) + "\n")
    print(table(report))
    say(f"JSON in {out / 'compare.json'}")
    if not args.keep:
        for db in ("pulih_compare_alone", "pulih_compare_alone_clean"):
            ch.query(f"DROP DATABASE IF EXISTS {db}")
        drop_pulih(ch, gw_db)
        drop_pulih(ch, pr_db)
    failed = [k for k in ("gateway_vs_alone_clean", "intake_vs_alone_clean") if checks[k]["cells_differing"]]
    if failed:
        raise SystemExit(f"compare: pulih's aggregates differ from ClickHouse alone on the clean copy: {failed}")


def num(x, digits=0):
    return f"{x:,.{digits}f}".replace(",", " ")


def table(r):
    n = r["events"]["events"]
    mib = 1024 * 1024

    def per_m(cpu):
        return num(cpu / n * 1e6, 1)

    def by_part(values, fmt):
        return ", ".join(f"{k} {fmt(v)}" for k, v in sorted(values.items(), key=lambda kv: -kv[1]))

    e = r["events"]
    lines = [
        f"{num(n)} events ({num(e['duplicates'])} duplicates, {r['settings']['late']:.0%} late), "
        f"{num(e['bytes'] / 1e6)} MB of NDJSON; {r['cores']} cores; ClickHouse {r['clickhouse']}; "
        f"{r['date']}, commit {r['commit']}.",
        "",
        "| system | events/s | CPU-s per million events | of which | peak memory (MiB) | last window queryable after |",
        "|---|---:|---:|---|---|---:|",
    ]
    systems = (("gateway", "pulih: gateway → Kafka → aggregator"),
               ("intake", "pulih: the intake of `pulih produce` → Kafka → aggregator"),
               ("alone", "ClickHouse alone: JSONEachRow → MergeTree → MV"))
    for key, name in systems:
        s = r[key]
        cpu = sum(s["cpu_s"].values())
        parts = by_part(s["cpu_s"], per_m)
        if s["client_cpu_s"]:
            parts += f"; client {per_m(s['client_cpu_s'])}"
        memory = by_part(s["peak_rss"], lambda b: num(b / mib))
        lines.append(f"| {name} | {num(n / s['queryable_s'])} | {per_m(cpu)} | {parts} | {memory} | {s['queryable_s']:.1f} s |")
    f = r["floor"]
    for key, name in (("split", "floor: split into lines"), ("parse", "floor: split + `serde_json` parse")):
        lines.append(f"| {name} | {num(f[key]['events_per_s'])} | {f[key]['cpu_s_per_million']:.2f} | | {num(f['peak_rss'] / mib)} (the files in memory) | |")
    lines += ["", "| reading the result | ms | rows read | bytes read | memory (MiB) |", "|---|---:|---:|---:|---:|"]
    for key, name in (("gateway", "pulih: `activity_1m_by_producer FINAL`"), ("alone", "ClickHouse alone: `-Merge` with `GROUP BY`")):
        q = r["query"][key]
        lines.append(f"| {name} | {q['ms']} | {num(q['read_rows'])} | {num(q['read_bytes'])} | {num(q['memory_bytes'] / mib, 1)} |")
    lines += ["", "| check | cells | cells differing | transactions more |", "|---|---:|---:|---:|"]
    for key, name in (("gateway_vs_alone_clean", "pulih (gateway, with duplicates) vs ClickHouse alone on the clean copy"),
                      ("intake_vs_alone_clean", "pulih (intake, with duplicates) vs ClickHouse alone on the clean copy"),
                      ("alone_vs_alone_clean", "ClickHouse alone with duplicates vs the clean copy")):
        c = r["checks"][key]
        lines.append(f"| {name} | {num(c['cells'])} | {num(c['cells_differing'])} | {num(c['txn_difference'])} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
