"""The trainer's data side: manifest checks, JPEG loading and decoding, the batch stream, and the
batched augmentations (CPU; the CUDA paths are checked where a GPU is present)."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from seafloor_ssl.data import augment as A
from seafloor_ssl.data.manifest import Manifest, ManifestError, load_manifest
from seafloor_ssl.data.store import BatchSource, ImageStore, decode_cpu, decode_gpu, pad_batch

from pipeline.build import build
from pipeline.catalog import load_catalog
from pipeline.manifest import file_sha256
from pipeline.synth import SynthConfig, generate

CUDA = torch.cuda.is_available()


@pytest.fixture(scope="module")
def manifests(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ssl") / "site"
    generate(SynthConfig(out=root, dives=2, images_per_dive=40, seed=1, faults=False, workers=2))
    build(load_catalog(root / "catalog.yaml"), workers=2, log=lambda *_: None)
    return root / "manifests"


@pytest.fixture(scope="module")
def manifest(manifests) -> Manifest:
    return load_manifest(manifests / "pairs.parquet")


@pytest.fixture(scope="module")
def jpegs(manifest) -> ImageStore:
    return ImageStore.open(manifest)


def copy_manifests(src: Path, dst: Path) -> Path:
    """The published files only (not the build cache), as a user would copy them."""
    dst.mkdir(parents=True)
    for name in ("locations.parquet", "pairs.parquet"):
        shutil.copy2(src / name, dst / name)
    shutil.copytree(src / "images", dst / "images")
    return dst


def small_jpegs(sizes: list[tuple[int, int]], seed: int = 0) -> list[bytes]:
    rng = np.random.default_rng(seed)
    out = []
    for h, w in sizes:
        arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="JPEG", quality=90)
        out.append(buf.getvalue())
    return out


# -- manifest --------------------------------------------------------------------------------

def test_load_manifest(manifests, manifest):
    loc = pq.read_table(manifests / "locations.parquet").sort_by("idx")
    pairs = pq.read_table(manifests / "pairs.parquet")
    meta = {k.decode(): v.decode() for k, v in pq.read_schema(manifests / "pairs.parquet").metadata.items()}
    m = manifest
    assert m.n == loc.num_rows == 80
    # every file is read from the generation the pairs link resolves to
    real = (manifests / "pairs.parquet").resolve().parent
    assert real != manifests and real.parent.name == "generations"
    assert m.folder == real and m.locations_path == real / "locations.parquet"
    assert m.image_id.dtype == object and m.image_id.tolist() == loc.column("image_id").to_pylist()
    assert m.dive.tolist() == [s.split("/")[0] for s in m.image_id]
    np.testing.assert_array_equal(m.xy[:, 0], loc.column("easting").to_numpy())
    np.testing.assert_array_equal(m.xy[:, 1], loc.column("northing").to_numpy())
    assert m.xy.dtype == np.float64 and m.xy.shape == (80, 2)
    lo, hi = m.xy.min(0), m.xy.max(0)
    np.testing.assert_allclose(m.centre, (lo + hi) / 2)
    assert m.extent_m == pytest.approx(max(max(hi - lo), 1.0))
    c = m.xy_centred()
    assert c.dtype == np.float32 and np.abs(c).max() <= m.extent_m / 2 + 1e-3
    ts = loc.column("timestamp").to_pylist()
    np.testing.assert_allclose(m.timestamp_s, [t.timestamp() for t in ts])
    assert m.label.tolist() == loc.column("label").to_pylist()
    policy = json.loads(meta["pair_policy"])
    assert m.pair_policy == policy and m.r_loc_m == policy["r_loc_m"]
    assert m.locations_sha256 == meta["locations_sha256"]
    np.testing.assert_array_equal(m.anchor, pairs.column("anchor").to_numpy())
    np.testing.assert_array_equal(m.positive, pairs.column("positive").to_numpy())
    assert m.anchor.dtype == np.int32 and m.positive.dtype == np.int32
    assert m.distance_m.dtype == np.float32 and len(m.anchor) == pairs.num_rows > 0
    assert (m.anchor < m.positive).all()
    assert m.stores == {d: real / "images" / f"{d}.arrow" for d in ("dive01", "dive02")}
    assert m.identity == json.loads(meta["dataset"]) and len(m.digest) == 64


def test_mismatched_locations_refused(manifests, tmp_path):
    folder = copy_manifests(manifests, tmp_path / "m")
    loc = pq.read_table(folder / "locations.parquet")
    # the same rows with a different position for one image: a different build's file
    east = loc.column("easting").to_numpy().copy()
    east[0] += 1.0
    loc = loc.set_column(loc.schema.get_field_index("easting"), "easting", pa.array(east))
    pq.write_table(loc, folder / "locations.parquet")
    expected = file_sha256(manifests / "locations.parquet")
    found = file_sha256(folder / "locations.parquet")
    with pytest.raises(ManifestError) as err:
        load_manifest(folder / "pairs.parquet")
    msg = str(err.value)
    assert expected in msg and found in msg and "different locations.parquet" in msg
    assert "python -m pipeline build" in msg


def test_missing_files_and_metadata_refused(manifests, tmp_path):
    folder = copy_manifests(manifests, tmp_path / "m")
    with pytest.raises(ManifestError, match="no such file"):
        load_manifest(folder / "nope.parquet")
    (folder / "images" / "dive02.arrow").unlink()
    with pytest.raises(ManifestError, match="dive02.arrow"):
        load_manifest(folder / "pairs.parquet")
    (folder / "locations.parquet").unlink()
    with pytest.raises(ManifestError, match="does not exist"):
        load_manifest(folder / "pairs.parquet")
    pairs = pq.read_table(manifests / "pairs.parquet")
    meta = dict(pairs.schema.metadata)
    del meta[b"locations_sha256"]
    pq.write_table(pairs.replace_schema_metadata(meta), folder / "bare.parquet")
    with pytest.raises(ManifestError, match="locations_sha256"):
        load_manifest(folder / "bare.parquet")


# -- JPEG bytes and decoding -----------------------------------------------------------------

def test_the_store_holds_every_located_image_in_idx_order(manifest, jpegs):
    assert len(jpegs) == manifest.n
    for dive, store in manifest.stores.items():
        shard = store.with_suffix(".parquet")  # the Parquet shard holds the same bytes
        table = pq.read_table(shard).to_pydict()
        by_id = dict(zip(table["image_id"], table["jpeg"], strict=True))
        for i in np.flatnonzero(manifest.dive == dive):
            assert jpegs[i] == by_id[manifest.image_id[i]]
    assert jpegs[-1] == jpegs[manifest.n - 1] and jpegs[1:3] == [jpegs[1], jpegs[2]]
    with pytest.raises(IndexError):
        jpegs[manifest.n]


def _rewrite_store(path: Path, table: pa.Table) -> None:
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as w:
        w.write_table(table)


def _read_store(path: Path) -> pa.Table:
    """Read into memory, not mapped: the tests rewrite the file afterwards."""
    return pa.ipc.open_file(pa.BufferReader(path.read_bytes())).read_all()


def test_a_store_without_a_located_image_is_refused(manifests, tmp_path):
    folder = copy_manifests(manifests, tmp_path / "m")
    store = folder / "images" / "dive01.arrow"
    table = _read_store(store)
    _rewrite_store(store, table.slice(1))
    m = load_manifest(folder / "pairs.parquet")  # the rows are checked when the store opens
    with pytest.raises(ManifestError, match=table.column("image_id")[0].as_py()):
        ImageStore.open(m)


def test_a_truncated_or_foreign_store_is_refused_with_its_name(manifests, tmp_path):
    folder = copy_manifests(manifests, tmp_path / "m")
    store = folder / "images" / "dive02.arrow"
    data = store.read_bytes()
    store.write_bytes(data[: len(data) // 2])
    m = load_manifest(folder / "pairs.parquet")
    with pytest.raises(ManifestError, match=r"dive02\.arrow: the image file is damaged"):
        ImageStore.open(m)
    store.write_bytes(b"not arrow at all")
    with pytest.raises(ManifestError, match="damaged"):
        ImageStore.open(m)
    table = _read_store(folder / "images" / "dive01.arrow")
    _rewrite_store(store, table.drop_columns(["jpeg"]))
    with pytest.raises(ManifestError, match="column 'jpeg'"):
        ImageStore.open(m)


def test_a_store_spans_record_batches_and_pickles_to_a_worker(manifests, tmp_path):
    import pickle

    folder = copy_manifests(manifests, tmp_path / "m")
    store = folder / "images" / "dive01.arrow"
    table = _read_store(store)
    with pa.OSFile(str(store), "wb") as sink, pa.ipc.new_file(sink, table.schema) as w:
        for batch in table.to_batches(max_chunksize=7):  # several record batches
            w.write_batch(batch)
    m = load_manifest(folder / "pairs.parquet")
    s = ImageStore.open(m)
    by_id = dict(zip(table.column("image_id").to_pylist(), table.column("jpeg").to_pylist(),
                     strict=True))
    for i in np.flatnonzero(m.dive == "dive01"):
        assert s[i] == by_id[m.image_id[i]]
    again = pickle.loads(pickle.dumps(s))
    assert [again[i] for i in range(m.n)] == [s[i] for i in range(m.n)]


def test_decode_cpu_sizes(jpegs):
    imgs = decode_cpu(jpegs[:12])
    for b, im in zip(jpegs[:12], imgs, strict=True):
        pil = Image.open(io.BytesIO(b)).convert("RGB")
        assert im.dtype == torch.uint8 and im.shape == (3, pil.height, pil.width)
        ref = torch.from_numpy(np.array(pil)).permute(2, 0, 1).float()
        assert (im.float() - ref).abs().mean() < 2.0
    varied = small_jpegs([(20, 30), (17, 9), (32, 32)])
    assert [tuple(t.shape) for t in decode_cpu(varied)] == [(3, 20, 30), (3, 17, 9), (3, 32, 32)]
    assert decode_cpu([]) == []


def test_pad_batch():
    g = torch.Generator().manual_seed(0)
    ims = [torch.randint(1, 256, (3, h, w), dtype=torch.uint8, generator=g)
           for h, w in ((5, 7), (8, 3), (6, 6))]
    canvas, sizes = pad_batch(ims)
    assert canvas.shape == (3, 3, 8, 7) and canvas.dtype == torch.uint8
    assert sizes.dtype == torch.int64 and sizes.tolist() == [[5, 7], [8, 3], [6, 6]]
    for i, im in enumerate(ims):
        h, w = im.shape[1:]
        assert torch.equal(canvas[i, :, :h, :w], im)
        assert canvas[i, :, h:].sum() == 0 and canvas[i, :, :, w:].sum() == 0
    same, s2 = pad_batch(ims[:1] * 2)
    assert same.shape == (2, 3, 5, 7) and s2.tolist() == [[5, 7], [5, 7]]


@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_decode_gpu_matches_cpu(jpegs):
    gpu = decode_gpu(jpegs[:8], "cuda")
    for a, b in zip(gpu, decode_cpu(jpegs[:8]), strict=True):
        assert a.is_cuda and a.shape == b.shape
        assert (a.cpu().float() - b.float()).abs().mean() < 2.0


# -- the batch stream ------------------------------------------------------------------------

SIZES = [(12 + i % 3, 16 + i % 5) for i in range(23)]


@pytest.fixture(scope="module")
def tiny() -> list[bytes]:
    return small_jpegs(SIZES, seed=3)


def idx_of(src: BatchSource, epoch: int, **kw) -> list[list[int]]:
    return [b.idx.tolist() for b in src.batches(epoch, **kw)]


def test_batches_cover_epoch_once(tiny):
    src = BatchSource(tiny, 5, device="cpu", workers=0, seed=7, drop_last=False)
    got = idx_of(src, 0)
    assert [len(b) for b in got] == [5, 5, 5, 5, 3] and len(src) == 5
    assert sorted(sum(got, [])) == list(range(23))
    assert sum(got, []) == src.order(0).tolist()
    kept = idx_of(BatchSource(tiny, 5, device="cpu", seed=7), 0)
    assert kept == got[:4]  # drop_last: the same batches without the short one


def test_batches_order_reproducible(tiny):
    a = BatchSource(tiny, 4, device="cpu", seed=1)
    b = BatchSource(tiny, 4, device="cpu", seed=1)
    assert idx_of(a, 3) == idx_of(b, 3)
    assert idx_of(a, 3) != idx_of(a, 4)
    assert idx_of(a, 3) != idx_of(BatchSource(tiny, 4, device="cpu", seed=2), 3)
    assert a.order(3).tolist() == np.random.default_rng((1, 3)).permutation(23).tolist()


def test_batches_skip_resumes_exactly(tiny):
    src = BatchSource(tiny, 4, device="cpu", seed=5)
    full = list(src.batches(2))
    rest = list(src.batches(2, skip=2))
    assert len(rest) == len(full) - 2
    for a, b in zip(full[2:], rest, strict=True):
        assert torch.equal(a.idx, b.idx) and torch.equal(a.canvas, b.canvas)
        assert torch.equal(a.sizes, b.sizes)


def test_batches_rank_slices(tiny):
    world = 3
    per_rank = [idx_of(BatchSource(tiny, 2, device="cpu", seed=9, rank=r, world_size=world), 1)
                for r in range(world)]
    order = np.random.default_rng((9, 1)).permutation(23)
    steps = 23 // (2 * world)
    assert all(len(p) == steps for p in per_rank)
    seen = []
    for s in range(steps):
        glob = sum((per_rank[r][s] for r in range(world)), [])
        assert glob == order[s * 6:(s + 1) * 6].tolist()  # contiguous slices cover the batch
        seen += glob
    assert len(seen) == len(set(seen))  # ranks never share an image
    with pytest.raises(ValueError):
        BatchSource(tiny, 2, device="cpu", rank=3, world_size=3)


def test_batches_extra_and_index_order(tiny):
    extra = (np.arange(23) * 7 + 3) % 23
    src = BatchSource(tiny, 4, device="cpu", seed=0)
    for b in src.batches(0, extra=extra):
        rows = b.idx.tolist() + extra[b.idx.numpy()].tolist()
        assert b.canvas.shape[0] == 8 and b.sizes.shape == (8, 2)
        assert b.sizes.tolist() == [list(SIZES[i]) for i in rows]
        ref, _ = pad_batch(decode_cpu([tiny[i] for i in rows]))
        assert torch.equal(b.canvas, ref)
        assert b.wait_s >= 0
    order = np.array([5, 1, 2, 9, 0, 22, 7, 8])
    assert idx_of(src, 0, index_order=order) == [[5, 1, 2, 9], [0, 22, 7, 8]]
    with pytest.raises(ValueError):
        list(src.batches(0, extra=extra[:5]))


def test_batches_workers_match_in_process(jpegs):
    extra = np.roll(np.arange(len(jpegs)), 1)
    a = list(BatchSource(jpegs, 16, device="cpu", workers=0, seed=4).batches(1, extra=extra))
    b = list(BatchSource(jpegs, 16, device="cpu", workers=2, seed=4).batches(1, extra=extra))
    assert len(a) == len(b) == 5
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x.idx, y.idx) and torch.equal(x.canvas, y.canvas)
        assert torch.equal(x.sizes, y.sizes) and x.canvas.shape == (32, 3, 192, 256)


def test_batches_stop_early(jpegs):
    import multiprocessing

    before = {p.pid for p in multiprocessing.active_children()}
    src = BatchSource(jpegs, 8, device="cpu", workers=2, seed=0)
    it = src.batches(0)
    first = next(it)
    workers = [p for p in multiprocessing.active_children() if p.pid not in before]
    assert len(workers) == 2 and all(p.is_alive() for p in workers)
    # the one batch taken: the first 8 of the epoch's permutation, decoded and padded
    expected = np.random.default_rng((0, 0)).permutation(len(jpegs))[:8]
    assert first.idx.tolist() == expected.tolist()
    ref, sizes = pad_batch(decode_cpu([jpegs[i] for i in expected]))
    assert torch.equal(first.canvas, ref) and torch.equal(first.sizes, sizes)
    it.close()  # shuts the workers down without consuming the epoch
    assert not any(p.is_alive() for p in workers)
    assert {p.pid for p in multiprocessing.active_children()} <= before
    with pytest.raises(StopIteration):
        next(it)


@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_batches_gpu_decode(jpegs):
    extra = np.roll(np.arange(len(jpegs)), 1)
    cpu = list(BatchSource(jpegs, 16, device="cpu", seed=4).batches(0, extra=extra))
    gpu = list(BatchSource(jpegs, 16, device="cuda", seed=4).batches(0, extra=extra))
    for x, y in zip(cpu, gpu, strict=True):
        assert y.canvas.is_cuda and y.sizes.is_cuda and torch.equal(x.idx, y.idx)
        assert torch.equal(x.sizes, y.sizes.cpu())
        assert (x.canvas.float() - y.canvas.cpu().float()).abs().mean() < 2.0


# -- augmentations ---------------------------------------------------------------------------

def test_random_boxes_inside_and_scaled():
    g = torch.Generator().manual_seed(0)
    sizes = torch.tensor([[192, 256], [256, 192], [100, 100], [60, 200]] * 250)
    for scale in ((0.2, 1.0), (0.05, 0.3)):
        boxes = A.random_boxes(sizes, scale=scale, generator=g)
        h, w = sizes[:, 0].float(), sizes[:, 1].float()
        x1, y1, x2, y2 = boxes.unbind(1)
        assert boxes.dtype == torch.float32 and boxes.shape == (1000, 4)
        assert (x1 >= 0).all() and (y1 >= 0).all() and (x2 <= w + 1e-3).all()
        assert (y2 <= h + 1e-3).all()
        frac = (x2 - x1) * (y2 - y1) / (h * w)
        assert frac.min() >= scale[0] - 1e-4 and frac.max() <= scale[1] + 1e-4
        aspect = (x2 - x1) / (y2 - y1)
        assert aspect.min() >= 3 / 4 - 1e-4 and aspect.max() <= 4 / 3 + 1e-4
        if scale[1] < 0.5:  # small boxes always fit: the area is uniform over the range
            assert frac.mean() == pytest.approx(sum(scale) / 2, abs=0.02)


def test_crop_resize_full_box_is_a_resize():
    yy, xx = torch.meshgrid(torch.linspace(0, 2, 24), torch.linspace(0, 2, 32), indexing="ij")
    img = torch.stack([torch.sin(xx + yy), torch.cos(xx - yy), xx / 2]).unsqueeze(0)  # (1,3,24,32)
    # 2x2 samples per bin: an exact 2x downsample, a [1/8, 3/4, 1/8] smoothing at the same size
    half = A.crop_resize(img[..., :, :24], torch.tensor([[0.0, 0.0, 24.0, 24.0]]), 12)
    ref = F.interpolate(img[..., :, :24], size=(12, 12), mode="bilinear", align_corners=False)
    torch.testing.assert_close(half, ref, atol=1e-5, rtol=0)
    same = A.crop_resize(img[..., :24, :24], torch.tensor([[0.0, 0.0, 24.0, 24.0]]), 24)
    # (at the border the outer sample is clamped: off by about a quarter of a pixel step)
    assert (same - img[..., :24, :24]).abs().max() < 0.03
    for out in (48, 20):
        got = A.crop_resize(img, torch.tensor([[0.0, 0.0, 32.0, 24.0]]), out)
        ref = F.interpolate(img, size=(out, out), mode="bilinear", align_corners=False)
        assert (got - ref).abs().max() < 0.03
    # a sub-box is the same resize of the sub-image
    got = A.crop_resize(img, torch.tensor([[8.0, 4.0, 24.0, 20.0]]), 8)
    ref = F.interpolate(img[..., 4:20, 8:24], size=(8, 8), mode="bilinear", align_corners=False)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)


def test_replicate_edges_fills_padding():
    canvas, sizes = pad_batch([torch.full((3, 4, 5), 7, dtype=torch.uint8),
                               torch.arange(3 * 6 * 3, dtype=torch.uint8).view(3, 6, 3)])
    out = A.replicate_edges(canvas, sizes)
    assert torch.equal(out[0, :, :4, :5], canvas[0, :, :4, :5]) and (out[0] == 7).all()
    assert torch.equal(out[1, :, :, 3:], out[1, :, :, 2:3].expand(3, 6, 2))


def test_flip_rotate_matches_torch():
    g = torch.Generator().manual_seed(1)
    x = torch.rand((16, 3, 9, 9), generator=g)
    hflip = torch.rand(16, generator=g) < 0.5
    k = torch.randint(0, 4, (16,), generator=g)
    out = A.flip_rotate(x, hflip, k)
    for i in range(16):
        ref = x[i].flip(-1) if hflip[i] else x[i]
        assert torch.equal(out[i], torch.rot90(ref, int(k[i]), dims=(-2, -1)))
    assert torch.equal(x, torch.rand((16, 3, 9, 9), generator=g.manual_seed(1)))  # untouched


@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("k", [0, 1, 2, 3])
def test_transform_convention_painted_rectangle(flip, k):
    h, w = 30, 50
    img = torch.zeros((1, h, w))
    x1, y1, x2, y2 = 7, 4, 19, 11  # pixels [x1, x2) x [y1, y2)
    img[:, y1:y2, x1:x2] = 1
    t = torch.rot90(img.flip(-1) if flip else img, k, dims=(-2, -1))
    ys, xs = torch.nonzero(t[0], as_tuple=True)
    truth = [xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1]
    got = A.transform_boxes(torch.tensor([[x1, y1, x2, y2]], dtype=torch.float32),
                            torch.tensor([[h, w]]), torch.tensor([flip]), torch.tensor([k]))
    assert got[0].tolist() == truth
    assert A.transformed_sizes(torch.tensor([[h, w]]), torch.tensor([k]))[0].tolist() == list(t.shape[1:])


def _unnormalise(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(A.MEAN).view(1, 3, 1, 1)
    std = torch.tensor(A.STD).view(1, 3, 1, 1)
    return x * std + mean


def test_sp_crops_in_transformed_frame():
    # every pixel paints its own original position: R = x / w, G = y / h (pixel centres)
    shapes = [(60, 80), (80, 60), (64, 64), (50, 90)] * 4
    ims = []
    for h, w in shapes:
        yy, xx = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
        ims.append(torch.stack([xx / w, yy / h, torch.full_like(xx, 0.5)]).mul(255).round()
                   .to(torch.uint8))
    canvas, sizes = pad_batch(ims)
    g = torch.Generator().manual_seed(3)
    c1, c2, b1, b2, (hflip, rot_k) = A.sp_crops(canvas, sizes, 32, g, return_transform=True)
    assert c1.shape == c2.shape == (16, 3, 32, 32) and b1.shape == b2.shape == (16, 4)
    tsizes = A.transformed_sizes(sizes, rot_k)
    for crop, box in ((c1, b1), (c2, b2)):
        frac = box[:, 2] * box[:, 3] / (sizes[:, 0] * sizes[:, 1])
        assert frac.min() >= 0.05 - 1e-4 and frac.max() <= 0.3 + 1e-4
        assert (box[:, 0] - box[:, 2] / 2 >= -1e-3).all()
        assert (box[:, 0] + box[:, 2] / 2 <= tsizes[:, 1] + 1e-3).all()
        assert (box[:, 1] + box[:, 3] / 2 <= tsizes[:, 0] + 1e-3).all()
        raw = _unnormalise(crop)
        for i, (h, w) in enumerate(shapes):
            # the painted position at the crop's centre, carried into the transformed frame,
            # is the box centre
            cx = raw[i, 0, 15:17, 15:17].mean().item() * w
            cy = raw[i, 1, 15:17, 15:17].mean().item() * h
            pt = A.transform_boxes(torch.tensor([[cx, cy, cx, cy]]), sizes[i:i + 1],
                                   hflip[i:i + 1], rot_k[i:i + 1])[0, :2]
            assert torch.allclose(pt, box[i, :2], atol=1.0), (i, pt, box[i])
            # the crop is the box's content cut from the transformed image itself
            t = ims[i].float().div(255)
            t = torch.rot90(t.flip(-1) if hflip[i] else t, int(rot_k[i]), dims=(-2, -1))
            xyxy = torch.cat([box[i, :2] - box[i, 2:] / 2, box[i, :2] + box[i, 2:] / 2])[None]
            ref = A.crop_resize(t[None], xyxy, 32)
            torch.testing.assert_close(raw[i:i + 1], ref, atol=1e-4, rtol=0)
    assert len({(bool(f), int(k)) for f, k in zip(hflip, rot_k, strict=True)}) > 3


def test_views_shapes_finite_deterministic(jpegs):
    canvas, sizes = pad_batch(decode_cpu(jpegs[:6]) + decode_cpu(small_jpegs([(150, 200)])))
    out = []
    for _ in range(2):
        g = torch.Generator().manual_seed(11)
        v1 = A.simclr_views(canvas, sizes, 64, g)
        v2 = A.simclr_views(canvas, sizes, 64, g)
        sp = A.sp_crops(canvas, sizes, 32, g, colour=0.5)
        out.append((v1, v2, *sp))
    for a, b in zip(*out, strict=True):
        assert torch.equal(a, b)  # same generator seed, same views
    v1, v2, c1, c2, b1, b2 = out[0]
    assert v1.shape == v2.shape == (7, 3, 64, 64) and v1.dtype == torch.float32
    assert c1.shape == c2.shape == (7, 3, 32, 32) and b1.shape == (7, 4)
    for t in out[0]:
        assert torch.isfinite(t).all()
    assert not torch.equal(v1, v2)  # two calls, two different views
    assert v1.min() >= (0 - max(A.MEAN)) / min(A.STD) - 1e-4
    assert v1.max() <= (1 - min(A.MEAN)) / min(A.STD) + 1e-4


def test_colour_and_blur_switches():
    g = torch.Generator().manual_seed(0)
    x = torch.rand((8, 3, 16, 16), generator=g)
    assert torch.equal(A.colour_jitter(x, 1.0, g, p=0.0, p_gray=0.0), x)
    gray = A.colour_jitter(x, 1.0, g, p=0.0, p_gray=1.0)
    assert torch.allclose(gray[:, 0], gray[:, 1]) and torch.allclose(gray[:, 1], gray[:, 2])
    jit = A.colour_jitter(x, 1.0, g, p=1.0, p_gray=0.0)
    assert jit.min() >= 0 and jit.max() <= 1 and not torch.allclose(jit, x)
    torch.testing.assert_close(A.gaussian_blur(x, p=0.0, generator=g), x, atol=1e-6, rtol=0)
    flat = torch.full((4, 3, 20, 20), 0.3)
    torch.testing.assert_close(A.gaussian_blur(flat, p=1.0, generator=g), flat, atol=1e-6, rtol=0)
    blurred = A.gaussian_blur(x, p=1.0, sigma=(1.5, 2.0), generator=g)
    assert blurred.std() < x.std() * 0.6


def test_a_store_cut_short_after_it_was_opened_is_one_message(manifests, tmp_path):
    folder = copy_manifests(manifests, tmp_path / "m")
    m = load_manifest(folder / "pairs.parquet")
    s = ImageStore.open(m)
    last = int(np.argmax(s.offset * (s.file == s.file[0])))  # the last image of that file
    with open(s.paths[int(s.file[0])], "r+b") as f:
        f.truncate(int(s.offset[last]) + 1)
    with pytest.raises(ManifestError, match="shorter than when it was opened"):
        s[last]
