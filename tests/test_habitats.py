"""From encoder to habitat map: ssl.embed (GeoParquet embeddings, resumable), ssl.mapping.clusters,
ssl.mapping.labelling, ssl.habitats (maps, contact sheets, labelling list, predictions exported for a
GIS) and the refusals, on a mini-survey and on synthetic embeddings with a known answer."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from seafloor_ssl import embed as embed_cli
from seafloor_ssl import habitats as habitats_cli
from seafloor_ssl.data.embeddings import EMBEDDING_COLUMN, read_embeddings
from seafloor_ssl.data.manifest import load_manifest
from seafloor_ssl.mapping.clusters import DEFAULT_CRITERION, ClusterError, cluster, smooth
from seafloor_ssl.mapping.labelling import labelling_list
from seafloor_ssl.training.run import build_parser, train
from surveys import mini_manifest, tool_labels

SMALL = ["--backbone", "tiny", "--image-size", "32", "--batch-size", "16", "--workers", "0",
         "--device", "cpu"]


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    return mini_manifest(tmp_path_factory.mktemp("hab") / "site")


@pytest.fixture(scope="module")
def ckpt(manifest, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "simclr"
    train(build_parser().parse_args(["--manifest", str(manifest), "--out", str(out), *SMALL,
                                     "--objective", "simclr", "--steps", "4"]))
    return out / "last.pt"


@pytest.fixture(scope="module")
def emb_file(manifest, ckpt, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("emb") / "embeddings.parquet"
    assert embed_cli.main(["--checkpoint", str(ckpt), "--manifest", str(manifest), "--out",
                           str(out), "--device", "cpu", "--batch-size", "16"]) == 0
    return out


def _labels_csv(manifest: Path) -> Path:
    return manifest.parent.parent / "labels.csv"


# --- the embeddings file ----------------------------------------------------------------------

def test_embeddings_file_is_geoparquet_that_geopandas_and_duckdb_read(manifest, emb_file):
    import duckdb
    import geopandas as gpd
    import pyproj

    m = load_manifest(manifest)
    table = pq.read_table(emb_file)
    assert table.num_rows == m.n
    assert table.column("idx").to_pylist() == list(range(m.n))
    assert table.column("image_id").to_pylist() == m.image_id.tolist()
    col = table.schema.field(EMBEDDING_COLUMN).type
    assert str(col.value_type) == "float" and col.list_size > 0
    meta = {k.decode(): v.decode() for k, v in table.schema.metadata.items()}
    assert meta["dataset"] == m.digest and meta["embedding_dim"] == str(col.list_size)
    geo = json.loads(meta["geo"])
    assert geo["version"] == "1.1.0" and geo["columns"]["geometry"]["geometry_types"] == ["Point"]

    site_crs = pq.read_schema(m.locations_path).metadata[b"crs"].decode()
    gdf = gpd.read_parquet(emb_file)
    assert gdf.crs == pyproj.CRS(site_crs)
    np.testing.assert_allclose(np.c_[gdf.geometry.x, gdf.geometry.y], m.xy)

    con = duckdb.connect()
    n, dim = con.execute(f"SELECT count(*), max(len({EMBEDDING_COLUMN})) FROM "
                         f"'{emb_file}'").fetchone()
    assert (n, dim) == (m.n, col.list_size)
    keys = {r[0].decode() if isinstance(r[0], bytes) else r[0] for r in con.execute(
        f"SELECT key FROM parquet_kv_metadata('{emb_file}')").fetchall()}
    assert {"geo", "dataset", "embeddings_version"} <= keys

    emb = read_embeddings(emb_file)
    assert emb.X.shape == (m.n, col.list_size) and np.isfinite(emb.X).all()
    assert emb.crs.epsg == int(site_crs.split(":")[1])


def test_embed_resumes_after_an_interruption(manifest, ckpt, emb_file, tmp_path, monkeypatch,
                                              capsys):
    out = tmp_path / "e.parquet"
    calls = {"n": 0}
    real = embed_cli.extract_features

    def flaky(*a, **kw):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*a, **kw)

    monkeypatch.setattr(embed_cli, "extract_features", flaky)
    args = ["--checkpoint", str(ckpt), "--manifest", str(manifest), "--out", str(out),
            "--device", "cpu", "--batch-size", "16", "--chunk", "32"]
    assert embed_cli.main(args) == 130
    assert "run the same command again" in capsys.readouterr().err
    assert not out.exists()
    parts = embed_cli.parts_dir(out)
    assert sorted(p.name for p in parts.glob("part-*.npy")) == ["part-000000.npy"]

    calls["n"] = -100  # no more interruptions; count what the second run computes
    assert embed_cli.main(args) == 0
    assert "resuming: 32 of 96" in capsys.readouterr().out
    assert calls["n"] == -100 + 4  # 64 images left in batches of 16
    assert not parts.exists()
    np.testing.assert_allclose(read_embeddings(out).X, read_embeddings(emb_file).X, atol=1e-5)


def test_embed_never_replaces_what_it_did_not_write(manifest, ckpt, emb_file, tmp_path, capsys):
    base = ["--checkpoint", str(ckpt), "--manifest", str(manifest), "--device", "cpu"]
    foreign = tmp_path / "survey.parquet"
    foreign.write_bytes(b"not ours")
    for extra in ([], ["--overwrite"]):
        assert embed_cli.main([*base, "--out", str(foreign), *extra]) == 2
        assert "not an embeddings file" in capsys.readouterr().err
    assert foreign.read_bytes() == b"not ours"
    copy = tmp_path / "copy.parquet"
    copy.write_bytes(emb_file.read_bytes())
    assert embed_cli.main([*base, "--out", str(copy)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert embed_cli.main([*base, "--out", str(copy), "--overwrite"]) == 0
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage")
    assert embed_cli.main([*base[:0], "--checkpoint", str(bad), "--manifest", str(manifest),
                           "--out", str(tmp_path / "x.parquet")]) == 2
    assert "cannot be read as a PyTorch checkpoint" in capsys.readouterr().err


# --- clusters and the labelling list on embeddings with a known answer ------------------------

def _blobs(sizes, dim=48, seed=0, spread=0.05):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(len(sizes), dim))
    X = np.concatenate([c + spread * rng.normal(size=(s, dim)) for c, s in
                        zip(centres, sizes, strict=True)])
    truth = np.repeat(np.arange(len(sizes)), sizes)
    xy = rng.uniform(0, 500, size=(len(X), 2))
    return X.astype(np.float32), truth, xy


def test_kmeans_with_k_auto_recovers_separable_groups():
    from sklearn.metrics import adjusted_rand_score

    X, truth, _ = _blobs([300, 200, 120, 40])
    res = cluster(X, None, seed=0)
    assert res.k == 4, res.scores
    assert adjusted_rand_score(truth, res.labels) == 1.0
    assert np.bincount(res.labels).tolist() == [300, 200, 120, 40]  # largest cluster first
    assert cluster(X, 2, seed=0).k == 2


def test_kmeans_refuses_what_no_clustering_can_use():
    rng = np.random.default_rng(0)
    two = np.repeat(rng.normal(size=(2, 16)), 50, axis=0)
    assert cluster(two, None).k == 2  # auto never picks a k with empty clusters
    with pytest.raises(ClusterError, match="only 2 distinct cluster.*use --k 2 or fewer"):
        cluster(two, 4)


def _with_embeddings(emb_file: Path, dest: Path, values: np.ndarray) -> Path:
    """emb_file with its embedding column replaced (same rows, same metadata)."""
    import pyarrow as pa

    t = pq.read_table(emb_file)
    i = t.schema.get_field_index(EMBEDDING_COLUMN)
    col = pa.FixedSizeListArray.from_arrays(pa.array(values.astype(np.float32).ravel()),
                                            values.shape[1])
    pq.write_table(t.set_column(i, t.schema.field(i), col).replace_schema_metadata(
        t.schema.metadata), dest)
    return dest


def test_habitats_names_a_collapsed_or_diverged_encoder(emb_file, tmp_path, capsys):
    n, d = read_embeddings(emb_file).X.shape
    same = _with_embeddings(emb_file, tmp_path / "same.parquet", np.ones((n, d)))
    assert habitats_cli.main(["--embeddings", str(same), "--k", "auto", "--out",
                              str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert "the encoder has collapsed" in err and "Traceback" not in err
    nan = np.ones((n, d))
    nan[3] = np.nan
    bad = _with_embeddings(emb_file, tmp_path / "nan.parquet", nan)
    assert habitats_cli.main(["--embeddings", str(bad), "--k", "3", "--out",
                              str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert f"1 of {n} embeddings hold non-finite values" in err and "Traceback" not in err
    assert not (tmp_path / "a").exists() or not any((tmp_path / "a").iterdir())


def test_labelling_list_covers_every_cluster_and_spreads_over_space():
    X, truth, xy = _blobs([600, 150, 30, 8, 5], seed=3)
    clu = cluster(X, None, seed=0)
    assert clu.k == 5
    for n in (5, 6, 12, 30):
        chosen = labelling_list(clu.reduced, clu.labels, xy, n, seed=1)
        assert len(chosen) == n and len(set(chosen.tolist())) == n
        assert set(clu.labels[chosen].tolist()) == set(range(5)), n
        # any prefix of k covers them too: the order goes round the habitats first
        assert set(clu.labels[chosen[:5]].tolist()) == set(range(5))
    # already labelled images are never proposed
    done = np.zeros(len(X), bool)
    done[:700] = True
    chosen = labelling_list(clu.reduced, clu.labels, xy, 10, exclude=done)
    assert not done[chosen].any()
    # fewer proposals than habitats: as many as asked, from different habitats
    few = labelling_list(clu.reduced, clu.labels, xy, 3)
    assert len(set(clu.labels[few].tolist())) == 3


def test_labelling_list_prefers_distant_images_within_a_fine_cluster():
    # one tight group at one spot plus a copy of it 300 m away: two picks go to both places
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(0, 0.01, (50, 8)), 5 + rng.normal(0, 0.01, (50, 8))])
    xy = np.concatenate([rng.normal(0, 1, (25, 2)), 300 + rng.normal(0, 1, (25, 2)),
                         -300 + rng.normal(0, 1, (50, 2))])
    labels = np.repeat([0, 1], 50)
    chosen = labelling_list(X.astype(np.float32), labels, xy, 4, candidates=50)
    first = chosen[labels[chosen] == 0]
    d = np.linalg.norm(xy[first][:, None] - xy[first][None], axis=2).max()
    assert d > 200


def test_smoothing_removes_isolated_disagreements_only():
    # a path 0-1-...-7 of neighbours: the odd image inside a run flips, the border stays
    labels = np.array([0, 0, 1, 0, 0, 1, 1, 1])
    a, b = np.arange(7), np.arange(1, 8)
    got = smooth(labels, a, b, k=2)
    assert got.tolist() == [0, 0, 0, 0, 0, 1, 1, 1]
    # images without neighbours keep their cluster
    assert smooth(np.array([1, 0]), np.array([], int), np.array([], int), k=2).tolist() == [1, 0]


# --- ssl.habitats end to end ------------------------------------------------------------------

def test_habitats_end_to_end_with_labels(manifest, emb_file, tmp_path, capsys):
    import geopandas as gpd
    import pyproj
    from PIL import Image
    from sklearn.metrics import adjusted_rand_score

    # the trained embeddings replaced by three planted, clearly separated groups: the site's
    # sand, its reef on dive01 and its reef on dive02 (the known answer for every step below)
    m = load_manifest(manifest)
    truth = {r["image_id"]: r["label"] for r in csv.DictReader(open(_labels_csv(manifest)))}
    assert set(truth) == set(m.image_id.tolist()) and set(truth.values()) == {"reef", "sand"}
    group = np.array([0 if truth[i] == "sand" else 1 + (d == "dive02")
                      for i, d in zip(m.image_id, m.dive, strict=True)])
    assert np.bincount(group, minlength=3).min() > 5
    d = read_embeddings(emb_file).X.shape[1]
    X, _, _ = _blobs([1, 1, 1], dim=d, seed=5)
    rng = np.random.default_rng(6)
    planted = _with_embeddings(emb_file, tmp_path / "planted.parquet",
                               X[group] + 0.05 * rng.normal(size=(m.n, d)))

    out = tmp_path / "hab"
    rc = habitats_cli.main(["--embeddings", str(planted), "--k", "auto", "--smooth", "1",
                            "--n-label", "12", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    summary = json.loads((out / "habitats.json").read_text())
    k = summary["k"]
    assert k == 3 and summary["state"] == "complete", summary.get("k_scores")
    assert summary["k_criterion"] == DEFAULT_CRITERION and DEFAULT_CRITERION in summary["criterion"]
    assert sorted(map(int, summary["k_scores"])) == list(range(2, 13))
    for name in ("cluster_map.png", "k_selection.png", "labelling_list.png", "clusters.parquet",
                 "clusters.gpkg"):
        assert (out / name).stat().st_size > 1000, name
    clusters = gpd.read_file(out / "clusters.gpkg", engine="pyogrio")
    assert sorted(set(clusters["cluster"])) == list(range(k))
    assert np.bincount(clusters["cluster"]).tolist() == summary["cluster_sizes"]
    # k-means recovers the planted groups exactly (before the smoothing round over neighbours)
    table = pq.read_table(out / "clusters.parquet").to_pydict()
    assert table["image_id"] == m.image_id.tolist()
    raw = np.array(table["cluster_unsmoothed"])
    assert adjusted_rand_score(group, raw) == 1.0
    assert sorted(np.bincount(raw).tolist()) == sorted(np.bincount(group).tolist())
    assert summary["smoothing_changed"] == int((np.array(table["cluster"]) != raw).sum())
    sheets = sorted((out / "contact_sheets").glob("cluster_*.png"))
    assert len(sheets) == sum(1 for s in summary["cluster_sizes"] if s)
    for s in sheets:  # every sheet shows images, not only its title bar
        with Image.open(s) as im:
            arr = np.asarray(im.convert("L"))
        assert arr.shape[0] > 100 and (arr[30:] < 250).mean() > 0.2, s.name

    rows = list(csv.DictReader(open(out / "labelling_list.csv")))
    assert len(rows) == 12 and [r["rank"] for r in rows] == [str(i) for i in range(1, 13)]
    assert {int(r["cluster"]) for r in rows} == set(range(k))
    root = manifest.parent.parent
    assert all(Path(r["file"]) == root / r["path"] and Path(r["file"]).is_file() for r in rows)

    site_crs = pyproj.CRS(pq.read_schema(load_manifest(manifest).locations_path)
                          .metadata[b"crs"].decode())
    out2 = tmp_path / "hab-labelled"
    labels = _labels_csv(manifest)
    assert habitats_cli.main(["--embeddings", str(planted), "--labels", str(labels),
                              "--out", str(out2), "--n-label", "5"]) == 0
    for path in (out2 / "predictions.gpkg", out2 / "predictions.parquet"):
        gdf = (gpd.read_file(path, engine="pyogrio") if path.suffix == ".gpkg"
               else gpd.read_parquet(path))
        assert gdf.crs == site_crs, path.name
        assert len(gdf) == load_manifest(manifest).n
        assert set(gdf["predicted"]) <= set(truth.values())
        # the labels follow the planted groups: every image gets its own label back, surely
        assert [truth[i] for i in gdf["image_id"]] == gdf["predicted"].tolist(), path.name
        assert (gdf["confidence"] > 0.9).all() and (gdf["confidence"] <= 1).all(), path.name
    assert (out2 / "prediction_map.png").stat().st_size > 1000
    pred = json.loads((out2 / "habitats.json").read_text())["prediction"]
    assert pred["labelled"] == len(truth)


def test_habitats_refusals(manifest, emb_file, tmp_path, tmp_path_factory, capsys):
    def run(*extra, out=None) -> tuple[int, str]:
        rc = habitats_cli.main(["--embeddings", str(emb_file), "--out",
                                str(out or tmp_path / "o"), *extra])
        return rc, capsys.readouterr().err

    n = load_manifest(manifest).n
    for bad in (str(n), str(n + 5)):
        rc, err = run("--k", bad)
        assert rc == 2 and f"expected 2 <= k <= {n - 1}" in err, bad
    for bad in ("1", "0", "-3", "many"):
        with pytest.raises(SystemExit) as exit_:
            run("--k", bad)
        assert exit_.value.code == 2 and "--k" in capsys.readouterr().err, bad
    nothing = tmp_path / "other.csv"
    nothing.write_text("image_id,label\nelsewhere/a.jpg,sand\nelsewhere/b.jpg,reef\n")
    rc, err = run("--labels", str(nothing))
    assert rc == 2 and "none of its 2 image_id values" in err
    one = tmp_path / "one.csv"
    ids = load_manifest(manifest).image_id
    one.write_text("image_id,label\n" + "".join(f"{i},sand\n" for i in ids[:5]))
    rc, err = run("--labels", str(one))
    assert rc == 2 and "at least two" in err
    # another survey's manifest than the one the embeddings were computed for
    other = mini_manifest(tmp_path_factory.mktemp("other") / "site", seed=12)
    rc, err = run("--manifest", str(other))
    assert rc == 2 and "another dataset" in err
    # an output folder with another run's results, or with somebody else's files
    out = tmp_path / "done"
    assert run("--k", "2", out=out)[0] == 0
    mine = out / "notes.txt"
    mine.write_text("keep me")
    rc, err = run("--k", "3", out=out)
    assert rc == 2 and "--overwrite" in err
    assert json.loads((out / "habitats.json").read_text())["k"] == 2
    assert run("--k", "3", "--overwrite", out=out)[0] == 0
    assert json.loads((out / "habitats.json").read_text())["k"] == 3 and mine.read_text() == "keep me"
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "map.png").write_bytes(b"user's")
    for extra in ((), ("--overwrite",)):
        rc, err = run(*extra, out=foreign)
        assert rc == 2 and "never written to" in err
    assert (foreign / "map.png").read_bytes() == b"user's"
    not_emb = tmp_path / "x.parquet"
    not_emb.write_bytes(b"PAR1")
    rc = habitats_cli.main(["--embeddings", str(not_emb), "--out", str(tmp_path / "z")])
    assert rc == 2 and "expected the output of python -m ssl.embed" in capsys.readouterr().err


# --- make demo's last steps on the demo site --------------------------------------------------

def _demo_recipe() -> list[str]:
    """The commands of the Makefile's demo target, continuation lines joined."""
    text = (Path(__file__).resolve().parents[1] / "Makefile").read_text()
    body = text.split("\ndemo:", 1)[1].split("\n\n", 1)[0]
    lines = [ln.strip() for ln in body.replace("\\\n", " ").splitlines()[1:]]
    return [" ".join(ln.split()) for ln in lines if ln and not ln.startswith("@")]


