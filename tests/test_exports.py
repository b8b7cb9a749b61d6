"""From clusters to the annotation tools: the iFDO v2 writer (ssl/ifdo.py), the survey's iFDO
(python -m pipeline export ifdo) and the labelling list out (ssl.habitats --export biigle
coralnet ifdo), on one built mini-survey with planted embeddings (no training).

The iFDO files are validated by the ifdo package and by the iFDO v2 JSON schema that mariqt
1.0.1 ships (a copy in tests/data/ifdo_schema; see tests/data/README.md), with mariqt's datetime
check; the BIIGLE CSV is read back by the project's BIIGLE reader and the iFDOs by its iFDO
reader, to the positions the build located."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import uuid
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from seafloor_ssl import contract as c
from seafloor_ssl import habitats as habitats_cli
from seafloor_ssl import ifdo
from seafloor_ssl.data import embeddings as E
from seafloor_ssl.data.manifest import load_manifest
from seafloor_ssl.mapping import exports
from surveys import copy_survey, mini_manifest, tool_labels

from pipeline import cli as pipeline_cli
from pipeline.readers.biigle import read_biigle_csv
from pipeline.readers.ifdo import read_ifdo

DATA = Path(__file__).parent / "data"
SCHEMAS = DATA / "ifdo_schema"
N_LABEL = 9
# CoralNet's metadata field labels (its Metadata model's EDIT_FORM_FIELDS, the aux fields under
# their default names): the columns its "Upload metadata" page recognises
CORALNET_KNOWN = ("Name", "Date", "Aux1", "Aux2", "Aux3", "Aux4", "Aux5", "Height (cm)",
                  "Latitude", "Longitude", "Depth", "Camera", "Photographer", "Water quality",
                  "Strobes", "Framing gear used", "White balance card", "Comments")


# --- the built survey, its embeddings, its iFDO and a habitats run with every export ----------

@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> Path:
    return mini_manifest(tmp_path_factory.mktemp("exp") / "site", dives=2, images_per_dive=24)


@pytest.fixture(scope="module")
def root(pairs) -> Path:
    return pairs.parent.parent


@pytest.fixture(scope="module")
def locations(pairs) -> dict:
    t = pq.read_table(pairs.parent / "locations.parquet")
    d = t.to_pydict()
    d["t_us"] = t.column("timestamp").cast("int64").to_pylist()
    return {k: v for k, v in d.items() if k not in ("geometry", "bbox")}


def _originals(root: Path) -> dict[str, tuple[str, int]]:
    return {str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(),
                                       p.stat().st_mtime_ns)
            for p in sorted(root.glob("dive*/images/*.jpg"))}


@pytest.fixture(scope="module")
def emb_file(pairs, tmp_path_factory) -> Path:
    """An ssl.embed file of the survey whose embeddings are three planted groups (sand, reef of
    dive01, reef of dive02), written without a trained encoder."""
    m = load_manifest(pairs)
    schema = pq.read_schema(m.locations_path)
    table = pq.read_table(m.locations_path, columns=[k for k in E.LOCATION_COLUMNS
                                                     if k in schema.names]).sort_by("idx")
    labels = table.column("label").to_pylist()
    dives = table.column("dive").to_pylist()
    group = np.array([0 if lab == "sand" else 1 + (d == "dive02")
                      for lab, d in zip(labels, dives, strict=True)])
    rng = np.random.default_rng(0)
    X = 3.0 * np.eye(16)[group] + 0.05 * rng.normal(size=(m.n, 16))
    meta = {E.META_VERSION: E.EMBEDDINGS_VERSION, E.META_DATASET: m.digest,
            E.META_PAIRS: os.path.abspath(pairs), E.META_DIM: "16",
            E.META_R_LOC: repr(float(m.r_loc_m)),
            c.META_CRS: schema.metadata[b"crs"].decode(),
            c.META_CATALOG: schema.metadata[b"catalog"].decode()}
    table = table.replace_schema_metadata(None).append_column(E.EMBEDDING_COLUMN,
                                                              E.embedding_array(X))
    table = table.replace_schema_metadata({k.encode(): v.encode() for k, v in meta.items()})
    out = tmp_path_factory.mktemp("emb") / "embeddings.parquet"
    pq.write_table(c.with_points(table, m.xy, c.site_crs(schema.metadata)), out)
    return out


def _pipeline(capsys, *argv) -> tuple[int, str, str]:
    rc = pipeline_cli.main(["export", "ifdo", *argv])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


@pytest.fixture(scope="module")
def survey_ifdo(root) -> Path:
    """The survey's iFDO, its header then completed by hand with a PI (as a user would)."""
    assert pipeline_cli.main(["export", "ifdo", "--catalog", str(root / "catalog.yaml")]) == 0
    path = root / "manifests" / "site_iFDO.json"
    doc = json.loads(path.read_text())
    pristine = path.with_name("pristine.json")
    pristine.write_text(path.read_text())
    doc["image-set-header"]["image-pi"] = {"name": "Jane Doe"}
    path.write_text(json.dumps(doc, indent=1))
    return path


