"""Embed every located image of a survey with a trained encoder, as GeoParquet.

    python -m ssl.embed --checkpoint runs/geoclr/last.pt \\
        --manifest data/seafloor/manifests/pairs.parquet --out runs/geoclr/embeddings.parquet

One row per located image: the locations columns, ``embedding`` (the encoder's pooled features
of the whole frame, float32, as ``ssl.evaluate`` computes them) and point geometry in the site
CRS, so geopandas, DuckDB and QGIS read it (see ``ssl/embeddings.py`` for the schema). Batched
on the GPU when there is one. Large surveys are embedded in chunks kept beside the output
(``.<name>.parts/``): an interrupted run continues where it stopped when the same command runs
again, and the chunks are removed once the file is written (a ``.<name>.parts`` that holds
anything else is refused). An existing embeddings file is replaced only with ``--overwrite``;
any other file at ``--out`` is never replaced.

``--reuse OLD`` copies the rows of images whose content is unchanged from an earlier embeddings
file instead of embedding them again (matched by the ``content_sha256`` column every file now
carries; only when checkpoint, image size and precision are equal, else it says why nothing is
reused): after a rebuild that added or changed a few dives, only those images are embedded. The
output is still a complete file for the current manifest (``ssl/data/reuse.py``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from . import contract as c
from .contract import site_crs, with_points
from .data import embeddings as E
from .data import reuse as R
from .data.manifest import ManifestError, file_sha256, load_manifest
from .data.store import ImageStore
from .files import write_atomic, write_parquet_atomic, write_text_atomic
from .flags import positive_int, progress_bar, run_reporting
from .training.features import extract_features
from .training.models import choose_device, load_encoder
from .training.runlog import CheckpointError

STATE = "state.json"


class EmbedError(RuntimeError):
    """Inputs that cannot be embedded (reported as one message, exit status 2)."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ssl.embed", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint", required=True, metavar="CKPT",
                   help="last.pt of a training run (python -m ssl.train)")
    p.add_argument("--manifest", required=True,
                   help="pairs.parquet of the survey whose images are embedded")
    p.add_argument("--out", required=True, metavar="FILE",
                   help="the embeddings GeoParquet file to write (e.g. embeddings.parquet)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an embeddings file that --out already holds")
    p.add_argument("--device", choices=["cuda", "cpu"], default=None,
                   help="None: cuda when available")
    p.add_argument("--batch-size", type=positive_int, default=256, help="images per batch")
    p.add_argument("--chunk", type=positive_int, default=8192,
                   help="images per resumable chunk")
    p.add_argument("--reuse", default=None, metavar="OLD",
                   help="an earlier embeddings file of this site: copy the rows of images whose "
                        "content is unchanged (same JPEG bytes, same checkpoint, image size and "
                        "precision) and embed only the others; OLD may be --out itself (with "
                        "--overwrite)")
    return p


def parts_dir(out: Path) -> Path:
    return out.with_name(f".{out.name}.parts")


def _check_out(out: Path, overwrite: bool) -> None:
    if out.is_dir():
        raise EmbedError(f"--out {out} is a folder; expected a file name such as "
                         f"{out / 'embeddings.parquet'}")
    if out.exists() or out.is_symlink():
        if not E.is_embeddings_file(out):
            raise EmbedError(f"--out {out} exists and is not an embeddings file written by "
                             "ssl.embed; it is never replaced: choose another --out")
        if not overwrite:
            raise EmbedError(f"--out {out} already holds embeddings (from an earlier run); pass "
                             "--overwrite to replace them, or choose another --out")
    if not out.parent.exists():
        out.parent.mkdir(parents=True)


def _check_parts(folder: Path) -> None:
    """Refuse (EmbedError) a chunk folder beside --out that is not this command's: anything but
    a folder, or a folder that holds files but no chunk state of ssl.embed (so a run never
    writes into, or removes files from, a folder it did not create)."""
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        raise EmbedError(f"{folder}: expected the folder of ssl.embed's resumable chunks for "
                         "--out, found a file or link; it is never replaced: move it away, or "
                         "choose another --out")
    if not folder.is_dir() or not any(folder.iterdir()):
        return
    try:
        state = json.loads((folder / STATE).read_text())
    except (OSError, ValueError):
        state = None
    if not (isinstance(state, dict) and isinstance(state.get("key"), dict)
            and isinstance(state.get("parts"), dict)):
        raise EmbedError(f"{folder}: holds files but no chunk state of ssl.embed ({STATE}); it "
                         "is where ssl.embed keeps the chunks of --out and is never written "
                         "to: move it away, or choose another --out")


