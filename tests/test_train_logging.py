"""The trainer's experiment log: TensorBoard scalars by default when the tensorboard package is
installed (the same numbers as metrics.jsonl), a note said once on stderr when it is not
(training goes on: a stock PyTorch box lacks it), and --no-tensorboard."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from seafloor_ssl.training.run import main
from surveys import mini_manifest

REPO = Path(__file__).resolve().parents[1]
SMALL = ["--backbone", "tiny", "--image-size", "32", "--sp-size", "24", "--batch-size", "16",
         "--workers", "0", "--log-every", "1", "--device", "cpu", "--objective", "simclr",
         "--steps", "4"]
NOTE = "no TensorBoard scalars for this run"


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    return mini_manifest(tmp_path_factory.mktemp("logging") / "site")


def rows(out: Path) -> list[dict]:
    return [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]


def test_tensorboard_scalars_are_the_metrics_rows(manifest, tmp_path, capsys):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    assert main(["--manifest", str(manifest), "--out", str(out), *SMALL]) == 0
    assert NOTE not in capsys.readouterr().err
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    logged = rows(out)
    assert len(logged) == 4
    for key in ("loss", "lr", "feature_std"):
        scalars = events.Scalars(key)
        assert [s.step for s in scalars] == [r["step"] for r in logged], key
        assert [s.value for s in scalars] == pytest.approx([r[key] for r in logged], rel=1e-6)


def test_without_tensorboard_training_goes_on_and_says_so_once(manifest, tmp_path):
    out = tmp_path / "run"
    code = ("import sys\n"
            "sys.modules['tensorboard'] = None\n"  # as on a box without the package
            "from seafloor_ssl.training.run import main\n"
            f"sys.exit(main({['--manifest', str(manifest), '--out', str(out), *SMALL]!r}))\n")
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stderr.count(NOTE) == 1, res.stderr
    assert "pip install tensorboard" in res.stderr and "--no-tensorboard" in res.stderr
    assert "Traceback" not in res.stderr
    assert len(rows(out)) == 4 and (out / "metrics.csv").is_file() and (out / "last.pt").is_file()
    assert not any((out / "tensorboard").glob("events.out.tfevents.*"))


def test_no_tensorboard_writes_no_events_and_no_note(manifest, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["--manifest", str(manifest), "--out", str(out), *SMALL,
                 "--no-tensorboard"]) == 0
    assert NOTE not in capsys.readouterr().err
    assert len(rows(out)) == 4 and not (out / "tensorboard").exists()
    assert json.loads((out / "args.json").read_text())["tensorboard"] is False