@pytest.fixture(scope="module")
def hab(root, emb_file, survey_ifdo, tmp_path_factory) -> dict:
    before = _originals(root)
    out = tmp_path_factory.mktemp("hab") / "habitats"
    rc = habitats_cli.main(["--embeddings", str(emb_file), "--k", "3", "--n-label",
                            str(N_LABEL), "--out", str(out), "--export", "biigle", "coralnet",
                            "ifdo"])
    assert rc == 0
    return {"out": out, "before": before}


def _validate(doc: dict) -> None:
    """The iFDO v2.0.1 JSON schema (draft 2020-12, the files it refers to from the same
    release) and mariqt's datetime check, offline."""
    import jsonschema
    import referencing

    schemas = {p.name: json.loads(p.read_text()) for p in SCHEMAS.glob("*.json")}
    registry = referencing.Registry().with_resources(
        (s["$id"], referencing.Resource.from_contents(s)) for s in schemas.values())
    jsonschema.Draft202012Validator(schemas["ifdo-v2.0.1.json"], registry=registry,
                                    format_checker=jsonschema.FormatChecker()).validate(doc)
    fmt = doc["image-set-header"].get("image-datetime-format", ifdo.DATETIME_FORMAT)
    import datetime as dt

    for item in doc["image-set-items"].values():
        dt.datetime.strptime(item["image-datetime"], fmt)


def _rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _at(locations: dict, image_ids: list[str]) -> dict:
    pos = {i: k for k, i in enumerate(locations["image_id"])}
    rows = [pos[i] for i in image_ids]
    return {k: [v[r] for r in rows] for k, v in locations.items()}


def _r3(values) -> list[float]:
    return [round(float(v), 3) + 0.0 for v in values]


# --- the writer ----------------------------------------------------------------------------------

def test_ifdo_writer_known_answers(tmp_path):
    imgs = [ifdo.Image(key="a.jpg", image_id="d1/a.jpg", time=1710290446.897, lat=-43.1,
                       lon=147.9, depth_m=40.1234, altitude_m=2.0, heading_deg=359.9996,
                       event="d1", sha256="ab" * 32),
            ifdo.Image(key="2024-03-13.jpg", image_id="d2/b.jpg", time=1710290447.5,
                       lat=-43.2, lon=147.8, depth_m=float("nan"), altitude_m=None,
                       heading_deg=-90.0, event="d2")]
    doc = ifdo.build(imgs, "s_list", "s", header={"image-pi": {"name": "Jane Doe"}},
                     local_path="images")
    a, b = doc["image-set-items"]["a.jpg"], doc["image-set-items"]["2024-03-13.jpg"]
    u = ifdo.image_uuid("s", "d1/a.jpg")
    assert a == {"image-datetime": "2024-03-13 00:40:46.897000", "image-latitude": -43.1,
                 "image-longitude": 147.9, "image-altitude-meters": -40.123,
                 "image-meters-above-ground": 2.0, "image-camera-yaw-degrees": 0.0,
                 "image-event": {"name": "d1"}, "image-uuid": u, "image-handle": f"urn:uuid:{u}",
                 "image-hash-sha256": "ab" * 32}
    assert b["image-datetime"] == "2024-03-13 00:40:47.500000"
    assert b["image-camera-yaw-degrees"] == 270.0
    assert "image-altitude-meters" not in b and "image-meters-above-ground" not in b
    assert uuid.UUID(u).version == 4 and u == ifdo.image_uuid("s", "d1/a.jpg")
    assert u != ifdo.image_uuid("other", "d1/a.jpg")
    head = doc["image-set-header"]
    # a depth unknown for one image: no header default that would stand in for it
    assert "image-altitude-meters" not in head
    assert head["image-datetime"] == "2024-03-13 00:40:46.897000"
    assert head["image-latitude"] == pytest.approx(-43.15) and head["image-pi"] == {
        "name": "Jane Doe"}
    assert head["image-set-local-path"] == "images" and head["image-event"] == {"name": "s"}
    assert ifdo.fields_to_complete(doc) == [
        "image-altitude-meters", "image-coordinate-uncertainty-meters", "image-context",
        "image-platform", "image-sensor", "image-creators", "image-license", "image-copyright",
        "image-abstract"]
    # YAML and JSON say the same (keys that look like dates stay strings, floats stay floats)
    text = ifdo.render(doc, "x_iFDO.yaml")
    assert '"2024-03-13.jpg":' in text and yaml.safe_load(text) == json.loads(
        ifdo.render(doc, "x_iFDO.json"))
    tiny = ifdo.build([ifdo.Image(key="yes", image_id="i", time=0.0, lat=1e-05, lon=-0.0)],
                      "t", "t")
    back = yaml.safe_load(ifdo.render(tiny, "t_iFDO.yaml"))
    assert back["image-set-items"]["yes"]["image-latitude"] == 1e-05
    with pytest.raises(ValueError, match="not an iFDO file name"):
        ifdo.render(doc, "x.json")
    with pytest.raises(ValueError, match="unique"):
        ifdo.build([imgs[0], imgs[0]], "s", "s")


