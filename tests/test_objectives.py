"""ssl.objectives: losses against reference implementations, the distributed gather, GeoCLR
positive sampling, SP box geometry against real image flips / rotations, CSP encoders and losses."""

from __future__ import annotations

import itertools
import math
from ssl.data.positives import neighbour_lists, sample_positives
from ssl.objectives import (
    csp_l2_loss,
    csp_mc_loss,
    csp_nce_loss,
    gather_from_all_ranks,
    geoclr_loss,
    nt_xent,
    sp_loss,
    sp_targets,
    transform_boxes,
    within_radius_mask,
)
from ssl.training.heads import SPHead
from ssl.training.location import (
    GridEncoder,
    RBFEncoder,
    TheoryEncoder,
    make_location_encoder,
    sample_footprint_locations,
)

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

# --------------------------------------------------------------------------- NT-Xent references


def reference_nt_xent(z1, z2, temperature, neg_mask=None):
    """Textbook NT-Xent with explicit loops over the 2B x 2B similarity matrix, in float64."""
    z = F.normalize(torch.cat([z1, z2]).double(), dim=1)
    n2 = z.shape[0]
    b = n2 // 2
    total = 0.0
    for a in range(n2):
        p = (a + b) % n2
        denom = 0.0
        for c in range(n2):
            if c == a:
                continue
            if neg_mask is not None and bool(neg_mask[a, c]) and c != p:
                continue
            denom += math.exp(float(z[a] @ z[c]) / temperature)
        total += -(float(z[a] @ z[p]) / temperature - math.log(denom))
    return total / n2


def reference_nt_xent_matrix(z1, z2, temperature):
    """The same loss written with the full similarity matrix and cross-entropy."""
    z = F.normalize(torch.cat([z1, z2]).double(), dim=1)
    b = z1.shape[0]
    sim = z @ z.T / temperature
    sim.fill_diagonal_(float("-inf"))
    labels = torch.cat([torch.arange(b, 2 * b), torch.arange(b)])
    return float(F.cross_entropy(sim, labels))


@pytest.mark.parametrize("b", [1, 2, 5, 16])
@pytest.mark.parametrize("temperature", [0.05, 0.1, 0.5, 1.0])
def test_nt_xent_matches_reference(b, temperature):
    g = torch.Generator().manual_seed(b * 100 + int(temperature * 100))
    z1 = torch.randn(b, 7, generator=g, dtype=torch.float64) * 3
    z2 = torch.randn(b, 7, generator=g, dtype=torch.float64)
    got = float(nt_xent(z1, z2, temperature))
    assert got == pytest.approx(reference_nt_xent(z1, z2, temperature), rel=1e-10, abs=1e-10)
    assert got == pytest.approx(reference_nt_xent_matrix(z1, z2, temperature), rel=1e-10)


def test_nt_xent_is_scale_invariant_and_symmetric():
    g = torch.Generator().manual_seed(3)
    z1, z2 = torch.randn(2, 6, 5, generator=g, dtype=torch.float64)
    base = nt_xent(z1, z2, 0.2)
    torch.testing.assert_close(nt_xent(z1 * 7.5, z2 * 0.01, 0.2), base)
    torch.testing.assert_close(nt_xent(z2, z1, 0.2), base)  # swapping the views changes nothing


@pytest.mark.parametrize("b", [2, 6, 11])
def test_nt_xent_neg_mask_matches_reference(b):
    g = torch.Generator().manual_seed(b)
    z1 = torch.randn(b, 4, generator=g, dtype=torch.float64)
    z2 = torch.randn(b, 4, generator=g, dtype=torch.float64)
    mask = torch.rand(2 * b, 2 * b, generator=g) < 0.4
    # the mask also tries to remove every positive: the loss must keep them regardless
    i = torch.arange(b)
    mask[i, b + i] = True
    mask[b + i, i] = True
    got = nt_xent(z1, z2, 0.3, neg_mask=mask)
    assert float(got) == pytest.approx(reference_nt_xent(z1, z2, 0.3, mask), rel=1e-10)
    assert float(got) != pytest.approx(reference_nt_xent(z1, z2, 0.3), rel=1e-6)


