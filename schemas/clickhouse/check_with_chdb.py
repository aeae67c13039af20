#!/usr/bin/env python3
"""Runs every migration in this folder through chDB (current ClickHouse).

The tests run the same files on ClickHouse 18.16; this check makes sure the
project's SQL does not depend on behaviour only the old server has. Needs the
PyPI package chdb-core (`pip install chdb-core`).
"""
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


def main():
    files = sorted(HERE.glob("*.sql"))
    if not files:
        sys.exit("no .sql files found")
    s = session.Session()
    version = s.query("SELECT version()", "CSV").data().strip()
    db = "pulih_chdb_check"
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


if __name__ == "__main__":
    main()
