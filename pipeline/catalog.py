"""Catalogs: one YAML per site/campaign, validated with pydantic.

Every error names the file, the key, what was found and what was expected.
"""

from __future__ import annotations

import hashlib
import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

NAV_FORMATS = ("oplab-camera-csv", "oplab-nav-csv", "acfr-stereo-pose", "ifdo", "csv",
               "biigle-csv", "qgc-csv", "exif")


class CatalogError(ValueError):
    """A catalog that cannot be used; the message says where and what to do."""


# --- YAML read from users: bounded in size, aliases, expansion and depth ---------------------

CATALOG_MAX_BYTES = 1 << 20  # a catalog is a page of keys; 1 MiB is far beyond any real one
CATALOG_MAX_ALIASES = 100


class YamlRefused(ValueError):
    """A YAML document refused before it is built: too large, too deep, or alias-expanding."""


def load_yaml_bounded(text: str | bytes, *, max_bytes: int, max_aliases: int | None = None,
                      max_nodes: int = 100_000, max_ratio: float = 1.0,
                      max_depth: int = 100) -> Any:
    """``yaml.safe_load`` with bounds, for every YAML the pipeline reads from users.

    Before anything is built, one pass over the parser's events refuses a document larger than
    ``max_bytes``, with more than ``max_aliases`` aliases (None: no count), nested deeper than
    ``max_depth``, with an alias inside its own anchor (a structure that holds itself), or whose
    node count with every alias expanded exceeds both ``max_nodes`` and ``max_ratio`` times the
    nodes written (a "billion laughs" document of a few lines expands to 10**9 nodes; the pass
    only adds up counts, so it costs what the text costs). Raises YamlRefused (what was found,
    without the file name) or yaml.YAMLError (not valid YAML)."""
    size = len(text.encode() if isinstance(text, str) else text)
    if size > max_bytes:
        raise YamlRefused(f"{size} bytes, more than the {max_bytes} allowed")
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    sizes: dict[str, int] = {}  # anchor -> its node count with aliases expanded
    stack: list[list] = []  # open collections: [anchor, expanded node count so far]
    aliases = written = expanded = 0
    ceiling = max(max_nodes, max_ratio * size)  # a node takes a byte at least

    def too_many() -> YamlRefused:
        return YamlRefused(f"{expanded if expanded < 10**12 else 'over 10**12'} values once "
                           f"its {aliases} aliases (*name) are expanded, from {written} written "
                           "(a document that multiplies itself through aliases)")

    for ev in yaml.parse(text, Loader=loader):
        if isinstance(ev, yaml.AliasEvent):
            aliases += 1
            if max_aliases is not None and aliases > max_aliases:
                raise YamlRefused(f"more than {max_aliases} aliases (*name)")
            if any(a == ev.anchor for a, _ in stack):
                raise YamlRefused(f"alias *{ev.anchor} inside its own anchor &{ev.anchor} (a "
                                  "structure that contains itself)")
            n = sizes.get(ev.anchor, 1)
        elif isinstance(ev, yaml.ScalarEvent):
            n = 1
            if ev.anchor:
                sizes[ev.anchor] = 1
        elif isinstance(ev, yaml.CollectionStartEvent):
            written += 1
            stack.append([ev.anchor, 1])
            if len(stack) > max_depth:
                raise YamlRefused(f"values nested more than {max_depth} levels deep")
            continue
        elif isinstance(ev, yaml.CollectionEndEvent):
            anchor, n = stack.pop()
            if anchor:
                sizes[anchor] = n
            if stack:
                stack[-1][1] += n
            continue
        else:
            continue
        written += 1
        expanded += n
        if stack:
            stack[-1][1] += n
        if expanded > ceiling:
            raise too_many()
    if expanded > max(max_nodes, max_ratio * written):
        raise too_many()
    return yaml.load(text, Loader=loader)


# --- numbers: finite, in a physical range, said in the message ------------------------------