def test_nt_xent_mask_everything_leaves_only_the_positive():
    z1, z2 = torch.randn(2, 5, 8, dtype=torch.float64)
    loss = nt_xent(z1, z2, 0.1, neg_mask=torch.ones(10, 10, dtype=torch.bool))
    assert float(loss) == pytest.approx(0.0, abs=1e-12)


def test_nt_xent_gradients_finite_float32():
    z1 = torch.randn(8, 16, requires_grad=True)
    z2 = torch.randn(8, 16, requires_grad=True)
    mask = torch.rand(16, 16) < 0.5
    loss = nt_xent(z1, z2, 0.07, neg_mask=mask)
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(z1.grad).all() and torch.isfinite(z2.grad).all()
    assert z1.grad.abs().sum() > 0


def test_nt_xent_rejects_bad_input():
    with pytest.raises(ValueError):
        nt_xent(torch.randn(4, 3), torch.randn(5, 3))
    with pytest.raises(ValueError):
        nt_xent(torch.randn(4, 3), torch.randn(4, 3), 0.0)
    with pytest.raises(ValueError):
        nt_xent(torch.randn(4, 3), torch.randn(4, 3), neg_mask=torch.zeros(8, 4, dtype=torch.bool))


# --------------------------------------------------------------------------- gather, one process


def fake_gather(rank: int, b: int, fulls: list[torch.Tensor]):
    """A stand-in for `gather_from_all_ranks` on `rank`: returns the full tensor ("all ranks")
    whose slice for this rank matches ``t``, with ``t`` itself spliced in (so gradients flow)."""

    def gather(t):
        sl = slice(rank * b, (rank + 1) * b)
        for full in fulls:
            if full.shape[1:] == t.shape[1:] and torch.allclose(full[sl], t.detach().to(full)):
                return torch.cat(
                    [full[: rank * b].to(t), t, full[(rank + 1) * b :].to(t)]
                ), rank * b
        raise AssertionError("gather called with a tensor that is no rank's slice")

    return gather


@pytest.mark.parametrize("world", [2, 3])
def test_nt_xent_gather_mean_over_ranks_equals_single_process(world):
    b = 4
    g = torch.Generator().manual_seed(world)
    z1 = torch.randn(world * b, 6, generator=g, dtype=torch.float64)
    z2 = torch.randn(world * b, 6, generator=g, dtype=torch.float64)
    fulls = [F.normalize(z1, dim=1), F.normalize(z2, dim=1)]
    n = world * b
    mask = torch.rand(2 * n, 2 * n, generator=g) < 0.3
    for m in (None, mask):
        single = nt_xent(z1, z2, 0.2, neg_mask=m)
        per_rank = []
        for r in range(world):
            sl = slice(r * b, (r + 1) * b)
            rows = torch.cat([torch.arange(n)[sl], n + torch.arange(n)[sl]])
            local_mask = None if m is None else m[rows]
            loss = nt_xent(
                z1[sl], z2[sl], 0.2, neg_mask=local_mask, gather=fake_gather(r, b, fulls)
            )
            per_rank.append(loss)
        torch.testing.assert_close(torch.stack(per_rank).mean(), single)


def test_gather_from_all_ranks_without_process_group_is_identity():
    assert not dist.is_initialized()
    t = torch.randn(3, 2)
    out, offset = gather_from_all_ranks(t)
    assert out is t and offset == 0


# --------------------------------------------------------------------------- gather, two processes

WORLD = 2
R_LOC = 3.0


def _ddp_problem():
    """Same data and model on every process: a linear encoder on a batch of WORLD * 5 pairs."""
    g = torch.Generator().manual_seed(1234)
    n = WORLD * 5
    x1 = torch.randn(n, 8, generator=g, dtype=torch.float64)
    x2 = torch.randn(n, 8, generator=g, dtype=torch.float64)
    xy_a = torch.rand(n, 2, generator=g, dtype=torch.float64) * 10
    xy_p = xy_a + torch.randn(n, 2, generator=g, dtype=torch.float64)
    torch.manual_seed(0)
    model = nn.Linear(8, 6).double()
    return x1, x2, xy_a, xy_p, model


