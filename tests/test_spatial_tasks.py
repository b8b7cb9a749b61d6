"""SP's spatial tasks on frozen features: the permutation set, tile shuffling, both probes with
oracle and uninformative encoders on gradient images, and end to end on a mini survey."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from PIL import Image
from seafloor_ssl.data.augment import MEAN, STD
from seafloor_ssl.data.manifest import load_manifest
from seafloor_ssl.data.store import ImageStore
from seafloor_ssl.evaluation import spatial
from seafloor_ssl.evaluation.spatial import (
    hamming_permutations,
    jigsaw_task,
    min_hamming_distance,
    permute_tiles,
    position_scale_task,
    spatial_tasks,
    unpermute_tiles,
)
from seafloor_ssl.training.models import Encoder
from torch import nn

from pipeline.build import build
from pipeline.catalog import load_catalog
from pipeline.synth import SynthConfig, generate

CPU = torch.device("cpu")


# -- synthetic inputs ---------------------------------------------------------------------------

def gradient_jpegs(n: int, size: int = 96, seed: int = 0, vary: bool = False):
    """JPEGs whose red rises with the column and green with the row; blue is a per-image level.

    With ``vary`` each image has its own offset and slope of both ramps. Returns the bytes and a
    label per image ("low" / "high" blue).
    """
    rng = np.random.default_rng(seed)
    ramp = (np.arange(size) + 0.5) / size
    out, labels = [], []
    for _ in range(n):
        a, b = (rng.uniform(0.0, 0.3, 2), rng.uniform(0.55, 0.7, 2)) if vary else ((0, 0), (1, 1))
        blue = rng.choice([0.3, 0.7]) + rng.uniform(-0.1, 0.1)
        img = np.empty((size, size, 3))
        img[..., 0] = a[0] + b[0] * ramp[None, :]
        img[..., 1] = a[1] + b[1] * ramp[:, None]
        img[..., 2] = blue
        buf = io.BytesIO()
        Image.fromarray(np.round(img * 255).astype(np.uint8)).save(buf, "JPEG", quality=95)
        out.append(buf.getvalue())
        labels.append("high" if blue > 0.5 else "low")
    return out, np.array(labels, dtype=object)


def unnormalise(x: torch.Tensor) -> torch.Tensor:
    return x * torch.tensor(STD).view(1, 3, 1, 1) + torch.tensor(MEAN).view(1, 3, 1, 1)


class GeometryOracle(nn.Module):
    """Reads a crop of a gradient image (red = x / W, green = y / H of the original image) and
    returns its box in the frame the crop is shown in: whichever ramp runs along the crop's
    columns (and its sign) gives x', the one along its rows y'; the ramps' spans the size."""

    def features(self, x: torch.Tensor) -> torch.Tensor:
        v = unnormalise(x)[:, :2]  # (B, 2 ramps, s, s)
        s = v.shape[-1]
        means = v.mean(dim=(-2, -1))  # (B, 2): original centre (cx, cy) / (W, H)
        along_cols = (v[..., -1].mean(-1) - v[..., 0].mean(-1)) * s / (s - 1)  # (B, 2)
        along_rows = (v[..., -1, :].mean(-1) - v[..., 0, :].mean(-1)) * s / (s - 1)

        def axis(grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            ramp = grad.abs().argmax(1, keepdim=True)  # which ramp runs along this axis
            g = grad.gather(1, ramp)[:, 0]
            m = means.gather(1, ramp)[:, 0]
            return torch.where(g > 0, m, 1 - m), g.abs().clamp_min(1e-3)

        cx, w = axis(along_cols)
        cy, h = axis(along_rows)
        return torch.stack([cx, cy, w, h, w.log(), h.log(), 1 / w, 1 / h], dim=1)


class Constant(nn.Module):
    def features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ones(x.shape[0], 4)


class MeanColour(nn.Module):
    def features(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(-2, -1))


# -- the permutation set and the tiles --------------------------------------------------------

def test_hamming_permutations_are_a_fixed_spread_out_set():
    perms = hamming_permutations(100)
    assert perms.shape == (100, 9) and perms.dtype == np.int64
    assert (np.sort(perms, axis=1) == np.arange(9)).all()  # each row a permutation of 0..8
    assert len({tuple(p) for p in perms.tolist()}) == 100
    assert np.array_equal(perms, hamming_permutations(100))  # deterministic
    assert np.array_equal(perms, hamming_permutations(100, seed=spatial.PERMUTATION_SEED))
    perms[0, 0] = 99  # a copy: the cached set cannot be changed through it
    assert hamming_permutations(100)[0, 0] != 99
    perms = hamming_permutations(100)
    assert np.array_equal(hamming_permutations(10), perms[:10])  # greedy: a prefix
    dmin = min_hamming_distance(perms)
    d = (perms[:, None] != perms[None]).sum(-1)[np.triu_indices(100, 1)]
    assert dmin >= 6 and d.mean() > 8.0, (dmin, d.mean())
    rng = np.random.default_rng(0)
    random_sets = [min_hamming_distance(np.array([rng.permutation(9) for _ in range(100)]))
                   for _ in range(20)]
    assert dmin > max(random_sets), (dmin, random_sets)
    with pytest.raises(ValueError):
        hamming_permutations(0)


def test_permute_and_unpermute_tiles_are_exact_inverses():
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(5, 3, 12, 15, generator=gen)
    perms = hamming_permutations(100)[[0, 7, 13, 42, 99]]
    shuffled = permute_tiles(images, perms)
    assert not torch.equal(shuffled, images)
    assert torch.equal(unpermute_tiles(shuffled, perms), images)
    assert torch.equal(permute_tiles(images, np.arange(9)), images)
    # one permutation for the whole batch
    assert torch.equal(unpermute_tiles(permute_tiles(images, perms[1]), perms[1]), images)
    # the convention: cell k of the shuffled image shows tile perms[k]
    labelled = torch.arange(9.0).view(1, 1, 3, 3).repeat_interleave(4, 2).repeat_interleave(4, 3)
    out = permute_tiles(labelled, perms[2])
    assert out[0, 0, ::4, ::4].flatten().tolist() == [float(v) for v in perms[2]]
    with pytest.raises(ValueError):
        permute_tiles(torch.zeros(1, 3, 10, 12), perms[0])


# -- relative position and scale -----------------------------------------------------------

@pytest.fixture(scope="module")
def gradients():
    return gradient_jpegs(36, size=96)


def test_position_scale_task_recovers_geometry_from_an_oracle(gradients):
    jpegs, _ = gradients
    tr, te = np.arange(24), np.arange(24, 36)
    res = position_scale_task(GeometryOracle(), jpegs, 64, CPU, tr, te, pairs_per_image=8)
    assert res["n_train_pairs"] == 24 * 8 and res["n_test_pairs"] == 12 * 8
    assert res["crop_size"] == 32
    assert set(res["r2"]) == {"dx", "dy", "log_w", "log_h"}
    assert res["r2"]["dx"] > 0.8 and res["r2"]["dy"] > 0.8, res["r2"]
    assert res["r2"]["log_w"] > 0.9 and res["r2"]["log_h"] > 0.9, res["r2"]
    assert res["r2_chance_mean"] < 0.1, res["r2_chance"]
    for t in ("dx", "dy", "log_w", "log_h"):
        assert res["mae"][t] < 0.6 * res["mae_predict_mean"][t]
    assert math.isclose(res["r2_mean"], np.mean(list(res["r2"].values())))


def test_position_scale_task_is_near_zero_with_uninformative_features(gradients):
    jpegs, _ = gradients
    res = position_scale_task(Constant(), jpegs, 64, CPU, np.arange(24), np.arange(24, 36))
    assert all(-0.3 < v < 0.05 for v in res["r2"].values()), res["r2"]


def test_a_unit_silent_on_the_training_side_does_not_wreck_the_position_probe():
    # features that carry the targets linearly, plus one unit that is ~0 on the training side
    # and fires on a few test crops: the probe must not extrapolate it hundreds of std out
    rng = np.random.default_rng(0)
    y_tr, y_te = rng.normal(size=(400, 4)), rng.normal(size=(200, 4))
    mix = rng.normal(size=(4, 16))

    def feats(y, rare):
        return np.concatenate([y @ mix + 0.3 * rng.normal(size=(len(y), 16)), rare], axis=1)

    x_tr = feats(y_tr, 1e-4 * rng.normal(size=(400, 1)))
    rare_te = np.zeros((200, 1))
    rare_te[:20] = 5.0  # a unit that fires on a tenth of the test crops
    r2, _, _ = spatial._ridge_scores(x_tr, y_tr, feats(y_te, rare_te), y_te)
    clean, _, _ = spatial._ridge_scores(x_tr[:, :16], y_tr, feats(y_te, rare_te)[:, :16], y_te)
    assert clean.min() > 0.8
    assert np.abs(r2 - clean).max() < 0.05, (r2, clean)


def test_position_scale_task_is_deterministic_and_caps_images(gradients):
    jpegs, _ = gradients
    run = dict(encoder=MeanColour(), jpegs=jpegs, image_size=48, device=CPU,
               train_idx=np.arange(24), test_idx=np.arange(24, 36), pairs_per_image=2,
               max_train_images=10, max_test_images=5)
    a, b = position_scale_task(**run, seed=3), position_scale_task(**run, seed=3)
    a.pop("seconds"), b.pop("seconds")
    assert a == b
    assert a["n_train_images"] == 10 and a["n_test_images"] == 5 and a["n_test_pairs"] == 10
    c = position_scale_task(**run, seed=4)
    assert c["r2"] != a["r2"]


# -- jigsaw -------------------------------------------------------------------------------------

def test_jigsaw_task_solves_gradient_images_from_tile_colours():
    jpegs, labels = gradient_jpegs(48, size=96, seed=1, vary=True)
    tr, te = np.arange(36), np.arange(36, 48)
    res = jigsaw_task(MeanColour(), jpegs, 48, CPU, tr, te, labels, seed=0,
                      train_perms_per_image=20, test_perms_per_image=5)
    assert res["tile_size"] == 16 and res["chance"] == 0.01 and res["min_hamming"] >= 6
    assert res["n_train_samples"] == 36 * 20 and res["n_test_samples"] == 12 * 5
    assert res["accuracy"] > 0.5, res  # chance 0.01
    assert res["tile_accuracy"] > 0.7, res
    assert res["habitat_n_test"] == 12
    assert res["habitat_macro_f1_true"] > 0.9
    # an image's mean colour does not depend on where its tiles are: the habitat probe scores
    # the same on shuffled and on reassembled images as on the true ones
    for k in ("shuffled", "reassembled"):
        assert res[f"habitat_macro_f1_{k}"] == pytest.approx(res["habitat_macro_f1_true"]), k


def test_jigsaw_task_is_at_chance_with_uninformative_features():
    jpegs, _ = gradient_jpegs(30, size=48, seed=2, vary=True)
    res = jigsaw_task(Constant(), jpegs, 48, CPU, np.arange(20), np.arange(20, 30),
                      train_perms_per_image=12, test_perms_per_image=5)
    assert res["accuracy"] < 0.1, res
    assert res["habitat_macro_f1_true"] is None  # no labels: no habitat part


# -- end to end on a mini survey ---------------------------------------------------------------

@pytest.fixture(scope="module")
def survey(tmp_path_factory):
    root = tmp_path_factory.mktemp("spatial") / "site"
    generate(SynthConfig(out=root, dives=2, images_per_dive=40, seed=11, faults=False,
                         workers=2))
    build(load_catalog(root / "catalog.yaml"), workers=2, log=lambda *_: None)
    manifest = load_manifest(root / "manifests" / "pairs.parquet")
    return manifest, ImageStore.open(manifest)


def test_spatial_tasks_end_to_end_with_the_tiny_encoder(survey):
    manifest, jpegs = survey
    torch.manual_seed(0)
    enc = Encoder("tiny").train()
    order = np.argsort(manifest.xy[:, 0])  # west half trains, east half tests
    half = len(order) // 2
    tr, te = np.sort(order[:half]), np.sort(order[half:])
    res = spatial_tasks(enc, jpegs, 32, "cpu", tr, te, manifest.label, seed=0)
    assert enc.training  # the encoder's mode is restored
    pos, jig = res["position_scale"], res["jigsaw"]
    assert pos["n_train_images"] == len(tr) and pos["n_test_images"] == len(te)
    assert pos["n_train_pairs"] == 4 * len(tr) and pos["crop_size"] == 16
    for d in (pos["r2"], pos["mae"], pos["r2_chance"]):
        assert set(d) == {"dx", "dy", "log_w", "log_h"} and all(np.isfinite(list(d.values())))
    assert jig["n_permutations"] == 100 and jig["tile_size"] == 16
    n_labelled = sum(v is not None for v in manifest.label[te])
    assert jig["habitat_n_test"] == n_labelled > 0

    # the same survey through features that carry nothing: the known answers of a probe that
    # can only learn the training side's mean / majority
    tr, te = tr[::2], te[::2]  # half of each side: enough for the known answers, quicker
    res = spatial_tasks(Constant(), jpegs, 32, "cpu", tr, te, manifest.label, seed=0)
    pos, jig = res["position_scale"], res["jigsaw"]
    # predicting the training mean: R^2 on the test side is at most 0 (the test mean is the
    # best constant), whatever the targets
    assert all(v <= 1e-9 for v in pos["r2"].values()), pos["r2"]
    assert jig["accuracy"] < 0.1, jig  # chance 0.01; one permutation predicted for all
    # the habitat probe predicts the training side's majority habitat for every test image,
    # shuffled or not: macro-F1 over the classes seen, by hand
    y_tr = [v for v in manifest.label[tr] if v is not None]
    y_te = [v for v in manifest.label[te] if v is not None]
    major = max(sorted(set(y_tr)), key=y_tr.count)
    hits = y_te.count(major)
    expected = 2 * hits / (len(y_te) + hits) / len(set(y_te) | {major})
    for k in ("true", "shuffled", "reassembled"):
        assert jig[f"habitat_macro_f1_{k}"] == pytest.approx(expected), (k, jig)
