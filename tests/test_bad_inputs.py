"""A table of ordinary mistakes: every one gets one message and exit code 2, or a quarantine
row with the right reason while the rest of the site is built; never a traceback.

Each case mutates a copy of a small 4-dive survey (dive01 iFDO, dive02 ACFR stereo pose,
dive03 oplab camera CSV, dive04 oplab 10 Hz vehicle CSV) and runs `python -m pipeline build`
in process (`pipeline.cli.main`), so an uncaught exception fails the test as a traceback would.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from surveys import copy_survey

from pipeline import cli, reasons
from pipeline.synth import SynthConfig, generate


@pytest.fixture(scope="module")
def survey(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad") / "site"
    generate(SynthConfig(out=root, dives=4, images_per_dive=10, seed=8, workers=2))
    return root


@pytest.fixture
def site(survey, tmp_path):
    return copy_survey(survey, tmp_path / "site")


# ---- catalog and flag mistakes: exit 2 and a message naming the key ----------------------

def _cat(**change):
    def apply(site: Path) -> list[str]:
        doc = yaml.safe_load((site / "catalog.yaml").read_text())
        for k, v in change.items():
            if v is _DROP:
                doc.pop(k, None)
            else:
                doc[k] = v
        (site / "catalog.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
        return []
    return apply


def _raw(text: str):
    def apply(site: Path) -> list[str]:
        (site / "catalog.yaml").write_text(text)
        return []
    return apply


def _flags(*argv: str, mutate=None):
    def apply(site: Path) -> list[str]:
        if mutate:
            mutate(site)
        return list(argv)
    return apply


_DROP = object()
NAV1 = [{"format": "ifdo", "path": "{dive}/nav/{dive}_iFDO.json"}]


def _labels(text: str):
    def apply(site: Path) -> list[str]:
        (site / "labels.csv").write_text(text)
        return []
    return apply


def _foreign_out(site: Path) -> list[str]:
    (site / "theirs").mkdir()
    (site / "theirs" / "thesis.docx").write_text("x")
    return ["--out", str(site / "theirs")]


def _file_out(site: Path) -> list[str]:
    return ["--out", str(site / "labels.csv")]


REFUSED = [
    ("yaml-syntax", _raw("root: .\nnav: [\n"), "not valid YAML"),
    ("yaml-list", _raw("- root: .\n"), "expected a mapping"),
    ("unknown-key", _cat(ouptut="x"), "ouptut"),
    ("no-nav", _cat(nav=_DROP), "key 'nav'"),
    ("empty-nav", _cat(nav=[]), "key 'nav'"),
    ("bad-format", _cat(nav=[{"format": "gpx", "path": "{dive}/a.gpx"}]), "nav.0.format"),
    ("nav-no-dive", _cat(nav=[{"format": "ifdo", "path": "nav/all.json"}]), "{dive}"),
    ("nav-unknown-field", _cat(nav=[{"format": "ifdo", "path": "{dive}/{cruise}.json"}]),
     "{cruise}"),
    ("csv-no-columns", _cat(nav=[{"format": "csv", "path": "{dive}/n.csv"}]), "columns"),
    ("columns-not-csv", _cat(nav=[{"format": "ifdo", "path": "{dive}/n.json",
                                   "columns": {"time": "t", "depth": "d"}}]), "only for format"),
    ("images-no-dive", _cat(images="images/*.jpg"), "key 'images'"),
    ("r-loc-negative", _cat(pairs={"r_loc_m": -5}), "pairs.r_loc_m"),
    ("r-min-above", _cat(pairs={"r_loc_m": 5, "r_min_m": 6}), "r_min_m"),
    ("max-neigh-zero", _cat(pairs={"max_neighbours": 0}), "max_neighbours"),
    ("pairs-unknown", _cat(pairs={"radius": 5}), "radius"),
    ("train-size-one", _cat(train_size=[192]), "train_size"),
    ("train-size-neg", _cat(train_size=[-1, 256]), "train_size"),
    ("gap-zero", _cat(max_interp_gap_s=0), "max_interp_gap_s"),
    ("validate-bad", _cat(validate="full"), "validate"),
    ("crs-shape", _cat(crs="UTM55S"), "key 'crs'"),
    ("crs-geographic", _cat(crs="EPSG:4326"), "geographic"),
    ("crs-feet", _cat(crs="EPSG:2263"), "metres"),
    ("crs-unknown", _cat(crs="EPSG:99999"), "not a CRS"),
    ("crs-far", _cat(crs="EPSG:32741"), "crs_force"),
    ("crs-other-hemisphere", _cat(crs="EPSG:32655"), "crs_force"),
    ("schedule-both", _cat(schedule={"interval_s": 5, "cron": "* * * * *"}), "exactly one"),
    ("schedule-none", _cat(schedule={}), "exactly one"),
    ("schedule-neg", _cat(schedule={"interval_s": -1}), "interval_s"),
    ("name-bad", _cat(name="my site"), "key 'name'"),
    ("no-output", _cat(output=_DROP), "key 'output'"),
    ("dives-nothing", _cat(dives="nowhere/*"), "matches no folder"),
    ("images-nothing", _cat(images="{dive}/imgs/*.jpg"), "key 'images'"),
    ("nav-nothing", _cat(nav=[{"format": "ifdo", "path": "{dive}/none.json"}]), "key 'nav'"),
    ("labels-missing", _cat(labels="nope.csv"), "key 'labels'"),
    ("labels-columns", _labels("image,habitat\na,b\n"), "image_id,label"),
    ("labels-duplicate", _labels("image_id,label\na,x\na,y\n"), "more than once"),
    ("labels-binary", _labels("\x00\x01\x02\xff\xfe"), "labels"),
    ("output-is-root", _cat(output="."), "catalog root"),
    ("output-in-dive", _cat(output="dive01/manifests"), "dive folder"),
    ("output-holds-root", _cat(output=".."), "catalog root"),
    ("output-foreign", _foreign_out, "not empty"),
    ("output-file", _file_out, "is a file"),
    ("flag-r-loc-negative", _flags("--r-loc", "-2"), "--r-loc"),
    ("flag-r-loc-nan", _flags("--r-loc", "nan"), "--r-loc"),
    ("catalog-missing", _flags(mutate=lambda s: (s / "catalog.yaml").unlink()), "not found"),
]


@pytest.mark.parametrize("name,mutate,words", REFUSED, ids=[c[0] for c in REFUSED])
def test_a_mistake_is_one_message_and_exit_2(site, capsys, name, mutate, words):
    extra = mutate(site)
    code = cli.main(["build", "--catalog", str(site / "catalog.yaml"), "--workers", "1", *extra])
    err = capsys.readouterr().err
    assert code == 2, err
    assert words in err, err
    assert "Traceback" not in err and err.startswith("error: ")


def test_a_catalog_name_that_does_not_exist_is_exit_2(capsys, tmp_path):
    code = cli.main(["build", "--catalog", "no-such-site"])
    assert code == 2 and "no catalog named 'no-such-site'" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["build"], ["build", "--catalog", "x", "--r-loc", "five"],
                                  ["frobnicate"]])
def test_bad_command_lines_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2


# ---- bad navigation and images: quarantined with a reason, the rest of the site built ----

def _nav(dive: str, name: str, change):
    def apply(site: Path) -> tuple[str, Path]:
        path = site / dive / "nav" / name
        path.write_bytes(change(path.read_bytes()))
        return dive, path
    return apply


def _lines(fn):
    return lambda b: "\n".join(fn(b.decode().splitlines())).encode()


def _json(fn):
    def change(b: bytes) -> bytes:
        doc = json.loads(b)
        fn(doc)
        return json.dumps(doc).encode()
    return change


IFDO = "dive01_iFDO.json"
ACFR = "stereo_pose_est.data"
CAM = "auv_ekf_LC.csv"
VEH = "auv_ekf_centre.csv"


def _drop_cam(site: Path) -> None:
    (site / "dive03" / "nav" / CAM).unlink()  # dive03 then uses its vehicle log


def _ms_times(lines):
    head, *rows = lines
    out = [head]
    for r in rows:
        f = r.split(",")
        f[0] = str(round(float(f[0]) * 1000))
        out.append(",".join(f))
    return out


NAV_CASES = [
    # (id, mutation, dive, reasons allowed for that dive's images)
    ("ifdo-empty", _nav("dive01", IFDO, lambda b: b""), {reasons.NAV_UNREADABLE}),
    ("ifdo-not-json", _nav("dive01", IFDO, lambda b: b"{ image-set-header"), {reasons.NAV_UNREADABLE}),
    ("ifdo-truncated", _nav("dive01", IFDO, lambda b: b[: len(b) // 2]), {reasons.NAV_UNREADABLE}),
    ("ifdo-list", _nav("dive01", IFDO, lambda b: b"[1, 2, 3]"), {reasons.NAV_UNREADABLE}),
    ("ifdo-no-items", _nav("dive01", IFDO, _json(lambda d: d.pop("image-set-items"))),
     {reasons.NAV_UNREADABLE}),
    ("ifdo-binary", _nav("dive01", IFDO, lambda b: bytes(range(256))), {reasons.NAV_UNREADABLE}),
    ("acfr-empty", _nav("dive02", ACFR, lambda b: b""), {reasons.NAV_UNREADABLE}),
    ("acfr-comments-only", _nav("dive02", ACFR, _lines(lambda ls: [x for x in ls if x.startswith("%")])),
     {reasons.NAV_UNREADABLE}),
    ("acfr-short-line", _nav("dive02", ACFR, _lines(lambda ls: ls[:-1] + [ls[-1][:20]])),
     {reasons.NAV_UNREADABLE, reasons.NO_NAV, reasons.NAV_INVALID}),
    ("acfr-text-field", _nav("dive02", ACFR, _lines(lambda ls: [x.replace(" -43.", " south") for x in ls])),
     {reasons.NAV_UNREADABLE, reasons.NAV_INVALID}),
    ("acfr-binary", _nav("dive02", ACFR, lambda b: bytes(range(256)) * 4), {reasons.NAV_UNREADABLE}),
    ("cam-empty", _nav("dive03", CAM, lambda b: b""), {reasons.NAV_UNREADABLE}),
    ("cam-header-only", _nav("dive03", CAM, _lines(lambda ls: ls[:1])), {reasons.NAV_UNREADABLE}),
    ("cam-garbage-rows", _nav("dive03", CAM, _lines(lambda ls: ls[:1] + ["a,b,c"] * 3)),
     {reasons.NAV_UNREADABLE}),
    ("cam-semicolons", _nav("dive03", CAM, _lines(lambda ls: [x.replace(",", ";") for x in ls])),
     {reasons.NAV_UNREADABLE}),
    ("cam-no-latitude", _nav("dive03", CAM, _lines(lambda ls: [ls[0].replace("latitude", "lat_x")] + ls[1:])),
     {reasons.NAV_UNREADABLE}),
    ("cam-nan-lat", _nav("dive03", CAM, _lines(lambda ls: ls[:1] + [
        ",".join("nan" if i == 9 else f for i, f in enumerate(r.split(","))) for r in ls[1:3]] + ls[3:])),
     {reasons.NAV_INVALID}),
    ("cam-lat-range", _nav("dive03", CAM, _lines(lambda ls: ls[:1] + [
        ",".join("143.1" if i == 9 else f for i, f in enumerate(r.split(","))) for r in ls[1:]])),
     {reasons.NAV_UNREADABLE, reasons.NAV_INVALID}),
    ("cam-ms-times", _nav("dive03", CAM, _lines(lambda ls: ls[:1] + [
        ",".join(str(round(float(f) * 1000)) if i == 8 else f for i, f in enumerate(r.split(",")))
        for r in ls[1:]])), {reasons.NAV_UNREADABLE}),
    ("cam-cut-last-line", _nav("dive03", CAM, lambda b: b[:-30]),
     {reasons.NAV_UNREADABLE, reasons.NAV_INVALID, reasons.NO_NAV, reasons.NAV_JUMP}),
    ("cam-unsafe-path", _nav("dive03", CAM, _lines(lambda ls: ls[:1] + [
        "../../../etc/passwd" + r[r.index(","):] for r in ls[1:2]] + ls[2:])),
     {reasons.NO_NAV, reasons.UNSAFE_PATH}),
    ("veh-empty", lambda s: (_drop_cam(s), _nav("dive03", VEH, lambda b: b"")(s))[1],
     {reasons.NAV_UNREADABLE}),
    ("veh-ms-times", lambda s: (_drop_cam(s), _nav("dive03", VEH, _lines(_ms_times))(s))[1],
     {reasons.NAV_UNREADABLE}),
    ("veh-one-row", _nav("dive04", VEH, _lines(lambda ls: ls[:2])),
     {reasons.NO_NAV, reasons.OUTSIDE_NAV_SPAN, reasons.NAV_UNREADABLE}),
    ("veh-gap", _nav("dive04", VEH, _lines(lambda ls: ls[:3] + ls[-3:])),
     {reasons.NAV_GAP, reasons.OUTSIDE_NAV_SPAN}),
    ("veh-binary", _nav("dive04", VEH, lambda b: bytes(range(256)) * 4), {reasons.NAV_UNREADABLE}),
]


def _image(change):
    def apply(site: Path) -> tuple[str, Path]:
        path = sorted((site / "dive03" / "images").glob("*.jpg"))[2]
        change(path)
        return "dive03", path
    return apply


def _truncate(p: Path):
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 3])


def _dangle(p: Path):
    p.unlink()
    os.symlink(p.with_name("missing.jpg"), p)


def _escape(p: Path):
    target = p.parents[3] / "outside.jpg"
    shutil.copy(p, target)
    p.unlink()
    os.symlink(target, p)


IMAGE_CASES = [
    ("image-empty", _image(lambda p: p.write_bytes(b"")), {reasons.EMPTY_FILE}),
    ("image-truncated", _image(_truncate), {reasons.DECODE_ERROR}),
    ("image-text", _image(lambda p: p.write_text("not an image")), {reasons.DECODE_ERROR}),
    ("image-dangling", _image(_dangle), {reasons.UNREADABLE}),
    ("image-escaping", _image(_escape), {reasons.UNSAFE_PATH}),
]


@pytest.mark.parametrize("name,mutate,allowed", NAV_CASES + IMAGE_CASES,
                         ids=[c[0] for c in NAV_CASES + IMAGE_CASES])
def test_a_bad_input_costs_only_itself(site, capsys, name, mutate, allowed):
    dive, _ = mutate(site)
    code = cli.main(["build", "--catalog", str(site / "catalog.yaml"), "--workers", "1"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "Traceback" not in captured.err
    out = site / "manifests"
    loc = pq.read_table(out / "locations.parquet").to_pandas()
    quar = pq.read_table(out / "quarantine.parquet").to_pandas()
    # the other dives are built
    assert set(loc["dive"]) >= {"dive01", "dive02", "dive03", "dive04"} - {dive}
    # the bad dive's images are quarantined with an expected reason
    got = set(quar[quar["dive"] == dive]["reason"])
    assert got, "nothing quarantined"
    assert got <= {r for r in allowed if r}, got
    # conservation: every image file is located or quarantined, once
    files = {p.relative_to(site).as_posix() for p in site.glob("dive*/images/*")}
    seen = list(loc["path"]) + [s for s in quar["source"] if s in files]
    assert sorted(seen) == sorted(files)


@pytest.mark.parametrize("module,argv", [
    ("flows.deployments", ["--catalogs", "/nonexistent-folder"]),
    ("flows.serve", ["--catalogs", "/nonexistent-folder"]),
    ("flows.demo", ["--catalog", "no-such-site"]),
])
def test_flows_command_lines_report_a_mistake_with_exit_2(module, argv):
    import subprocess
    import sys

    res = subprocess.run([sys.executable, "-m", module, *argv], capture_output=True, text=True,
                         timeout=120, cwd=Path(__file__).resolve().parents[1])
    assert res.returncode == 2 and res.stderr.startswith("error: "), res.stderr
    assert "Traceback" not in res.stderr


@pytest.mark.parametrize("module", ["flows.serve", "flows.worker", "flows.status"])
def test_an_unreachable_prefect_api_is_one_message_naming_the_url(module):
    import os
    import subprocess
    import sys

    from flows.server import free_port

    url = f"http://127.0.0.1:{free_port()}/api"  # nothing listens there
    env = {**os.environ, "PREFECT_API_URL": url}
    repo = Path(__file__).resolve().parents[1]
    res = subprocess.run([sys.executable, "-m", module, "--catalogs", str(repo / "catalogs")],
                         capture_output=True, text=True, timeout=120, cwd=repo, env=env)
    assert res.returncode == 2, (res.returncode, res.stdout, res.stderr)
    assert url in res.stderr and "Traceback" not in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
