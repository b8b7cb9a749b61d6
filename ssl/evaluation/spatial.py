"""SP's spatial tasks on frozen features (Shen et al. 2026, arXiv 2605.09963).

The encoder is frozen throughout; only small scikit-learn probes are fitted, on images of the
training side, and scored on images of the test side (so a probe never sees a test image).

1. :func:`position_scale_task` -- relative position and scale of two local crops. Per image,
   ``pairs_per_image`` crop pairs are drawn with :func:`ssl.augment.sp_crops` exactly as the SP
   objective draws them (a random whole-image flip / quarter turn, two boxes of 5-30 % of the
   area, each crop resized to ``image_size // 2``), and the targets are
   :func:`ssl.objectives.sp.sp_targets`: ``dx = (cx2 - cx1) / w1``, ``dy = (cy2 - cy1) / h1``,
   ``log_w = log(w2 / w1)``, ``log_h = log(h2 / h1)`` in the frame the network sees. Probe input:
   ``concat(f1, f2)`` of the two crops' pooled features, what the SP head reads (adding
   ``f1 * f2`` did not help a ridge probe on the demo site, at 1.5x the cost). Features are
   standardised and a ridge regression is fitted with its penalty chosen per target by
   efficient leave-one-out (``RidgeCV``). Reported: R^2 and MAE per target, their means, and the same
   probe fitted on targets shuffled across the training pairs (``r2_chance``, ``mae_chance``;
   R^2 near 0 or below), plus the MAE of always predicting the training mean.

2. :func:`jigsaw_task` -- the whole frame is resized to a ``3T x 3T`` square, ``T =
   max(16, image_size // 3)``, and cut into 3 x 3 tiles (row-major, tile ``k`` at row ``k // 3``
   and column ``k % 3``). A permutation ``p`` from a fixed set of 100 with maximal Hamming
   distance (:func:`hamming_permutations`, always built with :data:`PERMUTATION_SEED`) shuffles
   them: grid cell ``k`` of the shuffled image shows tile ``p[k]`` (:func:`permute_tiles`;
   :func:`unpermute_tiles` puts them back). Each tile is encoded on its own at ``T x T``, so
   the 9 tile features of an image are computed once and reordered for every permutation.
   Probe input: the 9 tile features in shuffled order, each reduced by a PCA to at most
   64 components (fitted on training tiles; this keeps the 100-way probe small), concatenated;
   probe: multinomial logistic regression predicting the permutation's index. Reported:
   permutation accuracy, chance ``1 / n_permutations``, the share of tiles put back in their
   place. Then habitat: a logistic regression on the full-image features of the correctly
   assembled training images classifies the test images as they are (``true``), with their
   tiles shuffled (``shuffled``) and put back with the *predicted* permutation
   (``reassembled``); macro-F1 of each.

Both tasks cap the images they use (``max_train_images`` = 400, ``max_test_images`` = 200 by
default, a seeded random subset of each side) so that together they take under a minute for a
ResNet-18 at 96 px on two CPU cores (about 2,000 crops / tiles / frames to encode per side and
task). The jigsaw set of permutations is built once per process (a few seconds). Randomness comes from ``seed`` only: the subsets and the
jigsaw permutations from ``numpy.random.default_rng``, the crops from a
:class:`torch.Generator` on the device.
"""

from __future__ import annotations

import functools
import itertools
import time
import warnings
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression, RidgeCV
from sklearn.metrics import f1_score, r2_score
from sklearn.preprocessing import StandardScaler

from ..data import augment
from ..data.store import decode_cpu, decode_gpu, pad_batch
from ..labels import has_label
from ..objectives.sp import sp_targets
from ..training.features import full_frames

TARGETS = ("dx", "dy", "log_w", "log_h")
GRID = 3
N_TILES = GRID * GRID
PERMUTATION_SEED = 0  # the jigsaw permutation set is the same whatever the task's seed
MAX_TRAIN_IMAGES = 400
MAX_TEST_IMAGES = 200
RIDGE_ALPHAS = tuple(float(a) for a in np.logspace(-2, 5, 15))
TILE_PCA_DIM = 64


