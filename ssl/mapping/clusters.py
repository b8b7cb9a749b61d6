"""Unsupervised habitats: k-means on PCA-reduced embeddings, the choice of k, and smoothing of
the cluster labels over the spatial neighbour graph.

Embeddings are L2-normalised (the objectives compare them by cosine), reduced by PCA to at most
``dims`` components (fitted on every image) and clustered with k-means (k-means++ starts,
several restarts, seeded). ``--k auto`` tries every k in a range and keeps the one a named
criterion of ``CRITERIA`` prefers (``--k-criterion``; all scores are returned, so the choice can
be inspected):

  silhouette    the highest mean silhouette coefficient (Rousseeuw 1987) on a seeded sample of
                at most ``SILHOUETTE_SAMPLE`` images: the k whose clusters are, on average,
                tightest relative to the nearest other cluster
  gmm_bic       the lowest Bayesian information criterion of a Gaussian mixture with diagonal
                covariances fitted to the reduced embeddings (Schwarz 1978; Fraley & Raftery
                1998). Diagonal, not full: a full covariance costs d(d+1)/2 = 528 parameters
                per component at 32 dims, more than a survey of a few thousand images can
                estimate for 12 components, so BIC's penalty would decide k alone
  gap           the gap statistic (Tibshirani, Walther & Hastie 2001): log within-cluster
                dispersion of k-means against its mean over ``GAP_REFERENCES`` seeded uniform
                reference sets in the box of the principal axes, with the 1-SE rule (the
                smallest k whose gap is within one standard error of the next k's)
  *_spatial     the same criterion on spatially smoothed embeddings: each image's reduced
                embedding averaged with those of its neighbours within r_loc (the pairs graph),
                which damps image-level noise inside a patch of seabed before k is chosen; the
                clusters themselves are still k-means of the unsmoothed embeddings
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

SILHOUETTE_SAMPLE = 4000
GMM_SAMPLE = 4000  # images the Gaussian mixtures are fitted to (seeded sample)
GAP_SAMPLE = 2000  # images of the gap statistic (seeded sample), and of each reference set
GAP_REFERENCES = 10  # B, uniform reference sets of the gap statistic
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
    scores: dict[int, float] = field(default_factory=dict)  # k -> the criterion's score (auto)
    k_criterion: str = ""  # the name in CRITERIA that chose k (auto), "" when k was given


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


@dataclass(frozen=True)
class Choice:
    """The k a criterion prefers among those tried, with its score of every k."""
    k: int
    scores: dict[int, float]
    rule: str  # how k follows from the scores, for the log ("highest mean silhouette", ...)


Graph = tuple[np.ndarray, np.ndarray]  # (anchor, positive): the neighbour pairs within r_loc


def _sample(n: int, size: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size, replace=False)) if n > size else np.arange(n)


def by_silhouette(Z: np.ndarray, ks, seed: int = 0, graph: Graph | None = None) -> Choice:
    scores = silhouette_scores(Z, ks, seed)
    k = max(scores, key=lambda kk: (scores[kk], -kk))
    return Choice(k, scores, f"highest mean silhouette (sample of "
                             f"{min(len(Z), SILHOUETTE_SAMPLE)} images)")


def gmm_bic_scores(Z: np.ndarray, ks, seed: int = 0,
                   sample: int = GMM_SAMPLE) -> dict[int, float]:
    """k -> BIC of a diagonal-covariance Gaussian mixture of k components (lower is better);
    inf where the fit fails or leaves a component without images."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import GaussianMixture

    S = np.asarray(Z, dtype=np.float64)[_sample(len(Z), sample, seed)]
    out = {}
    for k in ks:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                gm = GaussianMixture(n_components=int(k), covariance_type="diag",
                                     reg_covar=1e-6, max_iter=200, n_init=1,
                                     random_state=seed).fit(S)
            whole = len(np.unique(gm.predict(S))) == k
            out[int(k)] = float(gm.bic(S)) if whole else float("inf")
        except (ValueError, np.linalg.LinAlgError):
            out[int(k)] = float("inf")
    return out


def by_gmm_bic(Z: np.ndarray, ks, seed: int = 0, graph: Graph | None = None) -> Choice:
    scores = gmm_bic_scores(Z, ks, seed)
    k = min(scores, key=lambda kk: (scores[kk], kk))
    return Choice(k, scores, "lowest BIC of a diagonal Gaussian mixture")


def gap_scores(Z: np.ndarray, ks, seed: int = 0, refs: int | None = None,
               sample: int = GAP_SAMPLE) -> tuple[dict[int, float], dict[int, float]]:
    """(gap, s): k -> Gap(k) = mean_b log W*_kb - log W_k and s_k = sd_b(log W*_kb)
    * sqrt(1 + 1/B), W the k-means within-cluster sum of squares, the references uniform in
    the bounding box of the (already principal-axis aligned) reduced embeddings."""
    refs = GAP_REFERENCES if refs is None else refs
    S = np.asarray(Z, dtype=np.float64)[_sample(len(Z), sample, seed)]
    lo, hi = S.min(axis=0), S.max(axis=0)
    rng = np.random.default_rng(seed + 1)
    R = [rng.uniform(lo, hi, size=S.shape) for _ in range(refs)]

    def log_w(D: np.ndarray, k: int) -> float:
        labels, centres = kmeans(D, k, seed, n_init=1)
        w = float(((D - centres[labels]) ** 2).sum())
        return float(np.log(max(w, 1e-300)))

    gap, sd = {}, {}
    for k in ks:
        ref = np.array([log_w(D, int(k)) for D in R])
        gap[int(k)] = float(ref.mean() - log_w(S, int(k)))
        sd[int(k)] = float(ref.std() * np.sqrt(1.0 + 1.0 / refs))
    return gap, sd