def _loss(objective, z1, z2, xy_a, xy_p, gather=None):
    if objective == "simclr":
        return nt_xent(z1, z2, 0.2, gather=gather)
    return geoclr_loss(z1, z2, xy_a, xy_p, R_LOC, 0.2, gather=gather)


def _ddp_worker(rank, world, init_file, out_file):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        x1, x2, xy_a, xy_p, model = _ddp_problem()
        b = x1.shape[0] // world
        sl = slice(rank * b, (rank + 1) * b)
        results = {}
        gathers = {"builtin": gather_from_all_ranks}
        for (name, gather), objective in itertools.product(gathers.items(), ["simclr", "geoclr"]):
            model.zero_grad()
            z1, z2 = model(x1[sl]), model(x2[sl])
            z1.retain_grad()
            z2.retain_grad()
            loss = _loss(objective, z1, z2, xy_a[sl], xy_p[sl], gather)
            loss.backward()
            grads = [p.grad.detach().clone() for p in model.parameters()]
            for gr in grads:  # what DDP does with parameter gradients
                dist.all_reduce(gr)
                gr /= world
            mean_loss = loss.detach().clone()
            dist.all_reduce(mean_loss)
            mean_loss /= world
            results[name, objective] = {
                "loss": mean_loss,
                "param_grads": grads,
                "z1_grad": z1.grad.clone(),
                "z2_grad": z2.grad.clone(),
            }
        torch.save(results, f"{out_file}.{rank}")
        dist.barrier()  # no rank tears gloo down while the other still talks to it
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="no gloo")
def test_gather_two_process_gloo_gradients_match_single_process(tmp_path):
    import torch.multiprocessing as mp

    out_file = tmp_path / "grads"
    mp.spawn(
        _ddp_worker,
        args=(WORLD, str(tmp_path / "rendezvous"), str(out_file)),
        nprocs=WORLD,
        join=True,
    )
    per_rank = [torch.load(f"{out_file}.{r}", weights_only=False) for r in range(WORLD)]
    x1, x2, xy_a, xy_p, model = _ddp_problem()
    b = x1.shape[0] // WORLD
    for objective in ("simclr", "geoclr"):
        model.zero_grad()
        z1, z2 = model(x1), model(x2)
        z1.retain_grad()
        z2.retain_grad()
        loss = _loss(objective, z1, z2, xy_a, xy_p)
        loss.backward()
        for name in ("builtin",):
            for r, res in enumerate(per_rank):
                got = res[name, objective]
                torch.testing.assert_close(got["loss"], loss.detach())
                for gp, p in zip(got["param_grads"], model.parameters(), strict=True):
                    torch.testing.assert_close(gp, p.grad)
                sl = slice(r * b, (r + 1) * b)
                # each rank's embedding gradient gathers every rank's loss; DDP then averages
                torch.testing.assert_close(got["z1_grad"] / WORLD, z1.grad[sl])
                torch.testing.assert_close(got["z2_grad"] / WORLD, z2.grad[sl])


# --------------------------------------------------------------------------- GeoCLR


def radius_pairs(xy: np.ndarray, r: float) -> tuple[np.ndarray, np.ndarray]:
    d = np.sqrt(((xy[:, None, :] - xy[None, :, :]) ** 2).sum(-1))
    a, p = np.nonzero(np.triu(d <= r, k=1))
    return a, p


def test_neighbour_lists_symmetric_csr():
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 20, size=(60, 2))
    a, p = radius_pairs(xy, 3.0)
    assert np.all(a < p)
    indptr, indices = neighbour_lists(a, p, 60)
    assert indptr.dtype == np.int64 and indptr.shape == (61,) and indptr[0] == 0
    assert indices.dtype == np.int32 and indptr[-1] == indices.size == 2 * a.size
    d = np.sqrt(((xy[:, None, :] - xy[None, :, :]) ** 2).sum(-1))
    for i in range(60):
        expected = [j for j in range(60) if j != i and d[i, j] <= 3.0]
        assert indices[indptr[i] : indptr[i + 1]].tolist() == expected
    # a pair listed in both orders (or twice) counts once
    indptr2, indices2 = neighbour_lists(np.r_[a, p, a], np.r_[p, a, p], 60)
    np.testing.assert_array_equal(indptr2, indptr)
    np.testing.assert_array_equal(indices2, indices)


