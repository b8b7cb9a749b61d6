"""From embeddings to a habitat map: unsupervised clusters, the images to label first, and with
labels a predicted habitat for every image, exported for a GIS.

    python -m ssl.habitats --embeddings runs/geoclr/embeddings.parquet --k auto \\
        --out runs/geoclr/habitats
    # hand labelling_list.csv to an annotator, then:
    python -m ssl.habitats --embeddings runs/geoclr/embeddings.parquet --k auto \\
        --labels labels.csv --out runs/geoclr/habitats-labelled

Writes into --out (a new or empty folder, or one of an earlier run with --overwrite):
  clusters.parquet, clusters.gpkg   every image with its cluster and distance to the centre
                                    (GeoParquet and GeoPackage, points in the site CRS)
  cluster_map.png          the survey coloured by cluster, the labelling list circled
  k_selection.png          the score of every k tried (--k auto; the --k-criterion's score)
  contact_sheets/cluster_<j>.png   the images nearest each cluster's centre, over several dives
  labelling_list.csv       the N images to label first (rank, image_id, dive, path, file, ...)
  labelling_list.png       the same images on one sheet, in rank order
with --export TOOL ...:
  export/<tool>/           the labelling list for an annotation tool: its metadata file (biigle,
                           coralnet: metadata.csv; ifdo: <catalog>_labelling-list_iFDO.json),
                           images/ (copies of the original files) and
                           contact_sheet.png (``ssl/mapping/exports.py``)
  export/file_names.csv    which image each exported file name is (rank, image_id, dive, path)
  cluster_model.npz        the PCA projection and the centres of cluster 0..K-1, for a later
                           run's --previous (``ssl/mapping/stable.py``)
  habitats.json            what was done: inputs, k and how it was chosen, sizes, the list, and
                           every file written (the record --overwrite removes by)
with --labels:
  predictions.parquet, predictions.gpkg   points in the site CRS with predicted habitat and
                                          confidence (GeoParquet and GeoPackage, for QGIS)
  prediction_map.png       the survey coloured by predicted habitat (faded: low confidence)
Clusters are k-means on L2-normalised, PCA-reduced embeddings (``ssl/clusters.py``); the list
follows GeoCLR's choice of the images nearest k-means centres, spread over space
(``ssl/labelling.py``); the classifier is a logistic regression on the same reduced embeddings.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from . import contract as c
from .contract import with_points
from .data.embeddings import Embeddings, EmbeddingsError, read_embeddings
from .data.manifest import ManifestError, load_manifest
from .data.store import ImageStore
from .files import FolderError, OwnedFolder, write_atomic, write_parquet_atomic
from .flags import k_flag, positive_float, positive_int, run_reporting
from .labels import LabelsError, labelled_mask, read_labels_csv
from .mapping import stable
from .mapping.clusters import CRITERIA, DEFAULT_CRITERION, K_RANGE, ClusterError, cluster, smooth
from .mapping.exports import (
    TOOLS,
    ExportError,
    check_sources,
    export_labelling_list,
    listed,
    read_locations,
)
from .mapping.gis import write_geopackage
from .mapping.labelling import classify, labelling_list
from .palette import cluster_colours, habitat_colours

MARKER = "habitats.json"
BUILDER_MARKER = ".seafloor-output.json"  # the pipeline's output-folder record (its root)


class HabitatsError(RuntimeError):
    """Inputs that cannot be mapped (reported as one message, exit status 2)."""


def _k_range(text: str) -> tuple[int, int]:
    try:
        lo, hi = (int(t) for t in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LO,HI (e.g. 2,12), got {text!r}") from None
    if not 2 <= lo <= hi:
        raise argparse.ArgumentTypeError(f"expected 2 <= LO <= HI, got {text!r}")
    return lo, hi


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ssl.habitats",
                                description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--embeddings", required=True, metavar="FILE",
                   help="embeddings GeoParquet written by python -m ssl.embed")
    p.add_argument("--k", type=k_flag, default="auto",
                   help="number of habitat clusters, or 'auto': the k in --k-range that "
                        "--k-criterion prefers")
    p.add_argument("--k-criterion", choices=list(CRITERIA), default=DEFAULT_CRITERION,
                   help="--k auto: how k is chosen (ssl/mapping/clusters.py; *_spatial: on the "
                        "embeddings averaged over each image's neighbours within r_loc)")
    p.add_argument("--k-range", type=_k_range, default=f"{K_RANGE[0]},{K_RANGE[1]}",
                   help="--k auto: the smallest and largest k tried")
    p.add_argument("--dims", type=positive_int, default=32,
                   help="PCA components the embeddings are reduced to before clustering")
    p.add_argument("--manifest", "--pairs", dest="manifest", default=None, metavar="PAIRS",
                   help="pairs.parquet of the survey (images for the contact sheets, neighbour "
                        "graph for --smooth); None: the one the embeddings were computed for")
    p.add_argument("--smooth", type=int, default=0, metavar="ROUNDS",
                   help="rounds of majority vote of each image's cluster with its neighbours "
                        "within r_loc (0: none)")
    p.add_argument("--n-label", type=positive_int, default=60, metavar="N",
                   help="length of the labelling list")
    p.add_argument("--labels", default=None, metavar="CSV",
                   help="labels: a CSV image_id,label, or a BIIGLE, CoralNet, Squidle+ or iFDO "
                        "annotation export (one label per image by majority of its points or "
                        "annotators; a tie leaves it unlabelled): train a classifier on the "
                        "embeddings and predict every image's habitat")
    p.add_argument("--label-map", default=None, metavar="CSV",
                   help="--labels: CSV tool_label,habitat mapping the tool's labels to habitat "
                        "classes before the vote ('-' ignores a label; an unmapped one is refused)")
    p.add_argument("--min-confidence", type=positive_float, default=0.5,
                   help="predictions below this confidence are drawn faded on the map")
    p.add_argument("--sheet-size", type=positive_int, default=12,
                   help="images per contact sheet")
    p.add_argument("--image-root", default=None, metavar="DIR",
                   help="catalog root for the labelling list's 'file' column; None: the root "
                        "the pipeline recorded in the manifest's output folder")
    p.add_argument("--export", nargs="+", choices=TOOLS, default=None, metavar="TOOL",
                   help=f"also write the labelling list for annotation tools ({', '.join(TOOLS)}):"
                        " each tool's metadata file, the original images and the contact sheet "
                        "in export/<tool>/")
    p.add_argument("--seed", type=int, default=0, help="seed of k-means and the samples")
    p.add_argument("--previous", default=None, metavar="OLD",
                   help="an earlier ssl.habitats run of this site (its --out folder or "
                        "habitats.json): keep its cluster ids and colours, by assigning the "
                        "images to its clusters or by re-clustering and matching the new "
                        "clusters to its ids (ssl/mapping/stable.py)")
    p.add_argument("--recluster-above", type=float, default=stable.RECLUSTER_ABOVE,
                   metavar="SHARE", help="--previous: re-cluster when more than this share of "
                                         "the images is new (0: always re-cluster and match)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the results of an earlier ssl.habitats run in --out (only the "
                        "files it recorded are removed)")
    return p


def _log(msg: str) -> None:
    print(f"[habitats] {msg}", flush=True)


def _manifest_for(emb: Embeddings, given: str | None):
    path = Path(given) if given else emb.pairs
    try:
        manifest = load_manifest(path)
    except ManifestError as exc:
        if given:
            raise HabitatsError(f"--manifest {exc}") from None
        raise HabitatsError(f"{emb.path} was computed for {path}, which cannot be read ({exc}); "
                            "pass --manifest with the survey's pairs.parquet") from None
    if manifest.digest != emb.dataset:
        changes = "; ".join(c.identity_changes({"digest": emb.dataset}, manifest.identity)[:1])
        raise HabitatsError(
            f"{emb.path} holds embeddings of another dataset than {path} (dataset digest "
            f"{emb.dataset[:12]} vs {manifest.digest[:12]}{'; ' + changes if changes else ''}); "
            "embed this manifest's images with python -m ssl.embed, or pass the manifest the "
            "embeddings were computed for")
    if manifest.n != emb.n or not np.array_equal(manifest.image_id, emb.image_id):
        raise HabitatsError(f"{emb.path}: its rows do not match the images of {path}; compute "
                            "the embeddings again with python -m ssl.embed")
    return manifest


def _previous(args: argparse.Namespace, emb: Embeddings):
    """(the earlier run of --previous or None, why its clusters are not simply assigned)."""
    if not args.previous:
        return None, None
    if not 0.0 <= args.recluster_above <= 1.0:
        raise HabitatsError(f"--recluster-above {args.recluster_above}: expected a share in "
                            "[0, 1]")
    try:
        prev = stable.read_previous(args.previous, emb.meta)
    except stable.StableError as exc:
        raise HabitatsError(f"--previous {exc}") from None
    return prev, stable.why_recluster(prev, emb.image_id, emb.meta, args.k, args.dims,
                                      args.recluster_above)


def _output_folder(pairs_path: Path) -> Path:
    """The builder's output folder of a manifest: the folder of ``pairs.parquet``, or, for the
    pairs of one generation (``<output>/generations/<n>/pairs.parquet``, as the map-habitats
    flow passes them), the output folder that holds it (its record and the survey iFDO)."""
    folder = Path(os.path.abspath(pairs_path)).parent
    up = folder.parent.parent
    if folder.parent.name == "generations" and not (folder / BUILDER_MARKER).is_file() \
            and (up / BUILDER_MARKER).is_file():
        return up
    return folder


def _image_root(given: str | None, pairs_path: Path) -> Path | None:
    if given:
        return Path(given)
    marker = _output_folder(pairs_path) / BUILDER_MARKER
    try:
        root = json.loads(marker.read_text()).get("root")
    except (OSError, ValueError, AttributeError):
        return None
    return Path(root) if isinstance(root, str) else None


def sheet_members(members: np.ndarray, dist: np.ndarray, dive: np.ndarray, n: int) -> np.ndarray:
    """Up to ``n`` of ``members`` nearest their centre, taken in turn from each dive (the dive
    with the nearest image first), so a sheet shows the habitat across dives."""
    order = members[np.argsort(dist[members], kind="stable")]
    queues: dict[str, list[int]] = {}
    for i in order.tolist():
        queues.setdefault(str(dive[i]), []).append(i)
    picked: list[int] = []
    lists = list(queues.values())
    while len(picked) < n and any(lists):
        for q in lists:
            if q and len(picked) < n:
                picked.append(q.pop(0))
    return np.array(picked, dtype=np.int64)


def _classify(Z: np.ndarray, labels: np.ndarray, seed: int):
    has = labelled_mask(labels)
    classes = sorted({str(v) for v in labels[has]})
    if len(classes) < 2:
        raise HabitatsError(f"--labels: the labels name {len(classes)} habitat "
                            f"({classes}); a classifier needs at least two")
    pred, conf, classes = classify(Z, np.flatnonzero(has), labels[has], seed)
    return pred, conf, classes, has


def _point_table(emb: Embeddings, columns: dict) -> pa.Table:
    base = {"idx": pa.array(emb.idx, pa.int32()), "image_id": pa.array(emb.image_id.tolist()),
            "dive": pa.array(emb.dive.tolist()), "path": pa.array(emb.rel_path.tolist()),
            "easting": pa.array(emb.xy[:, 0]), "northing": pa.array(emb.xy[:, 1])}
    base.update(columns)
    meta = {k: v for k, v in emb.meta.items()
            if k in (c.META_CRS, c.META_CRS_WKT, "dataset", c.META_CATALOG)}
    meta["embeddings"] = str(Path(os.path.abspath(emb.path)))
    return pa.table(base).replace_schema_metadata(meta)


def _geopackage(path: Path, layer: str, emb: Embeddings, columns: dict) -> None:
    try:
        write_geopackage(path, layer, emb.xy, columns, emb.crs)
    except ValueError as exc:
        raise HabitatsError(f"{emb.path}: cannot write a GeoPackage ({exc})") from None


def run(args: argparse.Namespace) -> dict:
    t0 = time.perf_counter()
    try:
        emb = read_embeddings(args.embeddings)
    except EmbeddingsError as exc:
        raise HabitatsError(str(exc)) from None
    n = emb.n
    if n < 3:
        raise HabitatsError(f"{emb.path}: {n} image(s); clustering needs at least 3")
    if args.k is not None and not 2 <= args.k <= n - 1:
        raise HabitatsError(f"--k {args.k}: expected 2 <= k <= {n - 1} (the survey has {n} "
                            "images), or --k auto")
    if args.smooth < 0:
        raise HabitatsError(f"--smooth {args.smooth}: expected 0 or more rounds")
    if not args.min_confidence <= 1.0:
        raise HabitatsError(f"--min-confidence {args.min_confidence}: expected a value in (0, 1]")
    if args.k is None and args.k_range[0] > n - 1:
        raise HabitatsError(f"--k-range {args.k_range[0]},{args.k_range[1]}: the survey has {n} "
                            f"images, so k can be at most {n - 1}; lower the range")
    if args.image_root and not Path(args.image_root).is_dir():
        raise HabitatsError(f"--image-root {args.image_root}: no such folder; expected the "
                            "catalog root the images' paths are relative to")
    manifest = _manifest_for(emb, args.manifest)
    try:
        images = ImageStore.open(manifest)
    except ManifestError as exc:
        raise HabitatsError(str(exc)) from None
    labels = None
    if args.label_map and not args.labels:
        raise HabitatsError(f"--label-map {args.label_map}: maps the labels of --labels; pass "
                            "--labels too, or leave --label-map out")
    if args.labels:
        try:
            labels = read_labels_csv(args.labels, emb.image_id, log=_log,
                                     label_map=args.label_map)
        except LabelsError as exc:
            raise HabitatsError(str(exc)) from None
    n_label = args.n_label
    if n_label > n:
        _log(f"note: --n-label {n_label} is more than the {n} images; the list holds all of them")
        n_label = n
    export_root = locations = None
    if args.export:
        export_root = _image_root(args.image_root, manifest.pairs_path)
        if export_root is None or not export_root.is_dir():
            found = ("no catalog root is recorded in "
                     + str(_output_folder(manifest.pairs_path) / BUILDER_MARKER)
                     if export_root is None else f"the recorded catalog root {export_root} is "
                     "not a folder")
            raise HabitatsError(f"--export: {found}; the exports copy the survey's original "
                                "image files: pass --image-root with the catalog root the "
                                "images' paths are relative to")
        try:
            locations = read_locations(emb.path, n)
        except ExportError as exc:
            raise HabitatsError(str(exc)) from None
    prev, why = _previous(args, emb)
    hint = ", on embeddings " + str(emb.path)
    OwnedFolder.check(args.out, "ssl.habitats", MARKER, args.overwrite, hint=hint)
    try:
        if prev is not None and why is None:  # --previous: the images to its clusters
            clu = stable.assign(prev, emb.X)
        else:
            clu = cluster(emb.X, args.k, dims=args.dims, seed=args.seed, k_range=args.k_range,
                          criterion=args.k_criterion, graph=(manifest.anchor, manifest.positive))
    except ClusterError as exc:
        raise HabitatsError(f"{emb.path}: {exc}") from None
    clu, model, previous = stable.settle(
        clu, emb.X, emb.image_id, prev, why, args.dims, args.seed,
        emb.meta.get("checkpoint_sha256", ""), args.recluster_above, log=_log)
    k = clu.k
    _log(f"{n} images -> {k} clusters ({clu.criterion})")
    habitat = clu.labels
    changed = 0
    if args.smooth:
        habitat = smooth(clu.labels, manifest.anchor, manifest.positive, k, args.smooth)
        changed = int((habitat != clu.labels).sum())
        _log(f"smoothing over the neighbours within {emb.r_loc_m:g} m ({args.smooth} rounds): "
             f"{changed} images changed cluster")
    # distance to the centre of the cluster each image ends in (after smoothing)
    dist = np.linalg.norm(clu.reduced - clu.centres[habitat], axis=1)
    sizes = np.bincount(habitat, minlength=k)
    empty = [j for j in range(k) if sizes[j] == 0 and (clu.labels == j).any()]
    if empty:
        _log(f"note: smoothing emptied cluster(s) {empty}")
    labelled = labelled_mask(labels) if labels is not None else None
    chosen = labelling_list(clu.reduced, habitat, emb.xy, n_label, seed=args.seed,
                            exclude=labelled)
    listed_images = None
    if args.export:
        listed_images = listed(chosen, emb.image_id, emb.dive, emb.rel_path, export_root,
                               locations)
        try:
            check_sources(listed_images)
        except ExportError as exc:
            raise HabitatsError(str(exc)) from None
    # claimed once the clusters and the list exist: a refusal leaves the folder as it was
    folder = OwnedFolder.claim(args.out, "ssl.habitats", MARKER,
                               {"embeddings": str(Path(os.path.abspath(emb.path))),
                                "dataset": emb.dataset}, args.overwrite, hint=hint)
    crs_name = emb.meta.get(c.META_CRS, "site CRS")
    written: dict[str, str] = {}

    def out(name: str) -> Path:
        p = folder.file(name)
        written[name] = str(p)
        return p

    from .mapping import figures as fig

    colours = cluster_colours(k)
    # GeoParquet of the clusters
    table = _point_table(emb, {"cluster": pa.array(habitat.astype(np.int32)),
                               "cluster_unsmoothed": pa.array(clu.labels.astype(np.int32)),
                               "distance_to_centre": pa.array(dist.astype(np.float32))})
    write_parquet_atomic(out("clusters.parquet"), with_points(table, emb.xy, emb.crs))
    if model is not None:
        write_atomic(out(stable.MODEL_FILE), model.save)
    _geopackage(out("clusters.gpkg"), "clusters", emb,
                {"image_id": emb.image_id, "dive": emb.dive, "path": emb.rel_path,
                 "cluster": habitat.astype(np.int64),
                 "distance_to_centre": dist.astype(np.float64)})
    fig.cluster_map(out("cluster_map.png"), emb.xy, habitat, k, crs_name,
                    f"{k} habitat clusters of {n} images ({clu.criterion.split(':')[0]}); "
                    f"circled: the {len(chosen)} images to label first", marks=chosen)
    if clu.scores:
        fig.k_curve(out("k_selection.png"), clu.scores, k, clu.k_criterion)
    for j in range(k):
        members = np.flatnonzero(habitat == j)
        if not members.size:
            continue
        pick = sheet_members(members, dist, emb.dive, args.sheet_size)
        dives = len(set(emb.dive[pick].tolist()))
        fig.contact_sheet(out(f"contact_sheets/cluster_{j:02d}.png"),
                          [images[int(i)] for i in pick],
                          [f"{emb.dive[i]} #{emb.idx[i]}" for i in pick],
                          f"cluster {j}: {members.size} images; the {len(pick)} nearest its "
                          f"centre, from {dives} dive(s)", colour=colours[j])

    # the labelling list
    root = _image_root(args.image_root, manifest.pairs_path)
    with open(out("labelling_list.csv"), "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["rank", "image_id", "dive", "path", "file", "cluster", "easting",
                    "northing", "label"])
        for r, i in enumerate(chosen.tolist(), start=1):
            file = str(root / emb.rel_path[i]) if root is not None else ""
            w.writerow([r, emb.image_id[i], emb.dive[i], emb.rel_path[i], file, int(habitat[i]),
                        f"{emb.xy[i, 0]:.2f}", f"{emb.xy[i, 1]:.2f}", ""])
    covered = sorted(set(habitat[chosen].tolist()))
    if len(chosen):
        fig.contact_sheet(out("labelling_list.png"), [images[int(i)] for i in chosen],
                          [f"{r} c{habitat[i]} {emb.dive[i]}" for r, i in enumerate(chosen, 1)],
                          f"images to label first, in rank order ({len(chosen)}; c = cluster)",
                          per_row=10)
        _log(f"labelling list: {len(chosen)} images covering {len(covered)} of {k} clusters"
             + ("" if root else " (no catalog root known: the 'file' column is empty; pass "
                                "--image-root)"))
    else:
        _log("labelling list: empty, every image is labelled already")
    exported = None
    if listed_images:
        detail = (f"the images nearest the k-means centres of {len(chosen)} fine clusters of "
                  f"the embeddings, spread over space, covering {len(covered)} of the {k} "
                  "habitat clusters")
        try:
            exported = export_labelling_list(
                args.export, listed_images, out, Path(written["labelling_list.png"]),
                emb.meta.get(c.META_CATALOG) or "survey", _output_folder(manifest.pairs_path),
                detail, log=_log)
        except ExportError as exc:
            raise HabitatsError(str(exc)) from None
    elif args.export:
        _log("--export: the labelling list is empty; nothing to export")

    summary: dict = {
        "n_images": n, "k": k, "criterion": clu.criterion,
        "silhouette": ({str(kk): round(v, 4) for kk, v in clu.scores.items()}
                       if clu.k_criterion in ("", "silhouette") else None),
        "k_criterion": clu.k_criterion or None,
        "k_scores": {str(kk): round(v, 4) for kk, v in clu.scores.items()},
        "dims": int(clu.reduced.shape[1]), "seed": args.seed, "smooth_rounds": args.smooth,
        "smoothing_changed": changed, "cluster_sizes": sizes.tolist(),
        "labelling_list": {"n": int(len(chosen)), "clusters_covered": len(covered),
                           "image_ids": emb.image_id[chosen].tolist()},
        "encoder": emb.encoder, "manifest": str(manifest.pairs_path),
    }
    summary["cluster_ids"] = sorted(set(clu.labels.tolist()))  # with --previous: maybe gaps
    summary["palette"] = {str(j): colours[j] for j in summary["cluster_ids"]}
    summary["previous"] = previous
    if labels is not None:
        pred, conf, classes, has = _classify(clu.reduced, labels, args.seed)
        cols = {"cluster": pa.array(habitat.astype(np.int32)),
                "predicted": pa.array(pred.tolist()),
                "confidence": pa.array(conf.astype(np.float32)),
                "label": pa.array([None if v is None else str(v) for v in labels])}
        table = _point_table(emb, cols)
        write_parquet_atomic(out("predictions.parquet"), with_points(table, emb.xy, emb.crs))
        _geopackage(out("predictions.gpkg"), "predictions", emb,
                    {"image_id": emb.image_id, "dive": emb.dive, "path": emb.rel_path,
                     "cluster": habitat.astype(np.int64), "predicted": pred,
                     "confidence": conf.astype(np.float64), "label": labels})
        fig.prediction_map(out("prediction_map.png"), emb.xy, pred, conf, classes, crs_name,
                           f"predicted habitat of {n} images from {int(has.sum())} labels "
                           f"(logistic regression on the embeddings)", args.min_confidence,
                           labelled=np.flatnonzero(has))
        counts = {cl: int((pred == cl).sum()) for cl in classes}
        # which labelled habitats each cluster holds (how the clusters read as habitats)
        by_cluster = {str(j): {cl: int(((habitat == j) & (labels == cl)).sum())
                               for cl in classes if ((habitat == j) & (labels == cl)).any()}
                      for j in range(k)}
        summary["prediction"] = {
            "labelled": int(has.sum()), "classes": classes, "predicted_counts": counts,
            "mean_confidence": round(float(conf.mean()), 4),
            "below_min_confidence": int((conf < args.min_confidence).sum()),
            "labels_per_cluster": by_cluster,
            "palette": habitat_colours(classes)}
        _log(f"predicted {n} images from {int(has.sum())} labels: "
             + ", ".join(f"{k_}: {v}" for k_, v in counts.items()))
    if exported is not None:
        summary["export"] = exported
    summary["files"] = written
    summary["seconds"] = round(time.perf_counter() - t0, 2)
    folder.finish(summary)
    return summary


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    summary, rc = run_reporting(lambda: run(args), (HabitatsError, FolderError))
    if rc:
        return rc
    _log(f"wrote {len(summary['files'])} files to {args.out} in {summary['seconds']:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
