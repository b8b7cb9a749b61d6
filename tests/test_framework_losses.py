"""SimSiam, BYOL, MoCo v2 and DINO objectives against loop-by-row references, plus the momentum
helpers (schedule, copy, EMA), the MoCo queue and location mask, and the DINO head and centre."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.distributed as dist
from seafloor_ssl.objectives.byol import byol_loss
from seafloor_ssl.objectives.dino import dino_loss
from seafloor_ssl.objectives.moco import moco_loss, queue_mask
from seafloor_ssl.objectives.simsiam import negative_cosine, simsiam_loss
from seafloor_ssl.training.heads import DINOHead, Predictor
from seafloor_ssl.training.heads import Predictor as SimSiamPredictor
from seafloor_ssl.training.state import (
    Queue,
    ema_update,
    momentum_at,
    momentum_copy,
    teacher_temperature,
    update_centre,
)
from torch import nn


def _randn(*shape, seed=0, requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64).requires_grad_(requires_grad)


def _cos(a, b):
    a, b = a.detach(), b.detach()
    return float(torch.dot(a, b) / (torch.linalg.norm(a) * torch.linalg.norm(b)))


def _logsumexp(values):
    top = max(values)
    if top == -math.inf:
        return -math.inf
    return top + math.log(sum(math.exp(v - top) for v in values))


# --------------------------------------------------------------------------- SimSiam


def reference_simsiam(p1, p2, z1, z2):
    b = p1.shape[0]
    total = 0.0
    for i in range(b):
        total += 0.5 * -_cos(p1[i], z2[i]) + 0.5 * -_cos(p2[i], z1[i])
    return torch.tensor(total / b, dtype=torch.float64)


def test_simsiam_loss_matches_reference():
    p1, p2, z1, z2 = (_randn(7, 5, seed=s) for s in range(4))
    torch.testing.assert_close(simsiam_loss(p1, p2, z1, z2), reference_simsiam(p1, p2, z1, z2))
    # aligned predictions give the minimum -1
    torch.testing.assert_close(
        simsiam_loss(z2, z1, z1, z2), torch.tensor(-1.0, dtype=torch.float64)
    )
    torch.testing.assert_close(
        negative_cosine(z1, 3.0 * z1), torch.tensor(-1.0, dtype=torch.float64)
    )


def test_simsiam_no_gradient_into_z():
    p1, p2, z1, z2 = (_randn(6, 4, seed=s, requires_grad=True) for s in range(4))
    simsiam_loss(p1, p2, z1, z2).backward()
    assert z1.grad is None and z2.grad is None
    assert p1.grad is not None and p2.grad is not None
    assert p1.grad.abs().sum() > 0


def test_predictor_shape_and_layers():
    pred = SimSiamPredictor(8, hidden=3)
    assert Predictor is SimSiamPredictor
    out = pred(torch.randn(5, 8))
    assert out.shape == (5, 8)
    first, bn, _, last = pred.net
    assert first.bias is None and first.weight.shape == (3, 8)
    assert isinstance(bn, nn.BatchNorm1d) and bn.num_features == 3
    assert last.bias is not None and last.weight.shape == (8, 3)


# --------------------------------------------------------------------------- BYOL


def reference_byol(p1, p2, t1, t2):
    b = p1.shape[0]
    total = 0.0
    for i in range(b):
        total += 0.5 * ((2 - 2 * _cos(p1[i], t2[i])) + (2 - 2 * _cos(p2[i], t1[i])))
    return torch.tensor(total / b, dtype=torch.float64)


def test_byol_loss_matches_reference_and_stops_target_gradient():
    p1, p2, t1, t2 = (_randn(9, 6, seed=10 + s, requires_grad=True) for s in range(4))
    loss = byol_loss(p1, p2, t1, t2)
    torch.testing.assert_close(loss, reference_byol(p1, p2, t1, t2))
    loss.backward()
    assert t1.grad is None and t2.grad is None
    assert p1.grad is not None and p2.grad is not None


def test_momentum_at_endpoints_and_monotone():
    assert momentum_at(0, 100) == pytest.approx(0.996)
    assert momentum_at(100, 100) == pytest.approx(1.0)
    assert momentum_at(50, 100) == pytest.approx(0.998)
    assert momentum_at(-5, 100) == pytest.approx(0.996)
    assert momentum_at(500, 100) == pytest.approx(1.0)
    assert momentum_at(3, 0) == pytest.approx(0.996)
    assert momentum_at(3, -1, base=0.99) == pytest.approx(0.99)
    values = [momentum_at(s, 100, base=0.9) for s in range(101)]
    assert values[0] == pytest.approx(0.9)
    assert all(a <= b for a, b in zip(values, values[1:], strict=False))


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2))


def test_momentum_copy_freezes_and_keeps_modes():
    online = _net()
    online[1].eval()
    target = momentum_copy(online)
    assert all(not p.requires_grad for p in target.parameters())
    assert all(p.requires_grad for p in online.parameters())
    assert [m.training for m in target.modules()] == [m.training for m in online.modules()]
    online.eval()
    assert momentum_copy(online).training is False
    for (_, a), (_, b) in zip(target.named_parameters(), online.named_parameters(), strict=True):
        torch.testing.assert_close(a, b)
        assert a.data_ptr() != b.data_ptr()


def test_ema_update_moves_params_and_copies_buffers():
    online = _net()
    target = momentum_copy(online)
    with torch.no_grad():
        for p in online.parameters():
            p.add_(torch.randn_like(p))
    online.train()
    online(torch.randn(8, 3))  # changes BN running stats
    before = {n: p.clone() for n, p in target.named_parameters()}
    m = 0.75
    ema_update(target, online, m)
    for name, p in target.named_parameters():
        o = dict(online.named_parameters())[name]
        torch.testing.assert_close(p, m * before[name] + (1 - m) * o.detach())
        dist_before = (before[name] - o).abs().sum()
        assert (p - o).abs().sum() <= dist_before
    for name, buf in target.named_buffers():
        torch.testing.assert_close(buf, dict(online.named_buffers())[name])
    assert int(target[1].num_batches_tracked) == 1
    ema_update(target, online, 0.0)
    for a, b in zip(target.parameters(), online.parameters(), strict=True):
        torch.testing.assert_close(a, b.detach())


def test_ema_update_refuses_mismatched_modules():
    with pytest.raises(ValueError):
        ema_update(nn.Linear(3, 4), _net(), 0.9)
    with pytest.raises(ValueError):
        ema_update(nn.Linear(3, 4), nn.Linear(3, 5), 0.9)
    with pytest.raises(ValueError):
        ema_update(
            nn.Sequential(nn.Linear(3, 4)), nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 4)), 0.9
        )


# --------------------------------------------------------------------------- MoCo queue


class ReferenceQueue:
    """Row-by-row FIFO with wrap-around, for comparison with `Queue`."""

    def __init__(self, keys, xy):
        self.keys = [row.clone() for row in keys]
        self.xy = [row.clone() for row in xy]
        self.ptr = 0

    def push(self, keys, xy=None):
        for i in range(keys.shape[0]):
            row = keys[i] / torch.linalg.norm(keys[i])
            self.keys[self.ptr] = row.float()
            self.xy[self.ptr] = torch.full((2,), math.nan) if xy is None else xy[i].float()
            self.ptr = (self.ptr + 1) % len(self.keys)


def _assert_queue_equal(q, ref):
    torch.testing.assert_close(q.keys, torch.stack(ref.keys))
    torch.testing.assert_close(q.xy, torch.stack(ref.xy), equal_nan=True)
    assert int(q.ptr) == ref.ptr


def test_queue_initial_state():
    q = Queue(6, 4, seed=3)
    assert q.keys.shape == (6, 4) and q.keys.dtype == torch.float32
    torch.testing.assert_close(torch.linalg.norm(q.keys, dim=1), torch.ones(6))
    assert q.xy.shape == (6, 2) and torch.isnan(q.xy).all()
    assert q.ptr.dtype == torch.long and q.ptr.ndim == 0 and int(q.ptr) == 0
    torch.testing.assert_close(Queue(6, 4, seed=3).keys, q.keys)
    assert not torch.allclose(Queue(6, 4, seed=4).keys, q.keys)
    assert set(q.state_dict()) == {"keys", "xy", "ptr"}


def test_queue_fifo_wraparound_and_large_batch():
    q = Queue(5, 3, seed=0)
    ref = ReferenceQueue(q.keys, q.xy)
    batches = [
        (_randn(3, 3, seed=1), _randn(3, 2, seed=2)),
        (_randn(4, 3, seed=3), None),  # wraps: rows 3, 4, 0, 1
        (_randn(12, 3, seed=5), _randn(12, 2, seed=6)),  # larger than the queue
        (_randn(5, 3, seed=7), _randn(5, 2, seed=8)),  # exactly the queue
        (_randn(1, 3, seed=9), None),
    ]
    for keys, xy in batches:
        q.enqueue(keys.requires_grad_(True), xy)
        ref.push(keys.detach(), xy)
        _assert_queue_equal(q, ref)
        assert not q.keys.requires_grad
    torch.testing.assert_close(torch.linalg.norm(q.keys, dim=1), torch.ones(5))


def test_queue_large_batch_keeps_last_rows():
    q = Queue(4, 2)
    keys = torch.stack([torch.tensor([1.0, float(i)]) for i in range(10)])
    xy = torch.stack([torch.tensor([float(i), 0.0]) for i in range(10)])
    q.enqueue(keys, xy)
    # rows written one by one from ptr 0: row i lands at i % 4; rows 6..9 survive
    assert q.xy[:, 0].tolist() == [8.0, 9.0, 6.0, 7.0]
    assert int(q.ptr) == 10 % 4


def test_queue_xy_nan_when_none():
    q = Queue(4, 2)
    q.enqueue(torch.ones(2, 2), torch.zeros(2, 2))
    q.enqueue(torch.ones(1, 2))
    assert torch.equal(q.xy[:2], torch.zeros(2, 2))
    assert torch.isnan(q.xy[2:]).all()


def test_queue_state_dict_round_trip():
    q = Queue(5, 3, seed=0)
    q.enqueue(_randn(7, 3, seed=1), _randn(7, 2, seed=2))
    q2 = Queue(5, 3, seed=11)
    q2.load_state_dict(q.state_dict())
    torch.testing.assert_close(q2.keys, q.keys)
    torch.testing.assert_close(q2.xy, q.xy, equal_nan=True)
    assert int(q2.ptr) == int(q.ptr) == 2
    for qq in (q, q2):
        qq.enqueue(_randn(2, 3, seed=3))
    torch.testing.assert_close(q2.keys, q.keys)
    torch.testing.assert_close(q2.xy, q.xy, equal_nan=True)
    assert int(q2.ptr) == int(q.ptr)


def test_queue_mask_matches_loop():
    anchor = torch.tensor([[0.0, 0.0], [1.0, 1.0], [math.nan, 0.0], [5.0, -2.0]])
    g = torch.Generator().manual_seed(0)
    queue_xy = torch.rand(9, 2, generator=g) * 6 - 2
    queue_xy[2] = torch.tensor([3.0, 4.0])  # exactly r from anchor 0
    queue_xy[4] = math.nan
    queue_xy[6, 1] = math.nan
    r = 5.0
    got = queue_mask(anchor, queue_xy, r)
    assert got.dtype == torch.bool and got.shape == (4, 9)
    for i in range(4):
        for n in range(9):
            ax, ay = anchor[i].tolist()
            qx, qy = queue_xy[n].tolist()
            d = math.hypot(ax - qx, ay - qy)
            expect = (not math.isnan(d)) and d <= r
            assert bool(got[i, n]) == expect, (i, n)
    assert bool(got[0, 2])
    assert not got[2].any() and not got[:, 4].any() and not got[:, 6].any()


# --------------------------------------------------------------------------- MoCo loss


def reference_moco(q, k, queue, temperature, mask=None):
    q, k = q.detach(), k.detach()
    b = q.shape[0]
    total = 0.0
    for i in range(b):
        qi = q[i] / torch.linalg.norm(q[i])
        ki = k[i] / torch.linalg.norm(k[i])
        pos = float(torch.dot(qi, ki)) / temperature
        logits = [pos]
        for n in range(queue.shape[0]):
            if mask is not None and bool(mask[i, n]):
                continue
            logits.append(float(torch.dot(qi, queue[n].to(qi.dtype))) / temperature)
        total += _logsumexp(logits) - pos
    return torch.tensor(total / b, dtype=torch.float64)


def _moco_problem():
    q = _randn(6, 5, seed=20, requires_grad=True)
    k = _randn(6, 5, seed=21, requires_grad=True)
    queue = torch.nn.functional.normalize(_randn(11, 5, seed=22), dim=1)
    g = torch.Generator().manual_seed(23)
    mask = torch.rand(6, 11, generator=g) < 0.3
    return q, k, queue, mask


def test_moco_loss_matches_reference():
    q, k, queue, mask = _moco_problem()
    torch.testing.assert_close(moco_loss(q, k, queue, 0.2), reference_moco(q, k, queue, 0.2))
    torch.testing.assert_close(
        moco_loss(q, k, queue, 0.07, mask=mask), reference_moco(q, k, queue, 0.07, mask)
    )


def test_moco_no_gradient_into_keys():
    q, k, queue, mask = _moco_problem()
    moco_loss(q, k, queue, 0.2, mask=mask).backward()
    assert k.grad is None
    assert q.grad is not None and q.grad.abs().sum() > 0


def test_moco_masked_entries_do_not_matter():
    q, k, queue, mask = _moco_problem()
    mask[:, 3] = True
    mask[2, 7] = True
    before = moco_loss(q, k, queue, 0.2, mask=mask)
    changed = queue.clone()
    changed[3] = torch.nn.functional.normalize(q[0].detach(), dim=0)  # would be a hard negative
    torch.testing.assert_close(moco_loss(q, k, changed, 0.2, mask=mask), before)
    assert not torch.allclose(moco_loss(q, k, changed, 0.2), moco_loss(q, k, queue, 0.2))
    # an entry masked for one row only: that row's loss ignores it
    changed = queue.clone()
    changed[7] = -changed[7]
    row_mask = torch.zeros(1, 11, dtype=torch.bool)
    row_mask[0, 7] = True
    torch.testing.assert_close(
        moco_loss(q[2:3], k[2:3], changed, 0.2, mask=row_mask),
        moco_loss(q[2:3], k[2:3], queue, 0.2, mask=row_mask),
    )


def test_moco_all_masked_is_zero():
    q, k, queue, _ = _moco_problem()
    mask = torch.ones(6, 11, dtype=torch.bool)
    loss = moco_loss(q, k, queue, 0.2, mask=mask)
    torch.testing.assert_close(loss, torch.tensor(0.0, dtype=torch.float64))
    loss.backward()
    assert torch.isfinite(q.grad).all()


def test_moco_with_queue_and_mask_end_to_end():
    torch.manual_seed(0)
    qmod = Queue(8, 4, seed=1)
    qmod.enqueue(torch.randn(8, 4), torch.randn(8, 2))
    q, k, xy = torch.randn(3, 4), torch.randn(3, 4), torch.randn(3, 2)
    mask = queue_mask(xy, qmod.xy, 1.0)
    got = moco_loss(q, k, qmod.keys, 0.1, mask=mask)
    torch.testing.assert_close(
        got.double(),
        reference_moco(q.double(), k.double(), qmod.keys, 0.1, mask),
        rtol=1e-5,
        atol=1e-5,
    )


# --------------------------------------------------------------------------- DINO


def test_teacher_temperature_schedule():
    assert teacher_temperature(0, 10) == pytest.approx(0.04)
    assert teacher_temperature(5, 10) == pytest.approx(0.055)
    assert teacher_temperature(10, 10) == pytest.approx(0.07)
    assert teacher_temperature(50, 10) == pytest.approx(0.07)
    assert teacher_temperature(-3, 10) == pytest.approx(0.04)
    assert teacher_temperature(0, 0) == pytest.approx(0.07)
    assert teacher_temperature(4, -1, start=0.02, end=0.05) == pytest.approx(0.05)


def reference_dino(student, teacher, centre, student_temp, teacher_temp):
    student = [s.detach() for s in student]
    teacher = [t.detach() for t in teacher]
    pair_losses = []
    for i, t in enumerate(teacher):
        for j, s in enumerate(student):
            if j == i:
                continue
            rows = []
            for b in range(t.shape[0]):
                tl = [
                    (float(t[b, c]) - float(centre[0, c])) / teacher_temp for c in range(t.shape[1])
                ]
                sl = [float(s[b, c]) / student_temp for c in range(s.shape[1])]
                lse_t, lse_s = _logsumexp(tl), _logsumexp(sl)
                ce = 0.0
                for c in range(t.shape[1]):
                    ce -= math.exp(tl[c] - lse_t) * (sl[c] - lse_s)
                rows.append(ce)
            pair_losses.append(sum(rows) / len(rows))
    return torch.tensor(sum(pair_losses) / len(pair_losses), dtype=torch.float64)


def test_dino_loss_two_global_two_local_matches_reference():
    student = [_randn(4, 7, seed=30 + s, requires_grad=True) for s in range(4)]
    teacher = [_randn(4, 7, seed=40 + s, requires_grad=True) for s in range(2)]
    centre = 0.3 * _randn(1, 7, seed=50)
    loss = dino_loss(student, teacher, centre, student_temp=0.1, teacher_temp=0.04)
    torch.testing.assert_close(loss, reference_dino(student, teacher, centre, 0.1, 0.04))
    torch.testing.assert_close(
        dino_loss(student, teacher, centre, 0.2, 0.07),
        reference_dino(student, teacher, centre, 0.2, 0.07),
    )
    loss.backward()
    assert all(t.grad is None for t in teacher)
    assert all(s.grad is not None and s.grad.abs().sum() > 0 for s in student)


def test_dino_loss_refuses_bad_crop_lists():
    t = [torch.randn(2, 3), torch.randn(2, 3)]
    with pytest.raises(ValueError):
        dino_loss(t[:1], t, torch.zeros(1, 3))
    with pytest.raises(ValueError):
        dino_loss(t[:1], t[:1], torch.zeros(1, 3))


def test_update_centre_arithmetic():
    centre = _randn(1, 5, seed=60)
    out = _randn(6, 5, seed=61, requires_grad=True)
    new = update_centre(centre, out, momentum=0.8)
    mean = [sum(float(out[r, c].detach()) for r in range(6)) / 6 for c in range(5)]
    expect = torch.tensor([[0.8 * float(centre[0, c]) + 0.2 * mean[c] for c in range(5)]])
    torch.testing.assert_close(new, expect.double())
    assert new.shape == (1, 5) and not new.requires_grad
    assert new.data_ptr() != centre.data_ptr()
    torch.testing.assert_close(centre, _randn(1, 5, seed=60))  # input untouched


def test_dino_head_shape_frozen_magnitude_and_round_trip():
    torch.manual_seed(0)
    head = DINOHead(16, out_dim=32, hidden=24, bottleneck=8)
    x = torch.randn(5, 16)
    out = head(x)
    assert out.shape == (5, 32)
    g = head.last.parametrizations.weight.original0
    assert not g.requires_grad
    torch.testing.assert_close(g, torch.ones_like(g))
    torch.testing.assert_close(torch.linalg.norm(head.last.weight, dim=1), torch.ones(32))
    assert out.abs().max() <= 1.0 + 1e-5  # cosines

    opt = torch.optim.SGD([p for p in head.parameters() if p.requires_grad], lr=1.0)
    head(x).square().sum().backward()
    opt.step()
    torch.testing.assert_close(g, torch.ones_like(g))
    torch.testing.assert_close(torch.linalg.norm(head.last.weight, dim=1), torch.ones(32))

    for twin in (copy.deepcopy(head), momentum_copy(head)):
        torch.testing.assert_close(twin(x), head(x))
        assert not twin.last.parametrizations.weight.original0.requires_grad
    teacher = momentum_copy(head)
    assert all(not p.requires_grad for p in teacher.parameters())
    ema_update(teacher, head, 0.5)
    torch.testing.assert_close(teacher(x), head(x))

    torch.manual_seed(1)
    fresh = DINOHead(16, out_dim=32, hidden=24, bottleneck=8)
    assert set(fresh.state_dict()) == set(head.state_dict())
    fresh.load_state_dict(head.state_dict())
    torch.testing.assert_close(fresh(x), head(x))
    assert not fresh.last.parametrizations.weight.original0.requires_grad


# --------------------------------------------------------------------------- DDP branches

# A real two-process gloo run costs ~12 s here (each child imports torch), so the collectives are
# replaced by fakes that play rank 1 of 2 against a recorded rank 0.


def _rank_batch(rank):
    return _randn(3, 4, seed=70 + rank).float(), _randn(3, 2, seed=80 + rank).float()


def _fake_two_ranks(monkeypatch, module, rank0_tensors):
    """Make ``module`` see a 2-rank group where this process is rank 1; rank 0 sends the tensors
    of ``rank0_tensors`` (consumed in call order)."""
    pending = list(rank0_tensors)

    def all_gather(parts, t):
        assert len(parts) == 2 and not t.requires_grad
        parts[0].copy_(pending.pop(0))
        parts[1].copy_(t)

    def all_reduce(t, op=dist.ReduceOp.SUM):
        assert op == dist.ReduceOp.SUM
        t.add_(pending.pop(0))

    monkeypatch.setattr(module, "is_distributed", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda group=None: 2)
    monkeypatch.setattr(dist, "all_gather", all_gather)
    monkeypatch.setattr(dist, "all_reduce", all_reduce)
    return pending


def test_queue_enqueue_gathers_all_ranks_in_rank_order(monkeypatch):
    from seafloor_ssl.training import state

    (k0, xy0), (k1, xy1) = _rank_batch(0), _rank_batch(1)
    nan = torch.full((1, 2), math.nan)
    n0 = torch.nn.functional.normalize(k0, dim=1)
    pending = _fake_two_ranks(monkeypatch, state, [n0, xy0, n0[:1], nan])
    q = Queue(5, 4, seed=0)
    q.enqueue(k1.requires_grad_(True), xy1)
    q.enqueue(k1[:1].detach())  # xy None
    assert pending == []
    monkeypatch.undo()

    single = Queue(5, 4, seed=0)
    single.enqueue(torch.cat([k0, k1.detach()]), torch.cat([xy0, xy1]))
    single.enqueue(torch.cat([k0[:1], k1[:1].detach()]))
    torch.testing.assert_close(q.keys, single.keys)
    torch.testing.assert_close(q.xy, single.xy, equal_nan=True)
    assert int(q.ptr) == int(single.ptr) == (6 + 2) % 5


def test_update_centre_averages_over_ranks(monkeypatch):
    from seafloor_ssl.training import state

    (k0, _), (k1, _) = _rank_batch(0), _rank_batch(1)
    pending = _fake_two_ranks(monkeypatch, state, [k0.mean(0, keepdim=True)])
    centre = torch.ones(1, 4)
    new = update_centre(centre, k1, momentum=0.5)
    assert pending == []
    monkeypatch.undo()
    mean = torch.cat([k0, k1]).mean(0, keepdim=True)
    torch.testing.assert_close(new, 0.5 * centre + 0.5 * mean)