def test_neighbour_lists_validation_and_empty():
    indptr, indices = neighbour_lists(np.array([], np.int64), np.array([], np.int64), 4)
    np.testing.assert_array_equal(indptr, np.zeros(5))
    assert indices.size == 0
    with pytest.raises(ValueError):
        neighbour_lists(np.array([0]), np.array([4]), 4)
    with pytest.raises(ValueError):
        neighbour_lists(np.array([1]), np.array([1]), 4)


def test_sample_positives_are_true_neighbours_within_radius():
    rng = np.random.default_rng(1)
    xy = rng.uniform(0, 30, size=(200, 2))
    r = 2.5
    a, p = radius_pairs(xy, r)
    pair_set = {(int(i), int(j)) for i, j in zip(a, p, strict=True)}
    indptr, indices = neighbour_lists(a, p, 200)
    deg = np.diff(indptr)
    assert (deg == 0).any() and (deg > 1).any()  # both kinds present in this layout
    for seed in range(20):
        pos, has = sample_positives(indptr, indices, np.random.default_rng(seed))
        assert pos.dtype == np.int64 and pos.shape == (200,)
        assert has.dtype == np.bool_ and has.shape == (200,)
        np.testing.assert_array_equal(has, deg > 0)
        i = np.arange(200)
        np.testing.assert_array_equal(pos[~has], i[~has])  # no neighbour: itself
        for k, j in zip(i[has], pos[has], strict=True):
            assert (min(k, j), max(k, j)) in pair_set
        dist_m = np.sqrt(((xy[i[has]] - xy[pos[has]]) ** 2).sum(1))
        assert (dist_m <= r).all() and (dist_m > 0).all()


def test_sample_positives_vectorised_formula():
    indptr = np.array([0, 3, 3, 4, 9], dtype=np.int64)
    indices = np.array([1, 2, 3, 0, 0, 1, 2, 5, 6], dtype=np.int32)
    pos, has = sample_positives(indptr, indices, np.random.default_rng(7))
    u = np.random.default_rng(7).random(4)
    deg = np.diff(indptr)
    for i in range(4):
        if deg[i]:
            assert pos[i] == indices[indptr[i] + int(np.floor(u[i] * deg[i]))]
        else:
            assert pos[i] == i and not has[i]


def test_sample_positives_uniform():
    # image 0 has 5 neighbours; the draws must be spread evenly over them
    a = np.array([0, 0, 0, 0, 0, 2])
    p = np.array([1, 2, 3, 4, 5, 3])
    indptr, indices = neighbour_lists(a, p, 7)
    rng = np.random.default_rng(11)
    draws = np.array([sample_positives(indptr, indices, rng)[0][0] for _ in range(5000)])
    counts = np.bincount(draws, minlength=6)[1:6]
    assert counts.sum() == 5000
    expected = 5000 / 5
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < 30.0, counts  # 4 degrees of freedom: p < 1e-5 for a uniform draw


def test_within_radius_mask_inclusive():
    rows = torch.tensor([[0.0, 0.0], [10.0, 10.0]])
    cols = torch.tensor([[3.0, 4.0], [0.0, 0.0], [10.0, 15.0], [10.0, 15.0001]])
    m = within_radius_mask(rows, cols, 5.0)
    assert m.dtype == torch.bool and m.shape == (2, 4)
    assert m.tolist() == [[True, True, False, False], [False, False, True, False]]
    assert not within_radius_mask(rows, cols, 5.0 - 1e-9)[0, 0]
    # 3-D positions (with depth) work the same way
    m3 = within_radius_mask(torch.tensor([[0.0, 0.0, 0.0]]), torch.tensor([[2.0, 3.0, 6.0]]), 7.0)
    assert m3.item()