def test_export_file_names_stay_unique():
    assert exports.export_names(["d1", "d2"], ["d1/img/a.jpg", "d2/img/b.jpg"]) == [
        "a.jpg", "b.jpg"]
    # dives that restart their numbering: the shared name becomes the path from the root
    assert exports.export_names(["d1", "d2", "d2"],
                                ["d1/img/IMG_1.jpg", "d2/img/IMG_1.jpg", "d2/img/IMG_2.jpg"]) == [
        "d1__img__IMG_1.jpg", "d2__img__IMG_1.jpg", "IMG_2.jpg"]
    # ... unless that is another image's own name: then numbered by position
    assert exports.export_names(["a", "b", "c"], ["a/x.jpg", "b/x.jpg", "c/a__x.jpg"]) == [
        "1__a__x.jpg", "b__x.jpg", "a__x.jpg"]


def test_exported_images_are_copies_not_links(tmp_path):
    """An edit of an exported image must not reach the survey: a copy, not a (hard) link."""
    src = tmp_path / "orig.jpg"
    src.write_bytes(b"jpeg bytes")
    exports._copy(src, tmp_path / "export" / "x.jpg")
    copy = tmp_path / "export" / "x.jpg"
    assert copy.read_bytes() == b"jpeg bytes" and copy.stat().st_ino != src.stat().st_ino
    assert not copy.is_symlink() and src.stat().st_nlink == 1
    copy.write_bytes(b"edited")
    assert src.read_bytes() == b"jpeg bytes"


# --- the survey's iFDO ---------------------------------------------------------------------------

def test_survey_ifdo_validates_and_reads_back_to_the_located_images(root, locations,
                                                                    survey_ifdo):
    from ifdo import iFDO

    doc = json.loads(survey_ifdo.with_name("pristine.json").read_text())
    _validate(doc)
    _validate(json.loads(survey_ifdo.read_text()))
    n = len(locations["image_id"])
    head, items = doc["image-set-header"], doc["image-set-items"]
    assert head["image-set-name"] == "site" and head["image-set-ifdo-version"] == "v2.0.1"
    assert head["image-coordinate-uncertainty-meters"] == 2.0  # nav_checks.position_noise_m
    assert head["image-project"] == head["image-event"] == {"name": "site"}
    assert ifdo.fields_to_complete(doc) == ["image-context", "image-platform", "image-sensor",
                                            "image-pi", "image-creators", "image-license",
                                            "image-copyright"]
    names = [Path(p).name for p in locations["path"]]
    assert list(items) == names and len(items) == n == 48
    for name, p, dive, image_id in zip(names, locations["path"], locations["dive"],
                                       locations["image_id"], strict=True):
        it = items[name]
        assert it["image-set-local-path"] == f"../{dive}/images"
        assert it["image-event"] == {"name": dive}
        assert it["image-uuid"] == ifdo.image_uuid("site", image_id)
        assert it["image-hash-sha256"] == hashlib.sha256((root / p).read_bytes()).hexdigest()
    parsed = iFDO.load(survey_ifdo)
    assert len(parsed.image_set_items) == n and parsed.image_set_header.image_pi.name == "Jane Doe"
    first = parsed.image_set_items[names[0]]
    assert first.image_uuid == items[names[0]]["image-uuid"]
    assert first.image_latitude == locations["lat"][0]

    nav = read_ifdo(survey_ifdo, dive_dir=root)
    t = nav.table
    assert t["image"].tolist() == locations["path"]
    assert t["lat"].tolist() == locations["lat"] and t["lon"].tolist() == locations["lon"]
    assert t["depth_m"].tolist() == _r3(locations["depth_m"])
    assert t["altitude_m"].tolist() == _r3(locations["altitude_m"])
    assert t["heading_deg"].tolist() == _r3(locations["heading_deg"])
    np.testing.assert_allclose(t["timestamp"], np.array(locations["t_us"]) / 1e6, rtol=0,
                               atol=1e-6)
    assert nav.notes["ifdo_paths_from_local_path"] == n


