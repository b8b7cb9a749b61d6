"""iFDO v2 out: the one writer of image FAIR Digital Objects, shared by the pipeline (the located
images of a built site, ``python -m pipeline export ifdo``) and ``ssl.habitats --export ifdo``
(the labelling list). Standard library only: the pipeline loads this file by path
(``pipeline.schema.load_trainer_module("ifdo")``), so it imports no other module of the project.

An iFDO is a header of defaults and one item per image file, keyed by the file's name::

    {"image-set-header": {...}, "image-set-items": {"<file name>": {...}, ...}}

The fields, as the iFDO v2 schema names and defines them (``ifdo-v2.0.1.json``, the schema of
the iFDO standard that mariqt 1.0.1 ships and validates against; ``tests/data/ifdo_schema``):

- ``image-datetime``: UTC, in the default format ``%Y-%m-%d %H:%M:%S.%f``;
- ``image-latitude``, ``image-longitude``: WGS84 degrees (``image-coordinate-reference-system``
  EPSG:4326);
- ``image-altitude-meters``: the camera's height relative to sea level, negative below it, so
  the value written is minus the depth (v2 has no ``image-depth``, a v1 field);
- ``image-meters-above-ground``: the distance of the camera to the seafloor (the altitude);
- ``image-camera-yaw-degrees``: the heading, 0 = north, clockwise, in [0, 360);
- ``image-uuid``: a UUID per image that is the same on every export (`image_uuid`: derived from
  the site and the image id; shaped as a version-4 UUID because the schema accepts no other
  version), ``image-handle`` (``urn:uuid:<image-uuid>``: an exported image has no download
  location yet) and ``image-hash-sha256`` when the file's bytes were read;
- ``image-event``: ``{"name": <dive>}`` per item, overriding the header's event (the site);
- ``image-set-local-path``: the folder of the image files relative to the iFDO file (in the
  header when all share one, else per item).

The header carries what the schema requires: the set's name, UUID (`set_uuid`) and handle, the
version, and the summaries the schema asks of a header (``image-datetime``: the first image's;
``image-latitude``, ``-longitude``, ``-altitude-meters``: the medians over the items, as mariqt
fills them), plus the set's bounding box. A summary is written only when every item carries the
field: a header value is the default of every item that lacks it. The caller gives what is known
of the survey (context, project, PI, creators, licence, ...); a required field nobody gave is
written as ``UNKNOWN`` (``"unknown"``, or ``{"name": "unknown"}``) and listed by
`fields_to_complete`, so the file validates and the user sees what to fill in before publishing.
``image-coordinate-uncertainty-meters`` is never guessed: without a value it is left out (and
listed).

Files are JSON or YAML as the name says; iFDO file names end ``_iFDO.json`` or ``_iFDO.yaml``
(`check_file_name`). `render` makes the text and `write` hands it to the caller's atomic write.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import re
import statistics
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath

__all__ = ["DATETIME_FORMAT", "IFDO_VERSION", "REQUIRED_HEADER", "SCHEMA_URI", "SUFFIXES",
           "UNKNOWN", "Image", "build", "check_file_name", "fields_to_complete",
           "format_datetime", "image_uuid", "render", "set_uuid", "sha256_file",
           "shared_header", "write"]

IFDO_VERSION = "v2.0.1"  # the version of the schema the files are validated against
SCHEMA_URI = "https://marine-imaging.com/fair/schemas/ifdo-v2.0.1.json"
DATETIME_FORMAT = "%Y-%m-%d %H:%M:%S.%f"
SUFFIXES = ("_iFDO.json", "_iFDO.yaml")
UNKNOWN = "unknown"
HEADER, ITEMS = "image-set-header", "image-set-items"

# the header fields the iFDO v2 schema requires (ifdo-v2.0.1.json, image-set-header.required)
REQUIRED_HEADER = (
    "image-set-name", "image-set-uuid", "image-set-handle", "image-set-ifdo-version",
    "image-datetime", "image-latitude", "image-longitude", "image-altitude-meters",
    "image-coordinate-reference-system", "image-coordinate-uncertainty-meters",
    "image-context", "image-project", "image-event", "image-platform", "image-sensor",
    "image-pi", "image-creators", "image-license", "image-copyright", "image-abstract",
)
# required fields that name something ({"name": ..., "uri": ...})
NAMED = ("image-context", "image-project", "image-event", "image-platform", "image-sensor",
         "image-pi", "image-license")
# header fields that describe one set, never carried over from another set's header
SET_FIELDS = ("image-set-name", "image-set-uuid", "image-set-handle", "image-set-ifdo-version",
              "image-datetime", "image-latitude", "image-longitude", "image-altitude-meters",
              "image-set-min-latitude-degrees", "image-set-max-latitude-degrees",
              "image-set-min-longitude-degrees", "image-set-max-longitude-degrees",
              "image-set-local-path", "image-abstract", "image-uuid", "image-hash-sha256",
              "image-handle")

# decimals of the values derived from the manifest's float32 columns (1 mm, 0.001 deg)
_DECIMALS = 3
_UUID_SPACE = "seafloor-ssl/ifdo"


@dataclass(frozen=True)
class Image:
    """One image of an iFDO. ``key``: its item key (the file name, or its path from the local
    path); ``image_id``: the manifest's id (the image's UUID derives from it); ``time``: unix
    seconds (UTC); ``depth_m`` positive down, ``altitude_m`` above the seabed, ``heading_deg``
    from north; NaN or None: unknown (left out of the item). ``local_path``: the folder of the
    file relative to the iFDO file, when items differ in it."""

    key: str
    image_id: str
    time: float
    lat: float
    lon: float
    depth_m: float | None = None
    altitude_m: float | None = None
    heading_deg: float | None = None
    event: str | None = None
    sha256: str | None = None
    local_path: str | None = None


def _known(x) -> bool:
    return x is not None and not (isinstance(x, float) and math.isnan(x))


def _v4(key: str) -> str:
    """A UUID with the layout of a random (version-4) one whose bits come from ``key``: the same
    key gives the same UUID on every run."""
    return str(uuid.UUID(bytes=hashlib.sha256(key.encode()).digest()[:16], version=4))


def image_uuid(site: str, image_id: str) -> str:
    """The image's UUID: the same for the same site and image id in every export (the survey's
    iFDO and a labelling list's share it)."""
    return _v4(f"{_UUID_SPACE}/image/{site}/{image_id}")