def test_geoclr_loss_masks_neighbours_only():
    g = torch.Generator().manual_seed(5)
    b = 12
    za = torch.randn(b, 8, generator=g, dtype=torch.float64)
    zp = torch.randn(b, 8, generator=g, dtype=torch.float64)
    xa = torch.rand(b, 2, generator=g, dtype=torch.float64) * 10
    xp = xa + torch.randn(b, 2, generator=g, dtype=torch.float64)
    xp[0] = xa[0]  # an image without neighbours: the positive is itself
    pos_all = torch.cat([xa, xp])
    mask = torch.cdist(pos_all, pos_all) <= 3.0
    assert 0 < mask.sum() < mask.numel()
    got = geoclr_loss(za, zp, xa, xp, 3.0, 0.2)
    assert float(got) == pytest.approx(reference_nt_xent(za, zp, 0.2, mask), rel=1e-10)
    unmasked = geoclr_loss(za, zp, xa, xp, 3.0, 0.2, mask_neighbours=False)
    torch.testing.assert_close(unmasked, nt_xent(za, zp, 0.2))
    assert float(got) < float(unmasked)  # removing negatives can only lower the loss


def test_geoclr_loss_gather_mean_over_ranks_equals_single_process():
    world, b = 2, 5
    g = torch.Generator().manual_seed(9)
    za = torch.randn(world * b, 4, generator=g, dtype=torch.float64)
    zp = torch.randn(world * b, 4, generator=g, dtype=torch.float64)
    xa = torch.rand(world * b, 2, generator=g, dtype=torch.float64) * 8
    xp = xa + torch.randn(world * b, 2, generator=g, dtype=torch.float64)
    fulls = [F.normalize(za, dim=1), F.normalize(zp, dim=1), xa, xp]
    single = geoclr_loss(za, zp, xa, xp, 2.5, 0.2)
    per_rank = []
    for r in range(world):
        sl = slice(r * b, (r + 1) * b)
        gather = fake_gather(r, b, fulls)
        per_rank.append(geoclr_loss(za[sl], zp[sl], xa[sl], xp[sl], 2.5, 0.2, gather=gather))
    torch.testing.assert_close(torch.stack(per_rank).mean(), single)


# --------------------------------------------------------------------------- SP


def test_sp_targets_known_boxes():
    box1 = torch.tensor([[10.0, 20.0, 4.0, 8.0], [0.0, 0.0, 1.0, 1.0]])
    box2 = torch.tensor([[12.0, 16.0, 8.0, 2.0], [0.0, 0.0, 1.0, 1.0]])
    expected = torch.tensor([[0.5, -0.5, math.log(2.0), math.log(0.25)], [0.0, 0.0, 0.0, 0.0]])
    torch.testing.assert_close(sp_targets(box1, box2), expected)


def painted_bbox(img: torch.Tensor) -> list[float]:
    """(cx, cy, w, h) of the nonzero pixels of a 2-D image (pixel (r, c) is [c, c+1)x[r, r+1))."""
    rows, cols = torch.nonzero(img, as_tuple=True)
    r0, r1 = int(rows.min()), int(rows.max()) + 1
    c0, c1 = int(cols.min()), int(cols.max()) + 1
    return [(c0 + c1) / 2, (r0 + r1) / 2, float(c1 - c0), float(r1 - r0)]


@pytest.mark.parametrize("hw", [(7, 11), (12, 9), (8, 8)])
def test_transform_boxes_matches_real_flips_and_rotations(hw):
    h, w = hw
    rng = np.random.default_rng(h * w)
    boxes, sizes, flips, ks, expected = [], [], [], [], []
    for flip, k in itertools.product([False, True], [-1, 0, 1, 2, 3, 5]):
        for _ in range(3):
            r0, c0 = int(rng.integers(0, h - 1)), int(rng.integers(0, w - 1))
            r1, c1 = int(rng.integers(r0 + 1, h + 1)), int(rng.integers(c0 + 1, w + 1))
            img = torch.zeros(1, h, w)
            img[:, r0:r1, c0:c1] = 1.0
            boxes.append(painted_bbox(img[0]))
            out = torch.flip(img, dims=(-1,)) if flip else img
            out = torch.rot90(out, k, dims=(-2, -1))
            expected.append(painted_bbox(out[0]))
            sizes.append([h, w])
            flips.append(flip)
            ks.append(k)
    got = transform_boxes(
        torch.tensor(boxes, dtype=torch.float64),
        torch.tensor(sizes),
        torch.tensor(flips),
        torch.tensor(ks),
    )
    torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float64))