def _number(lo: float, hi: float, unit: str = "", *, lo_open: bool = False,
            whole: bool = False, optional: bool = False, note: str = "") -> BeforeValidator:
    """A check of a catalog number: a real number (not text, not true/false), finite, within
    [lo, hi] (above lo when ``lo_open``), a whole number when ``whole``. Its message says the
    range, e.g. "a number of metres greater than 0 and at most 1000"."""
    def text(v: float) -> str:
        return str(int(v)) if float(v).is_integer() else f"{v:g}"

    low = f"greater than {text(lo)}" if lo_open else f"at least {text(lo)}"
    span = f"{'a whole number' if whole else 'a number'}{' of ' + unit if unit else ''} " \
           f"{low} and at most {text(hi)}{note}"

    def check(v: Any) -> Any:
        if v is None and optional:
            return v
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise ValueError(f"a valid number: {span}")
        if whole and not isinstance(v, int):
            if not (math.isfinite(v) and float(v).is_integer()):
                raise ValueError(span)
            v = int(v)
        if not math.isfinite(v):
            raise ValueError(f"a finite number: {span}")
        if v < lo or (lo_open and v == lo) or v > hi:
            raise ValueError(span)
        return v

    return BeforeValidator(check)


_DAY = 86400.0
_YEAR = 365.25 * _DAY


def _check_path_template(v: str, hint: str) -> None:
    """A path the catalog names is relative to the root and stays inside it: no absolute path,
    no drive letter, no '..' part (the pipeline never reads outside the root)."""
    parts = v.replace("\\", "/").split("/")
    if v.startswith(("/", "\\")) or ":" in v[:3]:
        raise ValueError(f"a path inside the root, relative to it; {v!r} is absolute, which "
                         f"leads outside it (the pipeline never reads outside the root): {hint}")
    if ".." in parts:
        raise ValueError(f"a path inside the root, relative to it; {v!r} leads outside it "
                         f"through '..' (the pipeline never reads outside the root): {hint}")


def _check_template(v: str, what: str, shared_ok: bool = False) -> None:
    """A path template names the dive ({dive}: its folder from the root; {dive_id}: the part the
    wildcards of 'dives' matched) and nothing else in braces. With ``shared_ok`` (navigation
    paths) it may name neither: one file then serves every dive."""
    if not shared_ok and "{dive}" not in v and "{dive_id}" not in v:
        raise ValueError(f"{what} template {v!r} must contain {{dive}} (the dive folder's path "
                         "from the root) or {dive_id} (the part of it the wildcards of 'dives' "
                         "matched)")
    unknown = sorted(set(re.findall(r"{([^{}]*)}", v)) - {"dive", "dive_id"})
    if unknown:
        raise ValueError(f"{what} template {v!r} has unknown field(s) "
                         f"{', '.join('{' + u + '}' for u in unknown)}; only {{dive}} and "
                         "{dive_id} are filled in")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CsvColumns(_Strict):
    """Column map for ``format: csv`` navigation (column names in the file, plus units)."""

    time: str | list[str]  # one column, or [Date, Time] joined with a space
    # resolved when absent: "format" with a time_format, "iso8601" for a list, else "unix_s"
    time_unit: Literal["unix_s", "unix_ms", "iso8601", "format"] | None = None
    time_format: str | None = None  # strftime, e.g. "%m/%d/%Y %H:%M:%S"
    timezone: str = "UTC"  # of times written without a zone: "UTC", "+10:00", "Australia/Hobart"
    missing_values: list[str] = []  # extra missing tokens, e.g. ["--.--"]
    image: str | None = None  # image path column; without it images are matched by time
    lat: str | None = None
    lon: str | None = None
    easting: str | None = None
    northing: str | None = None
    xy_crs: str | None = None  # EPSG of easting/northing when lat/lon are absent
    depth: str | None = None  # without it depth is unknown (NaN)
    depth_positive: Literal["down", "up"] = "down"
    depth_unit: Literal["m", "dbar"] = "m"  # dbar: sea pressure, converted (UNESCO 1983)
    altitude: str | None = None
    heading: str | None = None
    heading_unit: Literal["deg", "rad"] = "deg"
    delimiter: str = ","

    @field_validator("xy_crs")
    @classmethod
    def _xy_crs(cls, v: str | None) -> str | None:
        if v is not None:
            from .crs import CRSError, check_declared

            try:
                check_declared(v, "xy_crs")
            except CRSError as exc:
                raise ValueError(str(exc)) from None
        return v

    @model_validator(mode="after")
    def _describes_a_file(self) -> CsvColumns:
        from .readers.generic_csv import column_map  # the reader's own rules, one place

        spec = column_map(self.model_dump())  # ValueError names the key and what is expected
        self.time_unit = spec["time_unit"]
        return self


