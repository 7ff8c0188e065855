"""The history database: one SQLite file (standard library sqlite3) holding every recorded run and its metrics.

The schema is versioned with `PRAGMA user_version`; a file written by a newer release is refused, never misread.
The journal stays in SQLite's default rollback mode (no WAL: WAL needs shared memory that NFS and Lustre do not
provide to processes on different nodes), each write is one short transaction (BEGIN IMMEDIATE ... COMMIT), and a
busy database is waited for up to BUSY_TIMEOUT_S. Every sqlite3 error leaves here as a HistoryError naming the
file and the cause, so the CLI prints one line, never a traceback.
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

from mlps_slurm.benchmarks.base import Metric

SCHEMA_VERSION = 1
BUSY_TIMEOUT_S = 30.0

_TABLES = """
CREATE TABLE runs (
    run_id TEXT PRIMARY KEY,
    run_dir TEXT NOT NULL,
    benchmark TEXT NOT NULL,
    model TEXT,
    request_digest TEXT NOT NULL,
    profile_digest TEXT,
    profile_name TEXT,
    nodes TEXT NOT NULL,            -- JSON list of host names
    tool_version TEXT,
    versions TEXT NOT NULL,         -- JSON object: engine and server versions
    created TEXT,
    finalized TEXT NOT NULL,
    status TEXT,
    verdict TEXT,
    submittable INTEGER,
    results_mtime_ns INTEGER,
    results_size INTEGER,
    recorded TEXT NOT NULL
);
CREATE INDEX runs_by_workload ON runs (benchmark, model, request_digest, finalized);
CREATE INDEX runs_by_dir ON runs (run_dir);
CREATE TABLE metrics (
    run_id TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    name TEXT NOT NULL,
    value REAL NOT NULL,
    unit TEXT NOT NULL,
    higher_is_better INTEGER NOT NULL,
    samples TEXT NOT NULL,          -- JSON list of the per-checkpoint / per-run / per-trial values
    PRIMARY KEY (run_id, name)
);
"""
_RUN_COLUMNS = ("run_id", "run_dir", "benchmark", "model", "request_digest", "profile_digest", "profile_name", "nodes",
                "tool_version", "versions", "created", "finalized", "status", "verdict", "submittable",
                "results_mtime_ns", "results_size", "recorded")


class HistoryError(Exception):
    """A history database or run that cannot be used; the message names the path and the cause."""


class StoreError(HistoryError):
    """The history database itself cannot be used (damaged, locked, of another kind or release, not writable)."""


@dataclass
class RunRow:
    """One recorded run."""

    run_id: str
    run_dir: str
    benchmark: str
    model: str | None
    request_digest: str
    profile_digest: str | None
    profile_name: str | None
    nodes: list[str]
    tool_version: str | None
    versions: dict[str, Any]
    created: str | None
    finalized: str
    status: str | None
    verdict: str | None
    submittable: bool | None
    results_mtime_ns: int | None
    results_size: int | None
    recorded: str
    metrics: list[Metric] = field(default_factory=list)

    def headline(self) -> Metric | None:
        return self.metrics[0] if self.metrics else None

    def to_dict(self) -> dict[str, Any]:
        out = {c: getattr(self, c) for c in _RUN_COLUMNS}
        out["metrics"] = [{"name": m.name, "value": m.value, "unit": m.unit, "higher_is_better": m.higher_is_better,
                           "samples": list(m.samples)} for m in self.metrics]
        return out


def _explain(path: Path, exc: sqlite3.Error) -> StoreError:
    text = str(exc)
    if "locked" in text or "busy" in text:
        return StoreError(f"{path}: the history database is locked by another process ({text}) for longer than "
                            f"{BUSY_TIMEOUT_S:g} s; try again")
    if "not a database" in text or "malformed" in text or "encrypted" in text:
        return StoreError(f"{path}: not a readable history database ({text}); move the file aside (a new one is "
                            "created) or give another with --db")
    if "unable to open" in text or "readonly" in text or "read-only" in text:
        return StoreError(f"{path}: cannot open the history database for writing ({text}); check that its "
                            "directory exists and is writable, or give another with --db")
    return StoreError(f"{path}: history database error: {text}")


def _prepare(conn: sqlite3.Connection, path: Path) -> None:
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version == SCHEMA_VERSION:
        return
    conn.execute("BEGIN IMMEDIATE")  # two first users at once: one creates the tables, the other sees them
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(f"{path}: history schema {version} was written by a newer mlps-slurm (this one "
                               f"reads {SCHEMA_VERSION}); use that release, or give another database with --db")
        if version == 0:
            tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            if tables:
                raise StoreError(f"{path}: an SQLite database of something else (tables: "
                                   f"{', '.join(tables[:5])}), not an mlps-slurm history; give another with --db")
            for statement in _TABLES.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


@contextmanager
def connect(path: Path) -> Iterator[sqlite3.Connection]:
    """An open, prepared history database; every sqlite3 error inside the block becomes a HistoryError."""
    path = Path(path)
    if path.is_dir():
        raise StoreError(f"{path}: is a directory, not a history database file; give a file with --db")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"{path.parent}: cannot create the history database's directory "
                           f"({exc.strerror or exc}); give another with --db") from None
    conn: sqlite3.Connection | None = None
    try:
        conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_S, isolation_level=None)
        conn.execute("PRAGMA foreign_keys = ON")
        _prepare(conn, path)
        yield conn
    except sqlite3.Error as exc:
        raise _explain(path, exc) from None
    finally:
        if conn is not None:
            conn.close()


def _row(values: Sequence[Any]) -> RunRow:
    data = dict(zip(_RUN_COLUMNS, values))
    data["nodes"] = json.loads(data["nodes"] or "[]")
    data["versions"] = json.loads(data["versions"] or "{}")
    data["submittable"] = None if data["submittable"] is None else bool(data["submittable"])
    return RunRow(**data)


def put(path: Path, row: RunRow) -> None:
    """Record `row` with its metrics, replacing what the database holds for its run id: one transaction."""
    values = [getattr(row, c) for c in _RUN_COLUMNS]
    values[_RUN_COLUMNS.index("nodes")] = json.dumps(row.nodes)
    values[_RUN_COLUMNS.index("versions")] = json.dumps(row.versions, sort_keys=True, default=str)
    values[_RUN_COLUMNS.index("submittable")] = None if row.submittable is None else int(row.submittable)
    metrics = [(row.run_id, i, m.name, m.value, m.unit, int(m.higher_is_better), json.dumps(list(m.samples)))
               for i, m in enumerate(row.metrics)]
    with connect(path) as conn:
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute("DELETE FROM metrics WHERE run_id = ?", (row.run_id,))
            conn.execute(f"INSERT OR REPLACE INTO runs ({', '.join(_RUN_COLUMNS)}) "
                         f"VALUES ({', '.join('?' * len(_RUN_COLUMNS))})", values)
            conn.executemany("INSERT INTO metrics VALUES (?, ?, ?, ?, ?, ?, ?)", metrics)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise


def _with_metrics(conn: sqlite3.Connection, rows: list[RunRow]) -> list[RunRow]:
    by_id = {r.run_id: r for r in rows}
    if not by_id:
        return rows
    ids = list(by_id)
    for start in range(0, len(ids), 500):  # SQLite's limit on host parameters
        chunk = ids[start:start + 500]
        query = (f"SELECT run_id, name, value, unit, higher_is_better, samples FROM metrics WHERE run_id IN "
                 f"({', '.join('?' * len(chunk))}) ORDER BY run_id, position")
        for run_id, name, value, unit, higher, samples in conn.execute(query, chunk):
            by_id[run_id].metrics.append(Metric(name, value, unit, bool(higher), tuple(json.loads(samples))))
    return rows


def select(path: Path, where: str = "", params: Sequence[Any] = (), limit: int | None = None,
           newest_first: bool = True) -> list[RunRow]:
    """Recorded runs (with their metrics) matching an SQL condition on the runs table, by finalized time."""
    order = "DESC" if newest_first else "ASC"
    query = (f"SELECT {', '.join(_RUN_COLUMNS)} FROM runs {'WHERE ' + where if where else ''} "
             f"ORDER BY finalized {order}, run_id {order}{f' LIMIT {int(limit)}' if limit is not None else ''}")
    with connect(path) as conn:
        rows = [_row(v) for v in conn.execute(query, tuple(params))]
        return _with_metrics(conn, rows)


def get(path: Path, run_id: str) -> RunRow | None:
    found = select(path, "run_id = ?", (run_id,))
    return found[0] if found else None


def previous(path: Path, row: RunRow, last_n: int, same_request: bool = True) -> list[RunRow]:
    """The `last_n` successful runs of the same benchmark and model (and request digest) finalized before `row`."""
    where = "benchmark = ? AND model IS ? AND status = 'success' AND run_id != ? AND " \
            "(finalized < ? OR (finalized = ? AND run_id < ?))"
    params: list[Any] = [row.benchmark, row.model, row.run_id, row.finalized, row.finalized, row.run_id]
    if same_request:
        where += " AND request_digest = ?"
        params.append(row.request_digest)
    return select(path, where, params, limit=last_n)


def fingerprints(path: Path) -> dict[str, tuple[int | None, int | None]]:
    """run_dir -> (results.json's mtime in ns, its size) as recorded: what a scan compares to skip known runs."""
    with connect(path) as conn:
        return {d: (m, s) for d, m, s in conn.execute("SELECT run_dir, results_mtime_ns, results_size FROM runs")}
