"""The evaluation run behind ``python -m ssl.evaluate`` (the command, documented in
``ssl/evaluate.py``): its flags, the encoder or baseline, features, probes and outputs."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from .. import labels as labels_file
from ..contract import identity_changes
from ..data.manifest import ManifestError, load_manifest
from ..data.store import ImageStore
from ..files import FolderError, OwnedFolder
from ..flags import positive_float, positive_int, run_reporting
from ..training.features import extract_features
from ..training.location import CSP_DIM, make_location_encoder
from ..training.models import choose_device, load_encoder
from ..training.pretrained import imagenet_encoder
from ..training.runlog import CheckpointError
from . import handcrafted
from .probes import PROBES, evaluate_features, location_probe
from .report import markdown_table, write_outputs
from .splits import default_block_m

MARKER = "evaluation.json"  # the record of an evaluation's output folder (ssl/files.py)


class EvaluationError(RuntimeError):
    """Inputs that cannot be evaluated (reported as a message, exit status 2)."""


def _int_list(text: str) -> list[int]:
    try:
        out = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}") from None
    if not out:
        raise argparse.ArgumentTypeError("expected at least one value")
    return out


def _regimes(text: str) -> list[int | None]:
    out: list[int | None] = []
    for t in (t.strip() for t in text.split(",")):
        if not t:
            continue
        if t.lower() == "all":
            out.append(None)
            continue
        try:
            v = int(t)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"regimes are labels per class or 'all', got {t!r}") from None
        if v < 1:
            raise argparse.ArgumentTypeError(f"labels per class must be >= 1, got {v}")
        out.append(v)
    if not out:
        raise argparse.ArgumentTypeError("expected at least one regime")
    return out


def _dims(text: str) -> list[int | None]:
    out: list[int | None] = []
    for t in (t.strip() for t in text.split(",")):
        if t:
            out.append(None if t.lower() == "full" else _int_list(t)[0])
    if not out:
        raise argparse.ArgumentTypeError("expected at least one width")
    return out


def _probes(text: str) -> list[str]:
    out = [t.strip() for t in text.split(",") if t.strip()]
    bad = [p for p in out if p not in PROBES]
    if bad or not out:
        raise argparse.ArgumentTypeError(f"probes are among {', '.join(PROBES)}, got {text!r}")
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m ssl.evaluate", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--checkpoint", metavar="CKPT",
                      help="last.pt of a training run (python -m ssl.train)")
    what.add_argument("--baseline", choices=["random-init", "handcrafted", "imagenet"],
                      help="instead of a trained encoder: a frozen randomly initialised one "
                           "(--backbone, --init-seed), hand-crafted features (colour "
                           "moments, gradient-orientation histograms, Fourier band energies), "
                           "or torchvision's ImageNet weights of --backbone resnet18 or resnet50 "
                           "read from the local torch cache (hub/checkpoints under $TORCH_HOME; "
                           "never downloaded)")
    p.add_argument("--backbone", default="resnet18",
                   help="--baseline random-init or imagenet: backbone")
    p.add_argument("--image-size", type=positive_int, default=64,
                   help="--baseline: the size frames are resized to")
    p.add_argument("--init-seed", type=int, default=0,
                   help="--baseline random-init: the seed of the initial weights")
    p.add_argument("--manifest", required=True,
                   help="pairs.parquet of the survey to evaluate on; its locations table gives "
                        "positions, r_loc and (column 'label') the habitat labels")
    p.add_argument("--labels", default=None, metavar="CSV",
                   help="CSV with columns image_id,label, or a BIIGLE, CoralNet, Squidle+ or "
                        "iFDO annotation export (one label per image by majority; a tie leaves "
                        "it unlabelled); replaces the manifest's label column (images it does "
                        "not list count as unlabelled)")
    p.add_argument("--label-map", default=None, metavar="CSV",
                   help="--labels: CSV tool_label,habitat mapping the tool's labels to habitat "
                        "classes before the vote ('-' ignores a label; an unmapped one is refused)")
    p.add_argument("--out", required=True,
                   help="folder for metrics.json, table.md and figures: a new or empty one, or "
                        "an earlier evaluation's with --overwrite")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier evaluation in --out (only the files it recorded in "
                        f"{MARKER} are removed)")
    p.add_argument("--seeds", type=_int_list, default="0,1,2",
                   help="comma-separated seeds; each moves the block grid, picks the test blocks "
                        "and draws the few-label subsets")
    p.add_argument("--regimes", type=_regimes, default="10,50,all",
                   help="labels per class drawn from the training side, comma-separated; 'all' "
                        "uses every training label")
    p.add_argument("--probes", type=_probes, default=",".join(PROBES),
                   help="comma-separated among svm, logreg, knn")
    p.add_argument("--dims", type=_dims, default="128,full",
                   help="feature widths: PCA dimensions fitted on the training side, or 'full'")
    p.add_argument("--block-m", type=positive_float, default=None, metavar="M",
                   help="side of the square blocks of the split in metres; None: max(2 * "
                        "r_loc, 20)")
    p.add_argument("--test-fraction", type=float, default=0.3,
                   help="share of the labelled images on the test side")
    p.add_argument("--random-split", action="store_true",
                   help="split at random instead of in spatial blocks (leaks overlapping "
                        "neighbours across the split: optimistic, for comparison only)")
    p.add_argument("--cross-dive", action="store_true",
                   help="test on whole dives, train on the others (label some dives, map the "
                        "rest): each seed draws which dives are tested")
    p.add_argument("--device", choices=["cuda", "cpu"], default=None,
                   help="feature extraction device; None: cuda when available")
    p.add_argument("--batch-size", type=positive_int, default=256,
                   help="images per feature batch")
    p.add_argument("--spatial-tasks", action=argparse.BooleanOptionalAction, default=None,
                   help="run SP's spatial tasks (relative position/scale, jigsaw) on the "
                        "encoder; neither flag (None): only for checkpoints trained with SP")
    return p


def read_labels_csv(path: str | Path, image_id: np.ndarray, label_map=None) -> np.ndarray:
    """Labels (n,) object from a labels file (None where not listed), see ssl/labels.py."""
    try:
        return labels_file.read_labels_csv(
            path, image_id, log=lambda s: print(f"[evaluate] {s}", flush=True),
            label_map=label_map)
    except labels_file.LabelsError as exc:
        raise EvaluationError(str(exc)) from None


def location_embeddings(ckpt: dict, xy: np.ndarray, device: torch.device) -> np.ndarray:
    """CSP: the checkpoint's location encoder (eval mode) on positions ``xy`` (n, 2) metres in
    the site CRS, centred on the training site's centre as during training."""
    args = ckpt["args"]
    kind = args.get("location_encoder", "theory")
    state = ckpt["loc_encoder"]
    centres = state.get("centres") if kind == "rbf" else None  # a buffer; sigma follows from it
    enc = make_location_encoder(kind, CSP_DIM, float(ckpt["extent_m"]), centres=centres)
    enc.load_state_dict(state)
    enc = enc.to(device).eval()
    centre = np.asarray(torch.as_tensor(ckpt["site_centre"]).double().cpu().numpy())
    loc = torch.as_tensor((np.asarray(xy, dtype=np.float64) - centre).astype(np.float32),
                          device=device)
    out = []
    with torch.no_grad():
        for i in range(0, len(loc), 4096):
            out.append(enc(loc[i:i + 4096]).float().cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, CSP_DIM), dtype=np.float32)