def set_uuid(site: str, name: str, image_ids: Iterable[str]) -> str:
    """The set's UUID: the same for the same site, set name and images."""
    ids = "\n".join(sorted(str(i) for i in image_ids))
    return _v4(f"{_UUID_SPACE}/set/{site}/{name}/{hashlib.sha256(ids.encode()).hexdigest()}")


def format_datetime(unix_s: float) -> str:
    """Unix seconds as iFDO's default datetime (UTC, microseconds)."""
    whole = math.floor(unix_s)
    micros = round((unix_s - whole) * 1e6)
    when = dt.datetime.fromtimestamp(whole, tz=dt.UTC) + dt.timedelta(microseconds=micros)
    return when.strftime(DATETIME_FORMAT)


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_file_name(path: str | PurePath) -> str | None:
    """Why ``path`` cannot name an iFDO file (None when it can)."""
    name = PurePath(path).name
    if not name.endswith(SUFFIXES) or name in SUFFIXES:
        return (f"{name!r} is not an iFDO file name; expected a name ending in "
                f"{' or '.join(SUFFIXES)} (e.g. survey{SUFFIXES[0]})")
    return None


def _item(img: Image, site: str) -> dict:
    u = image_uuid(site, img.image_id)
    item: dict = {"image-datetime": format_datetime(float(img.time)),
                  "image-latitude": float(img.lat), "image-longitude": float(img.lon)}
    if _known(img.depth_m):
        item["image-altitude-meters"] = round(-float(img.depth_m), _DECIMALS) + 0.0
    if _known(img.altitude_m):
        item["image-meters-above-ground"] = round(float(img.altitude_m), _DECIMALS)
    if _known(img.heading_deg):
        item["image-camera-yaw-degrees"] = round(float(img.heading_deg) % 360.0, _DECIMALS) % 360.0
    if img.event:
        item["image-event"] = {"name": str(img.event)}
    if img.local_path is not None:
        item["image-set-local-path"] = img.local_path
    item["image-uuid"] = u
    item["image-handle"] = f"urn:uuid:{u}"
    if img.sha256:
        item["image-hash-sha256"] = img.sha256
    return item