class Chunks:
    """The resumable chunks of one embedding job: ``part-<k>.npy`` files and a state file
    naming the inputs they were computed from. Only files the state lists are ever removed."""

    def __init__(self, folder: Path, key: dict):
        self.folder, self.key = folder, key
        self.done: dict[int, str] = {}
        state = folder / STATE
        if state.is_file():
            try:
                old = json.loads(state.read_text())
            except ValueError:
                old = None
            if isinstance(old, dict) and old.get("key") == key:
                self.done = {int(k): v for k, v in old.get("parts", {}).items()
                             if (folder / v).is_file()}
            elif isinstance(old, dict):
                print("[embed] note: chunks of an earlier run with other inputs were found in "
                      f"{folder}; they are discarded", flush=True)
                self._remove(old.get("parts", {}).values())

    def _remove(self, names) -> None:
        for name in names:
            p = self.folder / Path(str(name)).name  # names only: never outside the folder
            if p.is_file():
                p.unlink()

    def _write_state(self) -> None:
        write_text_atomic(self.folder / STATE, json.dumps(
            {"key": self.key, "parts": {str(k): v for k, v in self.done.items()}}))

    def save(self, k: int, X: np.ndarray) -> None:
        name = f"part-{k:06d}.npy"

        def npy(tmp: Path) -> None:
            with open(tmp, "wb") as fh:
                np.save(fh, X.astype(np.float32, copy=False))

        write_atomic(self.folder / name, npy)
        self.done[k] = name
        self._write_state()

    def load(self, k: int) -> np.ndarray:
        return np.load(self.folder / self.done[k])

    def clear(self) -> None:
        self._remove(self.done.values())
        state = self.folder / STATE
        if state.is_file():
            state.unlink()
        try:
            self.folder.rmdir()
        except OSError:  # something else lives there: leave it
            pass


def _locations(manifest) -> tuple[pa.Table, dict]:
    schema = pq.read_schema(manifest.locations_path)
    cols = [k for k in E.LOCATION_COLUMNS if k in schema.names]
    table = pq.read_table(manifest.locations_path, columns=cols).sort_by("idx")
    return table.replace_schema_metadata(None), schema.metadata or {}


