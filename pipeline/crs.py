"""One projected CRS per site, chosen once from the site's positions.

The site's CRS is the UTM zone of the site centre (with the Norway 32V and Svalbard 31X-37X
exceptions), or Universal Polar Stereographic beyond the UTM latitude limits
(lat >= 84 N: EPSG:5041, lat < 80 S: EPSG:5042). A catalog may name its own projected CRS
instead ("EPSG:<code>"); geographic or non-metre CRSs are refused.

Scale: planar distances in UTM are within about 0.1 % of the geodesic distance inside a zone
(the point scale factor k is 0.9996 on the central meridian and about 1.001 at the zone edge).
Two choices that this module must follow go beyond that: the widened zone 32V reaches
k = 1.0013 at 3 E 56 N, and UPS has k = 0.994 at the pole (1.0016 at 80 S). `scale_factor`
gives k, so a caller can divide planar distances by k at the site centre when the 0.1 % bound
matters there.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pyproj

UPS_NORTH = 5041  # WGS 84 / UPS North (E,N)
UPS_SOUTH = 5042  # WGS 84 / UPS South (E,N)
_METRE = {"metre", "meter", "metres", "meters"}

__all__ = [
    "UPS_NORTH", "UPS_SOUTH", "check_declared", "check_declared_positions", "choose_crs",
    "crs_epsg_string", "crs_projjson", "crs_wkt",
    "normalise_lon", "project", "scale_factor", "site_centre", "unproject", "utm_epsg",
]


def normalise_lon(lon):
    """Longitude in [-180, 180), for a scalar or an array."""
    out = np.mod(np.asarray(lon, dtype=np.float64) + 180.0, 360.0) - 180.0
    # fmod of a tiny negative number rounds up to 360: fold that case back to -180
    out = np.where(out >= 180.0, out - 360.0, out)
    return float(out) if out.ndim == 0 else out


def _finite_points(lon, lat) -> tuple[np.ndarray, np.ndarray]:
    lon = np.asarray(lon, dtype=np.float64).ravel()
    lat = np.asarray(lat, dtype=np.float64).ravel()
    if lon.shape != lat.shape:
        raise ValueError(f"lon and lat differ in length ({lon.size} vs {lat.size})")
    ok = np.isfinite(lon) & np.isfinite(lat)
    if not ok.any():
        raise ValueError("no finite positions to choose a CRS from")
    lon, lat = lon[ok], lat[ok]
    if np.abs(lat).max() > 90.0:
        raise ValueError(f"latitude out of range [-90, 90]: {lat[np.abs(lat) > 90][0]}")
    return lon, lat


def site_centre(lon, lat) -> tuple[float, float]:
    """Centre of a site's positions, correct across the antimeridian.

    Longitude: midpoint of the smallest longitude interval (on the circle) that holds every
    point, i.e. the complement of the largest gap between consecutive longitudes; returned in
    [-180, 180), so a site straddling the antimeridian has its centre near -180 (= 180), not 0.
    Latitude: midpoint of the latitude range. Non-finite positions are ignored.
    """
    lon, lat = _finite_points(lon, lat)
    lons = np.unique(normalise_lon(lon))
    if lons.size == 1:
        lon_c = float(lons[0])
    else:
        gaps = np.diff(lons, append=lons[0] + 360.0)  # last gap wraps round through +-180
        g = int(np.argmax(gaps))  # the interval starts after the largest gap
        start = lons[(g + 1) % lons.size]
        width = 360.0 - float(gaps[g])
        lon_c = normalise_lon(start + width / 2.0)
    return lon_c, float((lat.min() + lat.max()) / 2.0)


def utm_epsg(lon: float, lat: float) -> int:
    """EPSG code of the UTM zone (326xx north, 327xx south) or UPS pole holding (lon, lat).

    Zones are 6 degrees wide from -180 (zone 1 is [-180, -174)); longitude is normalised to
    [-180, 180) first. Exceptions: zone 32V is widened to 3-12 E for 56 <= lat < 64, and in
    band X (72 <= lat < 84) the zones are 31X [0, 9), 33X [9, 21), 35X [21, 33), 37X [33, 42)
    (32X, 34X and 36X do not exist). lat >= 84 -> 5041 (UPS North), lat < -80 -> 5042 (UPS South).
    """
    lon, lat = float(lon), float(lat)
    if not (math.isfinite(lon) and math.isfinite(lat)):
        raise ValueError(f"position must be finite, got lon={lon}, lat={lat}")
    if not -90.0 <= lat <= 90.0:
        raise ValueError(f"latitude out of range [-90, 90]: {lat}")
    if lat >= 84.0:
        return UPS_NORTH
    if lat < -80.0:
        return UPS_SOUTH
    lon = normalise_lon(lon)
    zone = min(int((lon + 180.0) // 6.0), 59) + 1
    if 56.0 <= lat < 64.0 and 3.0 <= lon < 12.0:
        zone = 32
    elif 72.0 <= lat < 84.0 and 0.0 <= lon < 42.0:
        zone = 31 if lon < 9.0 else 33 if lon < 21.0 else 35 if lon < 33.0 else 37
    return (32600 if lat >= 0.0 else 32700) + zone


class CRSError(ValueError):
    """The catalog's CRS cannot serve the site (not projected, not metres, far from it)."""


