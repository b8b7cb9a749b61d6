"""Generate a synthetic AUV survey: images, navigation in real formats, labels, faults, map."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from pyproj import CRS, Transformer
from tqdm import tqdm

from .. import children, reasons
from . import navformats as nf
from .camera import Camera, Renderer
from .imaging import dive_water, frame_conditions
from .mixture import MixtureSeabed
from .seabed import HABITATS, Seabed
from .vehicle import NAV_HZ, DiveMotion, DivePlan, Track, navigation_estimate, plan_dives

DEFAULT_LAT, DEFAULT_LON = -43.1, 147.9  # off the Tasman Peninsula, Tasmania
DEFAULT_START = "2024-03-12T22:00:00+00:00"
PRESETS = ("default", "benchmark")


@dataclass
class SynthConfig:
    out: Path
    dives: int = 3
    images_per_dive: int = 400
    seed: int = 0
    size: tuple[int, int] = (320, 240)  # width, height
    formats: list[str] = field(default_factory=lambda: list(nf.FORMATS))
    faults: bool = False
    nav_only: bool = False
    lat: float = DEFAULT_LAT
    lon: float = DEFAULT_LON
    start: str = DEFAULT_START
    workers: int | None = None
    preset: str = "default"  # "benchmark": mixture seabed, terrain following, imaging nuisance


class SiteFrame:
    """Site origin in the UTM zone of the site; local x/y are metres east/north of it."""

    def __init__(self, lat: float, lon: float):
        zone = int((lon + 180) // 6) % 60 + 1
        self.epsg = (32600 if lat >= 0 else 32700) + zone
        self.crs = CRS.from_epsg(self.epsg)
        self._to_utm = Transformer.from_crs(4326, self.epsg, always_xy=True)
        self._to_geo = Transformer.from_crs(self.epsg, 4326, always_xy=True)
        self.e0, self.n0 = (round(v, 1) for v in self._to_utm.transform(lon, lat))

    def to_latlon(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        lon, lat = self._to_geo.transform(self.e0 + np.asarray(x), self.n0 + np.asarray(y))
        return np.asarray(lat), np.asarray(lon)

    def local_frame(self, lat0: float, lon0: float) -> Transformer:
        """Mission-origin frame of a dive (oplab/ACFR northing, easting): transverse Mercator."""
        proj = f"+proj=tmerc +lat_0={lat0} +lon_0={lon0} +k=1 +x_0=0 +y_0=0 +ellps=WGS84 +units=m"
        return Transformer.from_crs(4326, CRS.from_proj4(proj), always_xy=True)


# ---- rendering workers (fork: the seabed and renderer are inherited, not rebuilt) ----------
_RENDERER: Renderer | None = None


def _render_chunk(jobs: list[tuple]) -> list[tuple[str, str, int, int, float]]:
    """Render jobs ``(path, x, y, alt, heading, seed_key[, imaging])``; returns per image its
    path, SHA-256, size, majority habitat of the footprint and that habitat's pixel share."""
    out = []
    n_classes = len(getattr(_RENDERER.seabed, "habitats", HABITATS))
    for path, x, y, alt, heading, seed_key, *imaging in jobs:
        rng = np.random.default_rng(seed_key)
        data, classes = _RENDERER.render(float(x), float(y), float(alt), float(heading), rng,
                                         *imaging)
        Path(path).write_bytes(data)
        counts = np.bincount(classes.ravel(), minlength=n_classes)
        majority = int(counts.argmax())
        purity = float(counts[majority] / classes.size)
        out.append((path, hashlib.sha256(data).hexdigest(), len(data), majority, purity))
    return out