def _encoder(args: argparse.Namespace) -> tuple[object | None, dict]:
    """(encoder, checkpoint-like dict with 'args') for --checkpoint or --baseline; the encoder
    is None for hand-crafted features."""
    if args.baseline == "handcrafted":
        if args.image_size < 16:
            raise EvaluationError(f"--image-size must be at least 16, got {args.image_size}")
        return None, {"args": {"objective": "handcrafted", "backbone": None,
                               "image_size": args.image_size}}
    if args.baseline == "random-init":
        from ..training.models import BACKBONES, Encoder

        if args.backbone not in BACKBONES:
            raise EvaluationError(f"--backbone {args.backbone!r}: expected one of "
                                  f"{', '.join(BACKBONES)}")
        if args.image_size < 16:
            raise EvaluationError(f"--image-size must be at least 16, got {args.image_size}")
        torch.manual_seed(args.init_seed)
        return Encoder(args.backbone), {"args": {
            "objective": "random-init", "backbone": args.backbone,
            "image_size": args.image_size, "init_seed": args.init_seed}}
    if args.baseline == "imagenet":
        if args.image_size < 16:
            raise EvaluationError(f"--image-size must be at least 16, got {args.image_size}")
        try:
            encoder, weights, _ = imagenet_encoder(args.backbone)
        except CheckpointError as exc:
            raise EvaluationError(str(exc)) from None
        return encoder, {"args": {"objective": "imagenet", "backbone": args.backbone,
                                  "image_size": args.image_size, "weights": weights}}
    ckpt_path = Path(args.checkpoint)
    try:
        return load_encoder(ckpt_path, map_location="cpu")
    except CheckpointError as exc:
        raise EvaluationError(f"--checkpoint {exc}") from None