def embed(args: argparse.Namespace) -> dict:
    out = Path(args.out)
    device = choose_device(args.device, EmbedError)
    try:
        manifest = load_manifest(args.manifest)
    except ManifestError as exc:
        raise EmbedError(str(exc)) from None
    ckpt_path = Path(args.checkpoint)
    try:
        encoder, ckpt = load_encoder(ckpt_path, map_location="cpu")
    except CheckpointError as exc:
        raise EmbedError(f"--checkpoint {exc}") from None
    _check_out(out, args.overwrite)
    _check_parts(parts_dir(out))
    cargs = ckpt["args"]
    size = int(cargs["image_size"])
    trained_on = ckpt.get("dataset")
    if isinstance(trained_on, dict) and trained_on.get("digest") != manifest.digest:
        print("[embed] note: the checkpoint was trained on another dataset than this manifest's "
              "(" + "; ".join(c.identity_changes(trained_on, manifest.identity)) + ")",
              flush=True)
    table, loc_meta = _locations(manifest)
    crs = site_crs(loc_meta)
    if crs.projjson is None:
        raise EmbedError(f"{manifest.locations_path}: no CRS in its GeoParquet metadata; "
                         f"{c.REBUILD}")
    try:
        images = ImageStore.open(manifest)
    except ManifestError as exc:
        raise EmbedError(str(exc)) from None
    ckpt_sha = file_sha256(ckpt_path)
    n = manifest.n
    catalog = (loc_meta.get(c.META_CATALOG.encode()) or b"").decode()
    features = {"checkpoint_sha256": ckpt_sha, "image_size": size, "dim": int(encoder.feat_dim),
                "precision": "bfloat16" if device.type == "cuda" else "float32"}
    keys = np.full(n, None, dtype=object)  # content keys, filled as images are read
    reused = None
    if args.reuse:
        try:
            reused = R.plan(args.reuse, manifest.image_id, manifest.dive, manifest.identity,
                            images, features, catalog,
                            (loc_meta.get(c.META_CRS.encode()) or b"").decode())
        except R.ReuseError as exc:
            raise EmbedError(f"--reuse {exc}") from None
        keys = reused.keys
        if reused.why_none:
            print(f"[embed] --reuse: nothing is reused from {args.reuse}: {reused.why_none}",
                  flush=True)
    todo = (np.arange(n, dtype=np.int64) if reused is None
            else np.setdiff1d(np.arange(n, dtype=np.int64), reused.rows))
    key = {"checkpoint_sha256": ckpt_sha, "dataset": manifest.digest, "image_size": size,
           "chunk": args.chunk, "n": n}
    if reused is not None:  # the chunks hold the rows to embed: those rows are part of the key
        key["todo"] = hashlib.sha256(todo.tobytes()).hexdigest()
    chunks = Chunks(parts_dir(out), key)
    chunks._write_state()  # a place the system refuses is said now, not after the work
    m = len(todo)
    n_chunks = -(-m // args.chunk)
    resumed = sum(min(args.chunk, m - k * args.chunk) for k in chunks.done)
    if resumed:
        print(f"[embed] resuming: {resumed} of {m} images were embedded by an earlier "
              "run", flush=True)
    progress = progress_bar(total=m, initial=resumed, desc="[embed] images",
                            unit="img", disable=None)  # on a terminal only, like the pipeline's
    t0 = time.perf_counter()
    for k in range(n_chunks):
        if k in chunks.done:
            continue
        lo, hi = k * args.chunk, min(m, (k + 1) * args.chunk)
        X = np.empty((0, encoder.feat_dim), dtype=np.float32)
        parts = []
        for b in range(lo, hi, args.batch_size):
            rows = todo[b:min(hi, b + args.batch_size)].tolist()
            jpegs = [images[r] for r in rows]
            keys[rows] = [R.content_key(j) for j in jpegs]
            feats = extract_features(encoder, jpegs, size, device, batch_size=args.batch_size)
            parts.append(feats.float().cpu().numpy())
            progress.update(len(parts[-1]))
        X = np.concatenate(parts) if parts else X
        if not np.isfinite(X).all():
            raise EmbedError(f"{ckpt_path}: the encoder produced non-finite features (NaN or "
                             "infinite), typically the weights of a training run that "
                             "diverged; check its loss (metrics.csv) and train again, e.g. with "
                             "a lower --lr")
        chunks.save(k, X)
    progress.close()
    X = np.zeros((n, encoder.feat_dim), dtype=np.float32)
    if n_chunks:
        X[todo] = np.concatenate([chunks.load(k) for k in range(n_chunks)])
    if reused is not None and len(reused.rows):
        X[reused.rows] = reused.X
    for r in np.flatnonzero(keys == None).tolist():  # noqa: E711  (rows of resumed chunks)
        keys[r] = R.content_key(images[r])
    seconds = time.perf_counter() - t0

    table = table.append_column(E.EMBEDDING_COLUMN, E.embedding_array(X))
    table = table.append_column(E.CONTENT_COLUMN, pa.array(keys.tolist(), type=pa.string()))
    xy = np.stack([table.column("easting").to_numpy(), table.column("northing").to_numpy()], 1)
    encoder_info = {k: cargs.get(k) for k in ("objective", "framework", "positives", "backbone",
                                              "image_size", "sp")}
    encoder_info["step"] = ckpt.get("step")
    meta = {
        E.META_VERSION: E.EMBEDDINGS_VERSION,
        E.META_DATASET: manifest.digest,
        E.META_LOCATIONS_SHA256: manifest.locations_sha256,
        E.META_PAIRS: str(Path(os.path.abspath(manifest.pairs_path))),
        E.META_CHECKPOINT: str(Path(os.path.abspath(ckpt_path))),
        E.META_CHECKPOINT_SHA256: ckpt_sha,
        E.META_ENCODER: json.dumps(encoder_info, sort_keys=True),
        E.META_DIM: str(X.shape[1]),
        E.META_FEATURES: json.dumps(features, sort_keys=True),
        E.META_SHARDS: json.dumps(R.manifest_shards(manifest.identity), sort_keys=True),
        E.META_R_LOC: repr(float(manifest.r_loc_m)),
        c.META_CRS: (loc_meta.get(c.META_CRS.encode()) or b"").decode(),
        c.META_CATALOG: (loc_meta.get(c.META_CATALOG.encode()) or b"").decode(),
        "created_utc": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    if reused is not None:
        n_reused = int(len(reused.rows))
        meta[E.META_REUSE] = json.dumps({
            "from": str(Path(os.path.abspath(args.reuse))), "reused": n_reused,
            "embedded": n - n_reused, "why_none": reused.why_none,
            "hashed": reused.hashed}, sort_keys=True)
        print(f"[embed] reused {n_reused}, embedded {n - n_reused} (of {n} images; "
              f"from {args.reuse})", flush=True)
    if crs.wkt:
        meta[c.META_CRS_WKT] = crs.wkt
    table = table.replace_schema_metadata({k.encode(): v.encode() for k, v in meta.items()})
    table = with_points(table, xy, crs)
    write_parquet_atomic(out, table, row_group_size=max(256, min(16384, manifest.n // 64 or 1)))
    chunks.clear()
    return {"out": out, "n": manifest.n, "dim": int(X.shape[1]), "seconds": seconds,
            "device": device.type}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        res, rc = run_reporting(lambda: embed(args), (EmbedError, E.EmbeddingsError))
    except KeyboardInterrupt:
        print(f"\n[embed] interrupted; the chunks embedded so far are kept in "
              f"{parts_dir(Path(args.out))}: run the same command again to continue",
              file=sys.stderr)
        return 130
    if rc:
        return rc
    print(f"[embed] wrote {res['out']}: {res['n']} images x {res['dim']} dims "
          f"({res['device']}, {res['seconds']:.1f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
