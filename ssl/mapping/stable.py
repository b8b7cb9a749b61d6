"""Cluster ids that survive re-indexing: ``python -m ssl.habitats --previous OLD``.

Every ssl.habitats run records its clustering in ``cluster_model.npz``: the PCA projection of
the L2-normalised embeddings (mean, components), the k-means centres in that space (row j =
cluster j), the --dims asked for and the encoder (checkpoint sha256, embedding width). With
``--previous`` (an earlier run's folder or its habitats.json) a new run either

* **assigns** every image to the previous run's centres (the k-means rule, in the previous
  run's projection): images whose embedding did not change keep their cluster, new ones join the
  nearest. Done when all of these hold: the previous run has its cluster model; the embeddings
  come from the same encoder (checkpoint sha256) with the same width; --dims is the same; --k is
  auto or the previous run's number of clusters; and at most --recluster-above (default 20 %) of
  the images are new (not in the previous run), since the centres were fitted without them
  (--recluster-above 0 always re-clusters);
* or **re-clusters** (k from --k, or --k auto chooses again) and then **relabels** the new
  clusters to the previous ids: Hungarian matching (scipy's linear_sum_assignment) maximising
  the images both runs share that fall in both clusters; when the runs share no image, on the
  distance between the centres mapped back to the embedding space (same encoder only). A new
  cluster that matches none (more clusters, or no shared image with any) takes the smallest id
  the previous run did not use, larger clusters first; an id whose cluster is gone stays unused,
  so no other cluster takes its colour (``palette.cluster_colours``: cluster j's colour depends
  on j only).

Which was done and why goes to the log and habitats.json ("previous"). An earlier run of another
site, a missing folder or one that holds no ssl.habitats results is a mistake
(:class:`StableError`, one message).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .. import contract as c
from .clusters import Clustering, check_embeddings

MODEL_FILE = "cluster_model.npz"
RECLUSTER_ABOVE = 0.2  # share of new images above which --previous re-clusters
MARKER = "habitats.json"


class StableError(ValueError):
    """A --previous that cannot be used (one message, exit status 2)."""


@dataclass
class Model:
    """A run's clustering: z = (x / |x| - mean) @ components.T, cluster j's centre centres[j]
    (NaN for an id the run does not use)."""

    mean: np.ndarray  # (d,)
    components: np.ndarray  # (dims, d)
    centres: np.ndarray  # (K, dims)
    dims: int  # --dims asked for
    checkpoint_sha256: str
    embedding_dim: int

    def project(self, X: np.ndarray) -> np.ndarray:
        out = np.empty((len(X), len(self.components)), dtype=np.float32)
        for lo in range(0, len(X), 65536):
            B = np.asarray(X[lo:lo + 65536], dtype=np.float64)
            B = B / np.maximum(np.linalg.norm(B, axis=1, keepdims=True), 1e-12)
            out[lo:lo + 65536] = (B - self.mean) @ self.components.T
        return out

    def centres_in_embedding_space(self) -> np.ndarray:
        return self.mean + np.asarray(self.centres, np.float64) @ self.components

    def save(self, path: Path) -> None:
        with open(path, "wb") as fh:
            np.savez(fh, mean=self.mean, components=self.components, centres=self.centres,
                     dims=np.int64(self.dims), embedding_dim=np.int64(self.embedding_dim),
                     checkpoint_sha256=np.str_(self.checkpoint_sha256))

    @classmethod
    def load(cls, path: Path) -> Model | None:
        try:
            with np.load(path, allow_pickle=False) as z:
                return cls(mean=z["mean"], components=z["components"], centres=z["centres"],
                           dims=int(z["dims"]), embedding_dim=int(z["embedding_dim"]),
                           checkpoint_sha256=str(z["checkpoint_sha256"]))
        except (OSError, ValueError, KeyError):
            return None


def fit_model(X: np.ndarray, clu: Clustering, dims: int, seed: int,
              checkpoint_sha256: str) -> Model | None:
    """The projection ``clusters.reduce`` used for ``clu`` (the same PCA fitted again, then
    checked against ``clu.reduced``); None when it cannot be reproduced."""
    from sklearn.decomposition import PCA

    U = np.asarray(X, dtype=np.float64)
    U = U / np.maximum(np.linalg.norm(U, axis=1, keepdims=True), 1e-12)
    n_comp = clu.reduced.shape[1]
    pca = PCA(n_components=n_comp, random_state=seed).fit(U)
    model = Model(mean=pca.mean_, components=pca.components_,
                  centres=np.asarray(clu.centres, np.float32), dims=int(dims),
                  checkpoint_sha256=checkpoint_sha256, embedding_dim=int(U.shape[1]))
    probe = np.linspace(0, len(U) - 1, min(len(U), 256)).astype(np.int64)
    scale = float(np.abs(clu.reduced[probe]).max()) or 1.0
    if not np.allclose(model.project(X[probe]), clu.reduced[probe], atol=1e-4 * scale):
        return None
    return model


@dataclass
class Previous:
    folder: Path
    record: dict
    image_id: np.ndarray  # object (m,)
    cluster: np.ndarray  # int64 (m,) unsmoothed cluster of each image
    ids: list[int]  # the cluster ids the run used
    model: Model | None
    info: dict = field(default_factory=dict)


def read_previous(given: str | Path, meta: dict[str, str]) -> Previous:
    """The earlier run named by --previous (its folder or habitats.json), checked to be of the
    site ``meta`` (the embeddings' metadata) describes."""
    path = Path(given)
    folder = path.parent if path.name == MARKER and path.is_file() else path
    if not folder.is_dir():
        raise StableError(f"{given}: no such folder; expected the --out folder of an earlier "
                          "python -m ssl.habitats run (or its habitats.json)")
    try:
        record = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        record = None
    if not isinstance(record, dict) or record.get("tool") != "ssl.habitats":
        raise StableError(f"{folder} holds no results of ssl.habitats (no readable {MARKER}); "
                          "expected the --out folder of an earlier python -m ssl.habitats run")
    if record.get("state") != "complete":
        raise StableError(f"{folder}: that ssl.habitats run did not finish; pass a complete "
                          "earlier run, or leave --previous out")
    clusters = folder / "clusters.parquet"
    try:
        schema = pq.read_schema(clusters)
        col = "cluster_unsmoothed" if "cluster_unsmoothed" in schema.names else "cluster"
        t = pq.read_table(clusters, columns=["image_id", col])
    except (OSError, pa.ArrowException, KeyError) as exc:
        raise StableError(f"{clusters}: cannot be read ({str(exc)[:120]}); pass a complete "
                          "earlier ssl.habitats run, or leave --previous out") from None
    old = {k.decode(): v.decode() for k, v in (schema.metadata or {}).items()}
    for key, what in ((c.META_CATALOG, "catalog"), (c.META_CRS, "CRS")):
        a, b = old.get(key, ""), meta.get(key, "")
        if a and b and a != b:
            raise StableError(f"{folder} maps another site ({what} {a}, these embeddings' "
                              f"{b}); pass an earlier run of this survey, or leave --previous "
                              "out")
    cluster = t.column(col).to_numpy().astype(np.int64)
    model = Model.load(folder / MODEL_FILE) if (folder / MODEL_FILE).is_file() else None
    return Previous(folder=folder, record=record,
                    image_id=np.array(t.column("image_id").to_pylist(), dtype=object),
                    cluster=cluster, ids=sorted(set(cluster.tolist())), model=model)


def why_recluster(prev: Previous, image_id: np.ndarray, meta: dict[str, str], k: int | None,
                  dims: int, recluster_above: float) -> str | None:
    """Why the images cannot simply be assigned to the previous clusters (None: they can)."""
    m = prev.model
    if m is None:
        return f"the previous run has no {MODEL_FILE} (written by an earlier ssl.habitats)"
    sha = meta.get("checkpoint_sha256", "")
    if not sha or sha != m.checkpoint_sha256:
        return (f"the embeddings come from another encoder (checkpoint sha256 {sha[:12] or '?'}"
                f" vs {m.checkpoint_sha256[:12]} of the previous run)")
    if str(m.embedding_dim) != meta.get("embedding_dim"):
        return f"the embeddings have {meta.get('embedding_dim')} dims, the previous {m.embedding_dim}"
    if dims != m.dims:
        return f"--dims {dims}, the previous run used {m.dims}"
    if k is not None and k != len(prev.ids):
        return f"--k {k}, the previous run has {len(prev.ids)} clusters"
    if recluster_above <= 0:
        return "--recluster-above 0 asks for it"
    new = share_new(prev, image_id)
    if new > recluster_above:
        return (f"{new:.0%} of the images are new, more than --recluster-above "
                f"{recluster_above:.0%}")
    return None


def share_new(prev: Previous, image_id: np.ndarray) -> float:
    known = set(prev.image_id.tolist())
    return sum(1 for i in image_id.tolist() if i not in known) / max(len(image_id), 1)


def assign(prev: Previous, X: np.ndarray) -> Clustering:
    """Every image to the nearest centre of the previous run, in its projection."""
    m = prev.model
    assert m is not None
    check_embeddings(X)
    Z = m.project(X)
    C = np.asarray(m.centres, np.float64)
    labels = np.empty(len(Z), dtype=np.int64)
    for lo in range(0, len(Z), 65536):
        B = Z[lo:lo + 65536].astype(np.float64)
        d2 = ((B[:, None, :] - C[None]) ** 2).sum(axis=2)
        d2[:, ~np.isfinite(C).all(axis=1)] = np.inf  # ids the previous run did not use
        labels[lo:lo + 65536] = d2.argmin(axis=1)
    return Clustering(labels=labels, centres=m.centres, reduced=Z, k=len(C),
                      criterion=f"assigned to the existing clusters of {prev.folder} "
                            f"(k = {len(prev.ids)})")


def _overlap(prev: Previous, image_id: np.ndarray, labels: np.ndarray, k_new: int
             ) -> tuple[np.ndarray, int]:
    """(K_old, k_new) counts of shared images in old cluster i and new cluster j."""
    where = {i: r for r, i in enumerate(prev.image_id.tolist())}
    K_old = max(prev.ids) + 1 if prev.ids else 0
    M = np.zeros((K_old, k_new), dtype=np.int64)
    shared = 0
    for r, i in enumerate(image_id.tolist()):
        o = where.get(i)
        if o is not None:
            M[prev.cluster[o], labels[r]] += 1
            shared += 1
    return M, shared


def relabel(prev: Previous, clu: Clustering, image_id: np.ndarray,
            model: Model | None) -> tuple[Clustering, dict]:
    """``clu`` with its clusters renumbered to the previous run's ids (see the module's
    docstring); returns it and what was done, for habitats.json."""
    from scipy.optimize import linear_sum_assignment

    k_new = clu.k
    M, shared = _overlap(prev, image_id, clu.labels, k_new)
    target = np.full(k_new, -1, dtype=np.int64)
    if shared:
        how = f"matched on the {shared} images both runs share"
        rows, cols = linear_sum_assignment(-M)
        for o, j in zip(rows.tolist(), cols.tolist(), strict=True):
            if M[o, j] > 0:
                target[j] = o
    elif (model is not None and prev.model is not None
          and model.checkpoint_sha256 == prev.model.checkpoint_sha256
          and model.embedding_dim == prev.model.embedding_dim):
        how = "matched on the cluster centres (the runs share no image; same encoder)"
        old_c = prev.model.centres_in_embedding_space()
        new_c = model.centres_in_embedding_space()
        ok = np.flatnonzero(np.isfinite(old_c).all(axis=1))
        D = np.linalg.norm(old_c[ok][:, None] - new_c[None], axis=2)
        rows, cols = linear_sum_assignment(D)
        for o, j in zip(rows.tolist(), cols.tolist(), strict=True):
            target[j] = ok[o]
    else:
        how = ("not matched: the runs share no image and their encoders differ; the ids are "
               "new")
    used = set(prev.ids)
    free = (i for i in range(10**9) if i not in used)
    sizes = np.bincount(clu.labels, minlength=k_new)
    for j in sorted(np.flatnonzero(target < 0).tolist(), key=lambda j: (-sizes[j], j)):
        target[j] = next(free)
    K = int(target.max()) + 1
    centres = np.full((K, clu.centres.shape[1]), np.nan, dtype=np.float32)
    centres[target] = clu.centres
    labels = target[clu.labels]
    kept = sorted(int(target[j]) for j in range(k_new) if int(target[j]) in used)
    info = {"done": "re-clustered, then relabelled to the previous ids", "matching": how,
            "ids": {str(j): int(target[j]) for j in range(k_new)}, "ids_kept": kept,
            "ids_new": sorted(int(t) for t in target.tolist() if int(t) not in used),
            "ids_gone": sorted(set(prev.ids) - set(target.tolist())), "shared_images": shared}
    out = Clustering(labels=labels, centres=centres, reduced=clu.reduced, k=K,
                     criterion=clu.criterion, scores=clu.scores)
    for name in ("k_criterion",):  # fields other versions of Clustering may carry
        if hasattr(clu, name):
            setattr(out, name, getattr(clu, name))
    return out, info


def settle(clu: Clustering, X: np.ndarray, image_id: np.ndarray, prev: Previous | None,
           why: str | None, dims: int, seed: int, checkpoint_sha256: str,
           recluster_above: float, log=print) -> tuple[Clustering, Model | None, dict | None]:
    """The run's final clustering (relabelled to the previous ids when it re-clustered), the
    model to record, and what --previous did (None without it)."""
    if prev is not None and why is None:
        share = share_new(prev, image_id)
        got = set(clu.labels.tolist())
        info = {"from": str(prev.folder), "done": "assigned to the existing clusters",
                "why": (f"same encoder, --dims and number of clusters; {share:.1%} of the images"
                        f" are new (at most --recluster-above {recluster_above:g})"),
                "new_images": share, "ids_without_images": sorted(set(prev.ids) - got)}
        log(f"--previous: assigned to the existing clusters of {prev.folder} ({info['why']})"
            + (f"; cluster(s) {info['ids_without_images']} got no image"
               if info["ids_without_images"] else ""))
        return clu, prev.model, info
    model = fit_model(X, clu, dims, seed, checkpoint_sha256)
    if model is None:
        log(f"note: the PCA projection could not be reproduced; no {MODEL_FILE} is written, so "
            "a later --previous run re-clusters")
    if prev is None:
        return clu, model, None
    out, info = relabel(prev, clu, image_id, model)
    if model is not None:
        model.centres = out.centres
    info = {"from": str(prev.folder), "why": why, "new_images": share_new(prev, image_id),
            **info}
    log(f"--previous: re-clustered ({why}), then {info['matching']}: ids kept "
        f"{info['ids_kept']}, new {info['ids_new']}, gone {info['ids_gone']}")
    return out, model, info