def test_survey_ifdo_keys_by_path_when_dives_share_a_file_name(tmp_path):
    """Two dives restarting their numbering: every key becomes the path from the catalog root
    and the local path the root, and the reader finds each image again."""
    from types import SimpleNamespace

    import pyarrow as pa

    from pipeline.export import survey_images

    root, folder = tmp_path / "survey", tmp_path / "survey" / "manifests"
    paths = ["dA/images/IMG_0001.jpg", "dB/images/IMG_0001.jpg"]
    for i, p in enumerate(paths):
        (root / p).parent.mkdir(parents=True)
        (root / p).write_bytes(bytes([i]))
    folder.mkdir()
    table = pa.table({"image_id": paths, "dive": ["dA", "dB"], "path": paths,
                      "timestamp": pa.array([1_710_290_446_897_000, 1_710_290_447_000_000],
                                            pa.timestamp("us", tz="UTC")),
                      "lat": [-43.1, -43.2], "lon": [147.9, 147.8],
                      "depth_m": pa.array([40.0, None], pa.float32()),
                      "altitude_m": pa.array([2.0, 2.5], pa.float32()),
                      "heading_deg": pa.array([10.0, 20.0], pa.float32())})
    images, local, counts = survey_images(SimpleNamespace(root=root), table, folder)
    assert [i.key for i in images] == paths and local == ".."
    assert counts == {"hashed": 2, "missing": 0, "keyed_by_path": True}
    assert images[1].sha256 == hashlib.sha256(b"\x01").hexdigest()
    path = folder / "s_iFDO.json"
    path.write_text(ifdo.render(ifdo.build(images, "s", "s", local_path=local), path))
    t = read_ifdo(path, dive_dir=root).table
    assert t["image"].tolist() == paths and t["lat"].tolist() == [-43.1, -43.2]
    assert t["depth_m"].tolist()[0] == 40.0 and np.isnan(t["depth_m"].tolist()[1])


def test_schema_copy_refuses_what_mariqt_refuses(survey_ifdo):
    import jsonschema

    doc = json.loads(survey_ifdo.read_text())
    item = next(iter(doc["image-set-items"].values()))
    item["image-uuid"] = str(uuid.uuid5(uuid.NAMESPACE_URL, "x"))  # a version-5 UUID
    with pytest.raises(jsonschema.ValidationError):
        _validate(doc)


def test_survey_ifdo_as_yaml_says_the_same(root, survey_ifdo, capsys):
    rc, out, err = _pipeline(capsys, "--catalog", str(root / "catalog.yaml"), "--out",
                             "site_iFDO.yaml", "--no-hash")
    assert rc == 0, err
    path = root / "manifests" / "site_iFDO.yaml"
    assert out.splitlines()[0] == (f"site: wrote {path}: iFDO v2 of 48 located images (no files "
                                   "read (--no-hash))")
    from_yaml = yaml.safe_load(path.read_text())
    pristine = json.loads(survey_ifdo.with_name("pristine.json").read_text())
    for it in pristine["image-set-items"].values():
        del it["image-hash-sha256"]
    assert from_yaml == pristine
    from ifdo import iFDO

    assert len(iFDO.load(path).image_set_items) == 48
    record = json.loads((root / "manifests" / ".seafloor-output.json").read_text())
    assert {"site_iFDO.json", "site_iFDO.yaml"} <= set(record["owned"])


