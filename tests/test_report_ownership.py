"""Commands write only what they own: a report goes only into a Markdown file and changes nothing
outside its section (or replaces only a report the command wrote), every other output goes into
the command's own folder or file, and anything else is refused before any work with one
``error:`` line naming the file and exit status 2, every input left byte for byte as it was."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from seafloor_ssl import labelling_payoff as lp
from seafloor_ssl.data import embeddings as E
from seafloor_ssl.files import ReportError, check_report, replace_section

HABITATS = np.array(["sand", "reef", "kelp"], dtype=object)


def _embeddings(path: Path, n: int = 60, d: int = 8, seed: int = 0) -> Path:
    """A small ssl.embed-shaped file: three separable habitats, every image labelled."""
    rng = np.random.default_rng(seed)
    truth = np.arange(n) % len(HABITATS)
    X = (3 * rng.normal(size=(len(HABITATS), d))[truth] + 0.3 * rng.normal(size=(n, d)))
    xy = rng.uniform(0, 100, size=(n, 2))
    table = pa.table({"idx": pa.array(np.arange(n, dtype=np.int32)),
                      "image_id": [f"img{i:04d}" for i in range(n)], "dive": ["d0"] * n,
                      "path": [f"d0/{i}.jpg" for i in range(n)], "easting": xy[:, 0],
                      "northing": xy[:, 1], "label": HABITATS[truth].tolist(),
                      E.EMBEDDING_COLUMN: E.embedding_array(X.astype(np.float32))})
    meta = {E.META_VERSION: E.EMBEDDINGS_VERSION, E.META_DATASET: "synthetic",
            E.META_PAIRS: str(path.parent / "no-pairs.parquet"), E.META_DIM: str(d),
            E.META_R_LOC: "1.0", "crs": "EPSG:32633",
            E.META_ENCODER: json.dumps({"backbone": "tiny", "image_size": 32, "step": 4})}
    pq.write_table(table.replace_schema_metadata(meta), path)
    return path


@pytest.fixture()
def site(tmp_path) -> dict[str, Path]:
    """Two encoders' embeddings and a labels CSV of the same images."""
    a = _embeddings(tmp_path / "simclr.parquet", seed=0)
    b = _embeddings(tmp_path / "geoclr.parquet", seed=1)
    labels = tmp_path / "labels.csv"
    labels.write_text("image_id,label\n" + "".join(
        f"img{i:04d},{HABITATS[i % 3]}\n" for i in range(60)))
    return {"a": a, "b": b, "labels": labels, "root": tmp_path}


SMALL = ["--n", "3", "--seeds", "0-1", "--k", "3", "--dims", "4"]


