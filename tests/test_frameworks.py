"""The image frameworks (simsiam, moco, byol, dino) beside simclr, with two views or location
positives, with and without SP: they train, do not collapse, resume exactly, mask neighbours
out of MoCo's queue, and refuse flags that do not go with them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from seafloor_ssl.data.manifest import load_manifest
from seafloor_ssl.training.loop import StepRandom
from seafloor_ssl.training.objective import ImageObjective
from seafloor_ssl.training.run import build_parser, main, resolve, train
from surveys import mini_manifest

from pipeline.build import build
from pipeline.catalog import load_catalog
from pipeline.synth import SynthConfig, generate

SMALL = ["--backbone", "tiny", "--image-size", "32", "--sp-size", "24", "--batch-size", "16",
         "--workers", "0", "--log-every", "1", "--device", "cpu"]
FRAMEWORKS = {
    "simsiam": [],
    "moco": ["--queue", "32"],
    "byol": [],
    "dino": ["--local-crops", "2", "--local-size", "16", "--dino-out", "256"],
}


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    return mini_manifest(tmp_path_factory.mktemp("fw") / "site")


def run(manifest: Path, out: Path, *extra: str) -> list[dict]:
    train(build_parser().parse_args(["--manifest", str(manifest), "--out", str(out), *SMALL,
                                     *extra]))
    return [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
@pytest.mark.parametrize("positives", ["views", "location"])
@pytest.mark.parametrize("name", list(FRAMEWORKS))
def test_each_framework_trains_without_collapsing(manifest, tmp_path, name, positives):
    lr = "5e-4" if name == "dino" else "3e-3"  # DINO's recipe: a lower rate
    rows = run(manifest, tmp_path / "run", "--objective", name, "--positives", positives,
               *FRAMEWORKS[name], "--steps", "30", "--lr", lr, "--sp", "0.5")
    loss = [r["loss"] for r in rows]
    assert len(rows) == 30 and all(np.isfinite(loss))
    assert all(np.isfinite(r["loss_sp"]) and np.isfinite(r[f"loss_{name}"]) for r in rows)
    # collapse guard: the embeddings keep spreading over the batch at every step
    stds = [r["feature_std"] for r in rows]
    assert min(stds) > 0.05, stds
    if name == "moco":  # contrastive: it tells the positive from the 32 queued keys better
        # than chance, log(1 + 32) (the loss first rises while real keys replace the queue's
        # random initial ones)
        assert np.mean([r["loss_moco"] for r in rows[-5:]]) < np.log(33), loss


@pytest.mark.parametrize("name", list(FRAMEWORKS))
def test_each_framework_resumes_exactly(manifest, tmp_path, name):
    common = ["--objective", name, "--positives", "location", *FRAMEWORKS[name], "--steps", "8",
              "--checkpoint-every", "2", "--lr", "3e-3", "--batch-size", "8"]
    a = run(manifest, tmp_path / "a", *common)
    run(manifest, tmp_path / "b", *common, "--stop-at-step", "3")
    b = run(manifest, tmp_path / "b", *common, "--resume")
    assert [r["loss"] for r in a] == [r["loss"] for r in b]
    sa = torch.load(tmp_path / "a" / "last.pt", weights_only=True)
    sb = torch.load(tmp_path / "b" / "last.pt", weights_only=True)
    if name != "simsiam":  # the momentum network (and queue, centre) came back exactly
        for k, v in sa["framework"]["target"].items():
            assert torch.equal(v, sb["framework"]["target"][k]), k


def test_moco_never_uses_a_neighbour_within_r_loc_as_a_negative(manifest):
    args = resolve(build_parser().parse_args(["--manifest", str(manifest), *SMALL, "--objective",
                                              "moco", "--positives", "location", "--queue",
                                              "48", "--batch-size", "8"]), torch.device("cpu"))
    m = load_manifest(manifest)
    obj = ImageObjective(args, m, torch.device("cpu"), 0, 1)
    batches = obj.epoch(0, skip=0)
    checked = 0
    for step in range(8):
        inp = obj.inputs(next(batches), StepRandom.for_step(0, step, 0, torch.device("cpu")))
        queue_xy = obj.fw.queue.xy.clone()
        from seafloor_ssl.objectives.moco import queue_mask

        mask = queue_mask(inp.xy_a, queue_xy, m.r_loc_m)
        d = torch.cdist(inp.xy_a, torch.nan_to_num(queue_xy, nan=1e9))
        used = ~mask & ~torch.isnan(queue_xy[:, 0])[None, :]
        assert (d[used] > m.r_loc_m).all()  # every negative lies beyond r_loc of its anchor
        checked += int(mask.sum())
        out = obj.loss(inp, obj.forward(obj.model, inp))
        out.loss.backward()
        obj.after_step(step)
    assert checked > 0, "no queue entry was ever within r_loc: the test shows nothing"
    assert not torch.isnan(obj.fw.queue.xy).any()  # the queue filled with located keys


def test_dino_trains_a_small_vit_on_cpu(manifest, tmp_path):
    rows = run(manifest, tmp_path / "vit", "--objective", "dino", "--backbone", "vit-tiny",
               "--image-size", "32", "--sp-size", "16", "--local-crops", "2", "--local-size",
               "16", "--dino-out", "128", "--steps", "3", "--batch-size", "8")
    assert len(rows) == 3 and all(np.isfinite(r["loss"]) for r in rows)
    state = torch.load(tmp_path / "vit" / "last.pt", weights_only=True)
    assert state["args"]["backbone"] == "vit-tiny" and "centre" in state["framework"]


@pytest.mark.parametrize("flags, says", [
    (["--objective", "simclr", "--local-crops", "2"], "has no local crops"),
    (["--objective", "byol", "--queue", "8"], "MoCo's queue"),
    (["--objective", "moco", "--queue", "100000"], "longer than the survey"),
    (["--objective", "sp", "--positives", "location"], "no positive pairs"),
    (["--objective", "geoclr", "--positives", "views"], "use --objective simclr"),
    (["--objective", "simclr", "--momentum", "0.9"], "momentum target"),
    (["--objective", "byol", "--momentum", "1"], "below 1"),
    (["--objective", "dino", "--backbone", "vit-tiny", "--image-size", "40"],
     "not a multiple of 16"),
])
def test_bad_combinations_are_one_message_before_any_work(manifest, tmp_path, capsys, flags,
                                                          says):
    code = main(["--manifest", str(manifest), "--out", str(tmp_path / "r"), *SMALL, *flags,
                 "--steps", "1"])
    err = capsys.readouterr().err
    assert code == 2 and says in err and "Traceback" not in err, err
    assert not (tmp_path / "r").exists()  # nothing was written


def test_location_positives_without_any_pair_train_on_self_views(tmp_path, capsys):
    root = tmp_path / "site"
    generate(SynthConfig(out=root, dives=1, images_per_dive=16, seed=3, faults=False,
                         workers=1))
    build(load_catalog(root / "catalog.yaml"), r_loc_m=0.001, workers=1, log=lambda *_: None)
    pairs = root / "manifests" / "pairs.parquet"
    assert load_manifest(pairs).anchor.size == 0
    rows = run(pairs, tmp_path / "r", "--objective", "byol", "--positives", "location",
               "--steps", "2", "--batch-size", "8")
    assert len(rows) == 2
    assert "16 of 16 anchors have no neighbour within r_loc" in capsys.readouterr().out


@pytest.mark.parametrize("std, warned", [(0.01, True), (0.8, False)])
def test_a_collapsed_run_is_reported_at_the_end(monkeypatch, capsys, std, warned):
    import seafloor_ssl.training.run as t

    summary = {"steps": 5, "total": 5, "checkpoint": "last.pt",
               "last": {"loss": 1.0, "feature_std": std}}
    monkeypatch.setattr(t, "train", lambda args: summary)
    assert t.main(["--manifest", "m.parquet", "--objective", "byol"]) == 0
    cap = capsys.readouterr()
    assert f"feature std {std:.2f}" in cap.out
    assert ("the embeddings have collapsed" in cap.err) is warned
