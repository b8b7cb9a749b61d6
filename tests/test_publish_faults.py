"""A publish that runs out of disk space, or fails in any other way, leaves the published set as
it was and no temporary file; a publish that succeeds (fresh, incremental, no change) leaves no
temporary file either."""

from __future__ import annotations

import collections
import errno
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path
from ssl.data.manifest import load_manifest

import pyarrow.parquet as pq
import pytest
from surveys import built_copy, copy_survey

import pipeline.cli
from pipeline.build import USER_ERRORS, build
from pipeline.catalog import load_catalog
from pipeline.output import CURRENT, DiskFull, human_bytes, replace_temp, write_json_atomic
from pipeline.synth import SynthConfig, generate

QUIET = {"workers": 1, "log": lambda *_: None}
Usage = collections.namedtuple("Usage", "total used free")


def enospc() -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.fixture(scope="module")
def survey(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults") / "site"
    generate(SynthConfig(out=root, dives=3, images_per_dive=24, seed=11, faults=False, workers=2))
    return root


@pytest.fixture
def site(survey, tmp_path):
    """A private copy of the survey, built once: (catalog, output folder)."""
    return built_copy(survey, tmp_path / "site")


def temp_files(out: Path) -> list[str]:
    """Every name under ``out`` that looks temporary: '.<name>.tmp' and any '*.tmp' (files,
    links and folders; links are not followed, each file is seen once)."""
    found = []
    for folder, dirs, files in os.walk(out):
        for name in dirs + files:
            if name.endswith(".tmp"):
                found.append(os.path.relpath(os.path.join(folder, name), out))
    return sorted(found)


def published(out: Path) -> dict:
    """What a reader sees: where ``current`` points and the SHA-256 of every file in it, after
    reading each Parquet file and loading the set through the trainer's reader."""
    gen = out / os.readlink(out / CURRENT)
    digests = {p.relative_to(gen).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
               for p in sorted(gen.rglob("*")) if p.is_file()}
    for name in digests:
        if name.endswith(".parquet"):
            pq.read_table(out / CURRENT / name)
    m = load_manifest(out / "pairs.parquet")
    assert m.n == pq.read_metadata(out / "locations.parquet").num_rows
    return {"current": os.readlink(out / CURRENT), "files": digests}


def generations(out: Path) -> list[str]:
    return sorted(p.name for p in (out / "generations").iterdir())


def little_space(free: int):
    return lambda path: Usage(10**9, 10**9 - free, free)


def test_too_little_free_space_is_refused_before_writing_with_one_message(
        site, monkeypatch, capsys):
    cat, out = site
    before, gens = published(out), generations(out)
    monkeypatch.setattr(shutil, "disk_usage", little_space(300_000))
    # the CLI: one message naming the folder and both sizes, exit code 2, no traceback
    code = pipeline.cli.main(["build", "--catalog", str(cat.source), "--r-loc", "3",
                              "--workers", "1"])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert str(out) in err and "needs ~" in err and "300 kB free" in err, err
    assert "Traceback" not in err and "--out" in err, err
    # in the library: DiskFull, one of the user errors, with the numbers
    with pytest.raises(DiskFull) as info:
        build(cat, r_loc_m=3.0, **QUIET)
    exc = info.value
    assert isinstance(exc, USER_ERRORS) and exc.path == out
    assert exc.free == 300_000 and exc.needed > exc.free
    assert human_bytes(exc.needed) in str(exc)
    # nothing was written: the same set, the same generations, no temporary file
    assert published(out) == before and generations(out) == gens
    assert temp_files(out) == []
    # a new dive is refused before its cache entry is written
    shutil.copytree(cat.root / "dive01", cat.root / "dive04")
    with pytest.raises(DiskFull, match="cache the ingest of dive dive04"):
        build(cat, **QUIET)
    assert not (out / "cache" / "dive04").exists()
    assert published(out) == before and temp_files(out) == []
    # with room again, the same build succeeds
    monkeypatch.undo()
    report = build(cat, r_loc_m=3.0, **QUIET)
    assert report["no_change"] is False and "dive04" in report["per_dive"]
    assert published(out) != before and temp_files(out) == []


def _fail_parquet(name: str, monkeypatch) -> None:
    """pq.write_table of ``name`` writes part of the file, then the disk is full."""
    real = pq.write_table

    def write_table(table, where, *args, **kwargs):
        if Path(str(where)).name == name:
            Path(where).write_bytes(b"PAR1 half a file")
            raise OSError(errno.ENOSPC, "Error writing bytes to file. Detail: [errno 28] "
                          "No space left on device")
        return real(table, where, *args, **kwargs)

    monkeypatch.setattr(pq, "write_table", write_table)


def _fail_json(name: str, monkeypatch, error=enospc) -> None:
    """The JSON record ``name`` is half written (under its temporary name), then fails."""
    real = json.dump

    def dump(obj, fh, *args, **kwargs):
        if getattr(fh, "name", "").endswith(f".{name}.tmp"):
            fh.write('{"half": ')
            fh.flush()
            raise error()
        return real(obj, fh, *args, **kwargs)

    monkeypatch.setattr(json, "dump", dump)


def _fail_shard_copy(name: str, monkeypatch) -> None:
    """No hard links on this filesystem, and the disk fills up while copying shard ``name``."""
    real = shutil.copyfile

    def no_links(src, dst, *args, **kwargs):
        raise OSError(errno.EPERM, os.strerror(errno.EPERM), src, None, dst)

    def copyfile(src, dst, *args, **kwargs):
        if Path(dst).name == name:
            Path(dst).write_bytes(Path(src).read_bytes()[:1000])
            raise enospc()
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "link", no_links)
    monkeypatch.setattr(shutil, "copyfile", copyfile)


