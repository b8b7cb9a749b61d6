"""Which images to label first: N images that cover the habitat clusters and spread over space.

The selection follows GeoCLR's use of its features for annotation (Yamada et al. 2022, who chose
the images nearest the k-means centres of the learned representations): the reduced embeddings
are clustered again into N fine clusters, and each fine cluster proposes a representative,
picked among its ``candidates`` images nearest its centre as the one farthest (in metres) from
the images already chosen, so two proposals rarely show the same patch of seabed. Every habitat
cluster then gets at least one proposal: when N >= k, a habitat without any takes the place of
the most redundant proposal of the habitat with the most. The list is ordered so that any
prefix is itself a good list (habitats first covered in turn, then the rest by fine-cluster
size), letting an annotator stop early.
"""

from __future__ import annotations

import numpy as np

from .clusters import kmeans


def _farthest_pick(cands: np.ndarray, xy: np.ndarray, chosen_xy: list[np.ndarray]) -> int:
    if not chosen_xy:
        return int(cands[0])
    ref = np.stack(chosen_xy)
    d = np.linalg.norm(xy[cands][:, None, :] - ref[None, :, :], axis=2).min(axis=1)
    return int(cands[int(np.argmax(d))])


def labelling_list(Z: np.ndarray, habitat: np.ndarray, xy: np.ndarray, n: int, seed: int = 0,
                   candidates: int = 5, exclude: np.ndarray | None = None) -> np.ndarray:
    """Indices of ``n`` images to label (ordered, best first) from reduced embeddings Z (m, d),
    their habitat clusters and positions (m, 2). ``exclude``: a boolean mask of images that
    must not be proposed (already labelled)."""
    m = len(Z)
    pool = np.arange(m) if exclude is None else np.flatnonzero(~np.asarray(exclude, bool))
    n = int(min(n, len(pool)))
    if n <= 0:
        return np.zeros(0, dtype=np.int64)
    Zp = Z[pool]
    fine, centres = kmeans(Zp, n, seed, n_init=2)
    sizes = np.bincount(fine, minlength=n)
    chosen: list[int] = []
    chosen_xy: list[np.ndarray] = []
    order = np.argsort(-sizes, kind="stable")
    for f in order:
        members = np.flatnonzero(fine == f)
        if not members.size:
            continue
        d = np.linalg.norm(Zp[members] - centres[f], axis=1)
        cands = pool[members[np.argsort(d, kind="stable")[:candidates]]]
        pick = _farthest_pick(cands, xy, chosen_xy)
        chosen.append(pick)
        chosen_xy.append(xy[pick])
    chosen_arr = np.array(chosen, dtype=np.int64)

    # every habitat cluster at least once (when n allows)
    hab = np.asarray(habitat)
    present = set(hab[pool].tolist())
    for h in sorted(present):
        if len(chosen_arr) and (hab[chosen_arr] == h).any():
            continue
        counts = np.bincount(hab[chosen_arr], minlength=int(hab.max()) + 1)
        donor = int(np.argmax(counts))
        if counts[donor] <= 1:
            break  # fewer proposals than habitats: cannot cover them all
        members = pool[hab[pool] == h]
        centre = Z[members].mean(axis=0)
        cands = members[np.argsort(np.linalg.norm(Z[members] - centre, axis=1),
                                   kind="stable")[:candidates]]
        new = _farthest_pick(cands, xy, [xy[i] for i in chosen_arr])
        # the donor's most redundant proposal: the one nearest another donor proposal
        own = chosen_arr[hab[chosen_arr] == donor]
        dd = np.linalg.norm(xy[own][:, None] - xy[own][None], axis=2)
        np.fill_diagonal(dd, np.inf)
        drop = own[int(np.argmin(dd.min(axis=1)))]
        chosen_arr = np.where(chosen_arr == drop, new, chosen_arr)

    # order: round-robin over habitats (each habitat's proposals in fine-cluster size order)
    by_hab: dict[int, list[int]] = {}
    for i in chosen_arr.tolist():
        by_hab.setdefault(int(hab[i]), []).append(i)
    ranked: list[int] = []
    queues = [by_hab[h] for h in sorted(by_hab, key=lambda h: -len(by_hab[h]))]
    while any(queues):
        for q in queues:
            if q:
                ranked.append(q.pop(0))
    return np.array(ranked, dtype=np.int64)


def classify(Z: np.ndarray, train: np.ndarray, y: np.ndarray, seed: int = 0
             ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """A logistic regression (standardised features, balanced class weights) on the images
    ``train`` with labels ``y``, applied to every row of Z: (predicted (n,) object, confidence
    (n,) = the top class probability, classes). With one class among the labels, that class
    everywhere at confidence 1."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    y = np.asarray(y).astype(str)
    classes = sorted(set(y.tolist()))
    if len(classes) < 2:
        return (np.full(len(Z), classes[0], dtype=object), np.ones(len(Z)), classes)
    scaler = StandardScaler().fit(Z)
    clf = LogisticRegression(max_iter=3000, class_weight="balanced", random_state=seed)
    clf.fit(scaler.transform(Z[train]), y)
    proba = clf.predict_proba(scaler.transform(Z))
    return (clf.classes_[proba.argmax(axis=1)].astype(object), proba.max(axis=1),
            [str(k) for k in clf.classes_])