def test_transform_boxes_then_targets_follow_the_image():
    box1 = torch.tensor([[30.0, 40.0, 10.0, 20.0]])
    box2 = torch.tensor([[50.0, 30.0, 20.0, 10.0]])
    size = torch.tensor([[100, 200]])
    t0 = sp_targets(box1, box2)[0]
    no, yes = torch.tensor([False]), torch.tensor([True])

    def target(flip, k):
        kk = torch.tensor([k])
        return sp_targets(
            transform_boxes(box1, size, flip, kk), transform_boxes(box2, size, flip, kk)
        )[0]

    dx, dy, lw, lh = t0.tolist()
    torch.testing.assert_close(target(yes, 0), torch.tensor([-dx, dy, lw, lh]))  # dx flips sign
    torch.testing.assert_close(target(no, 1), torch.tensor([dy, -dx, lh, lw]))
    torch.testing.assert_close(target(no, 2), torch.tensor([-dx, -dy, lw, lh]))
    torch.testing.assert_close(target(no, 3), torch.tensor([-dy, dx, lh, lw]))
    torch.testing.assert_close(target(yes, 1), torch.tensor([dy, dx, lh, lw]))


def test_sp_head_and_loss():
    head = SPHead(32)
    linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(64, 512), (512, 512), (512, 4)]
    f1, f2 = torch.randn(2, 6, 32)
    pred = head(f1, f2)
    assert pred.shape == (6, 4)
    target = torch.randn(6, 4)
    loss = sp_loss(pred, target)
    torch.testing.assert_close(loss, F.smooth_l1_loss(pred, target, beta=1.0))
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in head.parameters())
    # Huber: quadratic below beta, linear above
    z = torch.zeros(1, 4)
    assert float(sp_loss(torch.full((1, 4), 0.5), z)) == pytest.approx(0.125)
    assert float(sp_loss(torch.full((1, 4), 3.0), z)) == pytest.approx(2.5)


# --------------------------------------------------------------------------- CSP encoders


@pytest.mark.parametrize("kind", ["theory", "grid", "rbf"])
def test_location_encoders_shapes(kind):
    centres = torch.rand(10, 2) * 200 - 100
    enc = make_location_encoder(kind, 24, 300.0, centres=centres)
    xy = torch.rand(17, 2) * 200 - 100
    out = enc(xy)
    assert out.shape == (17, 24) and torch.isfinite(out).all()
    enc.eval()
    torch.testing.assert_close(enc(xy), enc(xy))  # deterministic without dropout
    if kind != "rbf":
        assert float(enc.wavelengths[-1]) == pytest.approx(300.0)
        assert float(enc.wavelengths[0]) == pytest.approx(1.0)


def test_make_location_encoder_errors():
    with pytest.raises(ValueError):
        make_location_encoder("sphere", 8, 100.0)
    with pytest.raises(ValueError):
        make_location_encoder("rbf", 8, 100.0)