def _unknown(field: str):
    if field == "image-creators":
        return [{"name": UNKNOWN}]
    return {"name": UNKNOWN} if field in NAMED else UNKNOWN


def build(images: Sequence[Image], name: str, site: str, header: Mapping | None = None,
          local_path: str | None = None) -> dict:
    """The iFDO document of ``images`` (in their order), set ``name``, of ``site`` (the catalog
    name: image UUIDs derive from it). ``header``: fields known of the survey (they override the
    derived ones, except the set's own identity and summaries); ``local_path``: the folder of
    every image relative to the iFDO file (the header's ``image-set-local-path``). ValueError
    for two images with one key."""
    keys = [img.key for img in images]
    if len(set(keys)) != len(keys):
        twice = sorted({k for k in keys if keys.count(k) > 1})
        raise ValueError(f"item keys must be unique; {twice[:3]} name several images")
    items = {img.key: _item(img, site) for img in images}
    sid = set_uuid(site, name, (img.image_id for img in images))
    head: dict = {"image-set-name": name, "image-set-uuid": sid,
                  "image-set-handle": f"urn:uuid:{sid}", "image-set-ifdo-version": IFDO_VERSION}
    vals = list(items.values())
    if vals:
        head["image-datetime"] = format_datetime(min(float(i.time) for i in images))
        for f in ("image-latitude", "image-longitude", "image-altitude-meters"):
            if all(f in v for v in vals):
                head[f] = statistics.median(v[f] for v in vals)
        lats = [v["image-latitude"] for v in vals]
        lons = [v["image-longitude"] for v in vals]
        head.update({"image-set-min-latitude-degrees": min(lats),
                     "image-set-max-latitude-degrees": max(lats),
                     "image-set-min-longitude-degrees": min(lons),
                     "image-set-max-longitude-degrees": max(lons)})
    head["image-coordinate-reference-system"] = "EPSG:4326"
    head["image-acquisition"] = "photo"
    head["image-event"] = {"name": site}
    head["image-project"] = {"name": site}
    if local_path is not None:
        head["image-set-local-path"] = local_path
    for k, v in (header or {}).items():
        if k not in SET_FIELDS or k == "image-abstract":
            head[k] = v
    for f in REQUIRED_HEADER:
        if f not in head and f not in ("image-coordinate-uncertainty-meters",
                                       "image-datetime", "image-latitude", "image-longitude",
                                       "image-altitude-meters"):
            head[f] = _unknown(f)
    return {"$schema": SCHEMA_URI, HEADER: head, ITEMS: items}


def shared_header(doc: Mapping) -> dict:
    """The header fields of ``doc`` that describe the survey rather than the set (context,
    project, PI, creators, licence, platform, sensor, coordinate uncertainty, ...): what another
    set of the same survey shares. Fields still `UNKNOWN` are left out."""
    head = doc.get(HEADER) if isinstance(doc, Mapping) else None
    if not isinstance(head, Mapping):
        return {}
    return {k: v for k, v in head.items()
            if k not in SET_FIELDS and v != _unknown(k) and v != UNKNOWN}


def fields_to_complete(doc: Mapping) -> list[str]:
    """Required header fields that are missing or hold `UNKNOWN`, in the schema's order."""
    head = doc.get(HEADER) or {}
    out = []
    for f in REQUIRED_HEADER:
        v = head.get(f)
        if v is None or v == _unknown(f) or v == UNKNOWN:
            out.append(f)
    return out