class NavSource(_Strict):
    format: Literal["oplab-camera-csv", "oplab-nav-csv", "acfr-stereo-pose", "ifdo", "csv",
                    "biigle-csv", "qgc-csv", "exif"]
    # a template with {dive}/{dive_id}, or without them one file shared by every dive (its
    # rows attributed to dives by image path or name, or by time for a vehicle series); optional
    # only for format exif (the images carry their own navigation; a path there is a glob of
    # the dive's images whose EXIF is read, by default the catalog's images)
    path: str | None = None
    columns: CsvColumns | None = None
    # exif, qgc-csv, biigle-csv: the zone of times written without one (QGroundControl writes
    # the ground station's local time); format csv has columns.timezone
    timezone: str | None = None
    yaw_unit: Literal["rad", "deg"] | None = None  # acfr-stereo-pose only (default rad)
    cameras: list[Literal["left", "right"]] | None = None  # acfr-stereo-pose only (default both)

    @field_validator("path")
    @classmethod
    def _has_dive(cls, v: str | None) -> str | None:
        if v is not None:
            _check_template(v, "path", shared_ok=True)
            _check_path_template(v, "set 'root' to a folder that holds the navigation file, "
                                 "and the path relative to it")
        return v

    @field_validator("cameras")
    @classmethod
    def _cameras(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and (not v or len(set(v)) != len(v)):
            raise ValueError("one or both of [left, right], each once")
        return v

    @property
    def shared(self) -> bool:
        """One file for every dive: the path names no dive."""
        return self.path is not None and "{dive}" not in self.path and "{dive_id}" not in self.path

    @model_validator(mode="after")
    def _options_of_their_format(self) -> NavSource:
        if self.path is None and self.format != "exif":
            raise ValueError(f"format {self.format!r} needs a 'path' (only format 'exif', which "
                             "reads the images themselves, may leave it out)")
        if self.format == "exif" and self.shared:
            raise ValueError(f"format 'exif' reads each dive's own images: a path, if given, is "
                             f"a glob of them with {{dive}} (e.g. '{{dive}}/images/*.jpg'), not "
                             f"{self.path!r}; leave it out to read the catalog's images")
        only = {"timezone": ("exif", "qgc-csv", "biigle-csv"), "yaw_unit": ("acfr-stereo-pose",),
                "cameras": ("acfr-stereo-pose",)}
        for key, fmts in only.items():
            if getattr(self, key) is not None and self.format not in fmts:
                raise ValueError(f"'{key}' is only for format {' or '.join(map(repr, fmts))}, "
                                 f"not {self.format!r}" + (" (format csv has columns.timezone)"
                                                           if key == "timezone" else ""))
        if self.timezone is not None:
            from .readers._times import parse_timezone  # the readers' own rule, one place

            parse_timezone(self.timezone)  # ValueError says what was found and what is expected
        return self

    @model_validator(mode="before")
    @classmethod
    def _no_columns_for_other_formats(cls, data: Any) -> Any:
        # said before the map itself is checked: a map under another format is the mistake
        if isinstance(data, dict) and data.get("columns") is not None and \
                data.get("format") not in (None, "csv"):
            raise ValueError(f"'columns' is only for format 'csv', not {data.get('format')!r}")
        return data

    @model_validator(mode="after")
    def _columns_only_for_csv(self) -> NavSource:
        if self.format == "csv" and self.columns is None:
            raise ValueError("format 'csv' needs a 'columns' map (time, lat/lon or easting/northing, depth)")
        if self.format != "csv" and self.columns is not None:
            raise ValueError(f"'columns' is only for format 'csv', not {self.format!r}")
        return self


# the largest pair radius: location positives farther apart than this show different seafloor
MAX_RADIUS_M = 1000.0


class PairPolicy(_Strict):
    r_loc_m: Annotated[float, _number(0, MAX_RADIUS_M, "metres", lo_open=True)] = 5.0
    r_min_m: Annotated[float, _number(0, MAX_RADIUS_M, "metres")] = 0.0
    cross_dive: bool = True
    use_depth: bool = False
    min_time_gap_s: Annotated[float, _number(0, 100 * _YEAR, "seconds",
                                             note=" (100 years)")] = 0.0
    max_neighbours: Annotated[int | None, _number(1, 100_000, whole=True, optional=True)] = None
    seed: Annotated[int, _number(0, 2**32 - 1, whole=True)] = 0

    @model_validator(mode="after")
    def _radii(self) -> PairPolicy:
        if self.r_min_m >= self.r_loc_m:
            raise ValueError(f"r_min_m ({self.r_min_m}) must be below r_loc_m ({self.r_loc_m})")
        return self


class Schedule(_Strict):
    interval_s: Annotated[float | None, _number(1, 366 * _DAY, "seconds", optional=True,
                                                note=" (a year)")] = None
    cron: str | None = None

    @model_validator(mode="after")
    def _one(self) -> Schedule:
        if (self.interval_s is None) == (self.cron is None):
            raise ValueError("give exactly one of interval_s or cron")
        return self


class NavChecks(_Strict):
    """How navigation is judged (pipeline.track): what the vehicle can do, how noisy its fixes
    are, and what to do with a dive whose navigation is degenerate."""

    # the fastest camera platform (an aerial drone) and 10 g; fix noise of the worst USBL
    max_speed_m_s: Annotated[float, _number(0, 100, "m/s", lo_open=True)] = 3.0
    max_accel_m_s2: Annotated[float, _number(0, 100, "m/s^2", lo_open=True)] = 1.0
    position_noise_m: Annotated[float, _number(0, 1000, "metres")] = 2.0
    # degenerate navigation (a track that does not move, a frozen fix, depths above the
    # surface, altitudes out of range): warn in the summary, or quarantine the dive
    degenerate: Literal["warn", "quarantine"] = "warn"


def _seconds(hi: float, note: str = "") -> Any:
    """A number of seconds (or seconds per image): finite, above 0 and at most ``hi``; not a
    string or a bool."""
    return Annotated[float, _number(0, hi, "seconds", lo_open=True, note=note)]


class DaskSettings(_Strict):
    """Where the flow's per-dive ingest runs, and how long it waits for that cluster.

    Every wait is bounded, so a lost or hung cluster fails the run with a message instead of
    leaving it running: connecting to an existing scheduler (handshake and first answer) within
    ``connect_timeout_s``; having no worker for ``worker_wait_s`` (before the first dive starts
    or after all workers are lost); and each attempt at a dive's ingest within
    ``max(min_dive_timeout_s, images in the dive x seconds_per_image)`` (the per-image cost
    raised by what finished dives measured; flows.build_pairs has the whole formula).
    """

    address: str | None = None  # an existing scheduler, e.g. tcp://10.0.0.5:8786
    # local cluster only
    n_workers: Annotated[int | None, _number(1, 1024, whole=True, optional=True)] = None
    # connect + handshake + first answer of the scheduler
    connect_timeout_s: _seconds(3600, " (an hour)") = 30.0
    worker_wait_s: _seconds(7 * _DAY, " (a week)") = 60.0  # the longest with no worker
    seconds_per_image: _seconds(3600, " (an hour)") = 0.5  # assumed ingest cost, per dive bound
    min_dive_timeout_s: _seconds(7 * _DAY, " (a week)") = 120.0  # the floor of each dive's bound


MAX_CLUSTERS = 1000  # habitat classes of one site: far fewer in any real survey


class MappingSettings(_Strict):
    """The habitat map of the site (flows.map_habitats): the encoder checkpoint to embed the
    published images with, optional labels, the number of clusters and where to compute."""

    # last.pt of a training run; relative to the catalog file. None: the site has no encoder
    # yet; a map run then says so and maps nothing (a run may name one: `checkpoint` parameter)
    checkpoint: Path | None = None
    labels: Path | None = None  # labels (CSV or an annotation export); relative to the catalog file
    k: Literal["auto"] | Annotated[int, Field(ge=2, le=MAX_CLUSTERS, strict=True)] = "auto"
    device: Literal["cpu", "cuda", "auto"] | None = None  # None/auto: cuda when available
    # the labelling list also exported for these annotation tools (ssl.habitats --export)
    export: list[Literal["biigle", "coralnet", "ifdo"]] = Field(default_factory=list)

    @field_validator("k", mode="before")
    @classmethod
    def _k(cls, v: Any) -> Any:
        if v == "auto" or (isinstance(v, int) and not isinstance(v, bool)
                           and 2 <= v <= MAX_CLUSTERS):
            return v
        raise ValueError(f"'auto' or a whole number of clusters, at least 2 and at most "
                         f"{MAX_CLUSTERS} (e.g. 6)")


class NotifySettings(_Strict):
    """Where failed, crashed and stuck runs of the site's deployments are reported."""

    webhook: str  # an http(s) URL that receives a JSON POST {"subject", "body"}
    running_limit_s: _seconds(30 * _DAY, " (30 days)") = 6 * 3600.0  # longer: 'stuck'

    @field_validator("webhook")
    @classmethod
    def _url(cls, v: str) -> str:
        from urllib.parse import urlparse

        u = urlparse(v)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError(f"an http:// or https:// URL with a host (e.g. "
                             f"https://hooks.example.org/seafloor), got {v!r}")
        return v


TRAIN_SIDE = (16, 4096)  # pixels of a side of the training shards


class Catalog(_Strict):
    name: str
    root: Path
    dives: str = "dives/*"
    nav: list[NavSource] = Field(min_length=1)
    images: str | None = "{dive}/images/*.jpg"  # null: navigation-only (no image files)
    labels: str | None = None
    # an extra pattern for capture times in image names, tried before the built-in ones:
    # strftime-style ("%Y_%m_%d_%H-%M-%S") or a regex with named groups (?P<year>...)
    image_time: str | None = None
    validate_images: Literal["header", "decode"] = Field("decode", alias="validate")
    max_interp_gap_s: Annotated[float, _number(0, 3600, "seconds", lo_open=True,
                                               note=" (an hour)")] = 2.0
    nav_checks: NavChecks = NavChecks()
    crs: str = "auto"
    # use an explicit crs even far from the site, and a csv source's xy_crs even where the
    # coordinates do not fit it (both refused otherwise)
    crs_force: bool = False
    pairs: PairPolicy = PairPolicy()
    train_size: tuple[Annotated[int, _number(*TRAIN_SIDE, "pixels", whole=True)],
                      Annotated[int, _number(*TRAIN_SIDE, "pixels", whole=True)]] = (192, 256)
    output: Path
    schedule: Schedule | None = None
    dask: DaskSettings | None = None
    mapping: MappingSettings | None = None  # habitat map deployment (map-habitats/<name>)
    notify: NotifySettings | None = None  # failure notifications of the site's deployments

    # set by load_catalog
    source: Path | None = Field(default=None, exclude=True)
    sha256: str | None = Field(default=None, exclude=True)

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @field_validator("crs")
    @classmethod
    def _crs(cls, v: str) -> str:
        if v != "auto" and not re.fullmatch(r"EPSG:\d{4,5}", v):
            raise ValueError(f"crs must be 'auto' or 'EPSG:<code>' (e.g. EPSG:32755), got {v!r}")
        return v

    @field_validator("train_size", mode="before")
    @classmethod
    def _train_size(cls, v: Any) -> Any:
        if not (isinstance(v, list | tuple) and len(v) == 2):
            raise ValueError("[height, width] in pixels, 2 items such as [192, 256]")
        return v

    @field_validator("images")
    @classmethod
    def _images(cls, v: str | None) -> str | None:
        if v is not None:
            _check_template(v, "images")
            _check_path_template(v, "write the template from the dive folder down, e.g. "
                                 "'{dive}/images/*.jpg', and set 'root' to a folder that holds "
                                 "every dive")
        return v

    @field_validator("dives")
    @classmethod
    def _dives(cls, v: str) -> str:
        _check_path_template(v, "set 'root' to a folder that holds every dive folder, and "
                             "'dives' to a glob of them relative to it (e.g. \"dives/*\")")
        return v

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: str | None) -> str | None:
        if v is not None:
            _check_path_template(v, "put the labels file inside the root and name it "
                                 "relative to the root")
        return v

    @field_validator("image_time")
    @classmethod
    def _image_time(cls, v: str | None) -> str | None:
        if v is not None:
            from .readers.imagetime import compile_pattern

            compile_pattern(v)  # ValueError says what is wrong with the pattern
        return v

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", v):
            raise ValueError(f"name {v!r} must be letters, digits, '_', '-' or '.' (it names a deployment)")
        return v


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def load_catalog(path: str | Path) -> Catalog:
    """Read and validate a catalog; relative paths are resolved against the catalog's folder."""
    path = Path(path)
    if path.is_dir():
        found = sorted(p for p in [*path.glob("*.yaml"), *path.glob("*.yml")] if p.is_file())
        hint = (f"; it holds {found[0]}: pass that" if len(found) == 1 else
                f"; it holds {', '.join(map(str, found[:5]))}{', ...' if len(found) > 5 else ''}"
                ": pass one of them" if found else "")
        raise CatalogError(f"{path} is a folder; expected a catalog file (YAML){hint}")
    if not path.is_file():
        raise CatalogError(f"{path}: catalog file not found")
    size = path.stat().st_size
    if size > CATALOG_MAX_BYTES:
        raise CatalogError(f"{path}: {size} bytes; expected a catalog file (YAML) of at most "
                           f"{CATALOG_MAX_BYTES} bytes (a catalog is a page of keys): pass the "
                           "site's catalog.yaml, not a data file")
    raw_bytes = path.read_bytes()
    if b"\x00" in raw_bytes[:4096]:
        raise CatalogError(f"{path}: binary content (not text); expected a catalog file (YAML), "
                           "e.g. the catalog.yaml of a site folder")
    try:
        raw = load_yaml_bounded(raw_bytes, max_bytes=CATALOG_MAX_BYTES,
                                max_aliases=CATALOG_MAX_ALIASES, max_depth=32) or {}
    except YamlRefused as exc:
        raise CatalogError(f"{path}: refused before reading its keys: found {exc}; expected a "
                           "catalog of plain keys and values (an alias or two for a repeated "
                           "value at most): write each value out") from None
    except yaml.YAMLError as exc:
        raise CatalogError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise CatalogError(f"{path}: expected a mapping of keys at the top level, found {type(raw).__name__}")
    raw.setdefault("name", path.stem)
    try:
        cat = Catalog.model_validate(raw)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"]) or "(top level)"
            found = "nothing (missing)" if err["type"] == "missing" else _describe(err.get("input"))
            if err["type"] == "extra_forbidden":
                lines.append(f"{path}: key '{key}' (found {found}) is not a catalog key; check "
                             "its spelling against the catalog keys (README, Catalogs)")
                continue
            expected = err["msg"].removeprefix("Value error, ").removeprefix("Input should be ")
            lines.append(f"{path}: key '{key}': found {found}; expected {expected}")
        raise CatalogError("\n".join(lines)) from None
    base = path.parent.resolve()
    cat.root = (base / cat.root).resolve()
    cat.output = (base / cat.output).resolve()
    if cat.mapping is not None:
        if cat.mapping.checkpoint is not None:
            cat.mapping.checkpoint = (base / cat.mapping.checkpoint).resolve()
        if cat.mapping.labels is not None:
            cat.mapping.labels = (base / cat.mapping.labels).resolve()
    cat.source = path.resolve()
    cat.sha256 = hashlib.sha256(raw_bytes).hexdigest()
    return cat


def find_catalog(name_or_path: str | Path, catalogs_dir: str | Path = "catalogs") -> Path:
    """A catalog given by name (``seafloor`` -> catalogs/seafloor.yaml) or by path."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        return p
    candidate = Path(catalogs_dir) / f"{name_or_path}.yaml"
    if candidate.exists():
        return candidate
    known = sorted(q.stem for q in Path(catalogs_dir).glob("*.yaml"))
    raise CatalogError(f"no catalog named {name_or_path!r} in {catalogs_dir}/ (known: {', '.join(known) or 'none'})")