# -- helpers ---------------------------------------------------------------------------------

def _subsample(idx, cap: int | None, rng: np.random.Generator) -> np.ndarray:
    """``idx`` as sorted int64, or a seeded random subset of ``cap`` of them (sorted)."""
    idx = np.sort(np.asarray(idx, dtype=np.int64).reshape(-1))
    if cap is not None and len(idx) > cap:
        idx = np.sort(rng.choice(idx, size=int(cap), replace=False))
    return idx


def _decode(jpegs: Sequence[bytes], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    imgs = decode_gpu(jpegs, device) if device.type == "cuda" else decode_cpu(jpegs)
    canvas, sizes = pad_batch(imgs)
    return canvas.to(device), sizes.to(device)


@torch.no_grad()
def _encode(encoder, x: torch.Tensor, batch_size: int) -> np.ndarray:
    """encoder.features of normalised images x, batched; float32 numpy (n, C)."""
    bf16 = x.device.type == "cuda"
    out = []
    for i in range(0, x.shape[0], batch_size):
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
            out.append(encoder.features(x[i:i + batch_size]).float().cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, 0), np.float32)


class _Frozen:
    """``with _Frozen(encoder, device) as enc``: on the device, in eval mode, mode restored."""

    def __init__(self, encoder, device: torch.device):
        self.encoder, self.device = encoder, device

    def __enter__(self):
        self.was_training = bool(getattr(self.encoder, "training", False))
        self.encoder = self.encoder.to(self.device).eval()
        return self.encoder

    def __exit__(self, *exc) -> None:
        self.encoder.train(self.was_training)


def _known(labels, idx: np.ndarray) -> np.ndarray:
    """The entries of ``idx`` whose image is labelled (:func:`labels.has_label`)."""
    return np.asarray([i for i in idx.tolist() if has_label(labels[i])], dtype=np.int64)


# -- 1. relative position and scale ------------------------------------------------------------

@torch.no_grad()
def _pair_data(encoder, jpegs: Sequence[bytes], idx: np.ndarray, crop_size: int,
               pairs_per_image: int, generator: torch.Generator, device: torch.device,
               batch_images: int) -> tuple[np.ndarray, np.ndarray]:
    """Probe inputs (n_pairs, 2C) and sp_targets (n_pairs, 4), pairs of image i contiguous."""
    xs, ys = [], []
    for s in range(0, len(idx), batch_images):
        rows = idx[s:s + batch_images].tolist()
        canvas, sizes = _decode([jpegs[r] for r in rows], device)
        # one call on each image repeated pairs_per_image times (rows b * pairs + j): a pair per
        # row, each with its own whole-image flip / turn, as in training
        c1, c2, b1, b2 = augment.sp_crops(canvas.repeat_interleave(pairs_per_image, 0),
                                          sizes.repeat_interleave(pairs_per_image, 0),
                                          crop_size, generator)
        f = _encode(encoder, torch.cat([c1, c2]), 2 * len(c1)).reshape(2, len(c1), -1)
        xs.append(np.concatenate([f[0], f[1]], axis=1))
        ys.append(sp_targets(b1.float(), b2.float()).cpu().numpy())
    return np.concatenate(xs), np.concatenate(ys).astype(np.float64)


