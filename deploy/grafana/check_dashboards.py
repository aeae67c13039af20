#!/usr/bin/env python3
"""Checks pulih's Grafana dashboards without Grafana.

Grafana cannot run on every machine that tests pulih, so this script does
what Grafana would, offline, for every dashboard in dashboards/:

1. validates it against the dashboard JSON schema of
   grafana/grafana-foundation-sdk (schema/, Apache-2.0), and each panel's
   options and field config against its panel type's schema;
2. checks that every data source it names is provisioned
   (provisioning/datasources/pulih.yaml);
3. expands the ClickHouse plugin's macros and the template variables for a
   fixed time range, as the plugin would, refusing macros that ClickHouse
   18.16 cannot run ($__timeInterval and the _ms variants expand to
   toStartOfInterval and DateTime64), and runs every ClickHouse query
   (variables, panels, annotations) on the engines given: a server over
   HTTP (--clickhouse) and chDB, current ClickHouse in-process (--chdb-data);
   each must return rows with the columns its panel shows;
4. checks every PromQL expression with promtool (`promtool check rules`).

Needs the PyPI packages jsonschema and, with --chdb-data, chdb-core.
tests/it/grafana.rs seeds a public database and runs this script on it.
"""
import argparse
import base64
import datetime
import json
import pathlib
import re
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request

try:
    import jsonschema
except ImportError:
    sys.exit("jsonschema is not installed: run `python3 -m pip install jsonschema`")

HERE = pathlib.Path(__file__).resolve().parent
CLICKHOUSE = "grafana-clickhouse-datasource"
PROMETHEUS = "prometheus"
# Macros of the ClickHouse plugin (pkg/macros/macros.go) that expand to
# functions ClickHouse 18.16 lacks.
UNSUPPORTED_MACROS = ("timeInterval", "timeInterval_ms", "timeFilter_ms", "fromTime_ms", "toTime_ms", "timeGroup")
NUMERIC = re.compile(r"^(Nullable\()?(U?Int\d+|Float\d+|Decimal.*)\)?$")
TIME = re.compile(r"^(Nullable\()?(Date|DateTime)(\('[^']*'\))?\)?$")


class Problem(Exception):
    pass


def schema(name):
    return json.loads((HERE / "schema" / f"{name}.jsonschema.json").read_text())


def validate(dashboard_path, dashboard):
    """Schema checks: the dashboard, then each panel's options."""
    problems = []
    for e in jsonschema.Draft7Validator(schema("dashboard")).iter_errors(dashboard):
        problems.append(f"{dashboard_path.name}: {'/'.join(map(str, e.absolute_path))}: {e.message}")
    for panel in panels(dashboard):
        kind = panel["type"]
        path = HERE / "schema" / f"{kind}.jsonschema.json"
        if not path.exists():
            problems.append(f"{dashboard_path.name}: panel {panel.get('title')!r}: no schema for panel type {kind!r} in schema/")
            continue
        defs = schema(kind)["definitions"]
        for what, value, ref in (
            ("options", panel.get("options", {}), "Options"),
            ("fieldConfig.defaults.custom", panel.get("fieldConfig", {}).get("defaults", {}).get("custom"), "FieldConfig"),
        ):
            if value is None or ref not in defs:
                continue
            for e in jsonschema.Draft7Validator({"$ref": f"#/definitions/{ref}", "definitions": defs}).iter_errors(value):
                problems.append(
                    f"{dashboard_path.name}: panel {panel.get('title')!r}: {what}/{'/'.join(map(str, e.absolute_path))}: {e.message}"
                )
    return problems


def panels(dashboard):
    for p in dashboard.get("panels", []):
        if p["type"] == "row":
            yield from p.get("panels", [])
        else:
            yield p


def provisioned_uids():
    text = (HERE / "provisioning" / "datasources" / "pulih.yaml").read_text()
    return {m.group(1): m.group(2) for m in re.finditer(r"uid:\s*(\S+)\s*\n\s*type:\s*(\S+)", text)}


# --- expansion -------------------------------------------------------------


