"""ssl/mapping/gis.py: the GeoPackage that geopandas (GDAL) writes with its R-tree spatial
index, read back by geopandas, pyogrio (GDAL) and sqlite; GeoParquet (contract.with_points,
files.write_parquet_atomic) read back by geopandas and DuckDB; the site CRS from a built
manifest."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pyproj
import pytest
from seafloor_ssl import contract as c
from seafloor_ssl import files
from seafloor_ssl.contract import SiteCRS, point_wkb, site_crs, with_points
from seafloor_ssl.files import temp_path, write_parquet_atomic
from seafloor_ssl.mapping.gis import write_geopackage
from surveys import mini_manifest

UTM55S = pyproj.CRS.from_epsg(32755)
SITE = SiteCRS(32755, UTM55S.to_json_dict(), UTM55S.to_wkt("WKT1_GDAL"))


def _xy(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.column_stack([rng.uniform(5.0e5, 5.2e5, n), rng.uniform(5.22e6, 5.24e6, n)])


def _only(folder, *names):
    """The folder holds exactly these files (no temporary names left)."""
    assert sorted(p.name for p in folder.iterdir()) == sorted(names)


# ---- WKB -----------------------------------------------------------------------------------


def test_point_wkb_equals_shapely_byte_for_byte():
    import shapely

    rng = np.random.default_rng(7)
    xy = np.concatenate([rng.normal(0, 1e6, (500, 2)), [[0.0, 0.0], [-0.0, 1e-300]], _xy(50)])
    wkb = point_wkb(xy)
    assert wkb.type == pa.binary() and len(wkb) == len(xy)
    want = shapely.to_wkb(shapely.points(xy), byte_order=1, output_dimension=2)
    assert wkb.to_pylist() == list(want)
    assert len(point_wkb(np.zeros((0, 2)))) == 0
    with pytest.raises(ValueError, match="shape"):
        point_wkb(np.zeros((3, 3)))


# ---- GeoParquet ----------------------------------------------------------------------------


def _results(n: int) -> pa.Table:
    rng = np.random.default_rng(1)
    emb = rng.normal(size=(n, 8)).astype(np.float32)
    table = pa.table({
        "idx": pa.array(np.arange(n, dtype=np.int32)),
        "image_id": [f"img{i:04d}" for i in range(n)],
        "habitat": pa.array(["sand", "reef", "kelp"] * (n // 3) + ["sand"] * (n % 3)
                            ).dictionary_encode(),
        "confidence": pa.array(rng.uniform(0.2, 1.0, n).astype(np.float32)),
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(emb.ravel()), 8),
    })
    return table.replace_schema_metadata({b"run": b"geoclr"})


def test_geoparquet_reads_in_geopandas_and_duckdb(tmp_path):
    import duckdb
    import geopandas

    n = 301
    xy = _xy(n)
    table = _results(n)
    out = tmp_path / "embeddings.parquet"
    write_parquet_atomic(out, with_points(table, xy, SITE), row_group_size=100)
    _only(tmp_path, "embeddings.parquet")

    gdf = geopandas.read_parquet(out)
    assert gdf.crs == pyproj.CRS("EPSG:32755")
    np.testing.assert_array_equal(gdf.geometry.x, xy[:, 0])
    np.testing.assert_array_equal(gdf.geometry.y, xy[:, 1])
    assert list(gdf["image_id"]) == table.column("image_id").to_pylist()

    got = pq.read_table(out)
    assert got.schema.field("embedding").type == pa.list_(pa.float32(), 8)
    np.testing.assert_array_equal(
        got.column("embedding").combine_chunks().flatten().to_numpy(),
        table.column("embedding").combine_chunks().flatten().to_numpy())
    assert got.schema.field("bbox").type == c.BBOX_TYPE
    np.testing.assert_array_equal(got.column("bbox").combine_chunks().field("xmax"), xy[:, 0])
    assert pq.ParquetFile(out).metadata.num_row_groups == 4
    meta = got.schema.metadata
    assert meta[b"run"] == b"geoclr"  # the table's own metadata is kept
    geo = json.loads(meta[b"geo"])
    col = geo["columns"]["geometry"]
    assert geo["version"] == "1.1.0" and geo["primary_column"] == "geometry"
    assert col["encoding"] == "WKB" and col["geometry_types"] == ["Point"]
    assert pyproj.CRS.from_json_dict(col["crs"]) == UTM55S
    assert col["bbox"] == [xy[:, 0].min(), xy[:, 1].min(), xy[:, 0].max(), xy[:, 1].max()]
    assert col["covering"]["bbox"]["ymin"] == ["bbox", "ymin"]

    count, mean = duckdb.sql(f"SELECT count(*), avg(confidence) FROM '{out}'").fetchall()[0]
    assert count == n
    assert mean == pytest.approx(float(np.mean(table.column("confidence").to_numpy())), rel=1e-6)
    kv = dict(duckdb.sql(f"SELECT key, value FROM parquet_kv_metadata('{out}')").fetchall())
    assert json.loads(kv[b"geo"])["columns"]["geometry"]["geometry_types"] == ["Point"]
    habitats = dict(duckdb.sql(f"SELECT habitat, count(*) FROM '{out}' GROUP BY 1").fetchall())
    assert habitats == {"sand": 101, "reef": 100, "kelp": 100}


def test_with_points_replaces_geometry_and_refuses_a_missing_crs(tmp_path):
    xy = _xy(10)
    once = with_points(_results(10), xy, SITE)
    twice = with_points(once, xy + 1.0, SITE)
    assert twice.column_names == once.column_names
    assert twice.column_names.count("geometry") == 1
    assert twice.column("bbox").combine_chunks().field("xmin").to_pylist() == (xy[:, 0] + 1).tolist()
    with pytest.raises(ValueError, match="CRS84"):
        with_points(_results(10), xy, SiteCRS(32755, None, SITE.wkt))
    with pytest.raises(ValueError, match="rows"):
        with_points(_results(10), xy[:9], SITE)


def test_write_parquet_atomic_leaves_the_old_file_and_no_temporary_on_error(tmp_path,
                                                                             monkeypatch):
    out = tmp_path / "r.parquet"
    write_parquet_atomic(out, pa.table({"a": [1, 2]}))
    real = files.pq.write_table

    def broken(table, where, **kwargs):
        real(table, where, **kwargs)
        raise OSError("disk full")

    monkeypatch.setattr(files.pq, "write_table", broken)
    with pytest.raises(OSError, match="disk full"):
        write_parquet_atomic(out, pa.table({"a": [3]}))
    _only(tmp_path, "r.parquet")
    assert pq.read_table(out).column("a").to_pylist() == [1, 2]


# ---- GeoPackage ----------------------------------------------------------------------------


def _columns(n: int) -> dict:
    rng = np.random.default_rng(2)
    conf = rng.uniform(0.0, 1.0, n)
    conf[[3, 17]] = np.nan
    habitat = ["sand", "reef", None, "kelp"] * (n // 4) + ["sand"] * (n % 4)
    return {"image_id": np.array([f"img{i:04d}" for i in range(n)]),
            "habitat": habitat,
            "cluster": rng.integers(0, 12, n).astype(np.int32),
            "confidence": conf,
            "confident": conf > 0.5,
            "dive": pa.array(["d1", "d2"] * (n // 2) + ["d1"] * (n % 2)).dictionary_encode()}


def _inside(xy: np.ndarray, box) -> np.ndarray:
    return ((xy[:, 0] >= box[0]) & (xy[:, 0] <= box[2]) & (xy[:, 1] >= box[1])
            & (xy[:, 1] <= box[3]))


def _has_spatial_index(path, layer: str) -> int:
    """GDAL's own answer (its SQL function HasSpatialIndex) on whether the layer has a usable
    R-tree index."""
    import pyogrio

    got = pyogrio.read_dataframe(path, sql=f"SELECT HasSpatialIndex('{layer}', 'geom')",
                                 sql_dialect="SQLITE")
    return int(got.iloc[0, 0])


@pytest.mark.parametrize("crs", [SiteCRS(32755, UTM55S.to_json_dict(), None),
                                 SiteCRS(32755, None, None)],
                         ids=["projjson", "epsg_code_only"])
def test_geopackage_reads_in_geopandas_with_types_and_crs(tmp_path, crs):
    import geopandas
    import pyogrio

    n = 203
    xy, cols = _xy(n, seed=3), _columns(n)
    out = tmp_path / "habitats.gpkg"
    write_geopackage(out, "habitats", xy, cols, crs)
    _only(tmp_path, "habitats.gpkg")

    gdf = geopandas.read_file(out, layer="habitats", engine="pyogrio")
    assert gdf.crs == pyproj.CRS("EPSG:32755")
    np.testing.assert_array_equal(gdf.geometry.x, xy[:, 0])
    np.testing.assert_array_equal(gdf.geometry.y, xy[:, 1])
    assert list(gdf.columns) == [*cols, "geometry"]
    assert list(gdf["image_id"]) == cols["image_id"].tolist()
    assert [None if v is None or v != v else v for v in gdf["habitat"]] == cols["habitat"]
    assert gdf["cluster"].dtype == np.int64  # every integer column is INTEGER (int64)
    np.testing.assert_array_equal(gdf["cluster"], cols["cluster"])
    assert gdf["confidence"].dtype == np.float64
    np.testing.assert_array_equal(gdf["confidence"], cols["confidence"])  # NaN where NULL
    assert gdf["confident"].dtype == bool
    np.testing.assert_array_equal(gdf["confident"], cols["confident"])
    assert list(gdf["dive"]) == cols["dive"].to_pylist()

    info = pyogrio.read_info(out, layer="habitats")
    assert info["layer_name"] == "habitats" and info["features"] == n
    assert info["geometry_type"] == "Point" and info["fid_column"] == "fid"
    assert info["geometry_name"] == "geom"
    assert info["capabilities"]["fast_spatial_filter"]  # the R-tree index
    assert [list(x) for x in pyogrio.list_layers(out)] == [["habitats", "Point"]]

    with sqlite3.connect(out) as con:
        assert con.execute("PRAGMA application_id").fetchone()[0] == 0x47504B47  # "GPKG"
        assert con.execute("PRAGMA user_version").fetchone()[0] >= 10200  # GeoPackage 1.2+
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert con.execute("PRAGMA foreign_key_check").fetchall() == []
        row = con.execute("SELECT data_type, identifier, min_x, min_y, max_x, max_y, srs_id "
                          "FROM gpkg_contents WHERE table_name = 'habitats'").fetchone()
        assert row[:2] == ("features", "habitats") and row[6] == 32755
        assert row[2:6] == pytest.approx([xy[:, 0].min(), xy[:, 1].min(), xy[:, 0].max(),
                                          xy[:, 1].max()], rel=1e-15)  # GDAL's last digit
        org, code, definition = con.execute(
            "SELECT organization, organization_coordsys_id, definition "
            "FROM gpkg_spatial_ref_sys WHERE srs_id = 32755").fetchone()
        assert (org.upper(), code) == ("EPSG", 32755)
        assert pyproj.CRS(definition) == UTM55S
        assert con.execute("SELECT * FROM gpkg_geometry_columns").fetchall() == [
            ("habitats", "geom", "POINT", 32755, 0, 0)]
        assert con.execute("SELECT count(*) FROM habitats WHERE confidence IS NULL"
                           ).fetchone()[0] == 2
        assert con.execute("SELECT count(*) FROM habitats WHERE habitat IS NULL"
                           ).fetchone()[0] == cols["habitat"].count(None)
        types = {r[1]: r[2] for r in con.execute("PRAGMA table_info(habitats)")}
        assert types == {"fid": "INTEGER", "geom": "POINT", "image_id": "TEXT",
                         "habitat": "TEXT", "cluster": "INTEGER", "confidence": "REAL",
                         "confident": "BOOLEAN", "dive": "TEXT"}
        fids = [r[0] for r in con.execute("SELECT fid FROM habitats ORDER BY fid")]
        assert fids == list(range(1, n + 1))
        blob = con.execute("SELECT geom FROM habitats WHERE fid = 1").fetchone()[0]
        assert blob[:2] == b"GP" and int.from_bytes(blob[4:8], "little") == 32755


def test_geopackage_types_other_values(tmp_path):
    """Unsigned, nullable and object columns, dates and datetimes (UTC), and pyarrow columns
    with nulls."""
    import datetime as dt

    import geopandas

    aest = dt.timezone(dt.timedelta(hours=10))
    cols = {
        "u": np.array([0, 1, 2**40, 7], dtype=np.uint64),
        "f32": np.array([0.5, np.nan, 2.0, 4.0], dtype=np.float32),
        "maybe_int": [1, None, 3, 4],
        "maybe_bool": [True, None, False, True],
        "number": [1, 2.5, None, 4],
        "when": np.array(["2024-01-01T01:02:03.456", "NaT", "2024-02-29T23:59:59",
                          "2024-03-01T00:00:00"], dtype="datetime64[ms]"),
        "local": [dt.datetime(2024, 1, 1, 10, tzinfo=aest), None, dt.datetime(2024, 1, 1),
                  dt.datetime(2024, 1, 2, tzinfo=dt.UTC)],
        "day": [dt.date(2024, 1, 1), None, dt.date(2024, 1, 3), dt.date(2024, 1, 4)],
        "mixed": [1, "a", 2.5, None],
        "nothing": [None] * 4,
        "pa_int": pa.array([1, None, 3, 4]),
        "pa_bool": pa.chunked_array([[True, False], [None, True]]),
        "pa_time": pa.array([dt.datetime(2024, 1, 1)] * 3 + [None], pa.timestamp("us", "UTC")),
        "pa_dict": pa.array(["x", "y", None, "x"]).dictionary_encode(),
        "geometry": [1, 2, 3, 4],  # a column may be called geometry: the layer's is geom
    }
    out = tmp_path / "t.gpkg"
    write_geopackage(out, "t", _xy(4), cols, SITE)
    with sqlite3.connect(out) as con:
        types = {r[1]: r[2] for r in con.execute("PRAGMA table_info(t)")}
        names = ", ".join(f'"{k}"' for k in cols)
        rows = con.execute(f"SELECT {names} FROM t ORDER BY fid").fetchall()
    assert types == {"fid": "INTEGER", "geom": "POINT", "u": "INTEGER", "f32": "REAL",
                     "maybe_int": "INTEGER", "maybe_bool": "BOOLEAN", "number": "REAL",
                     "when": "DATETIME", "local": "DATETIME", "day": "TEXT",
                     "mixed": "TEXT", "nothing": "TEXT", "pa_int": "INTEGER",
                     "pa_bool": "BOOLEAN", "pa_time": "DATETIME", "pa_dict": "TEXT",
                     "geometry": "INTEGER"}
    got = dict(zip(cols, zip(*rows, strict=True), strict=True))
    assert got["u"] == (0, 1, 2**40, 7)
    assert got["f32"] == (0.5, None, 2.0, 4.0)
    assert got["maybe_int"] == (1, None, 3, 4)
    assert got["maybe_bool"] == (1, None, 0, 1)
    assert got["number"] == (1.0, 2.5, None, 4.0)
    assert got["when"] == ("2024-01-01T01:02:03.456Z", None, "2024-02-29T23:59:59Z",
                           "2024-03-01T00:00:00Z")
    # an aware datetime in UTC; a naive one taken as UTC
    assert got["local"] == ("2024-01-01T00:00:00Z", None, "2024-01-01T00:00:00Z",
                            "2024-01-02T00:00:00Z")
    assert got["day"] == ("2024-01-01", None, "2024-01-03", "2024-01-04")
    assert got["mixed"] == ("1", "a", "2.5", None)
    assert got["nothing"] == (None,) * 4
    assert got["pa_int"] == (1, None, 3, 4)
    assert got["pa_bool"] == (1, 0, None, 1)
    assert got["pa_time"] == ("2024-01-01T00:00:00Z",) * 3 + (None,)
    assert got["pa_dict"] == ("x", "y", None, "x")
    assert got["geometry"] == (1, 2, 3, 4)
    gdf = geopandas.read_file(out, engine="pyogrio")
    assert str(gdf["when"].dt.tz) == "UTC"
    assert gdf.geometry.name == "geometry" and len(gdf) == 4


def test_geopackage_writes_nan_positions_as_empty_points(tmp_path):
    import geopandas

    xy = _xy(4)
    xy[1] = np.nan
    xy[3, 0] = np.nan  # half a position is no position
    out = tmp_path / "e.gpkg"
    write_geopackage(out, "e", xy, {"k": [1, 2, 3, 4]}, SITE)
    gdf = geopandas.read_file(out, engine="pyogrio")
    assert gdf.geometry.is_empty.tolist() == [False, True, False, True]
    assert gdf["k"].tolist() == [1, 2, 3, 4]
    with sqlite3.connect(out) as con:
        assert con.execute("SELECT min_x, max_x FROM gpkg_contents").fetchone() == \
            pytest.approx((xy[[0, 2], 0].min(), xy[[0, 2], 0].max()), rel=1e-15)
        # the index holds the points that have a position
        assert [r[0] for r in con.execute("SELECT id FROM rtree_e_geom ORDER BY id")] == [1, 3]


def test_geopackage_has_an_rtree_index_that_gdal_uses(tmp_path):
    import pyogrio

    n = 500
    xy, cols = _xy(n, seed=4), _columns(n)
    out = tmp_path / "habitats.gpkg"
    write_geopackage(out, "habitats", xy, cols, SITE)
    assert _has_spatial_index(out, "habitats") == 1
    with sqlite3.connect(out) as con:
        assert con.execute("SELECT table_name, column_name, extension_name "
                           "FROM gpkg_extensions WHERE extension_name = 'gpkg_rtree_index'"
                           ).fetchall() == [("habitats", "geom", "gpkg_rtree_index")]
        assert con.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND "
                           "name = 'rtree_habitats_geom'").fetchone()[0] == 1
        # one entry per point, its bounds the point itself (float32-rounded outwards)
        index = np.array(con.execute("SELECT id, minx, maxx, miny, maxy FROM rtree_habitats_geom "
                                     "ORDER BY id").fetchall())
        box = (5.05e5, 5.225e6, 5.10e5, 5.23e6)
        found = {r[0] for r in con.execute(
            "SELECT id FROM rtree_habitats_geom WHERE minx <= ? AND maxx >= ? AND miny <= ? AND "
            "maxy >= ?", (box[2], box[0], box[3], box[1]))}
    np.testing.assert_array_equal(index[:, 0], np.arange(1, n + 1))
    assert (index[:, 1] <= xy[:, 0]).all() and (index[:, 2] >= xy[:, 0]).all()
    assert (index[:, 3] <= xy[:, 1]).all() and (index[:, 4] >= xy[:, 1]).all()
    assert np.abs(index[:, 1:3] - xy[:, [0]]).max() < 1.0  # float32 near 5e5 m: under 1 m
    inside = _inside(xy, box)
    assert inside.any() and not inside.all()
    assert found >= set(np.flatnonzero(inside) + 1)  # the index finds every point in the box
    hit = pyogrio.read_dataframe(out, bbox=box)  # GDAL's spatial filter, through the index
    assert sorted(hit["image_id"]) == sorted(cols["image_id"][inside])


def test_geopackage_index_follows_an_edit_in_gdal(tmp_path):
    """GDAL (as QGIS does) adds features to the layer; its triggers keep the index in step, and
    GDAL finds the new feature by its bounding box."""
    import geopandas
    import pyogrio
    import shapely

    out = tmp_path / "h.gpkg"
    write_geopackage(out, "h", _xy(5), {"k": np.arange(5)}, SITE)
    extra = geopandas.GeoDataFrame({"k": [99, 98]},
                                   geometry=shapely.points([[4.0e5, 5.0e6], [4.5e5, 5.1e6]]),
                                   crs="EPSG:32755")
    pyogrio.write_dataframe(extra, out, layer="h", append=True)
    _only(tmp_path, "h.gpkg")
    assert _has_spatial_index(out, "h") == 1
    hit = pyogrio.read_dataframe(out, bbox=(3.99e5, 4.99e6, 4.01e5, 5.01e6))
    assert hit["k"].tolist() == [99]
    assert len(pyogrio.read_dataframe(out)) == 7
    with sqlite3.connect(out) as con:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        fids = [r[0] for r in con.execute("SELECT fid FROM h ORDER BY fid")]
        indexed = con.execute("SELECT id, minx, miny FROM rtree_h_geom ORDER BY id").fetchall()
        new = con.execute("SELECT fid FROM h WHERE k = 99").fetchone()[0]
    assert [r[0] for r in indexed] == fids == list(range(1, 8))
    assert indexed[new - 1][1:] == pytest.approx((4.0e5, 5.0e6), abs=1.0)


@pytest.mark.parametrize("layer", ["bad-name", "two words", "", "gpkg_layer", "semi;colon"])
def test_geopackage_refuses_a_bad_layer_name(tmp_path, layer):
    with pytest.raises(ValueError, match="layer name"):
        write_geopackage(tmp_path / "x.gpkg", layer, _xy(3), {}, SITE)
    _only(tmp_path)


def test_geopackage_refuses_what_it_cannot_write(tmp_path):
    xy = _xy(3)
    x = tmp_path / "x.gpkg"
    with pytest.raises(ValueError, match="EPSG"):
        write_geopackage(x, "ok", xy, {}, SiteCRS(None, SITE.projjson, SITE.wkt))
    for undefined in (0, -1):
        with pytest.raises(ValueError, match="undefined"):
            write_geopackage(x, "ok", xy, {}, SiteCRS(undefined, None, None))
    with pytest.raises(ValueError, match="PROJ"):
        write_geopackage(x, "ok", xy, {}, SiteCRS(32755, {"type": "nonsense"}, None))
    with pytest.raises(ValueError, match="3 points"):
        write_geopackage(x, "ok", xy, {"a": [1, 2]}, SITE)
    with pytest.raises(ValueError, match="GeoParquet"):
        write_geopackage(x, "ok", xy, {"e": np.zeros((3, 4))}, SITE)
    with pytest.raises(ValueError, match="GeoParquet"):
        write_geopackage(x, "ok", xy, {"e": [[1, 2], [3, 4], [5, 6]]}, SITE)
    with pytest.raises(ValueError, match="bytes"):
        write_geopackage(x, "ok", xy, {"b": [b"a", None, b"c"]}, SITE)
    with pytest.raises(ValueError, match="int64"):
        write_geopackage(x, "ok", xy, {"u": np.array([0, 1, 2**63], dtype=np.uint64)}, SITE)
    for clash in ({"GEOM": [1, 2, 3]}, {"fid": [1, 2, 3]}, {"a": [1, 2, 3], "A": [4, 5, 6]}):
        with pytest.raises(ValueError, match="clashes"):
            write_geopackage(x, "ok", xy, clash, SITE)
    with pytest.raises(ValueError, match="usable"):
        write_geopackage(x, "ok", xy, {"": [1, 2, 3]}, SITE)
    _only(tmp_path)


def test_geopackage_replaces_atomically_and_cleans_up_on_error(tmp_path, monkeypatch):
    import geopandas

    out = tmp_path / "h.gpkg"
    write_geopackage(out, "h", _xy(5), {"k": np.arange(5)}, SITE)
    write_geopackage(out, "h", _xy(4), {"k": np.arange(4)}, SITE)  # replaces the file
    _only(tmp_path, "h.gpkg")
    assert geopandas.read_file(out, engine="pyogrio")["k"].tolist() == [0, 1, 2, 3]
    before = out.read_bytes()

    real = geopandas.GeoDataFrame.to_file
    written = []

    def fails_late(self, filename, *args, **kwargs):
        """GDAL writes the file, leaves a rollback journal beside it and fails."""
        real(self, filename, *args, **kwargs)
        written.append(filename)
        (filename.parent / (filename.name + "-journal")).write_bytes(b"\0" * 512)
        raise OSError("disk full")

    monkeypatch.setattr(geopandas.GeoDataFrame, "to_file", fails_late)
    with pytest.raises(OSError, match="disk full"):
        write_geopackage(out, "h", _xy(3), {"k": np.arange(3)}, SITE)
    assert written == [temp_path(out)]  # GDAL wrote beside the target, keeping the suffix
    assert out.read_bytes() == before
    _only(tmp_path, "h.gpkg")


def test_geopackage_refuses_a_file_gdal_left_unfinished(tmp_path, monkeypatch):
    """A write-ahead log left beside the file means the file alone is not whole: the write fails
    and nothing is renamed into place."""
    import geopandas

    out = tmp_path / "h.gpkg"
    real = geopandas.GeoDataFrame.to_file

    def leaves_wal(self, filename, *args, **kwargs):
        real(self, filename, *args, **kwargs)
        (filename.parent / (filename.name + "-wal")).write_bytes(b"\0" * 32)

    monkeypatch.setattr(geopandas.GeoDataFrame, "to_file", leaves_wal)
    with pytest.raises(OSError, match="-wal"):
        write_geopackage(out, "h", _xy(3), {"k": np.arange(3)}, SITE)
    _only(tmp_path)


def test_geopackage_ignores_what_a_crashed_write_left(tmp_path):
    """A temporary GeoPackage (with another layer) and its journal from a crashed earlier write
    are replaced, not added to."""
    import pyogrio

    out = tmp_path / "h.gpkg"
    stale = temp_path(out)
    write_geopackage(tmp_path / "other.gpkg", "other", _xy(2), {}, SITE)
    (tmp_path / "other.gpkg").rename(stale)
    (stale.parent / (stale.name + "-journal")).write_bytes(b"\0" * 512)
    write_geopackage(out, "h", _xy(3), {"k": np.arange(3)}, SITE)
    _only(tmp_path, "h.gpkg")
    assert [list(x) for x in pyogrio.list_layers(out)] == [["h", "Point"]]
    assert pyogrio.read_dataframe(out)["k"].tolist() == [0, 1, 2]


# ---- the site CRS of a built manifest ------------------------------------------------------


@pytest.fixture(scope="module")
def built_locations(tmp_path_factory):
    pairs = mini_manifest(tmp_path_factory.mktemp("gis") / "site", dives=1, images_per_dive=12,
                          seed=2)
    return pairs.parent / c.LOCATIONS_FILE


def test_site_crs_of_a_built_manifest(built_locations):
    meta = pq.read_schema(built_locations).metadata
    assert c.META_CRS_WKT.encode() in meta
    crs = site_crs(meta)
    assert crs.epsg == 32755
    assert pyproj.CRS.from_json_dict(crs.projjson) == UTM55S
    assert pyproj.CRS(crs.wkt) == pyproj.CRS.from_epsg(crs.epsg)
    assert crs.wkt == UTM55S.to_wkt("WKT1_GDAL")
    # str keys and values work too; what is missing is None
    assert site_crs({k.decode(): v.decode() for k, v in meta.items()}) == crs
    assert site_crs({c.META_CRS: "EPSG:32755"}) == SiteCRS(32755, None, None)
    assert site_crs(None) == site_crs({}) == SiteCRS(None, None, None)
    assert site_crs({b"geo": meta[b"geo"]}).epsg == 32755  # from the PROJJSON's id
    with pytest.raises(ValueError, match="geo"):
        site_crs({b"geo": b"{not json"})


def test_a_built_manifest_exports_to_both_formats(built_locations, tmp_path):
    import geopandas

    loc = pq.read_table(built_locations)
    crs = site_crs(loc.schema.metadata)
    xy = np.column_stack([loc.column("easting").to_numpy(), loc.column("northing").to_numpy()])
    write_geopackage(tmp_path / "loc.gpkg", "locations", xy,
                     {"image_id": loc.column("image_id"), "dive": loc.column("dive"),
                      "depth_m": loc.column("depth_m"), "timestamp": loc.column("timestamp")},
                     crs)
    gdf = geopandas.read_file(tmp_path / "loc.gpkg", engine="pyogrio")
    assert gdf.crs == pyproj.CRS("EPSG:32755") and len(gdf) == loc.num_rows
    np.testing.assert_allclose(gdf["depth_m"], loc.column("depth_m").to_numpy(), rtol=1e-6)
    assert (gdf["timestamp"] == loc.column("timestamp").to_pandas()).all()
    table = loc.select(["idx", "image_id"]).replace_schema_metadata(None)
    write_parquet_atomic(tmp_path / "loc.parquet", with_points(table, xy, crs))
    back = geopandas.read_parquet(tmp_path / "loc.parquet")
    assert back.crs == pyproj.CRS("EPSG:32755")
    np.testing.assert_array_equal(back.geometry.x, xy[:, 0])