FAR_DEG = 6.0  # one UTM zone: how far outside its area of use a site may lie before refusal


def _degrees_outside(crs: pyproj.CRS, lon: float, lat: float) -> float | None:
    """How many degrees (lon or lat) the point lies outside the CRS's area of use, or None
    when the CRS has none recorded."""
    area = crs.area_of_use
    if area is None:
        return None
    west, south, east, north = area.bounds
    if west <= east:
        dlon = 0.0 if west <= lon <= east else min(abs(normalise_lon(lon - west)),
                                                   abs(normalise_lon(lon - east)))
    else:  # the area crosses the antimeridian
        dlon = 0.0 if (lon >= west or lon <= east) else min(abs(normalise_lon(lon - west)),
                                                          abs(normalise_lon(lon - east)))
    dlat = max(south - lat, lat - north, 0.0)
    return float(max(dlon, dlat))


def check_explicit(explicit: str) -> pyproj.CRS | None:
    """The catalog's explicit CRS, checked before any ingest (None for 'auto')."""
    if explicit is None or explicit.strip().lower() == "auto":
        return None
    try:
        crs = pyproj.CRS.from_user_input(explicit.strip())
    except pyproj.exceptions.CRSError as e:
        raise CRSError(f"crs {explicit!r} is not a CRS pyproj knows: {e}") from None
    return _check_projected(crs, explicit)


def _check_projected(crs: pyproj.CRS, name: str) -> pyproj.CRS:
    if not crs.is_projected:
        kind = "geographic (degrees)" if crs.is_geographic else "not projected"
        raise CRSError(
            f"crs {name!r} ({crs.name}) is {kind}; pairs need a projected CRS in metres, "
            "e.g. a UTM zone such as EPSG:32755, or 'auto'"
        )
    units = {(a.unit_name or "").lower() for a in crs.axis_info[:2]}
    if not units <= _METRE:
        raise CRSError(
            f"crs {name!r} ({crs.name}) has axis units {sorted(units)}; pair radii are in "
            "metres, so the CRS must be in metres too"
        )
    return crs


