"""The trainer end to end on CPU: every objective on a generated mini-survey, exact resume,
clean stop on SIGTERM, non-finite loss, manifest refusal, DDP with torchrun (gloo), and run
folders that are never overwritten by accident."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from seafloor_ssl.training.loop import learning_rate
from seafloor_ssl.training.run import build_parser, main, train
from surveys import mini_manifest

REPO = Path(__file__).resolve().parents[1]
SMALL = ["--backbone", "tiny", "--image-size", "32", "--sp-size", "24", "--batch-size", "16",
         "--workers", "0", "--log-every", "1", "--device", "cpu"]


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    return mini_manifest(tmp_path_factory.mktemp("train") / "site")


def run(manifest: Path, out: Path, *extra: str) -> dict:
    args = build_parser().parse_args(["--manifest", str(manifest), "--out", str(out), *SMALL,
                                      *extra])
    return train(args)


def losses(out: Path) -> list[float]:
    return [json.loads(ln)["loss"] for ln in (out / "metrics.jsonl").read_text().splitlines()]


# NT-Xent at chance: a view's positive is no more similar than the 2B - 2 other views of the
# batch, so its loss is log(2B - 1) (exactly that for identical, collapsed features); SMALL's
# batch of 16 gives log(31) = 3.434
NT_XENT_CHANCE = math.log(2 * 16 - 1)


def assert_learns(values: list[float], below: float | None = None) -> None:
    assert all(np.isfinite(values)), values
    first, last = np.mean(values[:5]), np.mean(values[-5:])
    assert last < first, (first, last)
    if below is not None:  # a known answer: the end of the run beats chance
        assert last < below, (last, below)


@pytest.fixture(scope="module")
def simclr_run(manifest, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "simclr"
    run(manifest, out, "--objective", "simclr", "--steps", "30", "--lr", "3e-3")
    return out


def test_simclr_learns_and_writes_the_run_folder(simclr_run):
    assert_learns(losses(simclr_run), below=NT_XENT_CHANCE)
    assert json.loads((simclr_run / "args.json").read_text())["objective"] == "simclr"
    assert (simclr_run / "metrics.csv").read_text().startswith("step,")
    ckpt = torch.load(simclr_run / "last.pt", weights_only=True)
    assert ckpt["step"] == 30 and ckpt["feat_dim"] == 128
    row = json.loads((simclr_run / "metrics.jsonl").read_text().splitlines()[-1])
    assert row["step"] == 30 and row["loss"] == losses(simclr_run)[-1]
    # throughput, data wait and feature spread are measurements (benchmarks/ reports them):
    # here only that each step logs them
    for key in ("images_per_s", "data_wait_share", "feature_std"):
        assert isinstance(row[key], float), key


def test_geoclr_with_sp_learns(manifest, tmp_path):
    out = tmp_path / "run"
    run(manifest, out, "--objective", "geoclr", "--sp", "0.5", "--steps", "30", "--lr", "3e-3")
    assert_learns(losses(out))
    rows = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r["loss_sp"]) for r in rows)
    # the contrastive part (geographic positives) ends below NT-Xent's chance
    assert_learns([r["loss_simclr"] for r in rows], below=NT_XENT_CHANCE)


def _sp_loss_on_fixed_crops(manifest: Path, ckpt: Path) -> float:
    """SP loss of a checkpoint on the same crop pairs of every image (seeded, eval mode): the
    per-step training loss is too noisy (new crops each step) to show a small gain."""
    from seafloor_ssl.data import augment
    from seafloor_ssl.data.manifest import load_manifest
    from seafloor_ssl.data.store import ImageStore, decode_cpu, pad_batch
    from seafloor_ssl.objectives.sp import sp_loss, sp_targets
    from seafloor_ssl.training.heads import SPHead
    from seafloor_ssl.training.models import Encoder

    m = load_manifest(manifest)
    store = ImageStore.open(m)
    canvas, sizes = pad_batch(decode_cpu([store[i] for i in range(m.n)]))
    state = torch.load(ckpt, weights_only=True)
    enc, head = Encoder("tiny"), SPHead(state["feat_dim"])
    enc.load_state_dict(state["encoder"])
    head.load_state_dict(state["sp_head"])
    enc.eval(), head.eval()
    g = torch.Generator().manual_seed(123)
    with torch.no_grad():
        values = []
        for _ in range(4):
            c1, c2, b1, b2 = augment.sp_crops(canvas, sizes, 24, g)
            values.append(sp_loss(head(enc.features(c1), enc.features(c2)),
                                  sp_targets(b1, b2)).item())
    return float(np.mean(values))


def test_sp_alone_learns(manifest, tmp_path):
    # On the tiny CNN in 30 steps SP alone mostly learns the targets' mean (about 2 % lower loss
    # on fixed crops); a falling per-step loss would be chance, so the gain is measured on the
    # same crops before (after one step) and after training.
    run(manifest, tmp_path / "one", "--objective", "sp", "--steps", "1", "--lr", "3e-3")
    run(manifest, tmp_path / "run", "--objective", "sp", "--steps", "30", "--lr", "3e-3")
    rows = [json.loads(ln) for ln in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r["loss_sp"]) for r in rows) and len(rows) == 30
    before = _sp_loss_on_fixed_crops(manifest, tmp_path / "one" / "last.pt")
    after = _sp_loss_on_fixed_crops(manifest, tmp_path / "run" / "last.pt")
    assert after < before, (before, after)


@pytest.mark.parametrize("loss", ["mc", "nce", "l2"])
def test_csp_learns_on_a_locked_image_encoder(manifest, simclr_run, tmp_path, loss):
    out = tmp_path / "csp"
    run(manifest, out, "--objective", "csp", "--image-encoder", str(simclr_run / "last.pt"),
        "--csp-loss", loss, "--steps", "30", "--lr", "3e-3")
    assert_learns(losses(out))
    ckpt = torch.load(out / "last.pt", weights_only=True)
    img = torch.load(simclr_run / "last.pt", weights_only=True)
    for k, v in img["encoder"].items():  # the image encoder stayed locked
        assert torch.equal(ckpt["encoder"][k], v), k


def test_resume_reproduces_the_uninterrupted_run(manifest, tmp_path):
    common = ["--objective", "geoclr", "--sp", "0.5", "--steps", "16", "--checkpoint-every",
              "4", "--lr", "3e-3"]
    run(manifest, tmp_path / "a", *common)
    run(manifest, tmp_path / "b", *common, "--stop-at-step", "6")
    assert len(losses(tmp_path / "b")) == 6
    run(manifest, tmp_path / "b", *common, "--resume")
    assert losses(tmp_path / "a") == losses(tmp_path / "b")


def test_learning_rate_is_a_function_of_the_step():
    lrs = [learning_rate(s, 100, 1.0, 10) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:], strict=False))
    # linear warm-up: step 4 of 10 is half the peak; cosine: half the peak half way through the
    # decay (step 10 + 90 / 2), and 0.5 (1 - cos(pi / 90)) on the last step, 1/90 before 0
    assert lrs[4] == pytest.approx(0.5) and lrs[55] == pytest.approx(0.5)
    assert lrs[-1] == pytest.approx(0.5 * (1 - math.cos(math.pi / 90)))


def test_sigterm_saves_and_exits_cleanly(manifest, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "ssl.train", "--manifest", str(manifest), "--out", str(out),
           *SMALL, "--objective", "simclr", "--steps", "100000", "--checkpoint-every", "100000"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if (out / "metrics.jsonl").exists() and (out / "metrics.jsonl").read_text().count(
                "\n") >= 2:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    text, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, text[-3000:]
    assert "SIGTERM received" in text
    step = torch.load(out / "last.pt", weights_only=True)["step"]
    assert step >= 2 and step == len(losses(out))


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(manifest, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["--manifest", str(manifest), "--out", str(out), *SMALL, "--objective",
                 "simclr", "--steps", "200", "--checkpoint-every", "1", "--lr", "1e12",
                 "--warmup-steps", "0"])
    err = capsys.readouterr().err
    assert code == 2 and "non-finite loss" in err, err
    failed_at = int(err.split("at step ")[1].split(":")[0])
    assert torch.load(out / "last.pt", weights_only=True)["step"] == failed_at


def test_a_mismatched_manifest_is_refused(manifest, tmp_path, capsys):
    folder = tmp_path / "m"
    shutil.copytree(manifest.parent, folder)
    t = pq.read_table(folder / "locations.parquet")
    pq.write_table(t.slice(0, t.num_rows - 1), folder / "locations.parquet")
    code = main(["--manifest", str(folder / "pairs.parquet"), "--out", str(tmp_path / "r"),
                 *SMALL, "--steps", "2"])
    assert code == 2
    assert "sha256" in capsys.readouterr().err


def test_csp_without_an_image_encoder_says_what_to_do(manifest, tmp_path, capsys):
    code = main(["--manifest", str(manifest), "--out", str(tmp_path / "r"), *SMALL,
                 "--objective", "csp", "--steps", "2"])
    assert code == 2 and "--image-encoder" in capsys.readouterr().err


def test_help_documents_every_flag_with_its_default():
    text = build_parser().format_help()
    for flag in ("--manifest", "--objective", "--sp", "--backbone", "--image-size",
                 "--batch-size", "--epochs", "--steps", "--lr", "--temperature", "--out",
                 "--resume", "--device", "--precision", "--compile", "--workers", "--seed",
                 "--image-encoder", "--csp-loss", "--location-encoder", "--init"):
        assert flag in text, flag
    assert text.count("(default:") >= 20


def test_torchrun_ddp_on_cpu_with_gloo(manifest, tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
         "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), "-m", "ssl.train",
         "--manifest", str(manifest), "--out", str(out), *SMALL, "--objective", "geoclr",
         "--steps", "4", "--batch-size", "8"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "batch 8x2" in res.stdout
    assert len(losses(out)) == 4 and torch.load(out / "last.pt", weights_only=True)["step"] == 4


def test_torchrun_ranks_agree_on_one_new_folder_and_on_a_refusal(manifest, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def torchrun(*extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
             "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), "-m",
             "seafloor_ssl.train", "--manifest", str(manifest), *SMALL, "--objective", "simclr",
             "--steps", "2", "--batch-size", "8", *extra],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)

    res = torchrun()
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    (folder,) = (tmp_path / "runs").iterdir()
    assert torch.load(folder / "last.pt", weights_only=True)["step"] == 2
    before = sha256s(folder)
    res = torchrun("--out", str(folder))  # every rank stops with the refusal, none hangs
    assert res.returncode != 0 and "already holds a simclr run" in res.stderr, res.stderr[-3000:]
    assert sha256s(folder) == before and len(list((tmp_path / "runs").iterdir())) == 1


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_bench_measures_ceiling_and_end_to_end_side_by_side(manifest, tmp_path, capsys):
    from seafloor_ssl.bench import main as bench

    out = tmp_path / "bench.json"
    assert bench(["--manifest", str(manifest), "--backbone", "tiny", "--image-size", "32",
                  "--batch-size", "8", "--steps", "2", "--warmup", "1", "--workers", "0",
                  "--json", str(out)]) == 0
    row = json.loads(out.read_text())["rows"][0]
    assert row["ceiling_img_s"] > 0 and row["end_to_end_img_s"] > 0
    assert row["ratio"] == pytest.approx(row["end_to_end_img_s"] / row["ceiling_img_s"])
    assert "end-to-end / ceiling" in capsys.readouterr().out


def test_init_accepts_a_run_checkpoint_or_a_torchvision_state_dict(simclr_run, tmp_path):
    import torchvision
    from seafloor_ssl.training.models import Encoder
    from seafloor_ssl.training.objective import init_encoder
    from seafloor_ssl.training.run import TrainingError

    enc = Encoder("tiny")
    init_encoder(enc, str(simclr_run / "last.pt"))
    ref = torch.load(simclr_run / "last.pt", weights_only=True)["encoder"]
    assert all(torch.equal(v, ref[k]) for k, v in enc.state_dict().items())
    tv = torchvision.models.resnet18(weights=None)
    torch.save(tv.state_dict(), tmp_path / "resnet18.pth")
    r18 = Encoder("resnet18")
    init_encoder(r18, str(tmp_path / "resnet18.pth"))
    assert torch.equal(r18.backbone.conv1.weight, tv.conv1.weight)
    with pytest.raises(TrainingError, match="not a tiny state dict"):
        init_encoder(Encoder("tiny"), str(tmp_path / "resnet18.pth"))


# --- run folders: a run is never overwritten by accident ------------------------------------

def sha256s(folder: Path) -> dict[str, str]:
    import hashlib

    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def argv(manifest: Path, out: Path | None, *extra: str) -> list[str]:
    return ["--manifest", str(manifest), *(["--out", str(out)] if out else []), *SMALL,
            "--objective", "simclr", *extra]


def test_training_twice_into_one_folder_leaves_the_first_run_untouched(manifest, tmp_path,
                                                                       capsys):
    out = tmp_path / "run"
    assert main(argv(manifest, out, "--steps", "4")) == 0
    before = sha256s(out)
    assert {"args.json", "last.pt", "metrics.jsonl", "metrics.csv"} <= set(before)
    capsys.readouterr()
    assert main(argv(manifest, out, "--steps", "2", "--lr", "3e-3")) == 2
    err = capsys.readouterr().err
    assert str(out) in err and "a simclr run" in err, err
    assert "last.pt at step 4 of 4" in err and "metrics.jsonl with 4 rows" in err, err
    assert "--resume" in err and "--overwrite" in err and "another --out" in err, err
    assert sha256s(out) == before


def test_overwrite_replaces_the_run_and_leaves_other_files_alone(manifest, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(argv(manifest, out, "--steps", "4")) == 0
    (out / "eval").mkdir()
    (out / "eval" / "metrics.json").write_text('{"f1": 0.5}')
    (out / "notes.txt").write_text("mine")
    (out / "tensorboard").mkdir(exist_ok=True)  # the run wrote it where tensorboard is installed
    first_events = list((out / "tensorboard").glob("events.out.tfevents.*"))
    (out / "tensorboard" / "events.out.tfevents.1.host").write_bytes(b"old")
    (out / "tensorboard" / "mine.txt").write_text("mine too")
    foreign = {k: v for k, v in sha256s(out).items()
               if k in ("eval/metrics.json", "notes.txt", "tensorboard/mine.txt")}
    capsys.readouterr()
    assert main(argv(manifest, out, "--steps", "2", "--overwrite")) == 0
    text = capsys.readouterr().out
    assert "--overwrite: replacing a simclr run: last.pt at step 4 of 4" in text, text
    assert "left untouched" in text and "eval/" in text and "notes.txt" in text, text
    assert torch.load(out / "last.pt", weights_only=True)["step"] == 2
    assert len(losses(out)) == 2 and len(
        (out / "metrics.csv").read_text().splitlines()) == 3
    assert json.loads((out / "args.json").read_text())["steps"] == 2
    assert not (out / "tensorboard" / "events.out.tfevents.1.host").exists()
    assert not any(p.exists() for p in first_events)
    after = sha256s(out)
    assert all(after[k] == v for k, v in foreign.items())


def test_resume_continues_and_appends_the_metrics(manifest, tmp_path):
    out = tmp_path / "run"
    assert main(argv(manifest, out, "--steps", "4", "--stop-at-step", "2")) == 0
    first = (out / "metrics.jsonl").read_text()
    assert main(argv(manifest, out, "--steps", "4", "--resume")) == 0
    assert (out / "metrics.jsonl").read_text().startswith(first)
    assert len(losses(out)) == 4
    assert torch.load(out / "last.pt", weights_only=True)["step"] == 4


def test_without_out_every_run_gets_a_new_folder(manifest, tmp_path, monkeypatch, capsys):
    import re

    monkeypatch.chdir(tmp_path)
    assert main(argv(manifest, None, "--steps", "1")) == 0
    assert main(argv(manifest, None, "--steps", "1")) == 0
    folders = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert len(folders) == 2, folders
    for name in folders:
        assert re.fullmatch(r"simclr-\d{8}-\d{6}(-\d+)?", name), name
        assert torch.load(tmp_path / "runs" / name / "last.pt", weights_only=True)["step"] == 1
        assert json.loads((tmp_path / "runs" / name / "args.json").read_text())["out"] == str(
            Path("runs") / name)
    text = capsys.readouterr().out
    assert all(f"run folder {Path('runs') / name}: new" in text for name in folders), text


def test_fresh_folders_and_claims_never_collide(tmp_path):
    from seafloor_ssl.training import runfolder
    from seafloor_ssl.training.run import TrainingError

    a, b = (runfolder.fresh_folder("geoclr", root=tmp_path / "runs") for _ in range(2))
    assert a != b and a.is_dir() and b.is_dir()
    runfolder.claim(a, "{}", fresh=True)
    with pytest.raises(TrainingError, match="another run started"):
        runfolder.claim(a, '{"second": 1}', fresh=True)
    assert (a / "args.json").read_text() == "{}"


@pytest.mark.parametrize("flag,value", [("--steps", "0"), ("--steps", "-3"),
                                        ("--epochs", "0"), ("--batch-size", "0"),
                                        ("--log-every", "0"), ("--checkpoint-every", "-1"),
                                        ("--lr", "0"), ("--lr", "nan"), ("--temperature", "-1"),
                                        ("--steps", "2.5")])
def test_nonsensical_numbers_are_refused_before_anything_is_written(
        manifest, tmp_path, monkeypatch, capsys, flag, value):
    monkeypatch.chdir(tmp_path)
    for out in (tmp_path / "r", None):
        with pytest.raises(SystemExit) as exc:
            main(argv(manifest, out, flag, value))
        assert exc.value.code == 2
        assert f"argument {flag}: " in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_contradictory_or_incomplete_folder_flags_are_refused(manifest, tmp_path, monkeypatch,
                                                              capsys):
    monkeypatch.chdir(tmp_path)
    assert main(argv(manifest, tmp_path / "r", "--steps", "2", "--resume", "--overwrite")) == 2
    assert "contradict" in capsys.readouterr().err
    for flag in ("--resume", "--overwrite"):
        assert main(argv(manifest, None, "--steps", "2", flag)) == 2
        assert f"{flag} needs --out" in capsys.readouterr().err
    assert main(argv(manifest, tmp_path / "r", "--steps", "2", "--resume")) == 2
    assert "no checkpoint at" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_a_folder_of_other_files_is_never_written_to(manifest, tmp_path, capsys):
    out = tmp_path / "data"
    out.mkdir()
    (out / "survey.csv").write_text("x,y\n")
    for extra in ([], ["--overwrite"]):
        assert main(argv(manifest, out, "--steps", "2", *extra)) == 2
        err = capsys.readouterr().err
        assert "holds no training run" in err and "survey.csv" in err, err
    assert [p.name for p in out.iterdir()] == ["survey.csv"]


def test_an_empty_folder_is_used_and_a_failed_start_leaves_no_new_folder(manifest, tmp_path,
                                                                         monkeypatch, capsys):
    (tmp_path / "empty").mkdir()
    assert main(argv(manifest, tmp_path / "empty", "--steps", "1")) == 0
    assert (tmp_path / "empty" / "last.pt").exists()
    monkeypatch.chdir(tmp_path)
    assert main(argv(tmp_path / "missing.parquet", None, "--steps", "1")) == 2
    assert list((tmp_path / "runs").iterdir()) == []
    assert main(argv(tmp_path / "missing.parquet", tmp_path / "r", "--steps", "1")) == 2
    assert not (tmp_path / "r").exists()