def expand_macros(sql, start, end):
    """The ClickHouse plugin's macros, as pkg/macros/macros.go expands them."""
    def date(t):
        return f"toDate('{t.strftime('%Y-%m-%d')}')"

    def dt(t):
        return f"toDateTime({int(t.timestamp())})"

    for name in UNSUPPORTED_MACROS:
        if re.search(r"\$__" + name + r"\b", sql):
            raise Problem(f"$__{name} does not run on ClickHouse 18.16 (toStartOfInterval or DateTime64)")
    sql = re.sub(r"\$__timeFilter\(([^)]*)\)", lambda m: f"{m[1]} >= {dt(start)} AND {m[1]} <= {dt(end)}", sql)
    sql = re.sub(r"\$__dateFilter\(([^)]*)\)", lambda m: f"{m[1]} >= {date(start)} AND {m[1]} <= {date(end)}", sql)
    sql = re.sub(
        r"\$__(?:dateTimeFilter|dt)\(([^,]*),([^)]*)\)",
        lambda m: f"({m[1].strip()} >= {date(start)} AND {m[1].strip()} <= {date(end)}) AND "
        f"({m[2].strip()} >= {dt(start)} AND {m[2].strip()} <= {dt(end)})",
        sql,
    )
    sql = sql.replace("$__fromTime", dt(start)).replace("$__toTime", dt(end))
    sql = sql.replace("$__interval_s", "86400")
    left = re.search(r"\$__\w+", sql)
    if left:
        raise Problem(f"{left.group(0)} is not a macro this check knows how to expand")
    return sql


def expand_variables(sql, values):
    """Grafana's template variables: $name, ${name} and ${name:format}."""
    def one(name, fmt):
        if name not in values:
            raise Problem(f"unknown template variable ${name}")
        v = values[name]
        items = v if isinstance(v, list) else [v]
        if fmt in (None, "raw"):
            # The plugin quotes multi-value lists itself.
            return ",".join(f"'{i}'" for i in items) if isinstance(v, list) else v
        if fmt == "singlequote":
            return ",".join("'" + i.replace("'", "\\'") + "'" for i in items)
        if fmt == "csv":
            return ",".join(items)
        raise Problem(f"template variable format :{fmt} is not expanded by this check")

    sql = re.sub(r"\$\{(\w+)(?::(\w+))?\}", lambda m: one(m[1], m[2]), sql)
    return re.sub(r"\$(?!__)([A-Za-z_]\w*)", lambda m: one(m[1], None), sql)


# --- engines ---------------------------------------------------------------


class Http:
    """A ClickHouse server over HTTP, as the account the data source uses."""

    def __init__(self, url, user, password, database):
        self.url, self.database = url.rstrip("/") + "/?database=" + database, database
        self.auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        self.version = self.run("SELECT version() AS v")["data"][0][0]

    def run(self, sql):
        req = urllib.request.Request(self.url, data=(sql + "\nFORMAT JSONCompact").encode(), method="POST")
        req.add_header("Authorization", self.auth)
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:
            raise Problem(e.read().decode(errors="replace").strip()) from None


class ChDb:
    """chDB (current ClickHouse) with the tables exported by the test."""

    def __init__(self, data_dir, database):
        from chdb import session

        # The migrations, as `pulih migrate` runs them in the database whose
        # public sibling the data source reads.
        if not database.endswith("_public"):
            raise Problem(f"--database must name a public database (<name>_public), not {database}")
        base = database[: -len("_public")]
        self.s = session.Session()
        self.s.query(f"CREATE DATABASE IF NOT EXISTS {base}")
        self.s.query(f"USE {base}")
        migrations = HERE.parent.parent / "schemas" / "clickhouse"
        sys.dont_write_bytecode = True
        sys.path.insert(0, str(migrations))
        from check_with_chdb import render, statements

        for path in sorted(migrations.glob("*.sql")):
            for stmt in statements(render(path.read_text(), base)):
                self.s.query(stmt)
        self.s.query(f"USE {database}")
        for tsv in sorted(pathlib.Path(data_dir).glob("*.tsv")):
            table = tsv.name[: -len(".tsv")]
            structure = ", ".join(
                f"{name} {type_}"
                for name, type_, *_ in (
                    line.split("\t") for line in self.s.query(f"DESCRIBE TABLE {table}", "TSV").data().splitlines()
                )
            )
            self.s.query(f"INSERT INTO {table} SELECT * FROM file('{tsv.resolve()}', 'TabSeparated', '{structure}')")
        self.version = self.run("SELECT version() AS v")["data"][0][0]

    def run(self, sql):
        try:
            return json.loads(self.s.query(sql, "JSONCompact").data())
        except Exception as e:  # chdb raises a plain RuntimeError
            raise Problem(str(e).strip()) from None


# --- checks ----------------------------------------------------------------


def expected(panel, target):
    """What the panel needs from a query's result, as (kind, detail)."""
    kind = panel["type"]
    if kind == "table":
        for t in panel.get("transformations", []):
            if t["id"] == "organize" and t["options"].get("renameByName"):
                return "columns", set(t["options"]["renameByName"])
        raise Problem("a table panel needs an organize transformation naming every column it shows")
    if kind == "stat":
        fields = panel["options"]["reduceOptions"].get("fields", "")
        m = re.fullmatch(r"/\^(\w+)\$/", fields)
        if not m:
            raise Problem(f"a ClickHouse stat panel must pick its field by name (/^name$/), not {fields!r}")
        return "has", {m.group(1)}
    if kind == "timeseries":
        return "timeseries", None
    raise Problem(f"no column check for panel type {kind}")