# --- text ---------------------------------------------------------------------------------


def _yaml_str(s: str) -> str:
    """A YAML double-quoted scalar (YAML 1.1 and 1.2 read it the same way)."""
    out = ['"']
    for ch in s:
        o = ord(ch)
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif 0x20 <= o < 0x7F:
            out.append(ch)
        elif o < 0x10000 and not 0xD800 <= o < 0xE000:
            out.append(f"\\u{o:04x}")
        else:
            out.append(f"\\U{o:08x}")
    out.append('"')
    return "".join(out)


_PLAIN_KEY = re.compile(r"[$A-Za-z][A-Za-z0-9_-]*")
# words YAML 1.1 reads as booleans or null
_YAML_WORDS = {"y", "n", "yes", "no", "on", "off", "true", "false", "null"}


def _yaml_key(k: str) -> str:
    """A mapping key: plain when it is a word (the iFDO field names), else double-quoted (file
    names, which could otherwise read as numbers or dates)."""
    if _PLAIN_KEY.fullmatch(k) and k.lower() not in _YAML_WORDS:
        return k
    return _yaml_str(k)


def _yaml_float(x: float) -> str:
    if not math.isfinite(x):
        raise ValueError(f"{x} cannot be written to an iFDO (not a finite number)")
    s = repr(float(x))
    mant, _, exp = s.partition("e")
    if "." not in mant:
        mant += ".0"
    if exp:  # YAML 1.1 readers (PyYAML) take 1e-05 for a string: write 1.0e-05
        exp = exp if exp[0] in "+-" else "+" + exp
        return f"{mant}e{exp}"
    return mant


def _yaml_scalar(v) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return _yaml_float(v)
    if isinstance(v, str):
        return _yaml_str(v)
    raise TypeError(f"cannot write {type(v).__name__} to an iFDO")


def _yaml(v, indent: int, lines: list[str], prefix: str) -> None:
    """``prefix`` (a key and colon, or a list dash) then ``v``, block style."""
    pad = " " * indent
    if isinstance(v, Mapping) and v:
        if prefix:
            lines.append(pad + prefix)
            indent += 2
        for k, x in v.items():
            _yaml(x, indent, lines, f"{_yaml_key(str(k))}:")
    elif isinstance(v, list | tuple) and v:
        lines.append(pad + prefix)
        for x in v:
            if isinstance(x, Mapping) and x:
                sub: list[str] = []
                _yaml(x, indent + 4, sub, "")
                first = sub[0][indent + 4:]
                lines.append(f"{pad}  - {first}")
                lines.extend(sub[1:])
            elif isinstance(x, list | tuple) and x:
                raise TypeError("an iFDO written here holds no list of lists")
            else:
                lines.append(f"{pad}  - {_yaml_inline(x)}")
    else:
        text = _yaml_inline(v)
        lines.append(f"{pad}{prefix} {text}" if prefix else f"{pad}{text}")


def _yaml_inline(v) -> str:
    """A scalar, or an empty mapping or list, on one line."""
    if isinstance(v, Mapping):
        return "{}"
    if isinstance(v, list | tuple):
        return "[]"
    return _yaml_scalar(v)


def render(doc: Mapping, path: str | PurePath) -> str:
    """The text of ``doc`` for ``path``: JSON for ``.json``, block-style YAML for ``.yaml``
    (every string double-quoted, so no value changes type on the way back)."""
    why = check_file_name(path)
    if why:
        raise ValueError(why)
    if str(path).endswith(".json"):
        return json.dumps(doc, indent=1, ensure_ascii=False, allow_nan=False) + "\n"
    lines: list[str] = []
    _yaml(doc, 0, lines, "")
    return "\n".join(lines) + "\n"


def write(path: str | Path, doc: Mapping, write_text: Callable[[Path, str], object]) -> Path:
    """Render ``doc`` for ``path`` and write it with ``write_text(path, text)`` (the caller's
    atomic write)."""
    path = Path(path)
    write_text(path, render(doc, path))
    return path