def _snapshot(root: Path) -> dict[str, bytes]:
    """Every file under root, by relative path, with its bytes."""
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _one_error(err: str, *names: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for name in names:
        assert name in lines[0], (name, lines[0])
    return lines[0]


def _payoff(capsys, *argv) -> tuple[int, str]:
    capsys.readouterr()
    try:
        rc = lp.main([str(a) for a in argv])
    except SystemExit as exc:  # argparse: a flag's value refused at parse time
        rc = exc.code
    return rc, capsys.readouterr().err


# --- ssl.labelling_payoff --------------------------------------------------------------------

def test_payoff_refuses_a_labels_csv_as_report_as_a_real_command(site):
    """The tester's case: a labels CSV given as --report stays a CSV, and no figure appears
    beside it or anywhere else."""
    root = site["root"]
    before = _snapshot(root)
    res = subprocess.run([sys.executable, "-m", "seafloor_ssl.labelling_payoff", "--embeddings",
                          f"simclr={site['a']}", "--labels", str(site["labels"]), *SMALL,
                          "--out", str(root / "out"), "--report", str(site["labels"])],
                         capture_output=True, text=True, cwd=root, timeout=300)
    assert res.returncode == 2, res.stdout + res.stderr
    line = _one_error(res.stderr, str(site["labels"]))
    assert ".md" in line
    assert _snapshot(root) == before  # inputs byte for byte; --out and no figure written


@pytest.mark.parametrize("case", ["txt", "not-utf8", "nul", "folder", "broken-markers",
                                  "markers-twice", "link", "is-an-input", "parent-is-a-file"])
def test_payoff_refuses_every_report_it_may_not_write_into(site, capsys, case):
    root = site["root"]
    labels = site["labels"]
    report = root / "R.md"
    if case == "txt":
        report = root / "notes.txt"
        report.write_text("my notes\n")
    elif case == "not-utf8":
        report.write_bytes("# Notes\n\nLatin-1: caf\xe9\n".encode("latin-1"))
    elif case == "nul":
        report.write_bytes(b"# Notes\n\x00\x01binary")
    elif case == "folder":
        report.mkdir()
        (report / "keep.txt").write_text("kept")
    elif case == "broken-markers":  # a begin marker without its end: where would it stop?
        report.write_text(f"# Notes\n\n{lp.BEGIN}\nold section, end marker lost\n\nprose\n")
    elif case == "markers-twice":
        section = f"{lp.BEGIN}\nold\n{lp.END}\n"
        report.write_text(f"# Notes\n\n{section}\nprose\n\n{section}")
    elif case == "link":
        target = root / "elsewhere.md"
        target.write_text("# Someone else's file\n")
        report.symlink_to(target)
    elif case == "is-an-input":  # a .md labels file given as the report too
        labels = root / "labels.md"
        labels.write_bytes(site["labels"].read_bytes())
        report = labels
    elif case == "parent-is-a-file":
        (root / "docs").write_text("a file where a folder is needed")
        report = root / "docs" / "R.md"
    before = _snapshot(root)
    rc, err = _payoff(capsys, "--embeddings", f"simclr={site['a']}", "--labels", labels, *SMALL,
                      "--out", root / "out", "--report", report)
    assert rc == 2
    _one_error(err, str(report))
    assert _snapshot(root) == before
    assert not (root / "out").exists()


def test_payoff_out_is_a_folder_it_owns(site, capsys):
    root = site["root"]
    out = root / "out"
    out.mkdir()
    (out / "payoff.json").write_text('{"mine": true}\n')
    before = _snapshot(root)
    for extra in ([], ["--overwrite"]):
        rc, err = _payoff(capsys, "--embeddings", f"simclr={site['a']}", *SMALL, "--out", out,
                          *extra)
        assert rc == 2
        _one_error(err, str(out), lp.MARKER)
        assert _snapshot(root) == before
    file_out = root / "out.png"
    file_out.write_bytes(b"\x89PNG not ours")
    rc, err = _payoff(capsys, "--embeddings", f"simclr={site['a']}", *SMALL, "--out", file_out)
    assert rc == 2
    _one_error(err, str(file_out))
    assert file_out.read_bytes() == b"\x89PNG not ours"


def test_payoff_writes_only_into_out_and_rewrites_its_section_in_place(site, capsys):
    root = site["root"]
    out, report = root / "runs" / "payoff", root / "docs" / "REPORT.md"
    inputs = _snapshot(root)
    argv = ["--embeddings", f"simclr={site['a']}", f"geoclr={site['b']}", *SMALL, "--out", out,
            "--report", report]
    rc, err = _payoff(capsys, *argv)
    assert rc == 0, err
    after = _snapshot(root)
    new = sorted(set(after) - set(inputs))
    assert new == ["docs/REPORT.md", "runs/payoff/labelling_payoff.json",
                   "runs/payoff/payoff.json", "runs/payoff/payoff.png"], new
    assert all(after[k] == v for k, v in inputs.items())
    record = json.loads((out / lp.MARKER).read_text())
    assert record["state"] == "complete"
    assert sorted(record["written"]) == ["payoff.json", "payoff.png"]
    text = report.read_text(encoding="utf-8")
    assert text.startswith(lp.BEGIN) and text.rstrip("\n").endswith(lp.END)
    assert "(../runs/payoff/payoff.png)" in text  # the plot in --out, relative to the report
    assert (report.parent / "../runs/payoff/payoff.png").resolve() == (out / "payoff.png")

    # hand-written prose around the section (with Windows line endings and non-ASCII text):
    # a second run replaces the section in place and keeps every byte outside it
    section = text.encode("utf-8")
    head = "# Our survey\r\n\r\nWritten by hand: café, 5 µm.\r\n\r\n".encode()
    tail = b"\r\n## Discussion\r\n\r\nKept.\r\n"
    report.write_bytes(head + section.replace(b"| simclr |", b"| OLD ROW |") + tail)
    (out / "my-notes.txt").write_text("not the tool's")
    rc, err = _payoff(capsys, *argv)  # without --overwrite: refused, nothing changed
    assert rc == 2
    _one_error(err, str(out), "--overwrite")
    assert report.read_bytes().startswith(head)
    rc, err = _payoff(capsys, *argv, "--overwrite")
    assert rc == 0, err
    data = report.read_bytes()
    assert data.startswith(head) and data.endswith(tail)
    middle = data[len(head):len(data) - len(tail)].decode("utf-8")
    assert middle.count(lp.BEGIN) == 1 and middle.count(lp.END) == 1
    assert "| OLD ROW |" not in middle and "| simclr |" in middle and "| geoclr |" in middle
    assert (out / "my-notes.txt").read_text() == "not the tool's"  # not recorded: kept


def test_payoff_appends_its_section_to_a_markdown_file_without_touching_the_rest(site, capsys):
    root = site["root"]
    report = root / "REPRODUCTION.md"
    prose = b"# Reproduction\n\nHand-written, no trailing newline"
    report.write_bytes(prose)
    rc, err = _payoff(capsys, "--embeddings", f"simclr={site['a']}", *SMALL, "--out",
                      root / "out", "--report", report)
    assert rc == 0, err
    data = report.read_bytes()
    assert data.startswith(prose + b"\n\n" + lp.BEGIN.encode())
    assert "(out/payoff.png)" in data.decode()


@pytest.mark.parametrize("flags, flag", [
    (["--n", "0"], "--n"), (["--n", "3,3"], "--n"), (["--n", "-2"], "--n"),
    (["--seeds", "-1"], "--seeds"), (["--seeds", "4-1"], "--seeds"),
    (["--seeds", "0,0"], "--seeds"), (["--seeds", "0-99999999"], "--seeds"),
    (["--seeds", "x"], "--seeds"), (["--dims", "0"], "--dims"), (["--k", "1"], "--k"),
    (["--embeddings", "=x.parquet"], "--embeddings"),
    (["--embeddings", "a|b=x.parquet"], "--embeddings")])
def test_payoff_numeric_flags_are_checked_at_parse_time(site, capsys, flags, flag):
    root = site["root"]
    before = _snapshot(root)
    rc, err = _payoff(capsys, "--embeddings", f"simclr={site['a']}", *SMALL, "--out",
                      root / "out", *flags)
    assert rc == 2 and f"argument {flag}" in err and "Traceback" not in err, err
    assert _snapshot(root) == before


def test_payoff_refuses_an_encoder_name_given_twice(site, capsys):
    root = site["root"]
    before = _snapshot(root)
    for argv in (["--embeddings", f"simclr={site['a']}", f"simclr={site['b']}"],
                 ["--embeddings", f"simclr={site['a']}", "--embeddings", f"simclr={site['b']}"]):
        rc, err = _payoff(capsys, *argv, *SMALL, "--out", root / "out")
        assert rc == 2
        _one_error(err, "'simclr'", str(site["a"]), str(site["b"]))
        assert _snapshot(root) == before


# --- ssl.reproduce ---------------------------------------------------------------------------

@pytest.fixture()
def reproduce():
    from seafloor_ssl import reproduce as rp

    return rp


def _reproduce(rp, capsys, tmp_path, report: Path, preset: str = "smoke") -> tuple[int, str]:
    capsys.readouterr()
    rc = rp.main(["--manifest", str(tmp_path / "no-such.parquet"), "--preset", preset,
                  "--out", str(tmp_path / "runs"), "--report", str(report), "--device", "cpu"])
    return rc, capsys.readouterr().err


@pytest.mark.parametrize("case", ["txt", "foreign-md", "not-utf8", "empty-md", "gpu-txt",
                                  "gpu-broken-markers"])
def test_reproduce_refuses_a_report_it_did_not_write_before_training(reproduce, tmp_path,
                                                                     capsys, monkeypatch, case):
    def never(*a, **k):
        raise AssertionError("training started before the report was checked")
    monkeypatch.setattr(reproduce, "run_all", never)
    preset = "gpu" if case.startswith("gpu") else "smoke"
    report = tmp_path / ("notes.txt" if case.endswith("txt") else "R.md")
    if case.endswith("txt"):
        report.write_text(f"{reproduce.REPORT_HEADING}\n\nlooks like one, but is not .md\n")
    elif case == "foreign-md":
        report.write_text("# My survey notes\n\n## Discussion\n\nMine.\n")
    elif case == "not-utf8":
        report.write_bytes(f"{reproduce.REPORT_HEADING}\n\ncaf\xe9\n".encode("latin-1"))
    elif case == "empty-md":
        report.write_bytes(b"")
    elif case == "gpu-broken-markers":
        begin, _ = reproduce.SECTION_MARKS["gpu"]
        report.write_text(f"# Notes\n\n{begin}\nend marker lost\n")
    before = _snapshot(tmp_path)
    rc, err = _reproduce(reproduce, capsys, tmp_path, report, preset)
    assert rc == 2
    _one_error(err, str(report))
    assert _snapshot(tmp_path) == before


def _fake_run(rp, monkeypatch, table: str):
    monkeypatch.setattr(rp, "run_all", lambda args: {
        "config": dict(rp.PRESETS[args.preset]), "device": "CPU", "seconds": 60.0})
    monkeypatch.setattr(rp, "report", lambda res: f"{rp.REPORT_HEADING}\n\n{table}\n")


def test_reproduce_writes_a_new_report_and_replaces_only_its_own(reproduce, tmp_path, capsys,
                                                                 monkeypatch):
    rp = reproduce
    _fake_run(rp, monkeypatch, "| new table |")
    report = tmp_path / "docs" / "REPRODUCTION.md"
    rc, err = _reproduce(rp, capsys, tmp_path, report)
    assert rc == 0, err
    assert report.read_text() == f"{rp.REPORT_HEADING}\n\n| new table |\n"
    kept = f"{rp.DISCUSSION_MARK}\n\n## Discussion\n\nKept words, café.\n"
    report.write_text(f"{rp.REPORT_HEADING}\n\n| old table |\n\n{kept}", encoding="utf-8")
    _fake_run(rp, monkeypatch, "| second table |")
    rc, err = _reproduce(rp, capsys, tmp_path, report)
    assert rc == 0, err
    text = report.read_text(encoding="utf-8")
    assert "| old table |" not in text and "| second table |" in text
    assert text.endswith(kept)


def test_reproduce_gpu_section_appends_and_keeps_every_other_byte(reproduce, tmp_path, capsys,
                                                                  monkeypatch):
    rp = reproduce
    begin, end = rp.SECTION_MARKS["gpu"]
    _fake_run(rp, monkeypatch, "| gpu table |")
    report = tmp_path / "REPRODUCTION.md"
    prose = b"# Someone's notes\r\n\r\nNot written by the reproduction.\r\n"
    report.write_bytes(prose)
    rc, err = _reproduce(rp, capsys, tmp_path, report, "gpu")
    assert rc == 0, err
    data = report.read_bytes()
    assert data.startswith(prose + b"\n" + begin.encode()) and data.endswith(end.encode() + b"\n")
    assert b"| gpu table |" in data and b"## Measured on CPU" in data


# --- ssl.bench --json, ssl.embed's chunk folder, the section writer --------------------------

def test_bench_json_never_replaces_a_file_it_did_not_write(tmp_path, capsys):
    from seafloor_ssl.bench import TOOL, json_out_error
    from seafloor_ssl.bench import main as bench

    mine = tmp_path / "results.json"
    mine.write_text('{"my": "numbers"}\n')
    before = _snapshot(tmp_path)
    for extra in ([], ["--overwrite"]):  # refused before the manifest is even read
        capsys.readouterr()
        rc = bench(["--manifest", str(tmp_path / "no-such.parquet"), "--json", str(mine),
                    *extra])
        assert rc == 2
        _one_error(capsys.readouterr().err, str(mine), "never replaced")
    assert _snapshot(tmp_path) == before
    record = tmp_path / "bench.json"
    record.write_text(json.dumps({"tool": TOOL, "device": "CPU", "args": {}, "rows": []}))
    capsys.readouterr()
    assert bench(["--manifest", str(tmp_path / "no-such.parquet"), "--json", str(record)]) == 2
    _one_error(capsys.readouterr().err, str(record), "--overwrite")
    assert json_out_error(record, overwrite=True) is None
    assert json_out_error(tmp_path / "new.json", overwrite=False) is None


def test_embed_never_writes_into_a_chunk_folder_it_did_not_create(tmp_path):
    from seafloor_ssl import embed

    parts = embed.parts_dir(tmp_path / "embeddings.parquet")
    embed._check_parts(parts)  # absent: fine
    parts.mkdir()
    embed._check_parts(parts)  # empty: fine
    (parts / "part-000000.npy").write_bytes(b"someone's array")
    with pytest.raises(embed.EmbedError, match="never written to"):
        embed._check_parts(parts)
    (parts / embed.STATE).write_text(json.dumps({"key": {}, "parts": {}}))
    embed._check_parts(parts)  # an interrupted run's chunks: resumed


def test_section_writer_keeps_bytes_outside_and_refuses_broken_markers(tmp_path):
    begin, end = "<!-- s -->", "<!-- /s -->"
    report = tmp_path / "R.md"
    outside = b"intro\r\n\r\n", "\r\noutro \u00b5\r\n".encode()
    report.write_bytes(outside[0] + f"{begin}\nold\n{end}".encode() + outside[1])
    replace_section(report, f"{begin}\nnew\n{end}\n", begin, end)
    assert report.read_bytes() == outside[0] + f"{begin}\nnew\n{end}".encode() + outside[1]
    for broken in (f"{end}\n{begin}\n", f"{begin}\n{begin}\n{end}\n", f"{end}\n"):
        report.write_text(broken)
        with pytest.raises(ReportError, match="markers are broken"):
            check_report(report, begin, end)
        with pytest.raises(ReportError):
            replace_section(report, f"{begin}\nnew\n{end}\n", begin, end)
        assert report.read_text() == broken
    with pytest.raises(ReportError, match="more than once"):  # a name holding a marker
        replace_section(tmp_path / "new.md", f"{begin}\n{end}\n{end}\n", begin, end)
    assert not (tmp_path / "new.md").exists()
    if hasattr(os, "mkfifo"):  # a pipe named like a report is refused, not read (no hang)
        os.mkfifo(tmp_path / "pipe.md")
        with pytest.raises(ReportError, match="not a regular file"):
            check_report(tmp_path / "pipe.md", begin, end)