def check_declared(name: str, key: str) -> pyproj.CRS:
    """A CRS the catalog declares for a file's coordinates (``xy_crs`` of a csv column map):
    one pyproj knows, projected, in metres. CRSError says what is expected (the catalog puts
    it after "expected")."""
    try:
        crs = pyproj.CRS.from_user_input(str(name).strip())
    except pyproj.exceptions.CRSError as e:
        raise CRSError(f"a CRS pyproj knows, such as 'EPSG:32755' (a UTM zone); {name!r} is "
                       f"not one ({e})") from None
    if not crs.is_projected:
        kind = "geographic (degrees)" if crs.is_geographic else "not projected"
        raise CRSError(f"a projected CRS in metres for the easting/northing columns, such as a "
                       f"UTM zone (EPSG:32755); {name!r} ({crs.name}) is {kind}: for longitude "
                       f"and latitude columns set the keys 'lat' and 'lon' instead of "
                       f"'easting', 'northing' and '{key}'")
    units = {(a.unit_name or "").lower() for a in crs.axis_info[:2]}
    if not units <= _METRE:
        raise CRSError(f"a projected CRS in metres, such as a UTM zone (EPSG:32755); {name!r} "
                       f"({crs.name}) has axis units {sorted(units)}, while easting and "
                       "northing are read as metres")
    return crs


LOCAL_M = 100_000.0  # coordinates within this of (0, 0): metres from a local origin


