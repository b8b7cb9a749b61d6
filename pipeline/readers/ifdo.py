"""iFDO image metadata (format ``ifdo``): v1 and v2, JSON (.json) or YAML (.yaml/.yml).

Structure::

    {"image-set-header": {...defaults...},
     "image-set-items": {"<file name>": {...} | [{...}, ...] | null, ...}}

Item shapes, as the tools write them: a mapping per photo (ifdo 1.6.0, mariqt 1.0.1); a list
for a video, whose first entry holds the video's start and its defaults (the iFDO schema's
``prefixItems``); a list of one for every photo (ifdo 1.2.x writes all items as lists). A list
is read from its first entry; an empty item (``null``) gets the header's values.

Header values are defaults that item values override ("The default settings for all fields.
Can be overwritten by metadata in the image-set-items field", iFDO v2.0.1 schema), with one
exception: ``image-datetime``, ``image-latitude``, ``image-longitude`` and
``image-altitude-meters`` in the header are a summary of the set when any item carries the same
field. The v2.0.1 schema requires them in the header, and mariqt 1.0.1 fills them with the first
image's time and the median of the items' values (``_trySetRepresentativeHeaderFieldsDtLatLonAlt``).
Such a header value never stands in for an item that lacks the field: that item has no time,
position or depth (and the pipeline quarantines it). Only where NO item carries the field is the
header value every item's value (a field constant over the set; mariqt moves those into the
header). The rule is per field.

Fields read:

- ``image-datetime``: in the ``image-datetime-format`` (a Python strptime format, given in the
  header or in the item, the item's winning; default "%Y-%m-%d %H:%M:%S.%f"), UTC unless the
  format carries a zone. A value that does not match the declared format but is in the default
  format or ISO 8601 is read as such and counted in ``notes["ifdo_datetime_format_mismatch"]``
  (ifdo 1.2.5 writes the header's format but always formats datetimes the default way);
- ``image-latitude``, ``image-longitude``: WGS84 degrees (NaN when absent);
- v2: ``image-altitude-meters`` is relative to sea level, negative below it, so
  depth = -image-altitude-meters; ``image-meters-above-ground`` is the altitude above the seabed;
- v1: ``image-depth`` is the depth (positive down); ``image-meters-above-ground`` the altitude
  above the seabed. ``image-altitude`` is read by its sign: a negative value is a height
  relative to sea level (depth = -image-altitude, used when ``image-depth`` is absent), zero or
  positive is metres above the seabed (used when ``image-meters-above-ground`` is absent);
- ``image-camera-yaw-degrees``: heading in degrees, returned in [0, 360); NaN when absent. The
  iFDO schema defines it as the rotation of the camera frame (x = top of the image) about the
  down axis of North-East-Down: 0 = the image's top towards north, clockwise seen from above.
  mariqt 1.0.1 writes it in (-180, 180].

Image paths come from ``image-set-local-path`` (an older name, ``image-local-path``, is read
too). When a v2 file has neither, the schema's default applies: "The default is the relative
path ``../raw``" (iFDO v2.0.1 schema; ifdo 1.2.x cannot write the field at all, ifdo 1.6.0
writes it only when given), counted in ``notes["ifdo_default_local_path"]``. v1 files without it
keep the bare item names.

Files in the wild do not always follow that default. marimba (CSIRO's dataset packager) writes
its iFDOs beside the dataset's ``data/`` folder with no local path: 1.0.x keys items by their
path from the dataset root (``data/<pipeline>/<collection>/...``), whether one ``ifdo`` file
for the whole dataset (the default metadata level) or one ``<collection>.<pipeline>.ifdo`` per
collection; 1.1 and later key them by file name with a per-item ``image-set-local-path`` (the
folder from the dataset root), which the header takes over when every item has the same one.
So an item's key is resolved, per file, in this order: (1) the local path (declared, or the v2
default ``../raw``) from the iFDO file's folder; (2) the key from the iFDO file's own folder;
(3) with ``root`` (a dataset-wide iFDO shared by the catalog's dives), the key from the root.
The first resolution under which the items' files exist wins (a sample of the items is looked
for on disk); a resolution that leads outside ``root`` is never used. Which one was used is in
``notes["ifdo_paths_from_<local_path|ifdo_folder|root>"]`` (the number of items).

The version comes from ``image-set-ifdo-version`` ("v1.x" or "v2.x"); without it, from which
fields are present. A ``.json`` file that is not JSON but is a YAML iFDO document is read as
YAML (ifdo 1.2.5 writes YAML whatever the suffix), counted in ``notes["ifdo_yaml_in_json"]``.
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


DEFAULT_DATETIME_FORMAT = "%Y-%m-%d %H:%M:%S.%f"
DEFAULT_LOCAL_PATH_V2 = "../raw"
# header fields that summarise the items whenever an item carries them (see the module notes)
SUMMARY_FIELDS = ("image-datetime", "image-latitude", "image-longitude", "image-altitude-meters")


def read_ifdo(path: Path, dive_dir: Path | None = None, root: Path | None = None) -> NavData:
    """Read an iFDO file; ``line`` is the 1-based position of the item in image-set-items.

    Image paths, resolved the way files in the wild are written (see the module notes): the
    ``image-set-local-path`` (relative to the iFDO file's folder; ``../raw`` when a v2 file has
    none) joined with the item's key, else the key from the iFDO file's own folder, else (with
    ``root``, for a file shared by a dataset) the key from ``root``; the first of these under
    which the items' files exist, never one outside ``root``. The result is expressed relative
    to ``dive_dir`` (normalised, forward slashes), e.g. ``dive01/nav/dive01_iFDO.json`` with
    local path ``../images`` and ``dive_dir=dive01`` gives ``images/<name>``. A path outside
    ``dive_dir`` comes back with ``..`` in it; an absolute local path or key comes back as
    written. With ``dive_dir`` None the local path joined with the name is returned as written.
    ``notes["ifdo_paths_from_<local_path|ifdo_folder|root>"]`` counts the items resolved each way.
    """
    path = Path(path)
    doc, notes = _load(path)
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
    notes["ifdo_version"] = 1 if v1 else 2
    entries = [
        (str(key), _first_entry(f"{path}: item {i + 1} ('{key}')", value))
        for i, (key, value) in enumerate(items.items())
    ]
    carried = {f for f in SUMMARY_FIELDS if any(_carries(v, f) for v in items.values())}
    defaults = {k: v for k, v in header.items() if k not in carried}
    n = len(entries)
    cols = {k: np.full(n, np.nan) for k in ("t", "lat", "lon", "depth", "alt", "yaw")}
    keys, locals_, lines = [], [], np.arange(1, n + 1, dtype=np.int64)
    mismatched = defaulted = 0
    for i, (key, entry) in enumerate(entries):
        where = f"{path}: item {i + 1} ('{key}')"
        rec = {**defaults, **entry}
        cols["t"][i], fell_back = _time(where, rec.get("image-datetime"),
                                        rec.get("image-datetime-format"))
        mismatched += fell_back
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
        local = rec.get("image-set-local-path")
        if local is None or local == "":
            local = rec.get("image-local-path")
        if (local is None or local == "") and not v1:
            local, defaulted = DEFAULT_LOCAL_PATH_V2, defaulted + 1
        keys.append(key)
        locals_.append("" if local is None else str(local))
    check_latlon(path, cols["lat"], cols["lon"], lines, "image-latitude", "image-longitude",
                 where="item")
    how = _resolution(path, keys, locals_, root)
    images = [_image(path, key, local, dive_dir, how, root) for key, local in zip(keys, locals_,
                                                                                 strict=True)]
    notes[f"ifdo_paths_from_{how}"] = n
    table = nav_table(
        n, cols["t"], cols["lat"], cols["lon"], cols["depth"], lines,
        altitude_m=cols["alt"], heading_deg=cols["yaw"], image=images,
    )
    if mismatched:
        notes["ifdo_datetime_format_mismatch"] = mismatched
    if defaulted and how == "local_path":
        notes["ifdo_default_local_path"] = defaulted
    ignored = carried & {k for k, v in header.items() if v is not None}
    if ignored:
        notes["ifdo_header_summary_fields_ignored"] = len(ignored)
    return NavData(table=table, per_image=True, path=path, format="ifdo", notes=notes)


def _carries(value: Any, key: str) -> bool:
    """Whether an item (a mapping, or a list of them) gives ``key`` a value of its own."""
    if isinstance(value, dict):
        return value.get(key) is not None
    if isinstance(value, list):
        return any(isinstance(e, dict) and e.get(key) is not None for e in value)
    return False


def _kind(value: Any) -> str:
    return "an empty value" if value is None else f"a {type(value).__name__}"


def _load(path: Path) -> tuple[Any, dict[str, int]]:
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
            return json.loads(text), {}
        except json.JSONDecodeError as exc:
            # ifdo 1.2.x writes YAML into files named .json
            doc = _yaml_or_none(text, path)
            if isinstance(doc, dict) and ITEMS in doc:
                return doc, {"ifdo_yaml_in_json": 1}
            raise NavFormatError(
                f"{path}: line {exc.lineno}, column {exc.colno}: found invalid JSON ({exc.msg}); "
                "expected an iFDO JSON document"
            ) from None
    if suffix in (".yaml", ".yml"):
        import yaml

        try:
            return _load_yaml(text, path), {}
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


# YAML iFDO files: bounded like every YAML the pipeline reads (pipeline.catalog.load_yaml_bounded);
# an iFDO repeats its fields per image, never through aliases that multiply the document
IFDO_YAML_MAX_BYTES = 256 << 20
IFDO_YAML_MAX_RATIO = 50  # values with aliases expanded, per value written


def _load_yaml(text: str, path: Path) -> Any:
    """The YAML document, bounded in size, depth and alias expansion (NavFormatError when
    refused; yaml.YAMLError when it is not YAML)."""
    from ..catalog import YamlRefused, load_yaml_bounded

    try:
        return load_yaml_bounded(text, max_bytes=IFDO_YAML_MAX_BYTES, max_nodes=1_000_000,
                                 max_ratio=IFDO_YAML_MAX_RATIO, max_depth=64)
    except YamlRefused as exc:
        raise NavFormatError(
            f"{path}: line 1, content: refused before reading: found {exc}; expected an iFDO "
            "YAML document that writes its values out"
        ) from None


def _yaml_or_none(text: str, path: Path) -> Any:
    import yaml

    try:
        return _load_yaml(text, path)
    except yaml.YAMLError:
        return None


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


def _first_entry(where: str, value: Any) -> dict:
    """An item's own fields: the mapping, or the first entry of a list (video, list of one)."""
    if isinstance(value, list):
        if value and not isinstance(value[0], dict):
            raise NavFormatError(
                f"{where}, list entry 1: found {_kind(value[0])}; expected a mapping of iFDO fields"
            )
        value = value[0] if value else None
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise NavFormatError(
            f"{where}: found {_kind(value)} {value!r}; "
            "expected a mapping of iFDO fields (or a list of them)"
        )
    return value


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


