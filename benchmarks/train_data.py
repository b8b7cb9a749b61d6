"""The trainer's data path at 1M images: memory per rank and images/s, side by side in one run.

    python benchmarks/train_data.py [--images 1000000] [--dives 10] [--ranks 1,4]
                                    [--batches 100] [--batch-size 256] [--keep DIR]

A manifest set of N located images is written straight in the contract's format (small JPEGs
of 32 x 32 to 48 x 64 pixels, about 1 KB each, in D dives; one pair per image), then for each
data path and each number of ranks R, R processes start at once, as torchrun would start them,
and each one does what a rank's data path does (no model, no process group):

  in RAM   what the trainer did before: read every dive's Parquet shard and hold all JPEG
           bytes of the survey in the process (a list of bytes objects)
  mmap     the images/<dive>.arrow files memory-mapped, each image a slice of the mapping
           (the first version of the on-demand store), nothing loaded up front
  pread    the trainer now: load_manifest, ImageStore.open (an index of file, offset and
           length per image) and one os.pread per image, from the page cache
  torch    for reference: a process that imports torch and the data module and decodes the
           same batches from a handful of bytes (the fixed cost of a rank)

then, once every rank has loaded, all decode --batches batches of their own share of epoch 0
at the same time (BatchSource, decode in the process) and report, while every rank is still
alive, from /proc/self/smaps_rollup: RSS, PSS (shared pages divided among the processes that
map them), USS (private: Private_Clean + Private_Dirty) and its anonymous part (heap memory
that only this process can use), plus peak RSS (ru_maxrss) and images/s of the data path (all
ranks together: their images over the wall time of the pass). USS is also split by what is
mapped (/proc/self/smaps): anonymous memory, pages of the image files, and pages of other
files (the shared libraries: torch's code alone is hundreds of MiB). File-backed pages that one
process alone maps count as private although they are page cache, reclaimable and shared as
soon as another process maps them; the anonymous part is the memory a rank really costs.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import mmap
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
PATHS = ("torch", "in-ram", "mmap", "pread")


def _contract():
    from seafloor_ssl import contract

    return contract


def small_jpegs(k: int, seed: int = 0) -> list[bytes]:
    """k distinct small JPEGs (smooth noise, quality 75), 32 x 32 to 48 x 64 pixels."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = []
    for i in range(k):
        h, w = (32, 32) if i % 2 else (48, 64)
        base = rng.integers(0, 256, (h // 8, w // 8, 3), dtype=np.uint8)
        img = Image.fromarray(base).resize((w, h), Image.BILINEAR)
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=75)
        out.append(buf.getvalue())
    return out


def write_manifest(folder: Path, n: int, dives: int, log=print) -> Path:
    """A published-like manifest set of ``n`` images in ``dives`` dives; returns pairs.parquet."""
    c = _contract()
    t0 = time.perf_counter()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / c.IMAGES_DIR).mkdir(exist_ok=True)
    pool = small_jpegs(4096)
    per = -(-n // dives)
    dive_names = [f"d{d:02d}" for d in range(dives)]
    dive_of = np.repeat(np.arange(dives), per)[:n]
    image_id = [f"{dive_names[d]}/images/img_{i:07d}.jpg" for i, d in enumerate(dive_of)]
    rng = np.random.default_rng(1)
    xy = np.cumsum(rng.normal(0, 0.5, (n, 2)), axis=0) + [500_000.0, 6_000_000.0]
    shards = {}
    for d, name in enumerate(dive_names):
        rows = np.flatnonzero(dive_of == d)
        ids = [image_id[i] for i in rows]
        jpegs = [pool[i % len(pool)] for i in rows]
        table = pa.table({"image_id": ids, "jpeg": jpegs}, schema=c.IMAGE_SHARD)
        pq.write_table(table, folder / c.shard_name(name), row_group_size=256)
        store = pa.table({"image_id": ids, "jpeg": pa.array(jpegs, pa.large_binary())},
                         schema=c.IMAGE_STORE)
        with pa.OSFile(str(folder / c.store_name(name)), "wb") as sink, \
                pa.ipc.new_file(sink, store.schema) as writer:
            writer.write_table(store, max_chunksize=65_536)
        shards[name] = c.shard_digest(ids, jpegs)
    meta = {c.META_SCHEMA_VERSION: c.SCHEMA_VERSION, c.META_BUILDER: c.BUILDER_VERSION}
    enc = {k.encode(): v.encode() for k, v in meta.items()}
    loc = pa.table({
        "idx": pa.array(np.arange(n, dtype=np.int32)),
        "image_id": pa.array(image_id),
        "dive": pa.array([dive_names[d] for d in dive_of]).dictionary_encode(),
        "easting": pa.array(xy[:, 0]), "northing": pa.array(xy[:, 1]),
        "timestamp": pa.array(np.arange(n, dtype=np.int64) * 1_000_000,
                              pa.timestamp("us", tz="UTC")),
        "label": pa.array([None] * n, pa.string()),
    }).replace_schema_metadata(enc)
    pq.write_table(loc, folder / c.LOCATIONS_FILE, compression="zstd")
    anchor = np.arange(n - 1, dtype=np.int32)
    positive = anchor + 1
    policy = {"r_loc_m": 2.0}
    pairs = pa.table({"anchor": anchor, "positive": positive,
                      "distance_m": np.linalg.norm(np.diff(xy, axis=0), axis=1).astype(np.float32)})
    identity = c.dataset_identity(image_id, [dive_names[d] for d in dive_of], xy, anchor,
                                  positive, policy, shards)
    pmeta = {**meta, c.META_PAIR_POLICY: json.dumps(policy),
             c.META_LOCATIONS_SHA256: hashlib.sha256(
                 (folder / c.LOCATIONS_FILE).read_bytes()).hexdigest(),
             c.META_LOCATIONS_PATH: c.LOCATIONS_FILE, c.META_DATASET: json.dumps(identity),
             c.META_IMAGE_VALIDATION: "decode"}
    pq.write_table(pairs.replace_schema_metadata({k.encode(): v.encode()
                                                  for k, v in pmeta.items()}),
                   folder / c.PAIRS_FILE, compression="zstd")
    size = sum(p.stat().st_size for p in (folder / c.IMAGES_DIR).glob("*.arrow"))
    log(f"[bench] wrote {n} images in {dives} dives ({size / 2**20:.0f} MiB of image files "
        f"each format) in {time.perf_counter() - t0:.0f} s")
    return folder / c.PAIRS_FILE


# --- one rank -----------------------------------------------------------------------------

def smaps() -> dict[str, int]:
    """Bytes from /proc/self/smaps_rollup (Linux)."""
    out = {}
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines()[1:]:
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[-1] == "kB":
            out[key.strip()] = int(parts[0]) * 1024
    return out


def private_by_kind() -> dict[str, int]:
    """Private bytes (Private_Clean + Private_Dirty) from /proc/self/smaps, split by what is
    mapped: the image files (``*.arrow``), other files (shared libraries: torch alone maps
    hundreds of MiB of code, private while one process maps it) and anonymous memory."""
    out = {"image_files": 0, "other_files": 0, "anonymous": 0}
    kind = "anonymous"
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()
        if head and "-" in head[0] and ":" not in head[0]:  # a mapping's header line
            path = head[5] if len(head) > 5 else ""
            kind = ("image_files" if path.endswith(".arrow") else
                    "other_files" if path.startswith("/") else "anonymous")
        elif head and head[0] in ("Private_Clean:", "Private_Dirty:"):
            out[kind] += int(head[1]) * 1024
    return out


def in_ram(manifest) -> list[bytes]:
    """The earlier path: every JPEG of the survey read into this process, in idx order."""
    import pyarrow.compute as pc

    out: list = [None] * manifest.n
    for dive, store in manifest.stores.items():
        rows = np.flatnonzero(manifest.dive == dive)
        table = pq.read_table(store.with_suffix(".parquet"), columns=["image_id", "jpeg"])
        pos = pc.index_in(pa.array(manifest.image_id[rows].tolist()),
                          value_set=table.column("image_id").combine_chunks())
        jpegs = table.column("jpeg").take(pos).to_pylist()
        for r, b in zip(rows.tolist(), jpegs, strict=True):
            out[r] = b
        del table
    return out


class MappedStore(Sequence):
    """The same images as an ImageStore, as slices of memory-mapped files."""

    def __init__(self, store) -> None:
        self.file, self.offset, self.length = store.file, store.offset, store.length
        self.maps = []
        for p in store.paths:
            with open(p, "rb") as f:
                self.maps.append(mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ))

    def __len__(self) -> int:
        return len(self.offset)

    def __getitem__(self, i: int) -> bytes:
        o = int(self.offset[i])
        return self.maps[int(self.file[i])][o:o + int(self.length[i])]