def test_pipeline_export_mistakes_are_one_message(root, survey_ifdo, tmp_path, capsys):
    cat = str(root / "catalog.yaml")
    rc, out, err = _pipeline(capsys, "--catalog", "no_such_site")
    assert rc == 2 and err.startswith("error: no catalog named 'no_such_site'")
    fresh = copy_survey(root, tmp_path / "fresh")  # the survey, never built
    rc, out, err = _pipeline(capsys, "--catalog", str(fresh / "catalog.yaml"))
    assert rc == 2 and (f"its output folder {fresh / 'manifests'} does not exist: the site has "
                        "not been built yet") in err and "build it first" in err
    assert not (fresh / "manifests").exists()
    rc, out, err = _pipeline(capsys, "--catalog", cat, "--out", "survey.json")
    assert rc == 2 and "'survey.json' is not an iFDO file name; expected a name ending in " \
        "_iFDO.json or _iFDO.yaml" in err
    elsewhere = tmp_path / "x_iFDO.json"
    rc, out, err = _pipeline(capsys, "--catalog", cat, "--out", str(elsewhere))
    assert rc == 2 and f"the folder {tmp_path} holds no locations.parquet" in err
    assert not elsewhere.exists()
    intruder = root / "manifests" / "mine_iFDO.json"
    intruder.write_text("{}")
    rc, out, err = _pipeline(capsys, "--catalog", cat, "--out", "mine_iFDO.json")
    assert rc == 2 and "a file the builder did not write is in the way" in err
    assert intruder.read_text() == "{}"
    intruder.unlink()
    for text in (out, err):
        assert "Traceback" not in text


# --- the labelling list out ----------------------------------------------------------------------

def test_exports_hold_the_labelling_list_and_only_it(hab, root, locations):
    out = hab["out"]
    listed = [r["image_id"] for r in _rows(out / "labelling_list.csv")]
    assert len(listed) == N_LABEL
    names = _rows(out / "export" / "file_names.csv")
    assert [r["image_id"] for r in names] == listed
    assert [r["rank"] for r in names] == [str(i) for i in range(1, N_LABEL + 1)]
    by_id = dict(zip(locations["image_id"], locations["path"], strict=True))
    assert [r["file_name"] for r in names] == [Path(by_id[i]).name for i in listed]
    files = {n["file_name"] for n in names}
    expected = {"export/file_names.csv"}
    for tool, meta in (("biigle", "metadata.csv"), ("coralnet", "metadata.csv"),
                       ("ifdo", "site_labelling-list_iFDO.json")):
        folder = out / "export" / tool
        images = folder / "images"
        assert {p.name for p in images.iterdir()} == files, tool
        for r in names:
            f, src = images / r["file_name"], root / r["path"]
            assert not f.is_symlink() and f.read_bytes() == src.read_bytes()
        with open(folder / "contact_sheet.png", "rb") as fh, \
                open(out / "labelling_list.png", "rb") as sheet:
            assert fh.read() == sheet.read()
        expected |= {f"export/{tool}/{meta}", f"export/{tool}/contact_sheet.png"}
        expected |= {f"export/{tool}/images/{f}" for f in files}
    on_disk = {str(p.relative_to(out)) for p in (out / "export").rglob("*") if p.is_file()}
    assert on_disk == expected
    record = json.loads((out / "habitats.json").read_text())
    assert expected <= set(record["written"]) and expected <= set(record["files"])
    placed = record["export"]["biigle"]
    assert placed["metadata"] == "export/biigle/metadata.csv" and placed["images"] == N_LABEL
    for p in (out / "export" / "biigle" / "images").iterdir():
        assert p.stat().st_nlink == 1 and not p.is_symlink()  # copies: no link to the survey
    assert _originals(root) == hab["before"]  # the originals untouched


