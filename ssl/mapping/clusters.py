"""Unsupervised habitats: k-means on PCA-reduced embeddings, the choice of k, and smoothing of
the cluster labels over the spatial neighbour graph.

Embeddings are L2-normalised (the objectives compare them by cosine), reduced by PCA to at most
``dims`` components (fitted on every image) and clustered with k-means (k-means++ starts,
several restarts, seeded). ``--k auto`` tries every k in a range and keeps the one with the
highest mean silhouette coefficient (Rousseeuw 1987) on a seeded sample of at most
``SILHOUETTE_SAMPLE`` images: the k whose clusters are, on average, tightest relative to the
nearest other cluster. All scores are returned, so the choice can be inspected.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

SILHOUETTE_SAMPLE = 4000
K_RANGE = (2, 12)
COLLAPSED_VAR = 1e-8  # total variance of the unit-length embeddings below which they are one point


class ClusterError(ValueError):
    """Embeddings that cannot be clustered as asked (one message, exit status 2, in the CLIs)."""


def check_embeddings(X: np.ndarray) -> None:
    """Refuse embeddings no clustering can use: rows that are not finite (a diverged training
    run's encoder) or all rows pointing the same way (a collapsed encoder, the known failure
    of self-supervised training in which every image gets the same embedding)."""
    X = np.asarray(X)
    n_bad, sq, mean = 0, 0.0, np.zeros(X.shape[1], dtype=np.float64)
    for lo in range(0, len(X), 65536):  # in chunks: no full-size temporary copies
        B = X[lo:lo + 65536].astype(np.float64)
        ok = np.isfinite(B).all(axis=1)
        n_bad += int((~ok).sum())
        U = B[ok] / np.maximum(np.linalg.norm(B[ok], axis=1, keepdims=True), 1e-12)
        sq += float((U * U).sum())
        mean += U.sum(axis=0)
    if n_bad:
        raise ClusterError(
            f"{n_bad} of {len(X)} embeddings are not finite (NaN or infinite): the "
            "encoder's weights are not finite, typically from a training run that diverged; "
            "check its loss (metrics.csv), train again (e.g. with a lower --lr) and embed again")
    mean /= max(len(X), 1)
    # total variance = E|u|^2 - |E u|^2 (1 - |E u|^2 for unit rows)
    total = max(0.0, sq / max(len(X), 1) - float(mean @ mean))
    if total < COLLAPSED_VAR:
        raise ClusterError(
            f"all {len(X)} embeddings point the same way (total variance {total:.1e} of the "
            "unit-length embeddings): the encoder has collapsed and cannot tell images apart, "
            "a known failure of self-supervised training. Check the run (a loss that stayed "
            "at its starting value), train longer or with another --lr, and embed again")


@dataclass
class Clustering:
    labels: np.ndarray  # int (n,) cluster of each image, 0..k-1, largest cluster first
    centres: np.ndarray  # (k, dims) in the reduced space
    reduced: np.ndarray  # (n, dims) the reduced embeddings the clusters live in
    k: int
    criterion: str  # how k was chosen
    scores: dict[int, float] = field(default_factory=dict)  # k -> silhouette (auto)


def reduce(X: np.ndarray, dims: int = 32, seed: int = 0) -> np.ndarray:
    """L2-normalised rows, PCA to min(dims, n - 1, d) components (float32)."""
    from sklearn.decomposition import PCA

    X = np.asarray(X, dtype=np.float64)
    norm = np.linalg.norm(X, axis=1, keepdims=True)
    X = X / np.maximum(norm, 1e-12)
    n_comp = int(max(1, min(dims, X.shape[0] - 1, X.shape[1])))
    return PCA(n_components=n_comp, random_state=seed).fit_transform(X).astype(np.float32)


MINIBATCH_ABOVE = 100_000  # images; larger surveys are clustered with mini-batch k-means


def kmeans(Z: np.ndarray, k: int, seed: int, n_init: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """(labels, centres) of k-means with k-means++ starts; mini-batch k-means (Sculley 2010)
    above MINIBATCH_ABOVE images, where full passes over every image cost minutes per k."""
    import warnings

    from sklearn.cluster import KMeans, MiniBatchKMeans
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():
        # "fewer distinct clusters than n_clusters": the callers look for empty clusters
        warnings.simplefilter("ignore", ConvergenceWarning)
        if len(Z) > MINIBATCH_ABOVE:
            km = MiniBatchKMeans(n_clusters=k, n_init=n_init, random_state=seed,
                                 batch_size=4096).fit(Z)
        else:
            km = KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit(Z)
    return km.labels_, km.cluster_centers_


def _ordered(labels: np.ndarray, centres: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Renumber clusters by size, largest first (ties by old id), so numbering is stable."""
    sizes = np.bincount(labels, minlength=k)
    order = np.lexsort((np.arange(k), -sizes))
    rank = np.empty(k, dtype=np.int64)
    rank[order] = np.arange(k)
    return rank[labels], centres[order]