@pytest.mark.parametrize("cls,n_dirs", [(TheoryEncoder, 3), (GridEncoder, 2)])
def test_sinusoidal_features_periodic_along_directions(cls, n_dirs):
    scales = 5
    enc = cls(d=8, lambda_min=2.0, lambda_max=500.0, scales=scales).double()
    dirs, lam = enc.directions, enc.wavelengths
    assert dirs.shape == (n_dirs, 2) and lam.shape == (scales,)
    torch.testing.assert_close(dirs.norm(dim=1), torch.ones(n_dirs, dtype=torch.float64))
    angles = torch.rad2deg(torch.atan2(dirs[:, 1], dirs[:, 0])).remainder(360).tolist()
    expected_angles = [0.0, 120.0, 240.0] if n_dirs == 3 else [0.0, 90.0]
    assert angles == pytest.approx(expected_angles, abs=1e-4)
    ratios = lam[1:] / lam[:-1]
    torch.testing.assert_close(ratios, torch.full_like(ratios, (250.0) ** 0.25), rtol=1e-5, atol=0)

    xy = (torch.rand(9, 2, dtype=torch.float64) - 0.5) * 200
    f0 = enc.features(xy)
    assert f0.shape == (9, 2 * n_dirs * scales)
    for s, j in itertools.product(range(scales), range(n_dirs)):
        cols = [(s * n_dirs + j) * 2, (s * n_dirs + j) * 2 + 1]
        shift = lam[s] * dirs[j]
        # (float32 direction buffers: |a_j| = 1 to ~1e-8, hence the absolute tolerance)
        close = {"rtol": 0.0, "atol": 1e-5}
        torch.testing.assert_close(enc.features(xy + shift)[:, cols], f0[:, cols], **close)
        # half a wavelength along a_j flips sin and cos of that component
        torch.testing.assert_close(enc.features(xy + shift / 2)[:, cols], -f0[:, cols], **close)
        # the component is sin/cos of 2*pi*<x, a_j>/lambda_s
        phase = 2 * math.pi * (xy @ dirs[j]) / lam[s]
        torch.testing.assert_close(f0[:, cols], torch.stack([phase.sin(), phase.cos()], 1))
    if n_dirs == 2:  # grid: moving along y leaves the x components alone
        x_cols = [(s * 2 + 0) * 2 + c for s in range(scales) for c in (0, 1)]
        moved = enc.features(xy + torch.tensor([0.0, 37.3], dtype=torch.float64))
        torch.testing.assert_close(moved[:, x_cols], f0[:, x_cols])


def test_rbf_features_peak_at_centres():
    centres = torch.tensor([[0.0, 0.0], [50.0, 0.0], [0.0, 50.0], [-40.0, -40.0]])
    enc = RBFEncoder(8, centres, sigma=10.0)
    f = enc.features(centres)
    torch.testing.assert_close(torch.diagonal(f), torch.ones(4))
    assert (f.argmax(dim=1) == torch.arange(4)).all()
    away = enc.features(centres + torch.tensor([3.0, -4.0]))  # 5 m off each centre
    torch.testing.assert_close(torch.diagonal(away), torch.full((4,), math.exp(-25 / 200)))
    # the default sigma is the typical spacing between centres
    enc2 = make_location_encoder("rbf", 8, 1000.0, centres=centres)
    assert enc2.sigma == pytest.approx(50.0)


# --------------------------------------------------------------------------- CSP losses


def test_sample_footprint_locations_inside_occupied_cells():
    gen = torch.Generator().manual_seed(0)
    one = torch.tensor([[-95.0, 12.0]])  # one image alone in its cell
    many = torch.rand(300, 2, generator=gen) * 19.9 + torch.tensor([40.0, -30.0])  # 4 cells
    xy = torch.cat([one, many])
    cell = 10.0
    out = sample_footprint_locations(xy, 4000, cell, torch.Generator().manual_seed(1))
    assert out.shape == (4000, 2) and out.dtype == torch.float32
    occupied = {tuple(c) for c in torch.floor(xy / cell).long().tolist()}
    got_cells = [tuple(c) for c in torch.floor(out / cell).long().tolist()]
    assert set(got_cells) <= occupied
    # cells are chosen uniformly, not in proportion to the images they hold
    frac_lonely = sum(c == (-10, 1) for c in got_cells) / len(got_cells)
    assert frac_lonely == pytest.approx(1 / len(occupied), abs=0.03)
    again = sample_footprint_locations(xy, 4000, cell, torch.Generator().manual_seed(1))
    torch.testing.assert_close(out, again)