def _ridge_scores(x_tr, y_tr, x_te, y_te) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-target R^2, MAE and the chosen alphas of a standardised RidgeCV probe.

    Test features are clipped to the training side's range after standardising: a unit that is
    almost never active on the training side (standard deviation ~1e-4, common among a briefly
    trained ResNet's ReLU outputs) and active on a test crop would otherwise reach hundreds of
    standard deviations and throw the prediction far off (R^2 of -16 was seen), which measures
    that unit, not the features' spatial information."""
    scaler = StandardScaler().fit(x_tr)
    z_tr = scaler.transform(x_tr)
    z_te = np.clip(scaler.transform(x_te), z_tr.min(axis=0), z_tr.max(axis=0))
    ridge = RidgeCV(alphas=RIDGE_ALPHAS, alpha_per_target=True, gcv_mode="svd")
    ridge.fit(z_tr, y_tr)
    pred = ridge.predict(z_te).reshape(y_te.shape)
    r2 = r2_score(y_te, pred, multioutput="raw_values")
    mae = np.abs(pred - y_te).mean(axis=0)
    return r2, mae, np.atleast_1d(ridge.alpha_)


def _per_target(values) -> dict[str, float]:
    return {t: float(v) for t, v in zip(TARGETS, values, strict=True)}


def position_scale_task(encoder, jpegs: Sequence[bytes], image_size: int, device,
                        train_idx, test_idx, pairs_per_image: int = 4, seed: int = 0, *,
                        max_train_images: int | None = MAX_TRAIN_IMAGES,
                        max_test_images: int | None = MAX_TEST_IMAGES,
                        batch_images: int = 64) -> dict:
    """Relative position and scale of crop pairs from frozen features (see the module doc).

    ``train_idx`` / ``test_idx`` index ``jpegs``; at most ``max_*_images`` of each are used (a
    random subset drawn from ``seed``; ``None`` for all). Returns a JSON-ready dict.
    """
    t0 = time.perf_counter()
    device = torch.device(device)
    if pairs_per_image < 1:
        raise ValueError(f"pairs_per_image must be >= 1, got {pairs_per_image}")
    rng = np.random.default_rng((seed, 1))
    tr = _subsample(train_idx, max_train_images, rng)
    te = _subsample(test_idx, max_test_images, rng)
    if not len(tr) or not len(te):
        raise ValueError(f"position_scale_task needs train and test images, got {len(tr)} and "
                         f"{len(te)}")
    crop_size = max(8, int(image_size) // 2)
    gen = torch.Generator(device=device).manual_seed(int(seed))
    with _Frozen(encoder, device) as enc:
        x, y = _pair_data(enc, jpegs, np.concatenate([tr, te]), crop_size, pairs_per_image, gen,
                          device, batch_images)
    n_tr = len(tr) * pairs_per_image
    x_tr, y_tr, x_te, y_te = x[:n_tr], y[:n_tr], x[n_tr:], y[n_tr:]
    r2, mae, alphas = _ridge_scores(x_tr, y_tr, x_te, y_te)
    y_shuf = y_tr[np.random.default_rng((seed, 2)).permutation(len(y_tr))]
    r2_c, mae_c, _ = _ridge_scores(x_tr, y_shuf, x_te, y_te)
    mae_mean = np.abs(y_te - y_tr.mean(axis=0)).mean(axis=0)
    return {
        "n_train_images": int(len(tr)), "n_test_images": int(len(te)),
        "n_train_pairs": int(n_tr), "n_test_pairs": int(len(y_te)),
        "crop_size": crop_size, "probe": "ridge on standardised concat(f1, f2)",
        "alpha": _per_target(alphas if len(alphas) == 4 else np.repeat(alphas, 4)),
        "r2": _per_target(r2), "r2_mean": float(r2.mean()),
        "mae": _per_target(mae), "mae_mean": float(mae.mean()),
        "r2_chance": _per_target(r2_c), "r2_chance_mean": float(r2_c.mean()),
        "mae_chance": _per_target(mae_c),
        "mae_predict_mean": _per_target(mae_mean),
        "target_std": _per_target(y_te.std(axis=0)),
        "seconds": round(time.perf_counter() - t0, 2),
    }


# -- 2. jigsaw -----------------------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def _all_permutations() -> np.ndarray:
    """All 9! permutations of range(9), lexicographic, int8 (362880, 9)."""
    out = np.array(list(itertools.permutations(range(N_TILES))), dtype=np.int8)
    out.flags.writeable = False
    return out


@functools.lru_cache(maxsize=8)
def _hamming_set(n: int, seed: int) -> np.ndarray:
    perms = _all_permutations()
    total = len(perms)
    first = int(np.random.default_rng(seed).integers(total))
    chosen = [first]
    dist = (perms != perms[first]).sum(axis=1, dtype=np.int64)
    min_d, sum_d = dist.copy(), dist.copy()
    weight = N_TILES * n + 1  # > any sum of distances: min first, sum only breaks ties
    for _ in range(n - 1):
        j = int(np.argmax(min_d * weight + sum_d))  # chosen ones have min_d 0: never again
        chosen.append(j)
        dist = (perms != perms[j]).sum(axis=1, dtype=np.int64)
        np.minimum(min_d, dist, out=min_d)
        sum_d += dist
    out = perms[chosen].astype(np.int64)
    out.flags.writeable = False
    return out


def hamming_permutations(n: int = 100, seed: int = PERMUTATION_SEED) -> np.ndarray:
    """``n`` permutations of the 9 tiles with maximal Hamming distance, int64 (n, 9).

    Greedy max-min selection over all 9! permutations (Noroozi & Favaro 2016, with their mean
    distance as the tie-break): start from a permutation drawn from ``seed``, then repeatedly add
    the permutation whose minimum Hamming distance to the chosen set is largest; ties go to the
    largest summed distance, then to the first in lexicographic order. Deterministic; cached.
    """
    n = int(n)
    if not 1 <= n <= len(_all_permutations()):
        raise ValueError(f"n must be in 1..{len(_all_permutations())}, got {n}")
    return _hamming_set(n, int(seed)).copy()


def min_hamming_distance(perms: np.ndarray) -> int:
    """The smallest Hamming distance between two distinct rows of ``perms`` (n, 9)."""
    perms = np.asarray(perms)
    if len(perms) < 2:
        return N_TILES
    d = (perms[:, None, :] != perms[None, :, :]).sum(-1)
    d[np.diag_indices(len(perms))] = N_TILES + 1
    return int(d.min())


def _tiles(images: torch.Tensor) -> torch.Tensor:
    """(B, C, 3T, 3T) -> (B, 9, C, T, T), tile k = row k // 3, column k % 3."""
    b, c, h, w = images.shape
    if h % GRID or w % GRID:
        raise ValueError(f"image sides must be multiples of {GRID}, got {h}x{w}")
    th, tw = h // GRID, w // GRID
    t = images.reshape(b, c, GRID, th, GRID, tw).permute(0, 2, 4, 1, 3, 5)
    return t.reshape(b, N_TILES, c, th, tw)


def _untiles(tiles: torch.Tensor) -> torch.Tensor:
    """(B, 9, C, T, T) -> (B, C, 3T, 3T), the inverse of :func:`_tiles`."""
    b, _, c, th, tw = tiles.shape
    t = tiles.reshape(b, GRID, GRID, c, th, tw).permute(0, 3, 1, 4, 2, 5)
    return t.reshape(b, c, GRID * th, GRID * tw)


def _perm_tensor(perms, b: int, device: torch.device) -> torch.Tensor:
    p = torch.as_tensor(np.asarray(perms), dtype=torch.int64, device=device)
    if p.ndim == 1:
        p = p.expand(b, -1)
    if p.shape != (b, N_TILES):
        raise ValueError(f"perms must be (9,) or ({b}, 9), got {tuple(p.shape)}")
    return p


def permute_tiles(images: torch.Tensor, perms) -> torch.Tensor:
    """Shuffle the 3x3 tiles: cell k of image i shows its tile ``perms[i, k]`` (or ``perms[k]``).

    ``images`` (B, C, H, W) with H and W multiples of 3.
    """
    t = _tiles(images)
    p = _perm_tensor(perms, t.shape[0], t.device)
    return _untiles(t[torch.arange(t.shape[0], device=t.device)[:, None], p])


def unpermute_tiles(images: torch.Tensor, perms) -> torch.Tensor:
    """Put tiles shuffled by :func:`permute_tiles` with ``perms`` back in their place."""
    t = _tiles(images)
    p = _perm_tensor(perms, t.shape[0], t.device)
    return _untiles(t[torch.arange(t.shape[0], device=t.device)[:, None], torch.argsort(p, 1)])


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                         antialias=True)


def _draw_permutations(n_images: int, per_image: int, n_perms: int,
                       rng: np.random.Generator) -> np.ndarray:
    """(n_images, per_image) permutation indices, every index used equally often (+-1)."""
    k = n_images * per_image
    return rng.permutation(np.arange(k) % n_perms).reshape(n_images, per_image)


def _macro_f1(y_true, y_pred) -> float:
    return float(f1_score(y_true, y_pred, average="macro", zero_division=0))


def jigsaw_task(encoder, jpegs: Sequence[bytes], image_size: int, device, train_idx, test_idx,
                labels=None, seed: int = 0, n_permutations: int = 100, *,
                train_perms_per_image: int = 10, test_perms_per_image: int = 4,
                max_train_images: int | None = MAX_TRAIN_IMAGES,
                max_test_images: int | None = MAX_TEST_IMAGES,
                batch_images: int = 64) -> dict:
    """3x3 jigsaw from frozen tile features, and habitat after reassembly (see the module doc).

    ``labels``: object array aligned with ``jpegs`` (None where unknown) for the habitat part;
    without it, or without two known classes on the training side, those entries are None.
    The habitat part uses each test image's first permutation. Returns a JSON-ready dict.
    """
    t0 = time.perf_counter()
    device = torch.device(device)
    perms = hamming_permutations(n_permutations, PERMUTATION_SEED)
    rng = np.random.default_rng((seed, 3))
    tr = _subsample(train_idx, max_train_images, rng)
    te = _subsample(test_idx, max_test_images, rng)
    if not len(tr) or not len(te):
        raise ValueError(f"jigsaw_task needs train and test images, got {len(tr)} and {len(te)}")
    tile = max(16, int(image_size) // GRID)
    side = GRID * tile
    p_tr = _draw_permutations(len(tr), train_perms_per_image, n_permutations, rng)
    p_te = _draw_permutations(len(te), test_perms_per_image, n_permutations, rng)

    lab_tr = _known(labels, tr) if labels is not None else np.zeros(0, np.int64)
    lab_te = _known(labels, te) if labels is not None else np.zeros(0, np.int64)
    habitat = labels is not None and len(lab_te) > 0 and \
        len({labels[i] for i in lab_tr.tolist()}) >= 2
    need_full_tr = set(lab_tr.tolist()) if habitat else set()
    need_frame_te = set(lab_te.tolist()) if habitat else set()

    order = np.concatenate([tr, te])
    tile_feats, full_tr, frames_te = [], {}, {}
    with _Frozen(encoder, device) as enc:
        for s in range(0, len(order), batch_images):
            rows = order[s:s + batch_images].tolist()
            frames = full_frames([jpegs[r] for r in rows], side, device)  # [0, 1]
            tiles = _tiles(frames).flatten(0, 1)  # (B * 9, C, T, T)
            f = _encode(enc, augment.normalise(tiles), 9 * len(rows))
            tile_feats.append(f.reshape(len(rows), N_TILES, -1))
            pick = [k for k, r in enumerate(rows) if r in need_full_tr and s + k < len(tr)]
            if pick:
                x = augment.normalise(_resize(frames[pick], image_size))
                for k, v in zip(pick, _encode(enc, x, len(pick)), strict=True):
                    full_tr[rows[k]] = v
            for k, r in enumerate(rows):
                if s + k >= len(tr) and r in need_frame_te:
                    frames_te[r] = frames[k].cpu()
        feats = np.concatenate(tile_feats)  # (n_tr + n_te, 9, C)
        f_tr, f_te = feats[:len(tr)], feats[len(tr):]

        # the probe: tile features (PCA fitted on training tiles) in shuffled order
        dim = int(min(TILE_PCA_DIM, f_tr.shape[-1], len(tr) * N_TILES - 1))
        pca = PCA(n_components=dim, random_state=0)
        with warnings.catch_warnings():  # constant features: a 0 / 0 variance ratio
            warnings.simplefilter("ignore", RuntimeWarning)
            pca.fit(f_tr.reshape(-1, f_tr.shape[-1]))
        z_tr = pca.transform(f_tr.reshape(-1, f_tr.shape[-1])).reshape(len(tr), N_TILES, dim)
        z_te = pca.transform(f_te.reshape(-1, f_te.shape[-1])).reshape(len(te), N_TILES, dim)

        def samples(z: np.ndarray, pidx: np.ndarray) -> np.ndarray:
            shuffled = z[np.arange(len(z))[:, None, None], perms[pidx]]  # (n, k, 9, dim)
            return shuffled.reshape(-1, N_TILES * dim)

        x_tr, y_tr = samples(z_tr, p_tr), p_tr.reshape(-1)
        x_te, y_te = samples(z_te, p_te), p_te.reshape(-1)
        scaler = StandardScaler().fit(x_tr)
        clf = LogisticRegression(C=1.0, max_iter=500, tol=1e-3)
        clf.fit(scaler.transform(x_tr), y_tr)
        pred = clf.predict(scaler.transform(x_te)).reshape(len(te), test_perms_per_image)
        acc = float((pred == p_te).mean())
        tile_acc = float((perms[pred] == perms[p_te]).mean())

        out = {
            "n_permutations": int(n_permutations), "min_hamming": min_hamming_distance(perms),
            "tile_size": tile, "n_train_images": int(len(tr)), "n_test_images": int(len(te)),
            "n_train_samples": int(len(y_tr)), "n_test_samples": int(len(y_te)),
            "probe": f"logistic regression on 9 x PCA-{dim} tile features",
            "accuracy": acc, "chance": 1.0 / n_permutations,
            "tile_accuracy": tile_acc, "tile_chance": 1.0 / N_TILES,
            "habitat_n_train": 0, "habitat_n_test": 0,
            "habitat_macro_f1_true": None, "habitat_macro_f1_shuffled": None,
            "habitat_macro_f1_reassembled": None,
        }
        if habitat:
            out.update(_habitat(enc, labels, lab_tr, lab_te, te, full_tr, frames_te,
                                perms[p_te[:, 0]], perms[pred[:, 0]], image_size, device))
    out["seconds"] = round(time.perf_counter() - t0, 2)
    return out


def _habitat(enc, labels, lab_tr, lab_te, te, full_tr, frames_te, true_p, pred_p,
             image_size, device) -> dict:
    """Macro-F1 of a habitat probe on true, shuffled and reassembled test images."""
    x_tr = np.stack([full_tr[i] for i in lab_tr.tolist()])
    y_tr = np.array([labels[i] for i in lab_tr.tolist()], dtype=object).astype(str)
    pos = {r: k for k, r in enumerate(te.tolist())}
    ks = [pos[i] for i in lab_te.tolist()]
    y_te = np.array([labels[i] for i in lab_te.tolist()], dtype=object).astype(str)
    frames = torch.stack([frames_te[i] for i in lab_te.tolist()]).to(device)
    shuffled = permute_tiles(frames, true_p[ks])
    reassembled = unpermute_tiles(shuffled, pred_p[ks])
    scaler = StandardScaler().fit(x_tr)
    clf = LogisticRegression(C=1.0, max_iter=2000).fit(scaler.transform(x_tr), y_tr)
    res = {"habitat_n_train": int(len(y_tr)), "habitat_n_test": int(len(y_te))}
    for name, x in (("true", frames), ("shuffled", shuffled), ("reassembled", reassembled)):
        f = _encode(enc, augment.normalise(_resize(x, image_size)), 256)
        res[f"habitat_macro_f1_{name}"] = _macro_f1(y_te, clf.predict(scaler.transform(f)))
    return res


# -- both ----------------------------------------------------------------------------------------

def spatial_tasks(encoder, jpegs: Sequence[bytes], image_size: int, device, train_idx, test_idx,
                  labels=None, seed: int = 0, *,
                  max_train_images: int | None = MAX_TRAIN_IMAGES,
                  max_test_images: int | None = MAX_TEST_IMAGES) -> dict:
    """``{"position_scale": position_scale_task(...), "jigsaw": jigsaw_task(...)}``."""
    caps = {"max_train_images": max_train_images, "max_test_images": max_test_images}
    return {
        "position_scale": position_scale_task(encoder, jpegs, image_size, device, train_idx,
                                              test_idx, seed=seed, **caps),
        "jigsaw": jigsaw_task(encoder, jpegs, image_size, device, train_idx, test_idx, labels,
                              seed=seed, **caps),
    }