def silhouette_scores(Z: np.ndarray, ks, seed: int = 0,
                      sample: int = SILHOUETTE_SAMPLE) -> dict[int, float]:
    from sklearn.metrics import silhouette_score

    rng = np.random.default_rng(seed)
    pick = (rng.choice(len(Z), sample, replace=False) if len(Z) > sample
            else np.arange(len(Z)))
    out = {}
    for k in ks:
        labels, _ = kmeans(Z, k, seed)
        # -1: not k clusters (fewer distinct embeddings than k), or one in the sample
        whole = len(np.unique(labels)) == k and len(set(labels[pick].tolist())) > 1
        out[int(k)] = float(silhouette_score(Z[pick], labels[pick])) if whole else -1.0
    return out


def cluster(X: np.ndarray, k: int | None, dims: int = 32, seed: int = 0,
            k_range: tuple[int, int] = K_RANGE) -> Clustering:
    """Cluster embeddings X (n, d) into k habitats; k None: chosen by silhouette in k_range
    (clipped to n - 1)."""
    n = len(X)
    check_embeddings(X)
    Z = reduce(X, dims, seed)
    scores: dict[int, float] = {}
    if k is None:
        lo, hi = k_range[0], min(k_range[1], n - 1)
        scores = silhouette_scores(Z, range(lo, hi + 1), seed)
        k = max(scores, key=lambda kk: (scores[kk], -kk))
        criterion = (f"highest mean silhouette for k in {lo}..{hi} (sample of "
                     f"{min(n, SILHOUETTE_SAMPLE)} images): k = {k}, {scores[k]:.3f}")
    else:
        criterion = f"k = {k} given"
    labels, centres = kmeans(Z, k, seed)
    formed = len(np.unique(labels))
    if formed < k:
        raise ClusterError(
            f"k = {k}: only {formed} distinct cluster(s) could be formed, the embeddings take "
            f"fewer than {k} distinct values; use --k {formed} or fewer"
            + ("" if formed >= 2 else " (or check the encoder: its embeddings barely differ)"))
    labels, centres = _ordered(labels, centres, k)
    return Clustering(labels=labels, centres=centres, reduced=Z, k=int(k), criterion=criterion,
                      scores=scores)


def smooth(labels: np.ndarray, anchor: np.ndarray, positive: np.ndarray, k: int,
           rounds: int = 1) -> np.ndarray:
    """Majority vote over each image and its neighbours within r_loc (the pairs graph), repeated
    ``rounds`` times. An image keeps its own cluster on a tie, and images without neighbours
    keep theirs: smoothing only removes isolated disagreements with the surroundings."""
    labels = np.asarray(labels, dtype=np.int64).copy()
    n = len(labels)
    a = np.concatenate([anchor, positive]).astype(np.int64)
    b = np.concatenate([positive, anchor]).astype(np.int64)
    for _ in range(rounds):
        votes = np.zeros((n, k), dtype=np.int64)
        np.add.at(votes, (a, labels[b]), 1)
        votes[np.arange(n), labels] += 1  # the image itself
        best = votes.argmax(axis=1)
        own = votes[np.arange(n), labels]
        change = votes[np.arange(n), best] > own
        labels = np.where(change, best, labels)
    return labels