def toy_problem(n=256, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    xy = (torch.rand(n, 2, generator=g) - 0.5) * 100
    x, y = xy.unbind(1)
    feats = torch.stack(
        [
            torch.sin(2 * math.pi * x / 40),
            torch.cos(2 * math.pi * x / 40),
            torch.sin(2 * math.pi * y / 30),
            torch.cos(2 * math.pi * y / 30),
            x / 50,
            y / 50,
        ],
        dim=1,
    )
    img = F.normalize(feats @ torch.randn(6, d, generator=g), dim=1)  # "locked" image encoder
    return xy, img


@pytest.fixture
def one_thread():
    """Tiny tensors: intra-op threads only add overhead (and contend on a busy machine)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.mark.parametrize("objective", ["mc", "nce", "l2"])
def test_csp_losses_decrease_on_toy_problem(objective, one_thread):
    torch.manual_seed(0)
    xy, img = toy_problem()
    enc = TheoryEncoder(d=16, lambda_min=5.0, lambda_max=100.0, scales=4, hidden=64, dropout=0.1)
    opt = torch.optim.Adam(enc.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(2)
    eval_neg = sample_footprint_locations(xy, 32, 10.0, torch.Generator().manual_seed(3))

    def loss_of(loc, loc2, im, neg):
        if objective == "mc":
            return csp_mc_loss(loc, im, neg, loc2)
        if objective == "nce":
            return csp_nce_loss(loc, im, neg)
        return csp_l2_loss(loc, im)

    def evaluate():
        enc.eval()
        with torch.no_grad():
            loc = enc(xy[:128])
            value = loss_of(loc, enc(xy[:128]), img[:128], enc(eval_neg))
        enc.train()
        return float(value)

    before = evaluate()
    for _ in range(80):
        idx = torch.randint(0, xy.shape[0], (64,), generator=gen)
        neg = enc(sample_footprint_locations(xy, 32, 10.0, gen))
        loss = loss_of(enc(xy[idx]), enc(xy[idx]), img[idx], neg)
        assert torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = evaluate()
    assert math.isfinite(before) and after < 0.8 * before, (before, after)


def test_csp_mc_loss_formula():
    g = torch.Generator().manual_seed(4)
    b, k, d, t = 5, 7, 6, 0.3
    loc, loc2, img = torch.randn(3, b, d, generator=g, dtype=torch.float64)
    neg = torch.randn(k, d, generator=g, dtype=torch.float64)
    lo, lo2, im, ng = (F.normalize(x, dim=-1) for x in (loc, loc2, img, neg))
    lbl = torch.arange(b)
    l_batch = 0.5 * (F.cross_entropy(lo @ im.T / t, lbl) + F.cross_entropy(im @ lo.T / t, lbl))
    terms = []
    for i in range(b):
        pos = torch.exp(im[i] @ lo[i] / t)
        terms.append(-torch.log(pos / (pos + torch.exp(ng @ im[i] / t).sum())))
    l_neg = torch.stack(terms).mean()
    l_sim = F.cross_entropy(lo @ lo2.T / t, lbl)
    got = csp_mc_loss(loc, img, neg, loc2, t, w_batch=0.5, w_neg=2.0, w_simcse=3.0)
    torch.testing.assert_close(got, 0.5 * l_batch + 2.0 * l_neg + 3.0 * l_sim)
    torch.testing.assert_close(csp_mc_loss(loc, img, neg, None, t), l_batch + l_neg)
    # per-sample negatives (B, K, d) equal to the shared ones give the same loss
    torch.testing.assert_close(
        csp_mc_loss(loc, img, neg.expand(b, k, d), loc2, t), csp_mc_loss(loc, img, neg, loc2, t)
    )


def test_csp_nce_and_l2_formulas():
    g = torch.Generator().manual_seed(6)
    b, k, d, t = 4, 3, 5, 0.2
    loc, img = torch.randn(2, b, d, generator=g, dtype=torch.float64)
    neg = torch.randn(b, k, d, generator=g, dtype=torch.float64)
    lo, im, ng = (F.normalize(x, dim=-1) for x in (loc, img, neg))
    total = 0.0
    for i in range(b):
        term = -torch.log(torch.sigmoid(lo[i] @ im[i] / t))
        term -= sum(torch.log(1 - torch.sigmoid(lo[j] @ im[i] / t)) for j in range(b) if j != i) / (
            b - 1
        )
        term -= sum(torch.log(1 - torch.sigmoid(ng[i, q] @ im[i] / t)) for q in range(k)) / k
        total += term
    torch.testing.assert_close(csp_nce_loss(loc, img, neg, t), total / b)
    torch.testing.assert_close(csp_l2_loss(loc, img), ((lo - im) ** 2).sum(1).mean())
    torch.testing.assert_close(csp_l2_loss(loc, loc * 3), torch.zeros((), dtype=torch.float64))