def test_biigle_csv_reads_back_to_the_located_positions(hab, locations):
    path = hab["out"] / "export" / "biigle" / "metadata.csv"
    with open(path, newline="") as fh:
        assert next(csv.reader(fh)) == ["filename", "taken_at", "lng", "lat", "gps_altitude",
                                         "distance_to_ground", "yaw"]
    names = _rows(hab["out"] / "export" / "file_names.csv")
    truth = _at(locations, [r["image_id"] for r in names])
    t = read_biigle_csv(path).table
    assert t["image"].tolist() == [r["file_name"] for r in names]
    assert t["lat"].tolist() == truth["lat"] and t["lon"].tolist() == truth["lon"]
    assert t["depth_m"].tolist() == _r3(truth["depth_m"])
    assert t["altitude_m"].tolist() == _r3(truth["altitude_m"])
    assert t["heading_deg"].tolist() == _r3(truth["heading_deg"])
    np.testing.assert_allclose(t["timestamp"], np.array(truth["t_us"]) / 1e6, rtol=0,
                               atol=1e-6)


def test_coralnet_csv_has_the_columns_coralnet_reads(hab, locations):
    path = hab["out"] / "export" / "coralnet" / "metadata.csv"
    with open(path, newline="") as fh:
        header = next(csv.reader(fh))
    assert header == ["Name", "Date", "Aux1", "Latitude", "Longitude", "Depth", "Comments"]
    assert set(header) <= set(CORALNET_KNOWN) and len(set(header)) == len(header)
    rows = _rows(path)
    names = _rows(hab["out"] / "export" / "file_names.csv")
    truth = _at(locations, [r["image_id"] for r in names])
    assert [r["Name"] for r in rows] == [r["file_name"] for r in names]
    assert [r["Aux1"] for r in rows] == truth["dive"]
    assert [r["Date"] for r in rows] == [ifdo.format_datetime(t / 1e6)[:10]
                                         for t in truth["t_us"]]
    assert [r["Latitude"] for r in rows] == [f"{v:.8f}" for v in truth["lat"]]
    assert [r["Longitude"] for r in rows] == [f"{v:.8f}" for v in truth["lon"]]
    assert [float(r["Depth"]) for r in rows] == _r3(truth["depth_m"])
    assert rows[0]["Comments"].startswith(f"rank 1 of {N_LABEL} in the labelling list; "
                                          f"image_id {names[0]['image_id']}; dive ")
    # CoralNet's field sizes: 20 characters for a coordinate, 50 for an aux field
    assert all(len(r["Latitude"]) <= 20 and len(r["Longitude"]) <= 20 and len(r["Aux1"]) <= 50
               for r in rows)


def test_labelling_list_ifdo_validates_and_shares_the_survey_ifdo(hab, root, locations,
                                                                   survey_ifdo):
    from ifdo import iFDO

    path = hab["out"] / "export" / "ifdo" / "site_labelling-list_iFDO.json"
    doc = json.loads(path.read_text())
    _validate(doc)
    parsed = iFDO.load(path)
    head = doc["image-set-header"]
    # the survey's header, completed by hand, is carried over; the set's own fields are not
    assert parsed.image_set_header.image_pi.name == "Jane Doe"
    assert head["image-coordinate-uncertainty-meters"] == 2.0
    assert head["image-set-name"] == "site_labelling-list"
    assert head["image-set-local-path"] == "images"
    assert head["image-set-uuid"] != json.loads(survey_ifdo.read_text())[
        "image-set-header"]["image-set-uuid"]
    assert "image-pi" not in ifdo.fields_to_complete(doc)
    survey_items = json.loads(survey_ifdo.read_text())["image-set-items"]
    names = _rows(hab["out"] / "export" / "file_names.csv")
    assert list(doc["image-set-items"]) == [r["file_name"] for r in names]
    for r in names:
        it, same = doc["image-set-items"][r["file_name"]], survey_items[Path(r["path"]).name]
        for key in ("image-uuid", "image-hash-sha256", "image-datetime", "image-latitude",
                    "image-longitude", "image-altitude-meters", "image-camera-yaw-degrees",
                    "image-event"):
            assert it[key] == same[key], (r["file_name"], key)
    truth = _at(locations, [r["image_id"] for r in names])
    t = read_ifdo(path, dive_dir=path.parent).table
    assert t["image"].tolist() == [f"images/{r['file_name']}" for r in names]
    assert t["lat"].tolist() == truth["lat"] and t["lon"].tolist() == truth["lon"]
    assert t["depth_m"].tolist() == _r3(truth["depth_m"])


# --- the round trip: exported list -> a tool's labels -> the predicted map ---------------------