def check_result(result, need, need_rows=True):
    names = [c["name"] for c in result["meta"]]
    types = {c["name"]: c["type"] for c in result["meta"]}
    if need_rows and not result["data"]:
        raise Problem("returned no rows on the seeded data")
    kind, detail = need
    if kind == "columns" and set(names) != detail:
        raise Problem(f"returns columns {sorted(names)}, the panel shows {sorted(detail)}")
    if kind == "has" and not detail <= set(names):
        raise Problem(f"returns columns {sorted(names)}, the panel needs {sorted(detail)}")
    if kind == "timeseries":
        if names[0] != "time" or not TIME.match(types["time"]):
            raise Problem(f"a time series must start with a Date or DateTime column `time`, not {names[0]} {types[names[0]]}")
        if not any(NUMERIC.match(types[n]) for n in names[1:]):
            raise Problem(f"a time series needs a numeric column, got {types}")
    if kind == "annotation" and not {"time", "text"} <= set(names):
        raise Problem(f"an annotation needs columns time and text, got {sorted(names)}")
    return len(result["data"])


def resolve_variables(dashboard, engine, start, end, chosen=None):
    """Each variable's value: `chosen` where given, else its saved default
    (which must be among its values), else its first value. Returns the
    values and each variable's options."""
    values, options = {}, {}
    for v in dashboard["templating"].get("list", []):
        name = v["name"]
        if v.get("datasource", {}).get("type") != CLICKHOUSE:
            raise Problem(f"variable ${name}: only ClickHouse query variables are checked")
        sql = expand_variables(expand_macros(v["query"], start, end), values)
        result = engine.run(sql)
        if not result["data"]:
            raise Problem(f"variable ${name} has no values on the seeded data")
        options[name] = [str(row[0]) for row in result["data"]]
        current = v.get("current", {}).get("value")
        if chosen and name in chosen:
            values[name] = chosen[name]
        elif isinstance(current, list):
            missing = [c for c in current if c not in options[name]]
            if missing and current != ["$__all"]:
                raise Problem(f"variable ${name}: default {missing} is not among its values {options[name]}")
            values[name] = options[name] if current == ["$__all"] else current
        elif current is not None:
            if current not in options[name]:
                raise Problem(f"variable ${name}: default {current!r} is not among its values {options[name]}")
            values[name] = current
        else:
            values[name] = [options[name][0]] if v.get("multi") else options[name][0]
    return values, options


def clickhouse_queries(dashboard):
    """(where, sql, need) of every ClickHouse query of a dashboard."""
    for p in panels(dashboard):
        for t in p.get("targets", []):
            if t.get("datasource", p.get("datasource", {})).get("type") == CLICKHOUSE:
                yield f"panel {p['title']!r} query {t['refId']}", t["rawSql"], (p, t)
    for a in dashboard["annotations"].get("list", []):
        if a.get("datasource", {}).get("type") == CLICKHOUSE:
            yield f"annotation {a['name']!r}", a["target"]["rawSql"], None


def check_queries(name, dashboard, engine, start, end, forbidden, answers, allow_empty=False):
    """Runs every query with the variables' defaults, where each must return
    rows (unless `allow_empty`), then once for every other value of each
    visible single-valued variable, where each must still run and return
    its panel's columns."""
    values, options = resolve_variables(dashboard, engine, start, end)
    runs = [(values, True)]
    for v in dashboard["templating"].get("list", []):
        if v.get("hide", 0) == 2 or v.get("multi"):
            continue
        for option in options[v["name"]]:
            if option != values[v["name"]]:
                runs.append((resolve_variables(dashboard, engine, start, end, {v["name"]: option})[0], False))
    count = 0
    for run_values, need_rows in runs:
        for where, raw, owner in clickhouse_queries(dashboard):
            sql = raw
            try:
                sql = expand_variables(expand_macros(raw, start, end), run_values)
                need = expected(*owner) if owner else ("annotation", None)
                result = engine.run(sql)
                rows = check_result(result, need, need_rows and not allow_empty)
                # Both engines must give the same answer on the same data.
                key = (name, where, json.dumps(run_values, sort_keys=True))
                got = sorted(json.dumps([str(x) for x in row]) for row in result["data"])
                if answers.setdefault(key, (engine.version, got))[1] != got:
                    other, theirs = answers[key]
                    diff = sorted(set(got) ^ set(theirs))[:5]
                    raise Problem(f"answers differently from ClickHouse {other}: {len(got)} rows against {len(theirs)}; e.g. {diff}")
                for row in result["data"]:
                    if forbidden is not None and any(isinstance(x, (int, float)) and x == forbidden for x in row):
                        raise Problem(f"shows {forbidden}, a value seeded only in a superseded or unreleased vintage")
            except Problem as e:
                raise Problem(f"{name}: {where} on ClickHouse {engine.version} with {run_values}: {e}\n{sql}") from None
            count += 1
            if need_rows:
                print(f"  {name}: {where}: {rows} rows")
    return count


