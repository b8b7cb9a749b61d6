"""What the generation scheme costs per publish, side by side in one run, at 1M images.

    python benchmarks/publish.py [--images 1000000] [--dives 10] [--shard-mb 20]

A site of N located images (the lawnmower layout of benchmarks/pairs.py, nav-only-like rows)
is split into D dive cache entries, each with an image shard of --shard-mb MB, and assembled
once (not timed). Then, on the same site and the same disk:

  in place    what publish did before generations: locations.parquet (zstd) and its SHA-256,
              pairs.parquet, quarantine.parquet, each fsynced under a temporary name and moved
              into place with os.replace, shards hard-linked, report.json
  generation  pipeline.build.publish: a new generation folder (shards hard-linked), the
              same three Parquet writes, report.json, manifest.json with the SHA-256 of the
              four manifests and size/mtime of each shard, one os.replace of `current`,
              pruning to two generations (the steady state: run twice, the second is timed)
  verify      the check a plain build makes before it may say "no change": verify_generation
              (re-hash of the manifests, size/mtime/footer of the shards) and check_entry of
              every cache entry

Bytes: the output folder's allocated size after each scheme, counting each hard-linked inode
once (du semantics), so the kept previous generation is what the scheme adds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))


def inodes(root: Path) -> dict[tuple[int, int], int]:
    """(device, inode) -> allocated bytes of every file under root, each inode once."""
    found = {}
    for p in root.rglob("*"):
        if not p.is_symlink() and p.is_file():
            st = p.stat()
            found[(st.st_dev, st.st_ino)] = st.st_blocks * 512
    return found


def bytes_beside(root: Path, cache: dict) -> int:
    """Allocated bytes under root that are not (hard links of) the dive cache."""
    return sum(b for k, b in inodes(root).items() if k not in cache)


def fake_shard(path: Path, mb: float, rows: int) -> str:
    """A cache entry's shard (images.parquet) and image store (images.arrow beside it) of
    random bytes; returns their content digest (contract.shard_digest)."""
    from pipeline import schema
    from pipeline.build import ENTRY_STORE, write_image_store

    rng = np.random.default_rng(0)
    size = max(1, int(mb * 1e6 / max(rows, 1)))
    blobs = [rng.bytes(size) for _ in range(rows)]
    ids = [f"i{i}" for i in range(rows)]
    table = pa.table({"image_id": ids, "jpeg": blobs}, schema=schema.IMAGE_SHARD)
    pq.write_table(table, path, row_group_size=256)
    write_image_store(table.cast(schema.IMAGE_STORE), path.with_name(ENTRY_STORE))
    return schema.shard_digest(ids, blobs)


def make_site(out: Path, n: int, dives: int, shard_mb: float):
    """Dive cache entries in ``out`` and the BuildPlan that points at them."""
    from pairs import site_frame

    from pipeline import build as pb
    from pipeline.catalog import Catalog
    from pipeline.output import begin_entry, claim, finish_entry

    root = out.parent / "root"
    root.mkdir(exist_ok=True)
    cat = Catalog.model_validate({"name": "bench", "root": root, "output": out,
                                  "nav": [{"format": "ifdo", "path": "{dive}/x.json"}]})
    cat.source, cat.sha256 = root / "bench.yaml", "0" * 64
    claim(out, cat.name, cat.source, cat.root).own("cache")
    locs = site_frame(n)
    locs["dive"] = np.repeat([f"d{k:02d}" for k in range(dives)], -(-n // dives))[:n]
    locs["image_id"] = locs["dive"] + "/" + locs["path"]
    fps = {}
    for k, (dive, part) in enumerate(locs.groupby("dive", sort=True)):
        fp = f"{k:064x}"
        entry = pb._cache_dir(out, dive, fp)
        begin_entry(entry, list(pb.CACHE_FILES))
        cols = [c for c in part.columns if c not in ("easting", "northing")]
        pq.write_table(pa.Table.from_pandas(part[cols], preserve_index=False),
                       entry / "locations.parquet")
        pq.write_table(pa.table({c: pa.array([], pa.string()) for c in
                                 ("dive", "source", "reason", "detail")}),
                       entry / "quarantine.parquet")
        digest = fake_shard(entry / pb.ENTRY_SHARD, shard_mb, 64)
        (entry / pb.ENTRY_SUMMARY).write_text(json.dumps(
            {"dive": dive, "nav_format": "ifdo", "images_found": len(part),
             "shard_digest": digest}))
        finish_entry(entry, fp, list(pb.CACHE_FILES))
        fps[dive] = fp
    policy = {"r_loc_m": 5.0, "r_min_m": 0.0, "cross_dive": True, "use_depth": False,
              "min_time_gap_s": 0.0, "max_neighbours": 32, "seed": 0}
    state = {"catalog_sha256": cat.sha256, "dives": fps, "pair_policy": policy,
             "labels_sha256": None, "schema_version": pb.schema.SCHEMA_VERSION}
    return pb.BuildPlan(cat, out, fps, list(fps), [], [], state, False)


def publish_in_place(bp, site, out: Path) -> None:
    """The publish before generations, reproduced step by step for the comparison."""
    from pipeline import schema
    from pipeline.index import row_group_rows, to_geoparquet_table
    from pipeline.manifest import (
        base_metadata,
        file_sha256,
        with_metadata,
        write_parquet_temp,
        write_text_atomic,
    )

    meta = base_metadata("bench", "", site.crs, {})
    (out / "images").mkdir(exist_ok=True)
    for dive, fp in bp.dives.items():
        dst = out / "images" / f"{dive}.parquet"
        tmp = dst.with_name(f".{dst.name}.tmp")
        tmp.unlink(missing_ok=True)
        tmp.hardlink_to(bp.output / "cache" / dive / fp[:16] / "images.parquet")
        tmp.replace(dst)
    geo = with_metadata(to_geoparquet_table(site.locations, site.projjson), meta)
    loc_tmp = write_parquet_temp(geo, out / "locations.parquet", compression="zstd",
                                 row_group_size=row_group_rows(site.locations.num_rows))
    pair_meta = {**meta, schema.META_PAIR_POLICY: json.dumps(site.report["pair_policy"]),
                 schema.META_LOCATIONS_SHA256: file_sha256(loc_tmp),
                 schema.META_LOCATIONS_PATH: "locations.parquet"}
    pairs_tmp = write_parquet_temp(with_metadata(site.pairs, pair_meta), out / "pairs.parquet",
                                   compression="zstd")
    quar_tmp = write_parquet_temp(with_metadata(site.quarantine, meta), out / "quarantine.parquet")
    for tmp, name in ((loc_tmp, "locations.parquet"), (pairs_tmp, "pairs.parquet"),
                      (quar_tmp, "quarantine.parquet")):
        os.replace(tmp, out / name)
    write_text_atomic(json.dumps(site.report), out / "report.json")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=1_000_000)
    ap.add_argument("--dives", type=int, default=10)
    ap.add_argument("--shard-mb", type=float, default=20.0, help="size of each dive's shard")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    from pipeline import build as pb
    from pipeline.output import check_entry, claim, verify_generation

    with tempfile.TemporaryDirectory(prefix="seafloor-publish-") as tmp:
        out = Path(tmp) / "out"
        bp = make_site(out, args.images, args.dives, args.shard_mb)
        t = time.perf_counter()
        site = pb.assemble_site(bp)
        print(f"site: {site.locations.num_rows} images, {site.pairs.num_rows} pairs, "
              f"{args.dives} dives x {args.shard_mb:g} MB shards (assembled in "
              f"{time.perf_counter() - t:.1f} s, not timed)", flush=True)
        cache = inodes(out / "cache")
        flat = Path(tmp) / "flat"
        flat.mkdir()
        rows = {"in place": [], "generation": [], "verify": []}
        pb.publish(bp, site)  # the first generation: the timed ones then keep a previous one
        for _ in range(args.repeats):
            t = time.perf_counter()
            publish_in_place(bp, site, flat)
            rows["in place"].append(time.perf_counter() - t)
            t = time.perf_counter()
            pb.publish(bp, site)
            rows["generation"].append(time.perf_counter() - t)
            t = time.perf_counter()
            folder = claim(out, "bench")
            problems = verify_generation(folder.current())
            problems += [w for d, fp in bp.dives.items()
                         if (w := check_entry(pb._cache_dir(out, d, fp), fp, pb.CACHE_FILES))]
            rows["verify"].append(time.perf_counter() - t)
            assert not problems, problems
        flat_bytes = bytes_beside(flat, cache)
        gen_bytes = bytes_beside(out, cache)
        cache_bytes = sum(cache.values())
        manifests = sum((out / "current" / n).stat().st_size for n in
                        ("locations.parquet", "pairs.parquet", "quarantine.parquet",
                         "report.json"))
    med = {k: float(np.median(v)) for k, v in rows.items()}
    print(f"\n{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"median of {args.repeats}\n")
    print("| scheme | seconds per publish | bytes beside the cache |")
    print("|---|---|---|")
    print(f"| in place (before) | {med['in place']:.2f} | {flat_bytes / 1e6:.0f} MB |")
    print(f"| generation | {med['generation']:.2f} ({med['generation'] / med['in place']:.2f}x) "
          f"| {gen_bytes / 1e6:.0f} MB (two generations) |")
    print(f"| verify before 'no change' | {med['verify']:.2f} | - |")
    print(f"\nextra per publish: {med['generation'] - med['in place']:+.2f} s; extra bytes kept: "
          f"{(gen_bytes - flat_bytes) / 1e6:+.0f} MB (one manifest set: {manifests / 1e6:.0f} MB; "
          f"shards are hard links of the cache, {cache_bytes / 1e6:.0f} MB, counted once)")


if __name__ == "__main__":
    main()