def _fail_store(name: str, monkeypatch) -> None:
    """The Arrow IPC image store ``name`` is half written, then the disk is full."""
    import pyarrow as pa

    real = pa.ipc.new_file

    def new_file(sink, *args, **kwargs):
        if Path(getattr(sink, "name", "")).name == name:
            sink.write(b"ARROW1 half a file")
            raise OSError(errno.ENOSPC, "Error writing bytes to file. Detail: [errno 28] "
                          "No space left on device")
        return real(sink, *args, **kwargs)

    monkeypatch.setattr(pa.ipc, "new_file", new_file)


@pytest.mark.parametrize(("failing", "fault"), [
    ("pairs.parquet", _fail_parquet),
    ("manifest.json", _fail_json),
    ("images/dive02.parquet", _fail_shard_copy),
    ("images/dive02.arrow", _fail_shard_copy),
])
def test_disk_filling_up_mid_publish_removes_the_generation_and_names_the_file(
        site, monkeypatch, failing, fault):
    cat, out = site
    before, gens = published(out), generations(out)
    fault(Path(failing).name, monkeypatch)
    with pytest.raises(DiskFull) as info:
        build(cat, r_loc_m=3.0, **QUIET)
    msg = str(info.value)
    new_gen = f"{int(gens[-1]) + 1:06d}"
    assert msg.startswith(f"{out / 'generations' / new_gen / failing}: the disk filled up"), msg
    assert "No space left on device" in msg and "free on the disk of" in msg, msg
    assert "published manifests are unchanged" in msg and "--out" in msg, msg
    assert isinstance(info.value.__cause__, OSError)
    # the unfinished generation is gone (by its own list), the published set is intact
    assert generations(out) == gens
    assert published(out) == before and temp_files(out) == []
    monkeypatch.undo()
    assert build(cat, r_loc_m=3.0, **QUIET)["no_change"] is False
    assert published(out) != before and temp_files(out) == []


@pytest.mark.parametrize(("failing", "fault"), [
    ("images.parquet", _fail_parquet),
    ("images.arrow", _fail_store),
])
def test_disk_filling_up_mid_ingest_removes_the_cache_entry(site, monkeypatch, failing, fault):
    cat, out = site
    before = published(out)
    shutil.copytree(cat.root / "dive01", cat.root / "dive04")
    fault(failing, monkeypatch)
    with pytest.raises(DiskFull) as info:
        build(cat, **QUIET)
    msg = str(info.value)
    assert msg.startswith(str(out / "cache" / "dive04")) and f"{failing}:" in msg, msg
    assert "cache entry" in msg and "removed" in msg, msg
    assert not (out / "cache" / "dive04").exists()
    assert published(out) == before and temp_files(out) == []
    monkeypatch.undo()
    assert "dive04" in build(cat, **QUIET)["per_dive"] and temp_files(out) == []


@pytest.mark.parametrize("step", ["manifest.json", "current"])
def test_a_publish_failing_for_any_reason_removes_its_own_temporary_files(
        site, monkeypatch, step):
    cat, out = site
    before, gens = published(out), generations(out)
    def boom():
        return RuntimeError("interrupted")
    if step == "current":  # the switch itself fails while .current.tmp exists
        real = os.replace

        def replace(src, dst, *args, **kwargs):
            if Path(dst).name == CURRENT:
                raise boom()
            return real(src, dst, *args, **kwargs)

        monkeypatch.setattr(os, "replace", replace)
    else:
        _fail_json(step, monkeypatch, boom)
    with pytest.raises(RuntimeError, match="interrupted"):
        build(cat, r_loc_m=3.0, **QUIET)
    assert temp_files(out) == [] and generations(out) == gens
    assert published(out) == before
    monkeypatch.undo()
    assert build(cat, r_loc_m=3.0, **QUIET)["no_change"] is False and temp_files(out) == []