def by_gap(Z: np.ndarray, ks, seed: int = 0, graph: Graph | None = None) -> Choice:
    gap, sd = gap_scores(Z, ks, seed)
    order = sorted(gap)
    pick = [k for k, nxt in zip(order, order[1:], strict=False) if gap[k] >= gap[nxt] - sd[nxt]]
    k = pick[0] if pick else max(gap, key=lambda kk: (gap[kk], -kk))
    return Choice(k, gap, f"gap statistic, 1-SE rule ({GAP_REFERENCES} uniform references)")


def neighbour_mean(Z: np.ndarray, anchor: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """Each row averaged with the rows of its neighbours (the pairs graph, both directions)."""
    a = np.concatenate([anchor, positive]).astype(np.int64)
    b = np.concatenate([positive, anchor]).astype(np.int64)
    total = np.asarray(Z, dtype=np.float64).copy()
    np.add.at(total, a, np.asarray(Z, dtype=np.float64)[b])
    count = 1.0 + np.bincount(a, minlength=len(Z))
    return (total / count[:, None]).astype(np.float32)


def spatial(base):
    """The criterion ``base`` on the embeddings smoothed over the neighbour graph."""
    def choose(Z: np.ndarray, ks, seed: int = 0, graph: Graph | None = None) -> Choice:
        if graph is None:
            raise ClusterError("a spatial k criterion needs the neighbour pairs of the survey "
                               "(its pairs.parquet)")
        got = base(neighbour_mean(Z, *graph), ks, seed)
        return Choice(got.k, got.scores, got.rule + ", on embeddings averaged over each "
                                                    "image's neighbours within r_loc")
    choose.__name__ = base.__name__ + "_spatial"
    return choose


# name -> f(Z, ks, seed, graph) -> Choice; ``--k-criterion`` offers these names
CRITERIA = {
    "silhouette": by_silhouette,
    "gmm_bic": by_gmm_bic,
    "gap": by_gap,
    "silhouette_spatial": spatial(by_silhouette),
    "gmm_bic_spatial": spatial(by_gmm_bic),
    "gap_spatial": spatial(by_gap),
}
SPATIAL_CRITERIA = tuple(n for n in CRITERIA if n.endswith("_spatial"))
DEFAULT_CRITERION = "gap_spatial"  # the best mean ARI in REPRODUCTION.md's k-selection study


def choose_k(Z: np.ndarray, ks, criterion: str = DEFAULT_CRITERION, seed: int = 0,
             graph: Graph | None = None) -> Choice:
    """The k that ``criterion`` (a name in CRITERIA) prefers among ``ks``."""
    if criterion not in CRITERIA:
        raise ClusterError(f"unknown k criterion {criterion!r}; one of {', '.join(CRITERIA)}")
    return CRITERIA[criterion](Z, list(ks), seed, graph)


def cluster(X: np.ndarray, k: int | None, dims: int = 32, seed: int = 0,
            k_range: tuple[int, int] = K_RANGE, criterion: str | None = None,
            graph: Graph | None = None) -> Clustering:
    """Cluster embeddings X (n, d) into k habitats; k None: chosen by ``criterion`` (a name in
    CRITERIA, None: DEFAULT_CRITERION; the spatial ones need ``graph``, the neighbour pairs: a
    spatial default without them falls back to its criterion on the unsmoothed embeddings) in
    k_range (clipped to n - 1)."""
    n = len(X)
    check_embeddings(X)
    if criterion is None:
        criterion = DEFAULT_CRITERION
        if graph is None and criterion in SPATIAL_CRITERIA:
            criterion = criterion.removesuffix("_spatial")
    if k is None and criterion not in CRITERIA:
        raise ClusterError(f"unknown k criterion {criterion!r}; one of {', '.join(CRITERIA)}")
    Z = reduce(X, dims, seed)
    scores: dict[int, float] = {}
    name = ""
    if k is None:
        lo, hi = k_range[0], min(k_range[1], n - 1)
        got = choose_k(Z, range(lo, hi + 1), criterion, seed, graph)
        k, scores, name = got.k, got.scores, criterion
        if criterion == "silhouette":  # the message as it always was
            crit = (f"highest mean silhouette for k in {lo}..{hi} (sample of "
                    f"{min(n, SILHOUETTE_SAMPLE)} images): k = {k}, {scores[k]:.3f}")
        else:
            crit = f"{criterion}: {got.rule} for k in {lo}..{hi}: k = {k}, score {scores[k]:.4g}"
        if k == hi and hi > lo:  # at the edge: the criterion may prefer a k it was not offered
            crit += ("; the largest k tried, so the criterion may prefer more clusters "
                     "(widen --k-range, or give --k)")
    else:
        crit = f"k = {k} given"
    labels, centres = kmeans(Z, k, seed)
    formed = len(np.unique(labels))
    if formed < k:
        raise ClusterError(
            f"k = {k}: only {formed} distinct cluster(s) could be formed, the embeddings take "
            f"fewer than {k} distinct values; use --k {formed} or fewer"
            + ("" if formed >= 2 else " (or check the encoder: its embeddings barely differ)"))
    labels, centres = _ordered(labels, centres, k)
    return Clustering(labels=labels, centres=centres, reduced=Z, k=int(k), criterion=crit,
                      scores=scores, k_criterion=name)


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
