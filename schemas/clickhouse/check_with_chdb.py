#!/usr/bin/env python3
"""Runs every migration in this folder through chDB (current ClickHouse).

It also runs the SQL of the benchmarks (bench/*/*.sql), each folder in a
database of its own.

The tests run the same files on ClickHouse 18.16; this check makes sure the
project's SQL does not depend on behaviour only the old server has. Needs the
PyPI package chdb-core (`pip install chdb-core`).

With `--cookbook FILE.md --data DIR` it then loads tables exported by
tests/it/recovery.rs (DIR/<database>.<table>.tsv, in the default database
names) and runs every ```sql block of FILE.md, each of which must return
rows.
"""
import argparse
import pathlib
import re
import sys

try:
    from chdb import session
except ImportError:
    sys.exit("chdb is not installed: run `python3 -m pip install chdb-core`")

HERE = pathlib.Path(__file__).resolve().parent


def statements(text):
    """Statements end with ';' at the end of a line; '--' comments are dropped."""
    body = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("--"))
    return [s.strip() for s in re.split(r";\s*$", body, flags=re.M) if s.strip()]


def render(text, db):
    """Fills in the placeholders as `pulih migrate` does (migrate.rs)."""
    return (text.replace("{database}", f"`{db}`")
            .replace("{analytics}", f"`{db}_analytics`")
            .replace("{public}", f"`{db}_public`"))


def sql_blocks(markdown):
    return [m.strip() for m in re.findall(r"^```sql\n(.*?)^```$", markdown, flags=re.M | re.S)]


def cookbook(s, version, markdown_path, data_dir):
    for tsv in sorted(pathlib.Path(data_dir).glob("*.tsv")):
        table = tsv.name[: -len(".tsv")]
        structure = ", ".join(
            f"{name} {type_}"
            for name, type_, *_ in (
                line.split("\t") for line in s.query(f"DESCRIBE TABLE {table}", "TSV").data().splitlines()
            )
        )
        s.query(f"INSERT INTO {table} SELECT * FROM file('{tsv.resolve()}', 'TabSeparated', '{structure}')")
    queries = sql_blocks(pathlib.Path(markdown_path).read_text())
    for i, q in enumerate(queries, 1):
        try:
            rows = s.query(q, "TSV").data()
        except Exception as e:
            sys.exit(f"{markdown_path}: query {i} failed on ClickHouse {version}:\n{q}\n{e}")
        if not rows.strip():
            sys.exit(f"{markdown_path}: query {i} returned no rows on ClickHouse {version}:\n{q}")
    print(f"chdb: {len(queries)} queries from {markdown_path} returned rows on ClickHouse {version}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cookbook", help="a Markdown file whose ```sql blocks to run")
    parser.add_argument("--data", help="folder of <database>.<table>.tsv exports to load first")
    args = parser.parse_args()
    files = sorted(HERE.glob("*.sql"))
    if not files:
        sys.exit("no .sql files found")
    s = session.Session()
    version = s.query("SELECT version()", "CSV").data().strip()
    # The cookbook names the default databases.
    db = "pulih" if args.cookbook else "pulih_chdb_check"
    s.query(f"CREATE DATABASE IF NOT EXISTS {db}")
    s.query(f"USE {db}")
    count = 0
    for path in files:
        for stmt in statements(render(path.read_text(), db)):
            for attempt in (1, 2):  # twice: every statement must be idempotent
                try:
                    s.query(stmt)
                except Exception as e:  # chdb raises a plain RuntimeError
                    sys.exit(f"{path.name}: statement failed on ClickHouse {version} (run {attempt}):\n{stmt}\n{e}")
            count += 1
    print(f"chdb: {count} statements from {len(files)} files ran twice on ClickHouse {version}")
    bench = sorted((HERE.parent.parent / "bench").glob("*/*.sql"))
    for path in bench:
        s.query(f"CREATE DATABASE IF NOT EXISTS pulih_chdb_bench_{path.parent.name}")
        s.query(f"USE pulih_chdb_bench_{path.parent.name}")
        for stmt in statements(path.read_text()):
            for attempt in (1, 2):
                try:
                    s.query(stmt)
                except Exception as e:
                    sys.exit(f"{path}: statement failed on ClickHouse {version} (run {attempt}):\n{stmt}\n{e}")
    print(f"chdb: {len(bench)} benchmark SQL files ran twice on ClickHouse {version}")
    s.query(f"USE {db}")
    if args.cookbook:
        cookbook(s, version, args.cookbook, args.data)


if __name__ == "__main__":
    main()