def _poses(frame: SiteFrame, est: Track, rel_paths: np.ndarray, origin) -> dict[str, np.ndarray]:
    lat, lon = frame.to_latlon(est.x, est.y)
    east_l, north_l = frame.local_frame(*origin).transform(lon, lat)
    t = est.t
    vx = np.gradient(est.x, t) if len(t) > 1 else np.zeros_like(t)
    vy = np.gradient(est.y, t) if len(t) > 1 else np.zeros_like(t)
    vz = np.gradient(est.depth_m, t) if len(t) > 1 else np.zeros_like(t)
    return {
        "relative_path": np.asarray(rel_paths, dtype=object), "t": t, "lat": lat, "lon": lon,
        "north_local": np.asarray(north_l), "east_local": np.asarray(east_l),
        "depth_m": est.depth_m, "altitude_m": est.altitude_m, "heading_deg": est.heading_deg,
        "roll_deg": est.roll_deg, "pitch_deg": est.pitch_deg, "vx": vx, "vy": vy, "vz": vz,
    }


def _take(poses: dict[str, np.ndarray], keep: np.ndarray) -> dict[str, np.ndarray]:
    return {k: v[keep] for k, v in poses.items()}


def _jump(frame: SiteFrame, poses: dict, i: int, metres: float, origin) -> None:
    """Displace pose i by `metres` east, consistently in lat/lon and local coordinates."""
    x, y = frame._to_utm.transform(poses["lon"][i], poses["lat"][i])
    lon, lat = frame._to_geo.transform(x + metres, y)
    poses["lat"][i], poses["lon"][i] = lat, lon
    e, n = frame.local_frame(*origin).transform(lon, lat)
    poses["east_local"][i], poses["north_local"][i] = e, n


class SynthRefused(ValueError):
    """The output folder holds data the generator did not write."""


def _previous_survey(out: Path) -> dict | None:
    path = out / "survey.json"
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and doc.get("generator") == "pipeline.synth" else None


def generate(cfg: SynthConfig) -> dict:
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    for f in cfg.formats:
        if f not in nf.FORMATS:
            raise SystemExit(f"--formats: unknown format {f!r}; expected one of {', '.join(nf.FORMATS)}")
    if cfg.faults and cfg.images_per_dive < 20:
        raise SystemExit("--faults needs --images-per-dive of at least 20")
    if cfg.preset not in PRESETS:
        raise SystemExit(f"--preset: unknown preset {cfg.preset!r}; expected one of {', '.join(PRESETS)}")
    frame = SiteFrame(cfg.lat, cfg.lon)
    benchmark = cfg.preset == "benchmark"
    seabed = MixtureSeabed(cfg.seed) if benchmark else Seabed(cfg.seed)
    cam = Camera(width=cfg.size[0], height=cfg.size[1])
    start = dt.datetime.fromisoformat(cfg.start).timestamp()
    plans = plan_dives(cfg.dives, cfg.images_per_dive, cfg.seed, start, nav_only=cfg.nav_only)

    # regenerating into a folder replaces the dives the generator wrote there (no stale
    # images), and only those: a folder it did not write is refused, never emptied
    previous = _previous_survey(out)
    written = {d["name"] for d in previous.get("dives", [])} if previous else set()
    if previous is None and any(out.iterdir()):
        raise SynthRefused(f"--out {out} is not empty and holds no survey.json of the generator; "
                           "it writes (and on a re-run replaces) dive folders there, so it only "
                           "uses a new or empty folder, or one it wrote. Choose another --out")
    for plan in plans:
        if (out / plan.name).exists() and plan.name not in written:
            raise SynthRefused(f"{out / plan.name} exists but the generator did not write it "
                               f"(not in {out / 'survey.json'}); move it away or choose another "
                               "--out")
    for name in sorted(written):
        if (out / name).is_dir() and not (out / name).is_symlink():
            shutil.rmtree(out / name)
    jobs: list[tuple] = []
    dive_records = []
    faults: list[dict] = []
    for plan in plans:
        rec = _build_dive(cfg, frame, seabed, cam, plan, out, faults, len(plans))
        jobs.extend(rec.pop("jobs"))
        dive_records.append(rec)

    t_render = time.perf_counter()
    results = _render_all(cfg, seabed, cam, jobs) if jobs else {}
    t_render = time.perf_counter() - t_render
    _apply_file_faults(out, faults)
    for rec in dive_records:
        _write_nav(cfg, frame, out, rec, results, faults)

    summary = _write_tables(cfg, frame, seabed, out, plans, dive_records, results, faults, cam)
    if not cfg.nav_only:
        from .sitemap import draw_site_map

        draw_site_map(out / "site.png", seabed, frame, dive_records)
    _write_catalog(out, cfg)
    if benchmark and not cfg.nav_only:
        from .contact import draw_contact_sheet

        draw_contact_sheet(out / "contact_sheet.png", out, seabed)
    summary["render_seconds"] = round(t_render, 3)
    summary["render_images_per_s"] = round(len(jobs) / t_render, 1) if jobs else None
    return summary


