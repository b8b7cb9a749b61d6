"""The production configuration for real: a throwaway PostgreSQL cluster (pg_trgm), the Prefect
server on it, `python -m flows.serve`, and `prefect deployment run build-pairs/<catalog> --watch`
end to end. The slowest test of the suite."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from prefect_stack import make_survey, prefect_stack, serving, write_catalog

from flows.server import free_port
from pipeline.manifest import read_pairs

pytestmark = pytest.mark.slow

PG_BIN = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))


def as_postgres(args: list[str], **kw) -> subprocess.CompletedProcess:
    """Run a PostgreSQL tool; initdb and pg_ctl refuse to run as root, so root runs them as
    the `postgres` user."""
    if os.geteuid() == 0:
        args = ["runuser", "-u", "postgres", "--", *args]
    res = subprocess.run(args, capture_output=True, text=True, timeout=120, **kw)
    if res.returncode != 0:
        raise AssertionError(f"{' '.join(args)} -> {res.returncode}\n{res.stdout}\n{res.stderr}")
    return res


@contextlib.contextmanager
def postgres_cluster():
    """initdb in a temp dir, pg_ctl start on a free port on 127.0.0.1; yields (port, version)."""
    bindir = Path(PG_BIN[-1]).parent
    base = Path(tempfile.mkdtemp(prefix="seafloor-pg-"))
    base.chmod(0o755)  # the postgres user must reach its data directory
    data = base / "data"
    data.mkdir()
    if os.geteuid() == 0:
        shutil.chown(base, "postgres")
        shutil.chown(data, "postgres")
    port = free_port()
    try:
        as_postgres([str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres",
                     "-E", "UTF8"])
        as_postgres([str(bindir / "pg_ctl"), "-D", str(data), "-l", str(base / "pg.log"), "-w",
                     "-o", f"-p {port} -k {base} -c listen_addresses=127.0.0.1", "start"])
        try:
            psql = [str(bindir / "psql"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres",
                    "-v", "ON_ERROR_STOP=1", "-tA"]
            if not (bindir / "psql").exists():
                psql[0] = "psql"
            version = as_postgres([*psql, "-c", "SHOW server_version_num"]).stdout.strip()
            as_postgres([*psql, "-c", "CREATE DATABASE prefect"])
            as_postgres([*psql, "-d", "prefect", "-c", "CREATE EXTENSION IF NOT EXISTS pg_trgm"])
            yield port, int(version)
        finally:
            as_postgres([str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"])
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.skipif(not PG_BIN or shutil.which("runuser") is None and os.geteuid() == 0,
                    reason="PostgreSQL server binaries are not installed")
def test_build_pairs_on_a_postgres_backed_server(tmp_path):
    site = make_survey(tmp_path / "site", dives=2, images_per_dive=30)
    catalogs = tmp_path / "catalogs"
    write_catalog(catalogs, "pgsite", site, tmp_path / "out")
    with postgres_cluster() as (port, version):
        assert version >= 140009, f"PostgreSQL {version} is older than 14.9"
        url = f"postgresql+asyncpg://postgres@127.0.0.1:{port}/prefect"
        with prefect_stack(tmp_path / "home", database_url=url) as stack:
            with serving(stack, catalogs, tmp_path / "serve.log"):
                res = stack.cli("deployment", "run", "build-pairs/pgsite", "--watch")
            assert "Completed" in res.stdout, res.stdout[-3000:]
            runs = stack.flow_runs("pgsite")
            states = sorted(r.state.type.value for r in runs)
            assert states.count("COMPLETED") == 1 and set(states) <= {"COMPLETED", "SCHEDULED"}
        # the server kept its state in PostgreSQL, not in a SQLite file in PREFECT_HOME
        assert not list((tmp_path / "home").glob("*.db"))
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    pairs, locations = read_pairs(tmp_path / "out" / "pairs.parquet")
    assert locations.num_rows == report["images_located"] == 60
    assert pairs.num_rows == report["pairs"] > 0