_FALLBACK_FORMATS = (DEFAULT_DATETIME_FORMAT, "%Y-%m-%d %H:%M:%S")


def _time(where: str, value: Any, fmt: Any = None) -> tuple[float, bool]:
    """Unix seconds of ``image-datetime``, and whether it missed its declared format."""
    if value is None:
        return math.nan, False
    declared = fmt if isinstance(fmt, str) and fmt else None
    when, used = None, None
    if isinstance(value, dt.datetime):  # YAML timestamps arrive parsed
        when, used = value, declared
    elif isinstance(value, str):
        text = value.strip()
        for form in ((declared,) if declared else ()) + _FALLBACK_FORMATS:
            try:
                when, used = dt.datetime.strptime(text, form), form
                break
            except ValueError:
                pass
        if when is None:
            try:
                when, used = dt.datetime.fromisoformat(text), "ISO 8601"
            except ValueError:
                when = None
    if when is None:
        fmt_note = f" or the declared image-datetime-format {declared!r}" if declared else ""
        raise NavFormatError(
            f"{where}, key 'image-datetime': found {value!r}; "
            f"expected a UTC time such as '2024-03-13 00:40:46.897000' (or ISO 8601){fmt_note}"
        )
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp(), declared is not None and used != declared


RESOLUTIONS = ("local_path", "ifdo_folder", "root")
_SAMPLE = 32  # items whose files are looked for, per resolution (spread over the file)


