"""iFDO image metadata (format ``ifdo``): v1 and v2, JSON (.json) or YAML (.yaml/.yml).

Structure::

    {"image-set-header": {...defaults...},
     "image-set-items": {"<file name>": {...} | [{...}, ...], ...}}

Header values are defaults that item values override. An item given as a list (a video, or
several entries for one file) is read from its first entry. Fields read:

- ``image-datetime``: "%Y-%m-%d %H:%M:%S.%f" (also without the fraction, or ISO 8601 with
  ``T``/``Z``), UTC unless a zone is given;
- ``image-latitude``, ``image-longitude``: WGS84 degrees (NaN when absent);
- v2: ``image-altitude-meters`` is relative to sea level, negative below it, so
  depth = -image-altitude-meters; ``image-meters-above-ground`` is the altitude above the seabed;
- v1: ``image-depth`` is the depth (positive down); ``image-meters-above-ground`` the altitude
  above the seabed. ``image-altitude`` is read by its sign: a negative value is a height
  relative to sea level (depth = -image-altitude, used when ``image-depth`` is absent), zero or
  positive is metres above the seabed (used when ``image-meters-above-ground`` is absent);
- ``image-camera-yaw-degrees``: heading (NaN when absent).

The version comes from ``image-set-ifdo-version`` ("v1.x" or "v2.x"); without it, from which
fields are present.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import posixpath
from pathlib import Path
from typing import Any

import numpy as np

from . import NavData, NavFormatError
from ._common import check_latlon, nav_table

HEADER = "image-set-header"
ITEMS = "image-set-items"
_DEG, _M = "a number in degrees", "a number in metres"


def read_ifdo(path: Path, dive_dir: Path | None = None) -> NavData:
    """Read an iFDO file; ``line`` is the 1-based position of the item in image-set-items.

    Image paths: the header's ``image-set-local-path`` (relative to the iFDO file's folder)
    joined with the item's file name, expressed relative to ``dive_dir`` (normalised, forward
    slashes), e.g. ``dive01/nav/dive01_iFDO.json`` with local path ``../images`` and
    ``dive_dir=dive01`` gives ``images/<name>``. A path outside ``dive_dir`` comes back with
    ``..`` in it; an absolute local path or file name comes back as written. With ``dive_dir``
    None the local path joined with the name is returned as written.
    """
    path = Path(path)
    doc = _load(path)
    if not isinstance(doc, dict) or not isinstance(doc.get(ITEMS), dict):
        if not isinstance(doc, dict):
            found = f"a {type(doc).__name__} at the top level"
        else:
            found = _kind(doc[ITEMS]) if ITEMS in doc else "no such key"
        raise NavFormatError(
            f"{path}: top level, key '{ITEMS}': found {found}; "
            "expected a mapping of image file names to their metadata"
        )
    header = doc.get(HEADER) or {}
    if not isinstance(header, dict):
        raise NavFormatError(
            f"{path}: top level, key '{HEADER}': found {_kind(header)}; expected a mapping"
        )
    items = doc[ITEMS]
    v1 = _is_v1(header, items)
    n = len(items)
    cols = {k: np.full(n, np.nan) for k in ("t", "lat", "lon", "depth", "alt", "yaw")}
    images, lines = [], np.arange(1, n + 1, dtype=np.int64)
    for i, (key, value) in enumerate(items.items()):
        where = f"{path}: item {i + 1} ('{key}')"
        rec = _merged(where, header, value)
        cols["t"][i] = _time(where, rec.get("image-datetime"))
        cols["lat"][i] = _num(where, rec, "image-latitude", _DEG)
        cols["lon"][i] = _num(where, rec, "image-longitude", _DEG)
        cols["yaw"][i] = _num(where, rec, "image-camera-yaw-degrees", _DEG)
        above = _num(where, rec, "image-meters-above-ground", _M)
        if v1:
            depth = _num(where, rec, "image-depth", _M)
            sea = _num(where, rec, "image-altitude", _M)
            if math.isnan(depth) and sea < 0:
                depth = -sea
            if math.isnan(above) and sea >= 0:
                above = sea
        else:
            depth = -_num(where, rec, "image-altitude-meters", _M)
        cols["depth"][i], cols["alt"][i] = depth, above
        images.append(_image(path, str(key), rec.get("image-set-local-path"), dive_dir))
    check_latlon(path, cols["lat"], cols["lon"], lines, "image-latitude", "image-longitude",
                 where="item")
    table = nav_table(
        n, cols["t"], cols["lat"], cols["lon"], cols["depth"], lines,
        altitude_m=cols["alt"], heading_deg=cols["yaw"], image=images,
    )
    return NavData(table=table, per_image=True, path=path, format="ifdo",
                   notes={"ifdo_version": 1 if v1 else 2})


def _kind(value: Any) -> str:
    return "an empty value" if value is None else f"a {type(value).__name__}"


def _load(path: Path) -> Any:
    suffix = path.suffix.lower()
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise NavFormatError(
            f"{path}: line 1, content: found bytes that are not UTF-8 text ({exc.reason}); "
            "expected iFDO JSON or YAML"
        ) from None
    if suffix == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise NavFormatError(
                f"{path}: line {exc.lineno}, column {exc.colno}: found invalid JSON ({exc.msg}); "
                "expected an iFDO JSON document"
            ) from None
    if suffix in (".yaml", ".yml"):
        import yaml

        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        try:
            return yaml.load(text, Loader=loader)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = mark.line + 1 if mark is not None else 1
            problem = getattr(exc, "problem", None) or str(exc)
            raise NavFormatError(
                f"{path}: line {line}, content: found invalid YAML ({problem}); "
                "expected an iFDO YAML document"
            ) from None
    raise NavFormatError(
        f"{path}: line 1, file name: found suffix {path.suffix!r}; "
        "expected an iFDO file ending in .json, .yaml or .yml"
    )


def _is_v1(header: dict, items: dict) -> bool:
    version = str(header.get("image-set-ifdo-version") or "").strip().lower().lstrip("v")
    if version[:1] in ("1", "2"):
        return version[0] == "1"
    if version[:1] == "0":
        return True
    first = next((v for v in items.values() if v), {})
    if isinstance(first, list):
        first = first[0] if first and isinstance(first[0], dict) else {}
    keys = set(header) | set(first if isinstance(first, dict) else {})
    if {"image-altitude-meters"} & keys:
        return False
    return bool({"image-depth", "image-altitude"} & keys)


def _merged(where: str, header: dict, value: Any) -> dict:
    if isinstance(value, list):
        if value and not isinstance(value[0], dict):
            raise NavFormatError(
                f"{where}, list entry 1: found {_kind(value[0])}; expected a mapping of iFDO fields"
            )
        value = value[0] if value else None
    if value is None:
        return dict(header)
    if not isinstance(value, dict):
        raise NavFormatError(
            f"{where}: found {_kind(value)} {value!r}; "
            "expected a mapping of iFDO fields (or a list of them)"
        )
    return {**header, **value}


def _num(where: str, rec: dict, key: str, expected: str) -> float:
    value = rec.get(key)
    if value is None:
        return math.nan
    if isinstance(value, bool):
        raise NavFormatError(f"{where}, key '{key}': found {value!r}; expected {expected}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise NavFormatError(
            f"{where}, key '{key}': found {value!r}; expected {expected}"
        ) from None


_TIME_FORMATS = ("%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%d %H:%M:%S")


def _time(where: str, value: Any) -> float:
    if value is None:
        return math.nan
    when = None
    if isinstance(value, dt.datetime):
        when = value
    elif isinstance(value, str):
        text = value.strip()
        for fmt in _TIME_FORMATS:
            try:
                when = dt.datetime.strptime(text, fmt)
                break
            except ValueError:
                pass
        if when is None:
            try:
                when = dt.datetime.fromisoformat(text)
            except ValueError:
                when = None
    if when is None:
        raise NavFormatError(
            f"{where}, key 'image-datetime': found {value!r}; "
            "expected a UTC time such as '2024-03-13 00:40:46.897000' (or ISO 8601)"
        )
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()


def _image(path: Path, key: str, local: Any, dive_dir: Path | None) -> str:
    local = "" if local is None else str(local)
    if posixpath.isabs(key) or os.path.isabs(key):
        return key
    joined = posixpath.join(local, key) if local else key
    if os.path.isabs(local) or dive_dir is None:
        return joined
    full = os.path.normpath(os.path.join(os.path.abspath(path.parent), local, key))
    rel = os.path.relpath(full, os.path.abspath(dive_dir))
    return rel.replace(os.sep, "/")