def test_demo_ends_with_cluster_map_and_labelling_list(tmp_path):
    """The demo site as `make demo` synthesises it (faults included), a briefly trained
    encoder, then the demo's last steps from the Makefile: the survey's iFDO, and the map the
    map-habitats deployment makes from catalogs/seafloor.yaml's mapping block (the flow's own
    ssl.embed and ssl.habitats commands; the deployment itself: tests/test_map_habitats.py)."""
    import shlex
    import subprocess
    import sys

    import yaml
    from PIL import Image

    from flows.map_habitats import embed_command, habitats_command
    from pipeline.build import build
    from pipeline.catalog import load_catalog
    from pipeline.synth import SynthConfig, generate

    repo = Path(__file__).resolve().parents[1]
    recipe = _demo_recipe()
    assert "-m pipeline export ifdo --catalog catalogs/seafloor.yaml" in recipe[-2], recipe
    assert "-m flows.demo --catalog seafloor --map $(DEMO_RUN)/last.pt" in recipe[-1], recipe
    mapping = yaml.safe_load((repo / "catalogs" / "seafloor.yaml").read_text())["mapping"]
    assert mapping["k"] == "auto" and set(mapping["export"]) == {"biigle", "coralnet", "ifdo"}

    site = tmp_path / "seafloor"
    generate(SynthConfig(out=site, dives=3, seed=0, faults=True, workers=2))
    site_cat = yaml.safe_load((site / "catalog.yaml").read_text())
    (site / "catalog.yaml").write_text(yaml.safe_dump({**site_cat, "mapping": mapping}))
    cat = load_catalog(site / "catalog.yaml")
    build(cat, workers=2, log=lambda *_: None)
    pairs = site / "manifests" / "pairs.parquet"
    published = pairs.resolve()  # the flow maps one generation: generations/<n>/pairs.parquet
    assert published.parent.parent.name == "generations"
    run = tmp_path / "runs" / "demo"
    train(build_parser().parse_args(["--manifest", str(pairs), "--out", str(run), *SMALL,
                                     "--objective", "geoclr", "--steps", "4"]))
    export = (recipe[-2].replace("$(BIN)/python", shlex.quote(sys.executable))
              .replace("catalogs/seafloor.yaml", str(site / "catalog.yaml")))
    emb, hab = tmp_path / "map" / "embeddings.parquet", tmp_path / "map" / "habitats"
    for cmd in (shlex.split(export), embed_command(cat, published, emb, None, run / "last.pt"),
                habitats_command(cat, published, emb, hab, None)):
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=repo)
        assert res.returncode == 0, res.stderr[-2000:]
    summary = json.loads((hab / "habitats.json").read_text())
    assert summary["k"] > 1 and min(summary["cluster_sizes"]) > 0
    # every image of the demo site in exactly one of the k clusters
    n_site = load_manifest(site / "manifests" / "pairs.parquet").n
    assert len(summary["cluster_sizes"]) == summary["k"]
    assert sum(summary["cluster_sizes"]) == n_site
    sheets = sorted((hab / "contact_sheets").glob("*.png"))
    assert len(sheets) == summary["k"]
    for s in sheets:
        with Image.open(s) as im:
            assert (np.asarray(im.convert("L"))[30:] < 250).mean() > 0.2, s.name
    rows = list(csv.DictReader(open(hab / "labelling_list.csv")))
    assert len(rows) == summary["labelling_list"]["n"] > 0
    assert {int(r["cluster"]) for r in rows} == set(range(summary["k"]))
    assert (hab / "cluster_map.png").stat().st_size > 1000
    # the list exported for the annotation tools, the survey's iFDO header carried over
    names = [r["file_name"] for r in csv.DictReader(open(hab / "export" / "file_names.csv"))]
    assert [r["image_id"] for r in csv.DictReader(open(hab / "export" / "file_names.csv"))] \
        == [r["image_id"] for r in rows]
    for tool, meta in (("biigle", "metadata.csv"), ("coralnet", "metadata.csv"),
                       ("ifdo", "seafloor_labelling-list_iFDO.json")):
        assert (hab / "export" / tool / meta).is_file(), tool
        assert sorted(p.name for p in (hab / "export" / tool / "images").iterdir()) \
            == sorted(names), tool
    assert summary["export"]["ifdo_header"].endswith("seafloor_iFDO.json")
    # ... and the labels each tool hands back for those names make the map
    truth_of = dict(zip(*pq.read_table(site / "manifests" / "locations.parquet",
                                       columns=["image_id", "label"]).to_pydict().values(),
                        strict=True))
    truth = [truth_of[r["image_id"]] for r in rows]
    for tool in ("biigle", "coralnet", "ifdo"):
        labels = tool_labels(tool, names, truth, tmp_path)
        out = run / f"mapped-{tool}"
        assert habitats_cli.main(["--embeddings", str(emb), "--k", "auto",
                                  "--labels", str(labels), "--out", str(out)]) == 0, tool
        pred = pq.read_table(out / "predictions.parquet").to_pydict()
        got = dict(zip(pred["image_id"], pred["label"], strict=True))
        assert [got[r["image_id"]] for r in rows] == truth, tool
        assert len(pred["predicted"]) == n_site and set(pred["predicted"]) <= set(truth), tool