def check_promql(dashboards):
    exprs = []
    for name, d in dashboards:
        for p in panels(d):
            for t in p.get("targets", []):
                if t.get("datasource", p.get("datasource", {})).get("type") == PROMETHEUS:
                    e = t["expr"].replace("$__rate_interval", "1m").replace("$__interval", "1m").replace("$__range", "1h")
                    if "$" in e:
                        raise Problem(f"{name}: panel {p['title']!r}: unexpanded variable in {t['expr']}")
                    exprs.append((f"{name}: {p['title']} {t['refId']}", e))
    rules = {"groups": [{"name": "dashboards", "rules": [
        {"record": f"pulih_dashboard:expr_{i}", "expr": e} for i, (_, e) in enumerate(exprs)]}]}
    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as f:
        json.dump(rules, f)  # JSON is YAML
    out = subprocess.run(["promtool", "check", "rules", f.name], capture_output=True, text=True)
    pathlib.Path(f.name).unlink()
    if out.returncode != 0:
        raise Problem(f"promtool check rules failed on the dashboards' PromQL:\n{out.stdout}{out.stderr}\n"
                      + "\n".join(f"expr_{i}: {w}: {e}" for i, (w, e) in enumerate(exprs)))
    return len(exprs)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--from", dest="start", default="2020-01-01", help="time range start (UTC date)")
    parser.add_argument("--to", dest="end", default="2021-06-30", help="time range end (UTC date)")
    parser.add_argument("--clickhouse", help="a ClickHouse server URL to run the queries on")
    parser.add_argument("--user", default="default")
    parser.add_argument("--password", default="")
    parser.add_argument("--database", default="pulih_public", help="the data source's default database")
    parser.add_argument("--chdb-data", help="folder of <database>.<table>.tsv exports to load into chDB and query")
    parser.add_argument("--forbidden-value", type=float, help="a value no query may return")
    parser.add_argument("--allow-empty", action="store_true", help="a panel may return no rows (data without alerts, in benchmarks)")
    args = parser.parse_args()
    start = datetime.datetime.fromisoformat(args.start).replace(tzinfo=datetime.timezone.utc)
    end = datetime.datetime.fromisoformat(args.end).replace(tzinfo=datetime.timezone.utc)

    dashboards = [(p.name, json.loads(p.read_text())) for p in sorted((HERE / "dashboards").glob("*.json"))]
    if not dashboards:
        sys.exit("no dashboards in deploy/grafana/dashboards/")
    problems = []
    uids = provisioned_uids()
    seen = {}
    for name, d in dashboards:
        problems += validate(HERE / "dashboards" / name, d)
        if not d.get("uid") or d["uid"] in seen:
            problems.append(f"{name}: needs a uid of its own (has {d.get('uid')!r})")
        seen[d.get("uid")] = name
        refs = [p.get("datasource", {}) for p in panels(d)]
        refs += [t.get("datasource", {}) for p in panels(d) for t in p.get("targets", [])]
        refs += [v.get("datasource", {}) for v in d["templating"].get("list", [])]
        refs += [a.get("datasource", {}) for a in d["annotations"].get("list", []) if not a.get("builtIn")]
        for ref in refs:
            if ref and uids.get(ref.get("uid")) != ref.get("type"):
                problems.append(f"{name}: data source {ref} is not provisioned in provisioning/datasources/pulih.yaml")
    if problems:
        sys.exit("\n".join(dict.fromkeys(problems)))
    print(f"grafana: {len(dashboards)} dashboards valid against the foundation SDK's schema")
    try:
        print(f"grafana: {check_promql(dashboards)} PromQL expressions pass promtool")
        engines = []
        if args.clickhouse:
            engines.append(Http(args.clickhouse, args.user, args.password, args.database))
        if args.chdb_data:
            engines.append(ChDb(args.chdb_data, args.database))
        answers = {}
        for engine in engines:
            count = sum(check_queries(n, d, engine, start, end, args.forbidden_value, answers, args.allow_empty)
                for n, d in dashboards)
            print(f"grafana: {count} ClickHouse queries returned their panels' columns on ClickHouse {engine.version}")
    except Problem as e:
        sys.exit(str(e))


if __name__ == "__main__":
    main()