@pytest.fixture(scope="module")
def native_map(hab, emb_file, locations, tmp_path_factory) -> dict:
    """The map habitats makes from the listed images' labels in the project's own CSV
    (image_id,label): what every tool's round trip must give back."""
    listed = _rows(hab["out"] / "export" / "file_names.csv")
    truth_of = dict(zip(locations["image_id"], locations["label"], strict=True))
    folder = tmp_path_factory.mktemp("native")
    with open(folder / "labels.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image_id", "label"])
        w.writerows([r["image_id"], truth_of[r["image_id"]]] for r in listed)
    rc = habitats_cli.main(["--embeddings", str(emb_file), "--k", "3", "--n-label", "3",
                            "--labels", str(folder / "labels.csv"), "--out", str(folder / "m")])
    assert rc == 0
    return pq.read_table(folder / "m" / "predictions.parquet").to_pydict()


@pytest.mark.parametrize("tool", ["biigle", "coralnet", "ifdo"])
def test_labels_the_tool_hands_back_for_the_exported_list_make_the_map(hab, emb_file, locations,
                                                                       native_map, tool,
                                                                       tmp_path, capsys):
    """habitats --export TOOL -> the tool's labels of the exported file names (its export
    format) -> habitats --labels: every listed image gets its label back, and the map is the
    one the same labels give in the project's own CSV."""
    listed = _rows(hab["out"] / "export" / "file_names.csv")
    truth_of = dict(zip(locations["image_id"], locations["label"], strict=True))
    names = [r["file_name"] for r in listed]
    truth = [truth_of[r["image_id"]] for r in listed]
    assert len(set(truth)) == 2  # both habitats in the list: a classifier can be trained
    on_disk = sorted(p.name for p in (hab["out"] / "export" / tool / "images").iterdir())
    assert on_disk == sorted(names)  # the names the tool saw are the exported files' names
    labels = tool_labels(tool, names, truth, tmp_path)
    out = tmp_path / "mapped"
    rc = habitats_cli.main(["--embeddings", str(emb_file), "--k", "3", "--n-label", "3",
                            "--labels", str(labels), "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    pred = pq.read_table(out / "predictions.parquet").to_pydict()
    got = dict(zip(pred["image_id"], pred["label"], strict=True))
    assert [got[r["image_id"]] for r in listed] == truth  # every listed image labelled back
    assert sum(v is not None for v in got.values()) == len(listed)  # and only those
    assert pred["image_id"] == native_map["image_id"]
    assert pred["predicted"] == native_map["predicted"]
    np.testing.assert_allclose(pred["confidence"], native_map["confidence"], rtol=1e-6)


def test_overwrite_removes_only_what_the_export_wrote(hab, root, emb_file, capsys):
    out = hab["out"]
    foreign = out / "export" / "biigle" / "images" / "notes.txt"
    foreign.write_text("mine")
    stale = out / "export" / "biigle" / "metadata.csv"
    stale.write_text("changed")
    rc = habitats_cli.main(["--embeddings", str(emb_file), "--k", "3", "--n-label",
                            str(N_LABEL), "--out", str(out), "--export", "biigle", "--overwrite"])
    assert rc == 0, capsys.readouterr().err
    assert foreign.read_text() == "mine"
    assert stale.read_text().startswith("filename,taken_at,lng,lat,")
    assert not (out / "export" / "coralnet").exists() and not (out / "export" / "ifdo").exists()
    assert _originals(root) == hab["before"]
    foreign.unlink()


def test_export_mistakes_are_one_message_and_leave_the_folder_as_it_was(emb_file, tmp_path,
                                                                         capsys):
    out = tmp_path / "h"
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    rc = habitats_cli.main(["--embeddings", str(emb_file), "--k", "3", "--out", str(out),
                            "--export", "biigle", "--image-root", str(empty)])
    err = capsys.readouterr().err
    assert rc == 2 and (f"--export: 48 of the 48 listed images are not under the catalog root "
                        f"(first: {empty}/dive0") in err
    assert "pass --image-root with the folder the manifest's paths are relative to" in err
    assert "Traceback" not in err and not out.exists()
    with pytest.raises(SystemExit) as exc:
        habitats_cli.main(["--embeddings", str(emb_file), "--out", str(out), "--export",
                           "squidle"])
    assert exc.value.code == 2 and "invalid choice: 'squidle'" in capsys.readouterr().err
    assert os.listdir(tmp_path) == ["elsewhere"]