def _full(path: Path, key: str, local: str, how: str, root: Path | None) -> str:
    """The absolute path an item's key names under one resolution (absolute keys as written)."""
    if posixpath.isabs(key) or os.path.isabs(key):
        return os.path.normpath(key)
    base = {"local_path": os.path.join(os.path.abspath(path.parent), local),
            "ifdo_folder": os.path.abspath(path.parent),
            "root": os.path.abspath(root) if root is not None else ""}[how]
    return os.path.normpath(os.path.join(base, key))


def _inside(full: str, root: Path) -> bool:
    top = os.path.abspath(root)
    return full == top or full.startswith(top.rstrip(os.sep) + os.sep)


def _resolution(path: Path, keys: list[str], locals_: list[str], root: Path | None) -> str:
    """Which folder the item keys are taken from: the first resolution (in RESOLUTIONS order)
    under which a sample of the items' files exists, skipping any that leads outside ``root``;
    without a hit, the first that stays inside ``root`` (the local path when no root is given)."""
    hows = [h for h in RESOLUTIONS if h != "root" or root is not None]
    if not keys:
        return hows[0]
    step = max(1, len(keys) // _SAMPLE)
    sample = list(range(0, len(keys), step))[:_SAMPLE]
    inside_root = []
    for how in hows:
        fulls = [_full(path, keys[i], locals_[i], how, root) for i in sample]
        if root is not None and not any(_inside(f, root) for f in fulls):
            continue  # never outside the catalog root
        inside_root.append(how)
        if any(os.path.lexists(f) for f in fulls):
            return how
    return inside_root[0] if inside_root else hows[0]


def _image(path: Path, key: str, local: str, dive_dir: Path | None, how: str = "local_path",
           root: Path | None = None) -> str:
    if posixpath.isabs(key) or os.path.isabs(key):
        return key
    if how == "local_path" and (os.path.isabs(local) or dive_dir is None):
        return posixpath.join(local, key) if local else key
    full = _full(path, key, local, how, root)
    if dive_dir is None:  # relative to the iFDO file's folder, as a local path would be
        return os.path.relpath(full, os.path.abspath(path.parent)).replace(os.sep, "/")
    rel = os.path.relpath(full, os.path.abspath(dive_dir))
    return rel.replace(os.sep, "/")


def sniff(head):
    """iFDO: a JSON or YAML file whose first 4 MiB hold the ``image-set-header`` key."""
    from .sniffing import Sniff, has_suffix

    verdict = Sniff("ifdo", 0.0, per_image=True)
    if not has_suffix(head, ".json", ".yaml", ".yml") or HEADER.encode() not in head.prefix:
        return verdict
    confidence = 0.97 if ITEMS.encode() in head.prefix else 0.9
    return Sniff("ifdo", confidence, per_image=True, found={"header": HEADER, "items": ITEMS},
                 note="iFDO image metadata, one item per image")