def check_declared_positions(name: str, x, y) -> str | None:
    """Why the easting/northing ``x``, ``y`` cannot be coordinates in the declared CRS ``name``,
    or None when they can: the same plausibility rule as the site's ``crs`` (the positions'
    centre more than FAR_DEG outside the CRS's area of use), and local metres (coordinates
    near (0, 0) that lie outside the CRS's area: metres from an origin of the survey's own,
    which read as a UTM zone land thousands of kilometres away)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    if not ok.any():
        return None
    crs = pyproj.CRS.from_user_input(str(name).strip())
    xm, ym = float(np.median(x[ok])), float(np.median(y[ok]))
    lon, lat = (float(v) for v in unproject(xm, ym, crs))
    at = (f"read as {name} ({crs.name}) they put the positions at lon {lon:.4f}, lat "
          f"{lat:.4f}" if np.isfinite(lon) and np.isfinite(lat) else
          f"{name} ({crs.name}) cannot place them on the Earth")
    area = crs.area_of_use
    inside = True
    if area is not None:
        to_crs = pyproj.Transformer.from_crs("EPSG:4326", crs, always_xy=True)
        try:
            x0, y0, x1, y1 = to_crs.transform_bounds(*area.bounds, densify_pts=21)
            inside = x0 <= xm <= x1 and y0 <= ym <= y1
            span = f"E {x0:.0f}..{x1:.0f}, N {y0:.0f}..{y1:.0f}"
        except pyproj.exceptions.ProjError:
            span = "its area of use"
    if not inside and abs(xm) <= LOCAL_M and abs(ym) <= LOCAL_M:
        return (f"the easting/northing (median E {xm:.1f}, N {ym:.1f}) look like metres from a "
                f"local origin of the survey's own, not {name} coordinates (over its area "
                f"those run {span}); {at}. Expected coordinates in the declared CRS: convert "
                "the file's local metres to it (or give the file 'lat'/'lon' columns), or set "
                "the CRS the coordinates really are in")
    off = (_degrees_outside(crs, lon, lat) if np.isfinite(lon) and np.isfinite(lat)
           else float("inf"))
    if off is not None and off > FAR_DEG:
        return (f"the easting/northing (median E {xm:.1f}, N {ym:.1f}) lie "
                f"{'far' if not np.isfinite(off) else f'{off:.0f} degrees'} outside the area "
                f"{name} ({crs.name}) is meant for; {at}. Expected the CRS the coordinates "
                "were written in (the survey's own UTM zone, hemisphere included)")
    return None


def choose_crs(lon: np.ndarray, lat: np.ndarray, explicit: str = "auto",
               force: bool = False) -> pyproj.CRS:
    """The site's projected CRS: `explicit` ("EPSG:<code>") when given, else the UTM/UPS zone of
    `site_centre(lon, lat)`. Raises CRSError for a geographic or non-metre explicit CRS, and for
    one whose area of use lies more than FAR_DEG from the site centre unless `force`."""
    lon_c, lat_c = site_centre(lon, lat)
    crs = check_explicit(explicit)
    if crs is None:
        return pyproj.CRS.from_epsg(utm_epsg(lon_c, lat_c))
    off = _degrees_outside(crs, lon_c, lat_c)
    if off is not None and off > FAR_DEG and not force:
        zone = utm_epsg(lon_c, lat_c)
        raise CRSError(
            f"crs {explicit!r} ({crs.name}) is meant for an area {off:.0f} degrees away from the "
            f"site centre (lon {lon_c:.4f}, lat {lat_c:.4f}); distances and pairs there would be "
            f"distorted. Expected the site's own zone, EPSG:{zone}, or 'auto'; if this CRS is "
            "really meant, set crs_force: true in the catalog")
    return crs


def _crs_key(crs: pyproj.CRS | str | int) -> str:
    if isinstance(crs, int):
        return f"EPSG:{crs}"
    if isinstance(crs, str):
        return crs
    code = crs.to_epsg()
    return f"EPSG:{code}" if code is not None else crs.to_wkt()


@functools.lru_cache(maxsize=64)
def _transformers(key: str) -> tuple[pyproj.Transformer, pyproj.Transformer]:
    crs = pyproj.CRS.from_user_input(key)
    return (pyproj.Transformer.from_crs("EPSG:4326", crs, always_xy=True),
            pyproj.Transformer.from_crs(crs, "EPSG:4326", always_xy=True))


@functools.lru_cache(maxsize=64)
def _proj(key: str) -> pyproj.Proj:
    return pyproj.Proj(pyproj.CRS.from_user_input(key))


def project(lon, lat, crs: pyproj.CRS | str | int) -> tuple[np.ndarray, np.ndarray]:
    """WGS 84 lon/lat (degrees) -> x (easting), y (northing) in `crs`, float64 arrays."""
    fwd, _ = _transformers(_crs_key(crs))
    x, y = fwd.transform(np.asarray(lon, dtype=np.float64), np.asarray(lat, dtype=np.float64))
    return np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)


def unproject(x, y, crs: pyproj.CRS | str | int) -> tuple[np.ndarray, np.ndarray]:
    """x (easting), y (northing) in `crs` -> WGS 84 lon, lat in degrees, float64 arrays."""
    _, inv = _transformers(_crs_key(crs))
    lon, lat = inv.transform(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64))
    return np.asarray(lon, dtype=np.float64), np.asarray(lat, dtype=np.float64)


def scale_factor(lon, lat, crs: pyproj.CRS | str | int) -> np.ndarray:
    """Point scale factor k of a conformal `crs` at (lon, lat): planar / true distance for short
    distances there (meridional scale; UTM and UPS are conformal, so it holds in every
    direction)."""
    f = _proj(_crs_key(crs)).get_factors(np.asarray(lon, dtype=np.float64),
                                         np.asarray(lat, dtype=np.float64))
    return np.asarray(f.meridional_scale, dtype=np.float64)


def crs_epsg_string(crs: pyproj.CRS) -> str:
    """"EPSG:<code>" of `crs`; ValueError when it has no EPSG code."""
    code = crs.to_epsg()
    if code is None:
        raise ValueError(f"CRS {crs.name!r} has no EPSG code")
    return f"EPSG:{code}"


def crs_projjson(crs: pyproj.CRS) -> dict:
    """PROJJSON of `crs` as a dict (what GeoParquet's "crs" metadata field holds)."""
    return crs.to_json_dict()


def crs_wkt(crs: pyproj.CRS) -> str | None:
    """OGC WKT1 of `crs` as GDAL writes it (what a GeoPackage's gpkg_spatial_ref_sys holds), or
    None when the CRS has no WKT1 form."""
    try:
        return crs.to_wkt("WKT1_GDAL")
    except pyproj.exceptions.CRSError:
        return None