def run_spatial_tasks(encoder, jpegs, image_size, device, split, labels, seed) -> dict | None:
    """SP's spatial tasks via ``evaluation.spatial.spatial_tasks`` (skipped when that module
    is not available)."""
    try:
        from .spatial import spatial_tasks
    except ImportError as exc:
        print(f"[evaluate] note: spatial tasks skipped ({exc})", flush=True)
        return None
    return spatial_tasks(encoder, jpegs, image_size, device, split.train, split.test, labels,
                         seed=seed)


def evaluate(args: argparse.Namespace) -> dict:
    t_start = time.perf_counter()
    timings: dict[str, float] = {}

    def lap(name: str, t0: float) -> float:
        timings[name] = round(time.perf_counter() - t0, 2)
        print(f"[evaluate] {name}: {timings[name]:.1f} s", flush=True)
        return time.perf_counter()

    device = choose_device(args.device, EvaluationError)
    if not 0.0 < args.test_fraction < 1.0:
        raise EvaluationError(f"--test-fraction must be in (0, 1), got {args.test_fraction}")
    if args.block_m is not None and not args.block_m > 0:
        raise EvaluationError(f"--block-m must be positive, got {args.block_m}")
    if args.label_map and not args.labels:
        raise EvaluationError(f"--label-map {args.label_map}: maps the labels of --labels; pass "
                              "--labels too, or leave --label-map out")
    try:  # before any long work: is --out a folder this evaluation may write to?
        OwnedFolder.check(args.out, "ssl.evaluate", MARKER, args.overwrite)
    except FolderError as exc:
        raise EvaluationError(str(exc)) from None
    t = time.perf_counter()
    try:
        manifest = load_manifest(args.manifest)
    except ManifestError as exc:
        raise EvaluationError(str(exc)) from None
    encoder, ckpt = _encoder(args)
    cargs = ckpt["args"]
    trained_on = ckpt.get("dataset")
    if isinstance(trained_on, dict) and trained_on.get("digest") != manifest.digest:
        print("[evaluate] note: the checkpoint was trained on another dataset than this "
              "manifest's (" + "; ".join(identity_changes(trained_on, manifest.identity))
              + ")", flush=True)
    labels = (read_labels_csv(args.labels, manifest.image_id, args.label_map) if args.labels
              else np.asarray(manifest.label, dtype=object))
    n_labelled = int(labels_file.labelled_mask(labels).sum())
    if n_labelled == 0:
        raise EvaluationError(f"{manifest.locations_path.name} has no habitat labels (column "
                              "'label' is empty); pass --labels CSV with columns image_id,label")
    if len({v for v in labels if labels_file.has_label(v)}) < 2:
        raise EvaluationError("the labels name fewer than two habitats; nothing to classify")
    try:
        jpegs = ImageStore.open(manifest)
    except ManifestError as exc:  # an image file damaged or cut short
        raise EvaluationError(str(exc)) from None
    t = lap("load", t)

    size = int(cargs["image_size"])
    if encoder is None:  # hand-crafted features
        X = handcrafted.extract(jpegs, size, batch_size=args.batch_size)
    else:
        feats = extract_features(encoder, jpegs, size, device, batch_size=args.batch_size)
        X = feats.float().cpu().numpy()
    if not np.isfinite(X).all():
        raise EvaluationError("the encoder produced non-finite features; the checkpoint is "
                              "broken")
    t = lap("features", t)

    r_loc = float(manifest.r_loc_m)
    block_m = default_block_m(r_loc) if args.block_m is None else float(args.block_m)
    if args.cross_dive and args.random_split:
        raise EvaluationError("--cross-dive and --random-split are two different splits; "
                              "choose one")
    if args.cross_dive and len(set(manifest.dive.tolist())) < 2:
        raise EvaluationError(f"--cross-dive: {manifest.locations_path.name} holds one dive; a "
                              "cross-dive split needs at least two")
    common = dict(block_m=block_m, seeds=args.seeds, regimes=args.regimes,
                  random=args.random_split, test_fraction=args.test_fraction,
                  dives=manifest.dive if args.cross_dive else None)
    try:
        metrics = evaluate_features(X, labels, manifest.xy, r_loc, probes=args.probes,
                                    dims=args.dims, log=lambda s: print(f"[evaluate] {s}",
                                                                        flush=True),
                                    **common)
    except ValueError as exc:
        raise EvaluationError(str(exc)) from None
    arrays = metrics.pop("arrays")
    t = lap("probes", t)

    metrics["checkpoint"] = {"objective": cargs.get("objective"),
                             "backbone": cargs.get("backbone"), "image_size": size,
                             "step": ckpt.get("step"), "sp": cargs.get("sp"),
                             "trained_on_this_manifest":
                                 (ckpt.get("dataset") or {}).get("digest") == manifest.digest}
    metrics["manifest"] = {"n": int(manifest.n), "r_loc_m": r_loc,
                           "extent_m": float(manifest.extent_m),
                           "locations_sha256": manifest.locations_sha256,
                           "dataset_digest": manifest.digest}

    if cargs.get("objective") == "csp" and "loc_encoder" in ckpt:
        L = location_embeddings(ckpt, manifest.xy, device)
        metrics["location_results"] = location_probe(X, L, labels, manifest.xy, r_loc,
                                                     probes=["svm"], **common)
        t = lap("location probe", t)

    run_sp = args.spatial_tasks
    if run_sp is None:
        run_sp = cargs.get("objective") == "sp" or float(cargs.get("sp") or 0) > 0
    if run_sp and encoder is None:
        print("[evaluate] note: spatial tasks need an image encoder; skipped for hand-crafted "
              "features", flush=True)
        run_sp = False
    if run_sp:
        res = run_spatial_tasks(encoder, jpegs, size, device, arrays["splits"][0], labels,
                                args.seeds[0])
        if res is not None:
            metrics["spatial_tasks"] = res
            t = lap("spatial tasks", t)

    timings["total"] = round(time.perf_counter() - t_start, 2)
    metrics["timings_s"] = timings
    try:
        folder = OwnedFolder.claim(args.out, "ssl.evaluate", MARKER,
                                   {"checkpoint": args.checkpoint, "baseline": args.baseline,
                                    "manifest": str(args.manifest)}, args.overwrite)
    except FolderError as exc:
        raise EvaluationError(str(exc)) from None
    write_outputs(folder.file, metrics, classes=metrics["classes"], xy=manifest.xy, labels=labels,
                  predictions=arrays["predictions"], test_mask=arrays["test_mask"],
                  embedding=X, per_class_f1=metrics["per_class_f1"],
                  confusion=metrics["confusion"])
    t = lap("write", t)
    folder.finish({"reference": metrics.get("reference")})
    return metrics


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    t0 = time.perf_counter()
    metrics, rc = run_reporting(lambda: evaluate(args), (EvaluationError,))
    if rc:
        return rc
    print()
    print(markdown_table(metrics), end="")
    ref = metrics["reference"]
    print(f"\n[evaluate] reference ({ref['probe']}, {ref['dims']}, {ref['regime']} labels, seed "
          f"{ref['seed']}): macro-F1 {ref['macro_f1']:.3f}, accuracy {ref['accuracy']:.3f}")
    if isinstance(metrics.get("spatial_tasks"), dict):
        summary = {f"{task}.{k}": round(v, 3)
                   for task, res in metrics["spatial_tasks"].items() if isinstance(res, dict)
                   for k, v in res.items() if isinstance(v, float)}
        print(f"[evaluate] spatial tasks: {json.dumps(summary)}")
    print(f"[evaluate] wrote {Path(args.out) / 'metrics.json'} and figures in "
          f"{time.perf_counter() - t0:.1f} s", flush=True)
    return 0

