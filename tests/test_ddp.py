"""Every objective under DDP: real `torchrun --nproc_per_node 2` runs (gloo on CPU), and the
gradients of a two-rank step equal those of one process on the doubled batch.

The one difference between the two that is by design: BatchNorm statistics. On CUDA the loop
makes them the global batch's (SyncBatchNorm); gloo on CPU has no SyncBatchNorm, so each rank
normalises with its own half. The gradient checks therefore hold BatchNorm layers in eval mode
(running statistics) and switch dropout off; everything else (gathered negatives, the SP head,
CSP's in-batch and random negatives, DDP's averaging) is exercised as in training.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from seafloor_ssl.data.manifest import load_manifest
from seafloor_ssl.data.store import ImageStore
from seafloor_ssl.training.loop import Context, StepRandom, wrap
from seafloor_ssl.training.objective import CSPObjective, ImageObjective
from seafloor_ssl.training.run import build_parser, resolve, train
from surveys import mini_manifest
from torch import nn

REPO = Path(__file__).resolve().parents[1]
SMALL = ["--backbone", "tiny", "--image-size", "32", "--sp-size", "24", "--workers", "0",
         "--log-every", "1", "--device", "cpu"]
WORLD = 2
B = 6  # per rank

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="torch.distributed with gloo is not available")


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    return mini_manifest(tmp_path_factory.mktemp("ddp") / "site", images_per_dive=32, seed=5)


@pytest.fixture(scope="module")
def image_encoder(manifest, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("enc") / "simclr"
    train(build_parser().parse_args(["--manifest", str(manifest), "--out", str(out), *SMALL,
                                     "--objective", "simclr", "--steps", "2",
                                     "--batch-size", "8"]))
    return out / "last.pt"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


OBJECTIVES = {
    "simclr": ["--objective", "simclr"],
    "geoclr": ["--objective", "geoclr"],
    "sp": ["--objective", "sp"],
    "geoclr+sp": ["--objective", "geoclr", "--sp", "0.5"],
    "csp": ["--objective", "csp"],
    "simsiam+location+sp": ["--objective", "simsiam", "--positives", "location", "--sp", "0.5"],
    "moco+location": ["--objective", "moco", "--positives", "location", "--queue", "16"],
    "byol": ["--objective", "byol"],
    "dino+local": ["--objective", "dino", "--local-crops", "2", "--local-size", "16",
                   "--dino-out", "64"],
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(OBJECTIVES))
def test_every_objective_trains_under_torchrun(manifest, image_encoder, tmp_path, name):
    out = tmp_path / name
    extra = OBJECTIVES[name] + (["--image-encoder", str(image_encoder)] if name == "csp" else [])
    res = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(WORLD),
         "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), "-m", "ssl.train",
         "--manifest", str(manifest), "--out", str(out), *SMALL, *extra, "--steps", "3",
         "--batch-size", "8"],
        cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
        timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "batch 8x2" in res.stdout
    state = torch.load(out / "last.pt", weights_only=True)
    assert state["step"] == 3
    rows = (out / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 3


# --- gradients: two ranks against one process on the doubled batch ---------------------------

def _args(manifest: Path, name: str, image_encoder: Path, batch: int):
    extra = OBJECTIVES[name] + (["--image-encoder", str(image_encoder)] if name == "csp" else [])
    args = build_parser().parse_args(["--manifest", str(manifest), *SMALL, *extra,
                                      "--batch-size", str(batch)])
    return resolve(args, torch.device("cpu"))


def _objective(manifest: Path, name: str, image_encoder: Path, batch: int, rank: int,
               world: int):
    torch.manual_seed(0)  # the same initial weights in every process
    kind = CSPObjective if name == "csp" else ImageObjective
    obj = kind(_args(manifest, name, image_encoder, batch), load_manifest(manifest),
               torch.device("cpu"), rank, world)
    for m in obj.model.modules():  # see the module docstring
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.Dropout)):
            m.eval()
    return obj


def _global_inputs(manifest: Path, name: str, image_encoder: Path):
    """The inputs of one global batch (WORLD * B images), identical in every process."""
    full = _objective(manifest, name, image_encoder, WORLD * B, 0, 1)
    batch = next(full.epoch(0, skip=0))
    with torch.no_grad():
        return full, full.inputs(batch, StepRandom.for_step(3, 0, 0, torch.device("cpu")))


def _step(obj, model, inputs) -> tuple[float, dict[str, torch.Tensor]]:
    obj.model.zero_grad()
    out = obj.loss(inputs, obj.forward(model, inputs))
    out.loss.backward()
    return float(out.loss.detach()), {k: p.grad.detach().clone()
                             for k, p in obj.model.named_parameters() if p.grad is not None}


def _rank_worker(rank, world, init_file, out_file, manifest, name, image_encoder):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world)
    try:
        _, inputs = _global_inputs(Path(manifest), name, Path(image_encoder))
        obj = _objective(Path(manifest), name, Path(image_encoder), B, rank, world)
        model = wrap(obj.model, Context(None, torch.device("cpu"), rank, world))
        loss, grads = _step(obj, model, inputs.share(rank, world))
        mean = torch.tensor(loss)
        dist.all_reduce(mean)
        torch.save({"loss": float(mean) / world, "grads": grads}, f"{out_file}.{rank}")
        dist.barrier()
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["geoclr+sp", "csp", "simclr", "sp", "simsiam+location+sp",
                                  "moco+location", "byol", "dino+local"])
def test_two_ranks_take_the_step_of_one_process_on_the_doubled_batch(
        manifest, image_encoder, tmp_path, name):
    import torch.multiprocessing as mp

    out_file = tmp_path / "grads"
    mp.spawn(_rank_worker, args=(WORLD, str(tmp_path / "rendezvous"), str(out_file),
                                 str(manifest), name, str(image_encoder)),
             nprocs=WORLD, join=True)
    full, inputs = _global_inputs(manifest, name, image_encoder)
    loss, grads = _step(full, full.model, inputs)
    assert grads, "no parameter received a gradient"
    for r in range(WORLD):
        got = torch.load(f"{out_file}.{r}", weights_only=True)
        assert got["loss"] == pytest.approx(loss, rel=1e-5, abs=1e-6)
        assert set(got["grads"]) == set(grads), (r, set(got["grads"]) ^ set(grads))
        for k, g in grads.items():
            torch.testing.assert_close(got["grads"][k], g, rtol=1e-4, atol=1e-6,
                                       msg=lambda m, k=k, r=r: f"rank {r}, {k}: {m}")


def test_sp_alone_trains_no_projection_head(manifest, image_encoder):
    obj = _objective(manifest, "sp", image_encoder, 4, 0, 1)
    frozen = {k for k, p in obj.model.named_parameters() if not p.requires_grad}
    assert frozen and all(k.startswith("encoder.projector.") for k in frozen)
    _, grads = _step(obj, obj.model, obj.inputs(next(obj.epoch(0, 0)), StepRandom.for_step(
        0, 0, 0, torch.device("cpu"))))
    # every trainable parameter takes part in the loss: DDP needs no unused-parameter search
    assert set(grads) == {k for k, p in obj.model.named_parameters() if p.requires_grad}


def _mapped(paths) -> set[str]:
    """Which of these files this process maps now (after a garbage collection, so that
    unreachable objects of earlier tests do not count)."""
    import gc

    gc.collect()
    maps = Path("/proc/self/maps").read_text()
    return {str(p) for p in paths if str(p) in maps}


def test_the_image_store_reads_through_the_page_cache_and_maps_nothing(manifest):
    m = load_manifest(manifest)
    before = _mapped(m.stores.values()) if Path("/proc/self/maps").exists() else set()
    store = ImageStore.open(m)
    first = [store[i] for i in range(m.n)]
    assert all(b[:2] == b"\xff\xd8" for b in first)  # JPEG start-of-image
    # the process holds the index (16 bytes an image), not the bytes, and maps no image file
    assert store.offset.nbytes + store.length.nbytes + store.file.nbytes == 16 * m.n
    if Path("/proc/self/maps").exists():
        # a mapping that some other object of this test process already held is not the
        # store's; the store must add none and keep none
        assert _mapped(store.paths) <= before, (sorted(_mapped(store.paths)), sorted(before))