def test_habitats_refuses_damaged_or_mistaken_inputs(manifest, emb_file, tmp_path, capsys):
    def run(*argv) -> tuple[int, str]:
        rc = habitats_cli.main(list(argv))
        return rc, capsys.readouterr().err

    base = ("--embeddings", str(emb_file))
    afile = tmp_path / "afile"
    afile.write_text("x")
    rc, err = run(*base, "--out", str(afile))
    assert rc == 2 and "is a file" in err
    rc, err = run(*base, "--out", str(tmp_path / "o"), "--smooth", "-1")
    assert rc == 2 and "--smooth -1" in err
    rc, err = run(*base, "--out", str(tmp_path / "o"), "--manifest", str(tmp_path / "no.parquet"))
    assert rc == 2 and "no such file" in err
    rc, err = run("--embeddings", str(emb_file.parent), "--out", str(tmp_path / "o"))
    assert rc == 2 and "is a folder; expected the output of python -m ssl.embed" in err
    assert f"it holds {emb_file}: pass that" in err
    cut = tmp_path / "cut.parquet"
    cut.write_bytes(emb_file.read_bytes()[: emb_file.stat().st_size // 2])
    rc, err = run("--embeddings", str(cut), "--out", str(tmp_path / "o"))
    assert rc == 2 and "ssl.embed" in err
    cols = tmp_path / "cols.csv"
    cols.write_text("image,habitat\na,b\n")
    rc, err = run(*base, "--out", str(tmp_path / "o"), "--labels", str(cols))
    assert rc == 2 and "expected columns image_id,label" in err
    ids = load_manifest(manifest).image_id
    twice = tmp_path / "twice.csv"
    twice.write_text(f"image_id,label\n{ids[0]},sand\n{ids[1]},reef\n{ids[0]},reef\n")
    rc, err = run(*base, "--out", str(tmp_path / "o"), "--labels", str(twice))
    assert rc == 2 and "line 4" in err and "'sand' and 'reef'" in err
    assert not (tmp_path / "o").exists()  # nothing was written for any of these


def test_payoff_compares_list_and_random_and_rewrites_only_its_section(tmp_path):
    from seafloor_ssl import labelling_payoff as lp

    X, truth, xy = _blobs([400, 100, 20, 10, 6], seed=5)
    names = np.array(["sand", "reef", "kelp", "sponge", "coral"], dtype=object)[truth]
    res = lp.compare(X, xy, names, [5, 20], [0, 1, 2], k=5, dims=16, log=lambda *_: None)
    by = res["by_n"]
    # with separable habitats the list labels every habitat from N = k on; random rarely does
    assert by["5"]["classes_list"] == [5, 5, 5] and max(by["5"]["classes_random"]) < 5
    assert min(by["5"]["list"]) > max(by["5"]["random"])
    text = lp.section({"enc": res}, [5, 20], [0, 1, 2],
                      {"survey": "survey `t`", "n_images": len(X), "n_classes": 5,
                       "encoders": "enc", "k": "5", "seconds": 1.0, "figure": "f.png"})
    assert "| enc | 5 |" in text and "list better" in text
    report = tmp_path / "R.md"
    report.write_text("# Title\n\nkept before\n\n" + text + "\nkept after\n")
    lp.write_section(report, text.replace("list better", "REWRITTEN"))
    new = report.read_text()
    assert new.count(lp.BEGIN) == 1 and "REWRITTEN" in new
    assert new.startswith("# Title\n\nkept before\n") and new.endswith("kept after\n")


def test_payoff_chooses_k_on_the_pairs_as_habitats_does(manifest, emb_file, tmp_path, capsys):
    from seafloor_ssl import labelling_payoff as lp

    m = load_manifest(manifest)
    emb = read_embeddings(emb_file)
    anchor, positive = lp._pairs_graph(emb)
    assert np.array_equal(anchor, m.anchor) and np.array_equal(positive, m.positive)
    moved = tmp_path / "moved.parquet"  # the manifest it names is gone: the plain criterion
    t = pq.read_table(emb_file)
    meta = dict(t.schema.metadata)
    meta[b"pairs"] = str(tmp_path / "gone" / "pairs.parquet").encode()
    pq.write_table(t.replace_schema_metadata(meta), moved)
    assert lp._pairs_graph(read_embeddings(moved)) is None
    assert "uses the plain form of its criterion" in capsys.readouterr().out


def _refused_path(err: str) -> bool:
    """One error line that says what to do about a path the system refuses."""
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    return len(lines) == 1 and any(w in lines[0] for w in (
        "choose another path", "write to another folder", "choose an output folder"))


def test_an_output_path_the_system_refuses_is_one_message(manifest, ckpt, emb_file, tmp_path,
                                                          capsys, monkeypatch):
    from seafloor_ssl.evaluation.run import main as evaluate_main

    def never(*a, **k):
        raise AssertionError("images were embedded before the output path was tried")
    monkeypatch.setattr(embed_cli, "extract_features", never)

    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "sub").write_text("a file where a folder is needed")
    where = locked / "sub" / "deeper"
    assert embed_cli.main(["--checkpoint", str(ckpt), "--manifest", str(manifest), "--out",
                           str(where / "e.parquet"), "--device", "cpu"]) == 2
    assert _refused_path(capsys.readouterr().err)
    if Path("/proc/self").is_dir():  # a folder that exists and takes no new file, even as root
        assert embed_cli.main(["--checkpoint", str(ckpt), "--manifest", str(manifest), "--out",
                               "/proc/e.parquet", "--device", "cpu"]) == 2
        assert _refused_path(capsys.readouterr().err)
    assert habitats_cli.main(["--embeddings", str(emb_file), "--out", str(where)]) == 2
    assert _refused_path(capsys.readouterr().err)
    assert evaluate_main(["--baseline", "handcrafted", "--image-size", "32", "--manifest",
                          str(manifest), "--out", str(where), "--seeds", "0"]) == 2
    assert _refused_path(capsys.readouterr().err)


def test_embed_and_habitats_refuse_a_damaged_image_file(manifest, ckpt, emb_file, tmp_path,
                                                         capsys):
    """An images/<dive>.arrow cut short: one message naming it, exit 2, from both tools."""
    import shutil

    from seafloor_ssl.evaluation.run import main as evaluate_main

    site = tmp_path / "copy"
    src = manifest.parent.resolve()
    shutil.copytree(src, site, symlinks=False)
    arrow = sorted((site / "images").glob("*.arrow"))[0]
    arrow.write_bytes(arrow.read_bytes()[:1000])
    pairs = site / "pairs.parquet"
    assert embed_cli.main(["--checkpoint", str(ckpt), "--manifest", str(pairs), "--out",
                           str(tmp_path / "e.parquet"), "--device", "cpu"]) == 2
    assert arrow.name in capsys.readouterr().err
    assert habitats_cli.main(["--embeddings", str(emb_file), "--manifest", str(pairs),
                              "--out", str(tmp_path / "h")]) == 2
    assert arrow.name in capsys.readouterr().err
    assert evaluate_main(["--checkpoint", str(ckpt), "--manifest", str(pairs), "--out",
                          str(tmp_path / "ev"), "--device", "cpu"]) == 2
    assert arrow.name in capsys.readouterr().err
    rc = habitats_cli.main(["--embeddings", str(emb_file), "--k-range", "200,300", "--out",
                            str(tmp_path / "h2")])
    assert rc == 2 and "lower the range" in capsys.readouterr().err


def test_habitats_predicts_the_map_from_a_coralnet_export(manifest, emb_file, tmp_path, capsys):
    """--labels a CoralNet annotation export (five points per image, named by file name) and
    --label-map from its label codes to habitats: one label per image by majority of points,
    ties left unlabelled and reported, and the predicted map is the known answer."""
    m = load_manifest(manifest)
    truth = {r["image_id"]: r["label"] for r in csv.DictReader(open(_labels_csv(manifest)))}
    group = np.array([0 if truth[i] == "sand" else 1 + (d == "dive02")
                      for i, d in zip(m.image_id, m.dive, strict=True)])
    d = read_embeddings(emb_file).X.shape[1]
    X, _, _ = _blobs([1, 1, 1], dim=d, seed=5)
    planted = _with_embeddings(emb_file, tmp_path / "planted.parquet",
                               X[group] + 0.05 * np.random.default_rng(6).normal(size=(m.n, d)))
    points = {"sand": ["Sand", "Sand", "CCA", "Sand", "TAPE"],  # sand 3 of 4 (TAPE ignored)
              "reef": ["Porit", "Sand", "CCA", "Porit", "Sand"],  # reef 3 of 5
              "tie": ["Sand", "Porit", "TAPE", "Sand", "CCA"]}  # sand 2, reef 2
    rows = ["Name,Date,Aux1,Aux2,Aux3,Aux4,Aux5,Row,Column,Label code"]
    majority = ties = votes = 0
    for k, (iid, hab) in enumerate(truth.items()):
        if k % 9 == 4:
            continue  # not annotated
        kind = "tie" if k % 7 == 3 else hab
        majority, ties = majority + (kind != "tie"), ties + (kind == "tie")
        votes += sum(code != "TAPE" for code in points[kind])  # the votes the map keeps
        rows += [f"{Path(iid).name},2024-03-13,,,,,,{100 + 50 * p},{200 + 80 * p},{code}"
                 for p, code in enumerate(points[kind])]
    rows += [f"PR_20990101_000000_000_LC16.jpg,,,,,,,10,10,{c}" for c in ("Sand", "Sand")]
    export = tmp_path / "coralnet_annotations.csv"
    export.write_text("\n".join(rows) + "\n")
    label_map = tmp_path / "map.csv"
    label_map.write_text("tool_label,habitat\nSand,sand\nPorit,reef\nCCA,reef\nTAPE,-\n")
    out = tmp_path / "hab"
    assert habitats_cli.main(["--embeddings", str(planted), "--labels", str(export),
                              "--label-map", str(label_map), "--k", "3", "--n-label", "5",
                              "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert f"CoralNet annotation export, {votes} point(s) on {majority + ties} image" in said
    assert f"{majority} labelled" in said and f"{ties} tie(s) left unlabelled" in said
    assert "1 image name(s) in coralnet_annotations.csv (2 point(s)) match none" in said
    pred = json.loads((out / "habitats.json").read_text())["prediction"]
    assert pred["labelled"] == majority
    got = pq.read_table(out / "predictions.parquet").to_pydict()
    assert got["predicted"] == [truth[i] for i in got["image_id"]]  # every image, surely
    assert habitats_cli.main(["--embeddings", str(planted), "--label-map", str(label_map),
                              "--out", str(tmp_path / "o")]) == 2
    assert "maps the labels of --labels; pass --labels too" in capsys.readouterr().err


# --- re-indexing: embed only what is new, keep cluster ids ----------------------------------

def _older_survey(manifest: Path, dest: Path) -> tuple[Path, list[str]]:
    """A build of the fixture's survey as it was "before": two images of dive01 not yet there
    and a third with other bytes. Returns its pairs.parquet and the three images' names."""
    import shutil

    from PIL import Image

    from pipeline.build import build
    from pipeline.catalog import load_catalog

    frames = sorted((manifest.parent.parent / "dive01" / "images").glob("*.jpg"))
    gone, altered = frames[5:7], frames[10]
    shutil.copytree(manifest.parent.parent, dest, ignore=shutil.ignore_patterns("manifests"))
    for f in gone:
        (dest / "dive01" / "images" / f.name).unlink()
    with Image.open(altered) as im:
        im.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(dest / "dive01" / "images"
                                                           / altered.name, quality=90)
    cat = load_catalog(dest / "catalog.yaml")
    build(cat, workers=1, log=lambda *_: None)
    return Path(cat.output) / "pairs.parquet", [f.name for f in [*gone, altered]]


def test_embed_reuse_embeds_only_new_and_changed_images(manifest, ckpt, emb_file, tmp_path,
                                                        monkeypatch, capsys):
    older, changed = _older_survey(manifest, tmp_path / "older")
    base = ["--checkpoint", str(ckpt), "--device", "cpu", "--batch-size", "16"]
    old = tmp_path / "old.parquet"
    assert embed_cli.main([*base, "--manifest", str(older), "--out", str(old)]) == 0
    capsys.readouterr()
    seen: list[int] = []
    real = embed_cli.extract_features

    def counting(encoder, jpegs, *a, **kw):
        seen.append(len(jpegs))
        return real(encoder, jpegs, *a, **kw)

    monkeypatch.setattr(embed_cli, "extract_features", counting)
    new = tmp_path / "new.parquet"
    assert embed_cli.main([*base, "--manifest", str(manifest), "--out", str(new),
                           "--reuse", str(old)]) == 0
    log = capsys.readouterr().out
    m = load_manifest(manifest)
    assert f"reused {m.n - 3}, embedded 3" in log, log
    assert sum(seen) == 3  # the encoder saw the two new images and the altered one only
    a, b, full = read_embeddings(old), read_embeddings(new), read_embeddings(emb_file)
    row = {i: r for r, i in enumerate(a.image_id.tolist())}
    fresh = [r for r, i in enumerate(b.image_id.tolist()) if Path(i).name in changed]
    assert len(fresh) == 3
    kept = [r for r in range(b.n) if r not in fresh]
    assert np.array_equal(b.X[kept], a.X[[row[i] for i in b.image_id[kept]]])  # bitwise
    np.testing.assert_allclose(b.X, full.X, atol=1e-5)  # a complete file, as without --reuse
    assert b.image_id.tolist() == full.image_id.tolist()
    keys = pq.read_table(new, columns=["content_sha256"]).column(0).to_pylist()
    assert keys == pq.read_table(emb_file, columns=["content_sha256"]).column(0).to_pylist()
    meta = json.loads(pq.read_schema(new).metadata[b"reuse"])
    assert (meta["reused"], meta["embedded"], meta["why_none"]) == (m.n - 3, 3, None)
    assert meta["hashed"] == int((m.dive == "dive01").sum())  # dive02's shard is unchanged

    # the same file again: nothing to embed, the file replaced in place
    seen.clear()
    assert embed_cli.main([*base, "--manifest", str(manifest), "--out", str(new),
                           "--reuse", str(new), "--overwrite"]) == 0
    assert "reused 96, embedded 0" in capsys.readouterr().out and sum(seen) == 0
    assert np.array_equal(read_embeddings(new).X, b.X)


def test_embed_reuse_says_why_nothing_is_reused_and_refuses_mistakes(manifest, ckpt, emb_file,
                                                                     tmp_path, capsys):
    base = ["--checkpoint", str(ckpt), "--manifest", str(manifest), "--device", "cpu",
            "--batch-size", "32"]
    other = tmp_path / "other.parquet"  # another encoder: same file, another checkpoint sha
    t = pq.read_table(emb_file)
    meta = dict(t.schema.metadata)
    meta[b"checkpoint_sha256"] = b"0" * 64
    pq.write_table(t.replace_schema_metadata(meta), other)
    assert embed_cli.main([*base, "--out", str(tmp_path / "a.parquet"),
                           "--reuse", str(other)]) == 0
    out = capsys.readouterr().out
    assert "nothing is reused" in out and "another encoder" in out
    assert "reused 0, embedded 96" in out
    legacy = tmp_path / "legacy.parquet"  # written before content keys
    pq.write_table(t.drop_columns(["content_sha256"]), legacy)
    assert embed_cli.main([*base, "--out", str(tmp_path / "b.parquet"),
                           "--reuse", str(legacy)]) == 0
    assert "no content keys" in capsys.readouterr().out
    site = tmp_path / "site.parquet"
    meta[b"catalog"] = b"elsewhere"
    pq.write_table(t.replace_schema_metadata(meta), site)
    not_emb = tmp_path / "x.parquet"
    pq.write_table(t.replace_schema_metadata({}), not_emb)
    for bad, says in ((site, "another site"), (tmp_path / "missing.parquet", "no such file"),
                      (not_emb, "not an embeddings file")):
        assert embed_cli.main([*base, "--out", str(tmp_path / "c.parquet"),
                               "--reuse", str(bad)]) == 2
        err = capsys.readouterr().err
        assert says in err and "Traceback" not in err and err.count("\n") == 1, err
        assert not (tmp_path / "c.parquet").exists()


def _previous_of(X, ids, clu):
    from seafloor_ssl.mapping import stable

    model = stable.fit_model(X, clu, 32, 0, "a" * 64)
    assert model is not None
    return stable.Previous(folder=Path("old"), record={}, image_id=np.array(ids, dtype=object),
                           cluster=clu.labels.astype(np.int64),
                           ids=sorted(set(clu.labels.tolist())), model=model)


def test_previous_clusters_keep_their_ids_with_known_answers():
    from seafloor_ssl.mapping import stable
    from seafloor_ssl.mapping.clusters import Clustering

    X, truth, _ = _blobs([300, 200, 120, 40], seed=1)
    ids = [f"img{i}" for i in range(len(X))]
    old = cluster(X, 4, seed=0)
    prev = _previous_of(X, ids, old)
    meta = {"checkpoint_sha256": "a" * 64, "embedding_dim": str(X.shape[1])}

    # the same embeddings and a few new rows: assigned, old images keep their ids
    rng = np.random.default_rng(2)
    X2 = np.concatenate([X, X[rng.choice(len(X), 12)] + 0.01 * rng.normal(size=(12, 48))])
    ids2 = np.array(ids + [f"new{i}" for i in range(12)], dtype=object)
    assert stable.why_recluster(prev, ids2, meta, None, 32, 0.2) is None
    got = stable.assign(prev, X2.astype(np.float32))
    assert np.array_equal(got.labels[:len(X)], old.labels)
    # different encoder, another k, too many new images: re-cluster, each with its reason
    assert "another encoder" in stable.why_recluster(prev, ids2, {**meta, "checkpoint_sha256":
                                                                  "b" * 64}, None, 32, 0.2)
    assert "--k 5" in stable.why_recluster(prev, ids2, meta, 5, 32, 0.2)
    assert "new" in stable.why_recluster(prev, ids2, meta, None, 32, 0.01)

    # a permuted re-clustering is mapped back
    perm = np.array([2, 0, 3, 1])
    shuffled = Clustering(labels=perm[old.labels], centres=old.centres[np.argsort(perm)],
                          reduced=old.reduced, k=4, criterion="k = 4 given")
    back, info = stable.relabel(prev, shuffled, np.array(ids, dtype=object), None)
    assert np.array_equal(back.labels, old.labels) and info["ids_new"] == []
    assert "both runs share" in info["matching"]
    np.testing.assert_allclose(back.centres, old.centres)

    # one habitat gone (k = 3): the others keep their ids, its id stays unused
    keep = truth != 1
    three = cluster(X[keep], 3, seed=4)
    back, info = stable.relabel(prev, three, np.array(ids, dtype=object)[keep], None)
    assert np.array_equal(back.labels, old.labels[keep]) and info["ids_gone"] == [1]
    assert back.k == 4 and np.isnan(back.centres[1]).all()  # ids 0, 2, 3: 1 stays unused

    # a new habitat (k = 5): the known ones keep their ids, the new one takes id 4
    Xn, _, _ = _blobs([50], seed=9)
    five = cluster(np.concatenate([X, Xn]), 5, seed=3)
    back, info = stable.relabel(prev, five, np.array(ids + [f"n{i}" for i in range(50)],
                                                     dtype=object), None)
    assert np.array_equal(back.labels[:len(X)], old.labels)
    assert set(back.labels[len(X):].tolist()) == {4} and info["ids_new"] == [4]

    # no image in common (all renamed): matched on the centres, same encoder
    model = stable.fit_model(X, shuffled, 32, 0, "a" * 64)
    back, info = stable.relabel(prev, shuffled, np.array([f"x{i}" for i in ids], dtype=object),
                                model)
    assert "centres" in info["matching"] and np.array_equal(back.labels, old.labels)


def test_habitats_previous_keeps_ids_and_colours(manifest, emb_file, tmp_path, capsys):
    m = load_manifest(manifest)
    d = read_embeddings(emb_file).X.shape[1]
    C, _, _ = _blobs([1, 1, 1, 1], dim=d, seed=5)
    group = np.random.default_rng(3).permutation(np.arange(m.n) % 4)
    planted = _with_embeddings(emb_file, tmp_path / "planted.parquet",
                               C[group] + 0.05 * np.random.default_rng(6).normal(size=(m.n, d)))
    base = ["--embeddings", str(planted), "--n-label", "8", "--sheet-size", "2"]
    first = tmp_path / "first"
    assert habitats_cli.main([*base, "--k", "4", "--out", str(first)]) == 0
    capsys.readouterr()
    old = pq.read_table(first / "clusters.parquet")
    # the previous run as if five images had not been there yet
    cut = old.slice(5)
    pq.write_table(cut.replace_schema_metadata(old.schema.metadata), first / "clusters.parquet")
    ids_old = dict(zip(cut.column("image_id").to_pylist(), cut.column("cluster").to_pylist(),
                       strict=True))

    def clusters(out):
        t = pq.read_table(out / "clusters.parquet", columns=["image_id", "cluster"])
        return dict(zip(t.column(0).to_pylist(), t.column(1).to_pylist(), strict=True))

    second = tmp_path / "second"
    assert habitats_cli.main([*base, "--previous", str(first), "--out", str(second)]) == 0
    log = capsys.readouterr().out
    assert "assigned to the existing clusters" in log, log
    now = clusters(second)
    assert all(now[i] == j for i, j in ids_old.items())
    blob_of = dict(zip(m.image_id.tolist(), group.tolist(), strict=True))
    for i in old.column("image_id").to_pylist()[:5]:  # the new ones join their group's cluster
        same = [ids_old[o] for o in ids_old if blob_of[o] == blob_of[i]]
        assert now[i] == same[0]
    s1 = json.loads((first / "habitats.json").read_text())
    s2 = json.loads((second / "habitats.json").read_text())
    assert s2["previous"]["done"] == "assigned to the existing clusters"
    assert s2["palette"] == s1["palette"]

    # forced re-clustering, another seed: matched back (the planted groups are spread over the
    # survey at random, not in patches, so k is chosen on the single images)
    third = tmp_path / "third"
    assert habitats_cli.main([*base, "--previous", str(second / "habitats.json"), "--k", "auto",
                              "--k-criterion", "silhouette",
                              "--recluster-above", "0", "--seed", "7", "--out",
                              str(third)]) == 0
    log = capsys.readouterr().out
    assert "re-clustered" in log and "matched on the 96 images both runs share" in log, log
    assert clusters(third) == now
    s3 = json.loads((third / "habitats.json").read_text())
    assert s3["palette"] == s1["palette"] and s3["previous"]["ids_kept"] == [0, 1, 2, 3]

    # mistakes: one message, exit status 2
    other = tmp_path / "other"
    import shutil

    shutil.copytree(first, other)
    t = pq.read_table(other / "clusters.parquet")
    meta = dict(t.schema.metadata)
    meta[b"catalog"] = b"elsewhere"
    pq.write_table(t.replace_schema_metadata(meta), other / "clusters.parquet")
    for bad, says in ((tmp_path / "missing", "no such folder"), (other, "another site"),
                      (tmp_path, "no results of ssl.habitats")):
        assert habitats_cli.main([*base, "--previous", str(bad), "--out",
                                  str(tmp_path / "z")]) == 2
        err = capsys.readouterr().err
        assert says in err and "Traceback" not in err and err.count("\n") == 1, err


def test_habitats_k_criterion_flag():
    from seafloor_ssl.mapping.clusters import CRITERIA, DEFAULT_CRITERION

    p = habitats_cli.build_parser()
    base = ["--embeddings", "e.parquet", "--out", "o"]
    assert p.parse_args(base).k_criterion == DEFAULT_CRITERION
    for name in CRITERIA:
        assert p.parse_args([*base, "--k-criterion", name]).k_criterion == name
    with pytest.raises(SystemExit):
        p.parse_args([*base, "--k-criterion", "elbow"])
