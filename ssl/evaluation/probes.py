"""Habitat probes on frozen features, and the protocol that runs them over splits and seeds.

Every probe sees the same inputs: features standardised on the training side, then optionally
reduced by a PCA fitted on the training side (``pca_dims``; None keeps the full width).

- :func:`linear_svm`: ``LinearSVC``, C chosen by inner cross-validation on macro-F1;
- :func:`logistic`: multinomial ``LogisticRegression``, C chosen the same way;
- :func:`knn`: k nearest neighbours (k = 20), cosine distance, distance-weighted votes.

C comes from the grid 0.01, 0.1, 1, 10 by an inner cross-validation on the training side that
keeps spatial blocks together when block ids are given (``StratifiedGroupKFold``), with 3 folds
(2 when the second most common class has only two images; with fewer, C = 1). BLAS runs on one
thread while the probes fit (see :func:`single_threaded_blas`).

:func:`evaluate_features` is the protocol: for each seed a spatially blocked split (the seed
moves the block grid and picks the test blocks, balanced over habitats; see :mod:`.splits`),
buffered by r_loc, for each regime a few-label
subset of the training side (the seed draws it), every probe at every width, scored on the test
side. Macro-F1 (over the classes present on the test side) is the headline; accuracy and
per-class F1 are kept too. Scores are reported as mean and sample standard deviation over seeds.
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections.abc import Callable, Sequence

import numpy as np
from sklearn.decomposition import PCA
from sklearn.exceptions import ConvergenceWarning, FitFailedWarning, UndefinedMetricWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score
from sklearn.model_selection import GridSearchCV, StratifiedGroupKFold, StratifiedKFold
from sklearn.neighbors import KNeighborsClassifier
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

from ..labels import labelled_mask
from .splits import (
    Split,
    blocked_split,
    default_block_m,
    dive_split,
    few_label_subset,
    random_split,
)

try:  # a dependency of scikit-learn; absent only in odd installs, where threads stay as they are
    from threadpoolctl import threadpool_limits
except ImportError:  # pragma: no cover
    threadpool_limits = None

C_GRID = (0.01, 0.1, 1.0, 10.0)
KNN_K = 20


# --- labels, names ---------------------------------------------------------------------------

def regime_name(regime: int | None) -> str:
    return "all" if regime is None else str(int(regime))


def dims_name(dims: int | None) -> str:
    return "full" if dims is None else str(int(dims))


# --- features --------------------------------------------------------------------------------

def prepare(Xtr: np.ndarray, Xte: np.ndarray, pca_dims: int | None = None, seed: int = 0,
            blocks: Sequence[slice] | None = None) -> tuple[np.ndarray, np.ndarray, int]:
    """Standardise on the training side, then PCA to ``pca_dims`` (fitted on the training side;
    capped at the number of training images and features). With ``blocks`` (column slices of
    concatenated feature sets) each block is scaled to the same total variance after the
    per-column standardisation. Returns (Ztr, Zte, width)."""
    Xtr = np.asarray(Xtr, dtype=np.float64)
    Xte = np.asarray(Xte, dtype=np.float64).reshape(-1, Xtr.shape[1])
    scaler = StandardScaler().fit(Xtr)
    Ztr, Zte = scaler.transform(Xtr), scaler.transform(Xte)
    if blocks:
        width = Xtr.shape[1]
        w = np.ones(width)
        for sl in blocks:
            d = len(range(*sl.indices(width)))
            if d:
                w[sl] = math.sqrt(width / (len(blocks) * d))
        Ztr, Zte = Ztr * w, Zte * w
    if pca_dims is not None:
        k = int(min(pca_dims, Ztr.shape[0], Ztr.shape[1]))
        if k < Ztr.shape[1]:
            pca = PCA(n_components=k, random_state=seed).fit(Ztr)
            Ztr, Zte = pca.transform(Ztr), pca.transform(Zte)
    return Ztr.astype(np.float32), Zte.astype(np.float32), Ztr.shape[1]


def single_threaded_blas():
    """Context: one BLAS thread. The probes' problems are small (hundreds to thousands of
    images); several BLAS threads make them many times slower, worst on a busy machine."""
    if threadpool_limits is None:  # pragma: no cover
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def _cv(y: np.ndarray, groups: np.ndarray | None, seed: int):
    """Inner folds (3, or 2 when the classes are tiny), or None when there are too few images:
    fewer than two in the two most common classes. A rarer class may miss from some folds."""
    _, counts = np.unique(y, return_counts=True)
    counts = np.sort(counts)[::-1]
    if len(counts) < 2 or counts[1] < 2:
        return None
    n_splits = 3 if counts[1] >= 3 else 2
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*least populated class.*")
        if groups is not None and len(np.unique(groups)) >= n_splits:
            return list(StratifiedGroupKFold(n_splits, shuffle=True, random_state=seed)
                        .split(np.zeros(len(y)), y, groups))
        return list(StratifiedKFold(n_splits, shuffle=True, random_state=seed)
                    .split(np.zeros(len(y)), y))


def _fit_linear(make: Callable[[float], object], Ztr, ytr, Zte, groups, seed) -> np.ndarray:
    ytr = np.asarray(ytr)
    classes = np.unique(ytr)
    if len(classes) < 2:
        return np.full(len(Zte), classes[0] if len(classes) else None, dtype=object)
    folds = _cv(ytr, groups, seed)
    with warnings.catch_warnings():
        for category in (ConvergenceWarning, FitFailedWarning, UndefinedMetricWarning):
            warnings.simplefilter("ignore", category)  # inner folds of tiny few-label subsets
        warnings.filterwarnings("ignore", message=".*least populated class.*")
        warnings.filterwarnings("ignore", message=".*[Ff]ailed to split.*")
        if folds is None:
            model = make(1.0).fit(Ztr, ytr)
        else:
            model = GridSearchCV(make(1.0), {"C": list(C_GRID)}, scoring="f1_macro", cv=folds,
                                 error_score=0.0, refit=True).fit(Ztr, ytr)
        return model.predict(Zte)


def linear_svm(Xtr, ytr, Xte, pca_dims: int | None = None, seed: int = 0, *,
               groups: np.ndarray | None = None, prepared: bool = False) -> np.ndarray:
    """Predicted labels of ``Xte`` from a linear SVM (one-vs-rest, squared hinge) trained on
    (``Xtr``, ``ytr``); ``prepared`` skips the standardisation/PCA (already done)."""
    if not prepared:
        Xtr, Xte, _ = prepare(Xtr, Xte, pca_dims, seed)
    # primal liblinear: fast at these sizes whether there are more images or more features.
    # tol 1e-2 and at most 1000 iterations: on 512-d features of a few thousand images the
    # large-C fits separate the training side and then crawl (25 s for C = 10 at tol 1e-3 and
    # 5000 iterations, 3 s here), while the predictions they give barely move
    return _fit_linear(lambda c: LinearSVC(C=c, dual=False, tol=1e-2, max_iter=1000),
                       Xtr, ytr, Xte, groups, seed)


def logistic(Xtr, ytr, Xte, pca_dims: int | None = None, seed: int = 0, *,
             groups: np.ndarray | None = None, prepared: bool = False) -> np.ndarray:
    """Predicted labels of ``Xte`` from multinomial logistic regression (L2, lbfgs)."""
    if not prepared:
        Xtr, Xte, _ = prepare(Xtr, Xte, pca_dims, seed)
    return _fit_linear(lambda c: LogisticRegression(C=c, max_iter=2000, random_state=seed),
                       Xtr, ytr, Xte, groups, seed)


def knn(Xtr, ytr, Xte, k: int = KNN_K, pca_dims: int | None = None, seed: int = 0, *,
        prepared: bool = False) -> np.ndarray:
    """Predicted labels of ``Xte`` by the distance-weighted vote of the ``k`` nearest training
    images under cosine distance."""
    if not prepared:
        Xtr, Xte, _ = prepare(Xtr, Xte, pca_dims, seed)
    model = KNeighborsClassifier(n_neighbors=max(1, min(k, len(Xtr))), metric="cosine",
                                 weights="distance", algorithm="brute")
    return model.fit(Xtr, np.asarray(ytr)).predict(Xte)


# The probes by name (--probes), each fitted on prepared training features and predicting the
# test side: (Ztr, ytr, Zte, seed, groups) -> predictions. A new probe is one entry here.
PROBE_FITS: dict[str, Callable] = {
    "svm": lambda Ztr, ytr, Zte, seed, groups: linear_svm(Ztr, ytr, Zte, seed=seed,
                                                          groups=groups, prepared=True),
    "logreg": lambda Ztr, ytr, Zte, seed, groups: logistic(Ztr, ytr, Zte, seed=seed,
                                                           groups=groups, prepared=True),
    "knn": lambda Ztr, ytr, Zte, seed, groups: knn(Ztr, ytr, Zte, prepared=True),
}
PROBES = tuple(PROBE_FITS)


def scores(y_true, y_pred, classes: Sequence) -> dict:
    """macro_f1 (mean F1 over the classes present in ``y_true``), accuracy, and per_class_f1 for
    every class in ``classes`` (None for a class absent from ``y_true``)."""
    y_true = np.asarray(y_true, dtype=object).astype(str)
    y_pred = np.asarray(y_pred, dtype=object).astype(str)
    classes = [str(c) for c in classes]
    f1 = f1_score(y_true, y_pred, labels=classes, average=None, zero_division=0)
    present = set(y_true.tolist())
    per_class = {c: (float(v) if c in present else None) for c, v in zip(classes, f1, strict=True)}
    vals = [v for v in per_class.values() if v is not None]
    return {"macro_f1": float(np.mean(vals)) if vals else 0.0,
            "accuracy": float(accuracy_score(y_true, y_pred)) if len(y_true) else 0.0,
            "per_class_f1": per_class}


# --- the protocol ----------------------------------------------------------------------------

def _summary(values: list[float]) -> dict:
    v = np.asarray(values, dtype=np.float64)
    std = float(v.std(ddof=1)) if len(v) > 1 else 0.0
    return {"mean": float(v.mean()) if len(v) else float("nan"), "std": std,
            "values": [float(x) for x in v]}


def make_splits(xy: np.ndarray, r_loc: float, *, block_m: float | None, seeds: Sequence[int],
                test_fraction: float = 0.3, random: bool = False,
                labels: np.ndarray | None = None, dives: np.ndarray | None = None) -> list[Split]:
    """One split per seed of the positions ``xy`` (blocked, balanced over ``labels`` when
    given, unless ``random``; whole dives when ``dives`` is given)."""
    block_m = default_block_m(r_loc) if block_m is None else float(block_m)
    out = []
    for seed in seeds:
        if dives is not None:
            out.append(dive_split(dives, test_fraction, seed))
        elif random:
            out.append(random_split(len(xy), test_fraction, seed))
        else:
            out.append(blocked_split(xy, block_m, test_fraction, seed, r_loc=r_loc,
                                     labels=labels))
    return out


def _run(feature_sets: dict[str, tuple[np.ndarray, list[slice] | None]], labels: np.ndarray,
         splits: list[Split], seeds: Sequence[int], regimes, probes, dims, classes,
         reference: tuple | None, log) -> tuple[list[dict], dict | None]:
    """Score every (feature set, probe, width, regime) over the splits. ``labels`` and the
    feature rows are the labelled images only; the splits index them."""
    with single_threaded_blas():
        return _run_inner(feature_sets, labels, splits, seeds, regimes, probes, dims, classes,
                          reference, log)


def _run_inner(feature_sets, labels, splits, seeds, regimes, probes, dims, classes, reference,
               log) -> tuple[list[dict], dict | None]:
    rows: dict[tuple, dict] = {}
    ref_out = None
    for seed, split in zip(seeds, splits, strict=True):
        t0 = time.perf_counter()
        for regime in regimes:
            sub = few_label_subset(split.train, labels, regime, seed)
            ytr, yte = labels[sub], labels[split.test]
            groups = split.blocks[sub] if split.blocks is not None else None
            for fname, (X, blocks) in feature_sets.items():
                for d in dims:
                    Ztr, Zte, width = prepare(X[sub], X[split.test], d, seed, blocks)
                    for probe in probes:
                        if probe not in PROBE_FITS:
                            raise ValueError(f"unknown probe {probe!r}; expected one of "
                                             f"{', '.join(PROBES)}")
                        pred = PROBE_FITS[probe](Ztr, ytr, Zte, seed, groups)
                        sc = scores(yte, pred, classes)
                        key = (fname, probe, dims_name(d), regime_name(regime))
                        row = rows.setdefault(key, {"runs": []})
                        row["runs"].append({"seed": int(seed), "n_train": int(len(sub)),
                                            "n_test": int(len(split.test)), "width": int(width),
                                            **sc})
                        if reference == key + (seed,):
                            ref_out = {"pred": pred, "split": split, "train_used": sub}
        if log:
            log(f"seed {seed}: {time.perf_counter() - t0:.1f} s")
    out = []
    for (fname, probe, dname, rname), row in rows.items():
        runs = row["runs"]
        per_class = {}
        for c in classes:
            vals = [r["per_class_f1"][str(c)] for r in runs
                    if r["per_class_f1"][str(c)] is not None]
            per_class[str(c)] = float(np.mean(vals)) if vals else None
        out.append({"features": fname, "probe": probe, "dims": dname, "regime": rname,
                    "macro_f1": _summary([r["macro_f1"] for r in runs]),
                    "accuracy": _summary([r["accuracy"] for r in runs]),
                    "per_class_f1": per_class,
                    "runs": [{k: v for k, v in r.items() if k != "per_class_f1"} for r in runs]})
    return out, ref_out


def _check_inputs(X, labels, xy) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    X = np.asarray(X, dtype=np.float32)
    labels = np.asarray(labels, dtype=object)
    xy = np.asarray(xy, dtype=np.float64)
    if X.ndim != 2 or len(X) != len(labels) or xy.shape != (len(X), 2):
        raise ValueError(f"need X (n, C), labels (n,) and xy (n, 2); got {X.shape}, "
                         f"{labels.shape}, {xy.shape}")
    return X, labels, xy


def _labelled(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[str]]:
    idx = np.flatnonzero(labelled_mask(labels))
    lab = np.array([str(v) for v in labels[idx]], dtype=object)
    classes = sorted(set(lab.tolist()))
    if len(classes) < 2:
        raise ValueError(f"need labelled images of at least two classes; found {len(idx)} "
                         f"labelled image(s) of {len(classes)} class(es)")
    return idx, lab, classes


def _global(split: Split, idx: np.ndarray, n: int) -> Split:
    """A split of the labelled images re-expressed in indices of all n images (block -1 for
    unlabelled images)."""
    blocks = None
    if split.blocks is not None:
        blocks = np.full(n, -1, dtype=np.int64)
        blocks[idx] = split.blocks
    return Split(idx[split.train], idx[split.test], split.n_buffer, blocks)


def evaluate_features(X, labels, xy, r_loc: float, *, block_m: float | None = None,
                      seeds: Sequence[int] = (0, 1, 2), regimes=(10, 50, None),
                      probes: Sequence[str] = PROBES, dims=(128, None), random: bool = False,
                      test_fraction: float = 0.3, dives: np.ndarray | None = None,
                      log: Callable[[str], None] | None = None) -> dict:
    """The habitat-probe protocol on frozen features ``X`` (n, C) of images at ``xy`` (n, 2)
    metres with ``labels`` (n,; None where unlabelled; unlabelled images are left out).
    ``dives`` (n,): split by whole dives instead of spatial blocks (splits.dive_split).

    Returns a JSON-ready dict (``protocol``, ``classes``, ``class_counts``, ``splits``,
    ``results``: one row per (probe, dims, regime) with ``macro_f1`` / ``accuracy`` as
    {mean, std, values} over seeds and ``per_class_f1`` averaged over seeds, ``reference``,
    ``confusion`` and ``per_class_f1`` of the reference probe (svm at full width on all labels,
    first seed)), plus ``arrays`` (numpy, not JSON): ``predictions`` (n,) object with the
    reference probe's prediction for each test image (None elsewhere), ``test_mask`` and
    ``train_mask`` (n,) bool, and ``splits``: the :class:`Split` objects in global indices.
    """
    X, labels, xy = _check_inputs(X, labels, xy)
    for p in probes:
        if p not in PROBES:
            raise ValueError(f"unknown probe {p!r}; expected one of {', '.join(PROBES)}")
    n = len(X)
    idx, lab, classes = _labelled(labels)
    block_m = default_block_m(r_loc) if block_m is None else float(block_m)
    seeds = [int(s) for s in seeds]
    splits = make_splits(xy[idx], r_loc, block_m=block_m, seeds=seeds,
                         test_fraction=test_fraction, random=random, labels=lab,
                         dives=None if dives is None else np.asarray(dives, dtype=object)[idx])
    probe_ref = "svm" if "svm" in probes else probes[0]
    dims_ref = None if None in dims else dims[-1]
    regime_ref = None if None in regimes else regimes[-1]
    ref_key = ("image", probe_ref, dims_name(dims_ref), regime_name(regime_ref), seeds[0])
    rows, ref = _run({"image": (X[idx], None)}, lab, splits, seeds, regimes, probes, dims,
                     classes, ref_key, log)

    pred_all = np.full(n, None, dtype=object)
    test_mask = np.zeros(n, dtype=bool)
    train_mask = np.zeros(n, dtype=bool)
    pred_all[idx[ref["split"].test]] = np.asarray(ref["pred"], dtype=object)
    test_mask[idx[ref["split"].test]] = True
    train_mask[idx[ref["train_used"]]] = True
    yte = lab[ref["split"].test]
    cm = confusion_matrix(yte.astype(str), np.asarray(ref["pred"]).astype(str), labels=classes)
    ref_scores = scores(yte, ref["pred"], classes)
    counts = {c: int((lab == c).sum()) for c in classes}
    return {
        "protocol": {
            "split": "cross-dive" if dives is not None else "random" if random else "blocked",
            "block_m": None if random or dives is not None else block_m,
            "r_loc_m": float(r_loc), "test_fraction": float(test_fraction), "seeds": seeds,
            "regimes": [regime_name(r) for r in regimes], "probes": list(probes),
            "dims": [dims_name(d) for d in dims], "knn_k": KNN_K, "c_grid": list(C_GRID),
            "headline": "macro_f1 (mean F1 over the classes present on the test side)",
            "spread": "sample standard deviation over seeds",
        },
        "n_images": int(n), "n_labelled": int(len(idx)), "feature_dim": int(X.shape[1]),
        "classes": classes, "class_counts": counts,
        "splits": [{"seed": s, "n_train": int(len(sp.train)), "n_test": int(len(sp.test)),
                    "n_buffer": int(sp.n_buffer),
                    "test_classes": sorted(set(lab[sp.test].tolist()))}
                   for s, sp in zip(seeds, splits, strict=True)],
        "results": rows,
        "reference": {"features": "image", "probe": ref_key[1], "dims": ref_key[2],
                      "regime": ref_key[3], "seed": seeds[0],
                      "macro_f1": ref_scores["macro_f1"], "accuracy": ref_scores["accuracy"]},
        "per_class_f1": ref_scores["per_class_f1"],
        "confusion": {"labels": classes, "matrix": cm.tolist(), "rows": "true",
                      "columns": "predicted"},
        "arrays": {"predictions": pred_all, "test_mask": test_mask, "train_mask": train_mask,
                   "labelled": idx,
                   "splits": [_global(sp, idx, n) for sp in splits]},
    }


def location_probe(X_img, L, labels, xy, r_loc: float, *, block_m: float | None = None,
                   seeds: Sequence[int] = (0, 1, 2), regimes=(10, 50, None),
                   probes: Sequence[str] = ("svm",), random: bool = False,
                   test_fraction: float = 0.3, dives: np.ndarray | None = None,
                   log: Callable[[str], None] | None = None) -> list[dict]:
    """CSP: the probes on location embeddings ``L`` (n, d) alone ("location") and fused with the
    image features ("fused": both standardised, each block scaled to the same total variance),
    at full width, with the same splits as :func:`evaluate_features` (same seeds and block side).
    Returns result rows in the format of ``evaluate_features(...)["results"]``."""
    X_img, labels, xy = _check_inputs(X_img, labels, xy)
    L = np.asarray(L, dtype=np.float32)
    if L.ndim != 2 or len(L) != len(X_img):
        raise ValueError(f"location embeddings must be (n, d) with n = {len(X_img)}, got "
                         f"{L.shape}")
    idx, lab, classes = _labelled(labels)
    seeds = [int(s) for s in seeds]
    splits = make_splits(xy[idx], r_loc, block_m=block_m, seeds=seeds,
                         test_fraction=test_fraction, random=random, labels=lab,
                         dives=None if dives is None else np.asarray(dives, dtype=object)[idx])
    c = X_img.shape[1]
    fused = np.concatenate([X_img[idx], L[idx]], axis=1)
    sets = {"location": (L[idx], None),
            "fused": (fused, [slice(0, c), slice(c, fused.shape[1])])}
    rows, _ = _run(sets, lab, splits, seeds, regimes, probes, (None,), classes, None, log)
    return rows