def rank_main(args) -> None:
    import torch

    torch.set_num_threads(1)
    from seafloor_ssl.data.manifest import load_manifest
    from seafloor_ssl.data.store import BatchSource, ImageStore

    t0 = time.perf_counter()
    if args.path == "torch":
        manifest = None
        images = small_jpegs(64) * (args.batch_size * args.batches * args.world // 64 + 1)
    else:
        manifest = load_manifest(args.manifest)
        if args.path == "in-ram":
            images = in_ram(manifest)
        else:
            images = ImageStore.open(manifest)
            if args.path == "mmap":
                images = MappedStore(images)
    t_load = time.perf_counter() - t0
    src = BatchSource(images, args.batch_size, workers=0, seed=0, rank=args.rank,
                      world_size=args.world)
    barrier(args.sync, "loaded", args.world, args.rank)  # the ranks decode at the same time
    done, t1, started = 0, time.perf_counter(), time.time()
    for k, batch in enumerate(src.batches(0)):
        done += batch.idx.shape[0]
        if k + 1 >= args.batches:
            break
    rate, ended = done / (time.perf_counter() - t1), time.time()
    barrier(args.sync, "passed", args.world, args.rank)  # every rank still maps its pages
    mem, private = smaps(), private_by_kind()
    print(json.dumps({
        "path": args.path, "world": args.world, "rank": args.rank, "load_s": round(t_load, 2),
        "images_per_s": round(rate, 1), "images": done, "started": started, "ended": ended,
        "rss": mem.get("Rss", 0), "pss": mem.get("Pss", 0),
        "uss": mem.get("Private_Clean", 0) + mem.get("Private_Dirty", 0),
        "anonymous": private["anonymous"],
        "private_image_files": private["image_files"], "private_libraries": private["other_files"],
        "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}), flush=True)
    barrier(args.sync, "measured", args.world, args.rank)


def barrier(folder: str, name: str, world: int, rank: int, timeout_s: float = 600) -> None:
    """Wait until every rank has reached ``name`` (a file per rank in ``folder``), so that all
    of them are measured while all of them are alive and hold their mappings."""
    Path(folder, f"{name}.{rank}").touch()
    t0 = time.monotonic()
    while sum(Path(folder, f"{name}.{r}").exists() for r in range(world)) < world:
        if time.monotonic() - t0 > timeout_s:
            raise SystemExit(f"rank {rank}: the other ranks did not reach {name}")
        time.sleep(0.05)


# --- the comparison ----------------------------------------------------------------------

def run_ranks(pairs: Path, path: str, world: int, args) -> list[dict]:
    sync = tempfile.mkdtemp(prefix="ranks-")
    cmd = [sys.executable, __file__, "--rank-of", path, "--manifest", str(pairs),
           "--world", str(world), "--batches", str(args.batches),
           "--batch-size", str(args.batch_size), "--sync", sync]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([*cmd, "--rank", str(r)], stdout=subprocess.PIPE, text=True,
                              env=env, cwd=REPO) for r in range(world)]
    rows = []
    for p in procs:
        out, _ = p.communicate()
        if p.returncode != 0:
            raise SystemExit(f"a rank failed (exit {p.returncode}): {out[-2000:]}")
        rows.append(json.loads(out.strip().splitlines()[-1]))
    shutil.rmtree(sync, ignore_errors=True)
    return rows


def together(rows: list[dict]) -> float:
    """Images per second of all ranks together: every image they decoded over the wall time
    from the first rank's start to the last rank's end (they start at one barrier)."""
    return sum(r["images"] for r in rows) / max(max(r["ended"] for r in rows)
                                                - min(r["started"] for r in rows), 1e-9)


def mib(b: float) -> str:
    return f"{b / 2**20:,.0f}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=1_000_000)
    p.add_argument("--dives", type=int, default=10)
    p.add_argument("--ranks", default="1,4", help="comma-separated numbers of ranks")
    p.add_argument("--batches", type=int, default=100, help="batches each rank decodes")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--keep", default=None, help="write the manifest here and keep it")
    p.add_argument("--json", default=None, help="also write the rows to this file")
    # one rank (internal)
    p.add_argument("--rank-of", choices=PATHS, default=None, help=argparse.SUPPRESS)
    p.add_argument("--manifest", default=None, help=argparse.SUPPRESS)
    p.add_argument("--rank", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--world", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--sync", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.rank_of:
        args.path = args.rank_of
        rank_main(args)
        return 0
    ranks = [int(r) for r in args.ranks.split(",")]
    with tempfile.TemporaryDirectory(prefix="train-data-") as tmp:
        folder = Path(args.keep) if args.keep else Path(tmp) / "manifests"
        pairs = folder / "pairs.parquet"
        if not pairs.is_file():
            write_manifest(folder, args.images, args.dives)
        rows = []
        for world in ranks:
            for path in PATHS:
                got = run_ranks(pairs, path, world, args)
                rows += got
                worst = max(got, key=lambda r: r["uss"])
                print(f"[bench] {path:6s} x{world}: per rank USS {mib(worst['uss'])} MiB "
                      f"(anonymous {mib(worst['anonymous'])}, image files "
                      f"{mib(worst['private_image_files'])}, libraries "
                      f"{mib(worst['private_libraries'])}), PSS {mib(worst['pss'])}, "
                      f"RSS {mib(worst['rss'])}, peak RSS {mib(worst['peak_rss'])} MiB; "
                      f"load {worst['load_s']} s; {together(got):,.0f} images/s in all",
                      flush=True)
    print(f"\n{args.images:,} images, {args.dives} dives, batch {args.batch_size}, "
          f"{args.batches} batches per rank; {platform.machine()}, {os.cpu_count()} cores")
    print("| path | ranks | USS / rank (MiB) | of it anonymous | of it image files | of it "
          "libraries | PSS / rank | RSS / rank | peak RSS / rank | load (s) | images/s (all "
          "ranks) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for world in ranks:
        for path in PATHS:
            sel = [r for r in rows if r["world"] == world and r["path"] == path]
            avg = {k: np.mean([r[k] for r in sel])
                   for k in ("uss", "anonymous", "private_image_files", "private_libraries",
                             "pss", "rss", "peak_rss", "load_s")}
            print(f"| {path} | {world} | {mib(avg['uss'])} | {mib(avg['anonymous'])} | "
                  f"{mib(avg['private_image_files'])} | {mib(avg['private_libraries'])} | "
                  f"{mib(avg['pss'])} | {mib(avg['rss'])} | {mib(avg['peak_rss'])} | "
                  f"{avg['load_s']:.1f} | {together(sel):,.0f} |")
    for world in ranks:
        sel = {path: np.mean([r["uss"] for r in rows
                              if r["world"] == world and r["path"] == path])
               for path in ("in-ram", "mmap", "pread")}
        print(f"private memory (USS) per rank, {world} rank(s): in RAM / pread "
              f"{sel['in-ram'] / max(sel['pread'], 1):.2f}x, mmap / pread "
              f"{sel['mmap'] / max(sel['pread'], 1):.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