def _build_dive(cfg, frame, seabed, cam, plan: DivePlan, out: Path, faults: list, n_dives: int):
    benchmark = cfg.preset == "benchmark"
    motion = DiveMotion(plan, seabed.seabed_depth_m, cfg.seed, terrain_following=benchmark)
    rng = np.random.default_rng([cfg.seed, 5501, plan.index])
    n = plan.n_images
    t_img = plan.start_unix + 0.5 + np.arange(n) / 1.0 + rng.normal(0, 0.003, n)
    t_img = np.round(t_img, 3)
    if cfg.nav_only:
        t_nav = np.empty(0)
    else:
        t_nav = np.round(plan.start_unix + 0.037 + np.arange(0, motion.duration_s, 1 / NAV_HZ), 3)
    t_all, inverse = np.unique(np.concatenate([t_nav, t_img]), return_inverse=True)
    est_all = navigation_estimate(motion.sample(t_all), cfg.seed, plan.index)
    est_img = _index_track(est_all, inverse[len(t_nav):])
    est_nav = _index_track(est_all, inverse[: len(t_nav)])
    true_img = motion.sample(t_img)
    fmt = cfg.formats[plan.index % len(cfg.formats)]
    if cfg.nav_only and fmt == "oplab-nav-csv":
        fmt = "oplab-camera-csv"  # no image files to match timestamps against
    names = np.array([f"images/{nf.image_name(t)}" for t in t_img], dtype=object)
    origin = (round(float(frame.to_latlon(*plan.centre_xy)[0]), 4),
              round(float(frame.to_latlon(*plan.centre_xy)[1]), 4))
    poses = _poses(frame, est_img, names, origin)
    keep = np.ones(n, bool)
    extra_jobs, extra_truth = [], []
    dive_dir = out / plan.name
    if not cfg.nav_only:
        (dive_dir / "images").mkdir(parents=True, exist_ok=True)

    def fault(kind, i=None, reason=None, **kw):
        rec = {"dive": plan.name, "kind": kind, "expected_reason": reason, **kw}
        if i is not None:
            rec["file"] = str(names[i])
        faults.append(rec)

    if cfg.faults:
        camera_fmt = fmt != "oplab-nav-csv"
        if plan.index == 0:
            fault("truncated_jpeg", n // 3, reasons.DECODE_ERROR)
            # two images captured while the navigation was not logging
            for label, t in (("before", t_all[0] - 90.0), ("after", t_all[-1] + 90.0)):
                tt = motion.sample(np.array([min(max(t, t_img[0]), t_img[-1])]))
                name = f"images/{nf.image_name(t)}"
                extra_jobs.append((str(dive_dir / name), tt.x[0], tt.y[0], tt.altitude_m[0],
                                   tt.heading_deg[0], [cfg.seed, plan.index, 10**6 + len(extra_jobs)]))
                extra_truth.append((name, round(float(t), 3), tt))
                faults.append({"dive": plan.name, "kind": f"image_{label}_nav_span", "file": name,
                               "expected_reason": reasons.OUTSIDE_NAV_SPAN})
        if plan.index == n_dives - 1:
            fault("zero_byte_file", n // 2, reasons.EMPTY_FILE)
            i = 2 * n // 3
            if camera_fmt:
                keep[i] = False
                fault("image_without_navigation", i, reasons.NO_NAV)
            else:
                gap = (t_nav > t_img[i] - 2.5) & (t_nav < t_img[i] + 2.5)
                t_nav, est_nav = t_nav[~gap], _index_track(est_nav, np.flatnonzero(~gap))
                # every image whose bracketing samples are now > 2 s apart (the catalog's
                # max_interp_gap_s) falls in the gap, not only image i
                hi = np.searchsorted(t_nav, t_img)
                inside = (hi > 0) & (hi < len(t_nav))
                span = np.full(n, 0.0)
                span[inside] = t_nav[hi[inside]] - t_nav[hi[inside] - 1]
                for j in np.flatnonzero(span > 2.0):
                    fault("navigation_gap", j, reasons.NAV_GAP, gap_s=round(float(span[j]), 2))
        if camera_fmt:
            i = n // 4
            poses["lat"][i] = poses["lon"][i] = np.nan
            fault("nan_pose", i, reasons.NAV_INVALID)
            i = n // 5
            _jump(frame, poses, i, 40.0, origin)
            fault("gps_jump_pose", i, reasons.NAV_JUMP, metres=40.0)
    poses = _take(poses, keep)

    jobs = []
    water = dive_water(cfg.seed, plan.index) if benchmark else None
    frame_imaging = frame_conditions(water, t_img - plan.start_unix, cfg.seed, plan.index) \
        if benchmark else None
    if not cfg.nav_only:
        for i in range(n):
            jobs.append((str(dive_dir / names[i]), true_img.x[i], true_img.y[i],
                         true_img.altitude_m[i], true_img.heading_deg[i], [cfg.seed, plan.index, i]))
            if benchmark:
                jobs[-1] += (frame_imaging[i],)
        if benchmark:
            extra_jobs = [job + (water.imaging(),) for job in extra_jobs]
        jobs.extend(extra_jobs)
    extra = {"water": water, "frame_imaging": frame_imaging} if benchmark else {}
    return {
        **extra,
        "plan": plan, "format": fmt, "origin": origin, "poses": poses, "est_nav": est_nav,
        "true_img": true_img, "names": names, "jobs": jobs, "dive_dir": dive_dir,
        "extra_truth": extra_truth, "t_img": t_img,
    }


def _index_track(tr: Track, idx: np.ndarray) -> Track:
    return Track(*(getattr(tr, f)[idx] for f in Track.__dataclass_fields__))


def _render_all(cfg: SynthConfig, seabed: Seabed, cam: Camera, jobs: list) -> dict:
    global _RENDERER
    _RENDERER = Renderer(seabed, cam)
    workers = cfg.workers or os.cpu_count() or 1
    chunk = max(1, min(32, len(jobs) // (workers * 4) or 1))
    chunks = [jobs[i : i + chunk] for i in range(0, len(jobs), chunk)]
    results = {}
    bar = tqdm(total=len(jobs), desc="rendering images", unit="img", disable=None)
    if workers == 1:
        it = map(_render_chunk, chunks)
        for res in it:
            results.update({r[0]: r[1:] for r in res})
            bar.update(len(res))
    else:
        with children.pool(workers, "fork") as pool:
            for res in pool.map(_render_chunk, chunks):
                results.update({r[0]: r[1:] for r in res})
                bar.update(len(res))
    bar.close()
    return results


def _apply_file_faults(out: Path, faults: list[dict]) -> None:
    for f in faults:
        path = out / f["dive"] / f.get("file", "")
        if f["kind"] == "truncated_jpeg":
            data = path.read_bytes()
            path.write_bytes(data[: int(len(data) * 0.6)])
        elif f["kind"] == "zero_byte_file":
            path.write_bytes(b"")


def _raw_nav_faults(nav: dict, rng: np.random.Generator, faults: list, dive: str) -> dict:
    """NaN rows, duplicated and out-of-order timestamps and a GPS jump in the 10 Hz log."""
    n = len(nav["t"])
    nav = {k: v.copy() for k, v in nav.items()}
    nan_rows = rng.choice(np.arange(50, n - 50), 5, replace=False)
    for k in ("lat", "lon", "north_local", "east_local"):
        nav[k][nan_rows] = np.nan
    j0 = int(n * 0.55)
    jump = slice(j0, j0 + 6)  # 0.6 s of fixes 35 m off
    nav["east_local"][jump] += 35.0
    nav["lon"][jump] += 35.0 / (111320.0 * np.cos(np.deg2rad(nav["lat"][j0 - 1])))
    dup = rng.choice(np.arange(50, n - 50), 3, replace=False)
    order = np.concatenate([np.arange(n), dup])
    order.sort(kind="stable")
    swaps = rng.choice(np.arange(60, n - 60), 4, replace=False)
    for s in swaps:
        order[[s, s + 1]] = order[[s + 1, s]]
    faults += [
        {"dive": dive, "kind": "nav_nan_rows", "rows": sorted(int(r) for r in nan_rows), "expected_reason": None},
        {"dive": dive, "kind": "nav_gps_jump", "rows": [j0, j0 + 5], "metres": 35.0, "expected_reason": None},
        {"dive": dive, "kind": "nav_duplicate_timestamps", "rows": sorted(int(r) for r in dup), "expected_reason": None},
        {"dive": dive, "kind": "nav_out_of_order", "rows": sorted(int(s) for s in swaps), "expected_reason": None},
    ]
    return {k: v[order] for k, v in nav.items()}


def _write_nav(
    cfg: SynthConfig, frame: SiteFrame, out: Path, rec: dict, results: dict, faults: list
) -> None:
    plan, fmt, dive = rec["plan"], rec["format"], rec["plan"].name
    path = out / nf.NAV_PATHS[fmt].format(dive=dive)
    poses = rec["poses"]
    if fmt == "oplab-camera-csv":
        nf.write_oplab_camera_csv(path, poses)
    elif fmt == "acfr-stereo-pose":
        cam = Camera(*cfg.size)
        w, h = np.vectorize(cam.footprint_m)(poses["altitude_m"])
        nf.write_acfr_stereo_pose(path, poses, rec["origin"], 0.5 * np.hypot(w, h))
    elif fmt == "ifdo":
        hashes = {Path(p).name: r[0] for p, r in results.items() if Path(p).parent.parent.name == dive}
        nf.write_ifdo_v2(path, dive, poses, hashes, cfg.seed)
    if not cfg.nav_only:
        # the vehicle's own 10 Hz log is always there (it is what the interpolation path reads)
        nav = _poses(frame, rec["est_nav"], np.zeros(len(rec["est_nav"].t), object), rec["origin"])
        if cfg.faults:
            rng = np.random.default_rng([cfg.seed, 6601, plan.index])
            nav = _raw_nav_faults(nav, rng, faults, dive)
        nf.write_oplab_nav_csv(out / nf.NAV_PATHS["oplab-nav-csv"].format(dive=dive), nav)


def _truth_rows(frame: SiteFrame, seabed, rec: dict) -> list[dict]:
    dive = rec["plan"].name
    tr = rec["true_img"]
    items = [(rec["names"][i], float(rec["t_img"][i]), _index_track(tr, np.array([i])))
             for i in range(len(rec["names"]))] + rec["extra_truth"]
    rows = []
    xs = np.array([float(p.x[0]) for _, _, p in items])
    ys = np.array([float(p.y[0]) for _, _, p in items])
    centre = seabed.habitat(xs, ys)
    habitats = getattr(seabed, "habitats", HABITATS)
    lats, lons = frame.to_latlon(xs, ys)
    for k, (name, t, p) in enumerate(items):
        lat, lon = lats[k : k + 1], lons[k : k + 1]
        rows.append({
            "image_id": f"{dive}/{name}", "dive": dive, "timestamp": t,
            "x_m": float(p.x[0]), "y_m": float(p.y[0]),
            "easting": frame.e0 + float(p.x[0]), "northing": frame.n0 + float(p.y[0]),
            "lat": float(lat[0]), "lon": float(lon[0]), "depth_m": float(p.depth_m[0]),
            "altitude_m": float(p.altitude_m[0]), "heading_deg": float(p.heading_deg[0]),
            "centre_habitat": habitats[int(centre[k])],
        })
        if rec.get("frame_imaging") is not None and k < len(rec["frame_imaging"]):
            im = rec["frame_imaging"][k]
            rows[-1].update({"exposure": round(im.exposure, 4),
                             "motion_blur_m": round(im.motion_blur_m, 5)})
    return rows


def _write_tables(cfg, frame, seabed, out, plans, dive_records, results, faults, cam) -> dict:
    import pandas as pd

    summary = {
        "generator": "pipeline.synth", "seed": cfg.seed, "crs": f"EPSG:{frame.epsg}",
        "origin": {"lat": cfg.lat, "lon": cfg.lon, "easting": frame.e0, "northing": frame.n0},
        "image_size": list(cfg.size), "camera_hfov_deg": cam.hfov_deg,
        "habitats": list(getattr(seabed, "habitats", HABITATS)),
        "dives": [{**asdict(r["plan"]), "format": r["format"], "mission_origin": list(r["origin"]),
                   "images": len(r["names"]) + len(r["extra_truth"])} for r in dive_records],
    }
    benchmark = cfg.preset == "benchmark"
    if benchmark:
        summary["preset"] = cfg.preset
        summary["elements"] = list(seabed.elements)
        summary["imaging"] = {r["plan"].name: r["water"].record() for r in dive_records}
    if not cfg.nav_only:
        habitats = getattr(seabed, "habitats", HABITATS)
        truth = pd.DataFrame([row for r in dive_records for row in _truth_rows(frame, seabed, r)])
        majority = {str(Path(p).relative_to(out)): habitats[r[2]] for p, r in results.items()}
        truth["label"] = truth["image_id"].map(majority)
        if benchmark:
            purity = {str(Path(p).relative_to(out)): round(r[3], 4) for p, r in results.items()}
            truth["label_purity"] = truth["image_id"].map(purity)
        truth.to_csv(out / "truth.csv", index=False)
        truth[["image_id", "label"]].to_csv(out / "labels.csv", index=False)
        on_disk = truth.groupby("dive").size().to_dict()
        expected: dict[str, int] = {}
        for f in faults:
            if f["expected_reason"]:
                expected[f["expected_reason"]] = expected.get(f["expected_reason"], 0) + 1
        doc = {
            "faults_injected": cfg.faults, "faults": faults,
            "images_on_disk": {k: int(v) for k, v in on_disk.items()},
            "expected_quarantine": expected,
            "expected_locations": int(len(truth) - sum(expected.values())),
        }
        (out / "faults.json").write_text(json.dumps(doc, indent=1))
        summary["images"] = int(len(truth))
    else:
        summary["images"] = int(sum(len(r["names"]) for r in dive_records))
    (out / "survey.json").write_text(json.dumps(summary, indent=1))
    return summary


def _write_catalog(out: Path, cfg: SynthConfig) -> None:
    """catalog.yaml beside the data, so --out DIR is directly usable by the pipeline."""
    import yaml

    doc = {
        "name": out.name,
        "root": ".",
        "dives": "dive*",
        "nav": [{"format": f, "path": nf.NAV_PATHS[f]} for f in
                ("oplab-camera-csv", "acfr-stereo-pose", "ifdo", "oplab-nav-csv")],
        "images": None if cfg.nav_only else "{dive}/images/*.jpg",
        "labels": None if cfg.nav_only else "labels.csv",
        "max_interp_gap_s": 2.0,
        "crs": "auto",
        "pairs": {"r_loc_m": 5.0, "r_min_m": 0.0, "cross_dive": True, "use_depth": False,
                  "min_time_gap_s": 0.0, "max_neighbours": None, "seed": 0},
        "train_size": [192, 256],
        "output": "manifests",
        "schedule": {"interval_s": 900},
    }
    text = "# Written by python -m pipeline.synth; describes the survey in this folder.\n"
    (out / "catalog.yaml").write_text(text + yaml.safe_dump(doc, sort_keys=False))