def test_publishes_that_reuse_cached_shards_leave_no_temporary_file(site):
    cat, out = site
    root = cat.root
    assert temp_files(out) == []

    def rebuild(**kwargs) -> dict:
        report = build(cat, **kwargs, **QUIET)
        assert temp_files(out) == [], (kwargs, report.get("ingested"))
        assert len(generations(out)) <= 2
        published(out)
        return report

    assert rebuild()["no_change"] is True
    shutil.copytree(root / "dive01", root / "dive04")  # a new dive: three shards reused
    r = rebuild()
    assert r["ingested"] == ["dive04"] and len(r["reused"]) == 3
    # the reused shards are hard links of the cache, not copies
    for dive in r["reused"]:
        entry = next((out / "cache" / dive).iterdir())
        assert os.path.samefile(entry / "images.parquet", out / "images" / f"{dive}.parquet")
        assert os.path.samefile(entry / "images.arrow", out / "images" / f"{dive}.arrow")
    image = next((root / "dive02" / "images").iterdir())
    os.utime(image, ns=(image.stat().st_atime_ns, image.stat().st_mtime_ns + 10**9))
    assert rebuild()["ingested"] == ["dive02"]  # a changed dive, the others reused
    shutil.rmtree(root / "dive04")
    assert rebuild()["removed"] == ["dive04"]
    assert rebuild(r_loc_m=3.0)["ingested"] == []  # a new set from the cache alone
    assert rebuild(r_loc_m=3.0)["no_change"] is True
    assert rebuild(full_rebuild=True)["no_change"] is False


def test_a_rename_onto_a_hard_link_of_itself_leaves_no_temporary_name(tmp_path):
    """POSIX rename of a name onto another link of the same inode succeeds and keeps both."""
    target = tmp_path / "report.json"
    target.write_text("{}")
    tmp = tmp_path / ".report.json.tmp"
    os.link(target, tmp)
    write_json_atomic({"generation": "000002"}, target)
    assert json.loads(target.read_text()) == {"generation": "000002"}
    assert not tmp.exists()
    # the same for a link: two hard links of one symbolic link
    link, tmp_link = tmp_path / "current", tmp_path / ".current.tmp"
    os.symlink("generations/000002", tmp_link)
    os.link(tmp_link, link, follow_symlinks=False)
    replace_temp(tmp_link, link)
    assert os.readlink(link) == "generations/000002" and not os.path.lexists(tmp_link)


@pytest.fixture
def small_disk(tmp_path):
    """A 40 MiB tmpfs (root only, where mounting is allowed); skipped elsewhere."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a small tmpfs needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=40m", "tmpfs", str(disk)],
                         capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def _fill(path: Path, leave: int = 0) -> None:
    """Write ``path`` until its filesystem is full, then give back ``leave`` bytes."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        for chunk in (2**20, 4096):
            while True:
                try:
                    os.write(fd, bytes(chunk))
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC
                    break
    finally:
        os.close(fd)
    if leave:
        os.truncate(path, path.stat().st_size - leave)


def test_a_real_full_filesystem(survey, tmp_path, small_disk, monkeypatch):
    root = copy_survey(survey, tmp_path / "site")
    cat = load_catalog(root / "catalog.yaml")
    out = small_disk / "manifests"
    build(cat, out=out, **QUIET)
    before, gens = published(out), generations(out)
    filler = small_disk / "filler"
    _fill(filler)
    with pytest.raises(DiskFull, match="0 bytes free"):
        build(cat, out=out, r_loc_m=3.0, **QUIET)
    # the estimate passes (disk_usage reports room) but the disk is full: the write fails
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=10**12))
    for leave in (0, 8192):
        os.truncate(filler, filler.stat().st_size - leave)
        with pytest.raises(DiskFull) as info:
            build(cat, out=out, r_loc_m=3.0, **QUIET)
        assert str(info.value).startswith(str(out / "generations")), info.value
        assert "No space left on device" in str(info.value)
        assert generations(out) == gens and published(out) == before
        assert temp_files(out) == []
    monkeypatch.undo()
    filler.unlink()
    assert build(cat, out=out, r_loc_m=3.0, **QUIET)["no_change"] is False
    assert published(out) != before and temp_files(out) == []
