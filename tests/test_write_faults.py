"""A refused write is one message, and nothing half-written stays (ssl/oserrors.py): a full disk
(a small tmpfs), a read-only folder (a read-only tmpfs) and, where a non-root user can run the
project, a folder without write permission; each with a real command, its exit status 2, one
``error:`` line naming the file, and the inputs byte-identical after."""

from __future__ import annotations

import contextlib
import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
from surveys import without_root_permissions

from pipeline.build import build
from pipeline.catalog import load_catalog
from pipeline.synth import SynthConfig, generate

REPO = Path(__file__).resolve().parents[1]


def _run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *argv], cwd=REPO, capture_output=True, text=True,
                          timeout=600)


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.is_symlink()}


def _one_error(res: subprocess.CompletedProcess) -> str:
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert res.returncode == 2 and len(lines) == 1, res.stdout[-2000:] + res.stderr[-2000:]
    assert "Traceback" not in res.stderr, res.stderr
    return lines[0]


@contextlib.contextmanager
def tmpfs(path: Path, size: str, read_only: bool = False):
    """A tmpfs of ``size`` at ``path`` (root with mount rights only; else the test is skipped
    with the reason)."""
    path.mkdir(parents=True, exist_ok=True)
    opts = f"size={size}" + (",ro" if read_only else "")
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)],
                         capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({res.stderr.strip() or 'not root'}): a full "
                    "or read-only disk cannot be made")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    top = tmp_path_factory.mktemp("write-faults")
    root = top / "site"
    generate(SynthConfig(out=root, dives=2, images_per_dive=24, seed=4, faults=False,
                         workers=2))
    build(load_catalog(root / "catalog.yaml"), workers=2, log=lambda *_: None)
    res = _run("seafloor_ssl.train", "--manifest", str(root / "manifests" / "pairs.parquet"),
               "--backbone", "tiny", "--image-size", "32", "--batch-size", "8", "--steps", "2",
               "--device", "cpu", "--out", str(top / "run"), "--no-tensorboard")
    assert res.returncode == 0, res.stderr[-2000:]
    return top


def test_a_full_disk_at_a_periodic_checkpoint_is_one_message_and_keeps_the_last(site, tmp_path):
    before = _digest(site / "site")
    ckpt = (site / "run" / "last.pt").stat().st_size
    # room for one checkpoint, not for the temporary of the next beside it
    with tmpfs(tmp_path / "disk", f"{int(ckpt * 1.6) // 1024}k") as disk:
        res = _run("seafloor_ssl.train", "--manifest",
                   str(site / "site" / "manifests" / "pairs.parquet"), "--backbone", "tiny",
                   "--image-size", "32", "--batch-size", "8", "--steps", "4",
                   "--checkpoint-every", "2", "--device", "cpu", "--out", str(disk / "run"),
                   "--no-tensorboard")
        line = _one_error(res)
        assert str(disk / "run" / "last.pt") in line and "no space left" in line, line
        assert "needed" in line and "free" in line, line
        names = sorted(p.name for p in (disk / "run").iterdir())
        assert "last.pt" in names, names  # the periodic checkpoint before the failure survives
        assert not [n for n in names if "tmp" in n], names  # no temporary left behind
    assert _digest(site / "site") == before


def test_a_full_disk_while_embedding_names_the_file(site, tmp_path):
    with tmpfs(tmp_path / "disk", "24k") as disk:
        res = _run("seafloor_ssl.embed", "--checkpoint", str(site / "run" / "last.pt"),
                   "--manifest", str(site / "site" / "manifests" / "pairs.parquet"), "--out",
                   str(disk / "emb.parquet"), "--device", "cpu")
        line = _one_error(res)
        assert str(disk) in line and "emb.parquet" in line and "no space left" in line, line
        assert not (disk / "emb.parquet").exists()


def test_a_read_only_output_folder_is_one_message_for_every_command(site, tmp_path):
    before = _digest(site / "site")
    pairs = str(site / "site" / "manifests" / "pairs.parquet")
    with tmpfs(tmp_path / "ro", "1m", read_only=True) as ro:
        cases = {
            "pipeline build": ("pipeline", "build", "--catalog",
                               str(site / "site" / "catalog.yaml"), "--out", str(ro)),
            "ssl.train": ("seafloor_ssl.train", "--manifest", pairs, "--backbone", "tiny",
                          "--image-size", "32", "--batch-size", "8", "--steps", "1", "--device", "cpu", "--out",
                          str(ro / "run"), "--no-tensorboard"),
            "ssl.evaluate": ("seafloor_ssl.evaluate", "--checkpoint",
                             str(site / "run" / "last.pt"), "--manifest", pairs, "--out",
                             str(ro / "eval"), "--device", "cpu"),
            "ssl.embed": ("seafloor_ssl.embed", "--checkpoint", str(site / "run" / "last.pt"),
                          "--manifest", pairs, "--out", str(ro / "emb.parquet"), "--device",
                          "cpu"),
        }
        for name, argv in cases.items():
            line = _one_error(_run(*argv))
            assert str(ro) in line and "read-only" in line.lower(), (name, line)
            assert ".tmp" not in line, (name, line)  # the file meant, not a temporary name
    assert _digest(site / "site") == before


def test_a_folder_without_write_permission_is_one_message(site, tmp_path):
    prefix = without_root_permissions()
    if prefix is None:
        pytest.skip("running as root without setpriv: folder modes do not stop root writing")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    before = _digest(site / "site")
    try:
        res = subprocess.run([*prefix, sys.executable, "-m", "pipeline", "build", "--catalog",
                              str(site / "site" / "catalog.yaml"), "--out", str(locked / "out")],
                             cwd=REPO, capture_output=True, text=True, timeout=600)
    finally:
        locked.chmod(0o755)
    line = _one_error(res)
    assert str(locked) in line and "permission denied" in line.lower(), line
    assert _digest(site / "site") == before and not any(locked.iterdir())
