"""Catalogs: one YAML per site/campaign, validated with pydantic.

Every error names the file, the key, what was found and what was expected.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

NAV_FORMATS = ("oplab-camera-csv", "oplab-nav-csv", "acfr-stereo-pose", "ifdo", "csv",
               "biigle-csv", "qgc-csv", "exif")


class CatalogError(ValueError):
    """A catalog that cannot be used; the message says where and what to do."""


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
            parts = v.replace("\\", "/").split("/")
            if v.startswith(("/", "\\")) or ":" in v[:3] or ".." in parts:
                raise ValueError(f"a path inside the root, relative to it; {v!r} leads outside "
                                 "it (the pipeline never reads outside the root): set 'root' to "
                                 "a folder that holds the navigation file")
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


class PairPolicy(_Strict):
    r_loc_m: Annotated[float, Field(gt=0)] = 5.0
    r_min_m: Annotated[float, Field(ge=0)] = 0.0
    cross_dive: bool = True
    use_depth: bool = False
    min_time_gap_s: Annotated[float, Field(ge=0)] = 0.0
    max_neighbours: Annotated[int, Field(gt=0)] | None = None
    seed: int = 0

    @model_validator(mode="after")
    def _radii(self) -> PairPolicy:
        if self.r_min_m >= self.r_loc_m:
            raise ValueError(f"r_min_m ({self.r_min_m}) must be below r_loc_m ({self.r_loc_m})")
        return self


class Schedule(_Strict):
    interval_s: Annotated[float, Field(gt=0)] | None = None
    cron: str | None = None

    @model_validator(mode="after")
    def _one(self) -> Schedule:
        if (self.interval_s is None) == (self.cron is None):
            raise ValueError("give exactly one of interval_s or cron")
        return self


class NavChecks(_Strict):
    """How navigation is judged (pipeline.track): what the vehicle can do, how noisy its fixes
    are, and what to do with a dive whose navigation is degenerate."""

    max_speed_m_s: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 3.0
    max_accel_m_s2: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 1.0
    position_noise_m: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 2.0
    # degenerate navigation (a track that does not move, a frozen fix, depths above the
    # surface, altitudes out of range): warn in the summary, or quarantine the dive
    degenerate: Literal["warn", "quarantine"] = "warn"


# a number of seconds (or seconds per image): a finite positive number, not a string or a bool
_Seconds = Annotated[float, Field(gt=0, allow_inf_nan=False, strict=True)]


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
    n_workers: Annotated[int, Field(gt=0)] | None = None  # local cluster only
    connect_timeout_s: _Seconds = 30.0  # connect + handshake + first answer of the scheduler
    worker_wait_s: _Seconds = 60.0  # the longest the cluster may have no worker
    seconds_per_image: _Seconds = 0.5  # assumed ingest cost, for each dive's bound
    min_dive_timeout_s: _Seconds = 120.0  # the floor of each dive's bound


class MappingSettings(_Strict):
    """The habitat map of the site (flows.map_habitats): the encoder checkpoint to embed the
    published images with, optional labels, the number of clusters and where to compute."""

    # last.pt of a training run; relative to the catalog file. None: the site has no encoder
    # yet; a map run then says so and maps nothing (a run may name one: `checkpoint` parameter)
    checkpoint: Path | None = None
    labels: Path | None = None  # labels (CSV or an annotation export); relative to the catalog file
    k: Literal["auto"] | Annotated[int, Field(ge=2, strict=True)] = "auto"
    device: Literal["cpu", "cuda", "auto"] | None = None  # None/auto: cuda when available
    # the labelling list also exported for these annotation tools (ssl.habitats --export)
    export: list[Literal["biigle", "coralnet", "ifdo"]] = Field(default_factory=list)

    @field_validator("k", mode="before")
    @classmethod
    def _k(cls, v: Any) -> Any:
        if v == "auto" or (isinstance(v, int) and not isinstance(v, bool) and v >= 2):
            return v
        raise ValueError("'auto' or a whole number of clusters, 2 or more (e.g. 6)")


class NotifySettings(_Strict):
    """Where failed, crashed and stuck runs of the site's deployments are reported."""

    webhook: str  # an http(s) URL that receives a JSON POST {"subject", "body"}
    running_limit_s: _Seconds = 6 * 3600.0  # a run Running longer than this is 'stuck'

    @field_validator("webhook")
    @classmethod
    def _url(cls, v: str) -> str:
        from urllib.parse import urlparse

        u = urlparse(v)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError(f"an http:// or https:// URL with a host (e.g. "
                             f"https://hooks.example.org/seafloor), got {v!r}")
        return v


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
    max_interp_gap_s: Annotated[float, Field(gt=0)] = 2.0
    nav_checks: NavChecks = NavChecks()
    crs: str = "auto"
    crs_force: bool = False  # use an explicit crs even far from the site (refused otherwise)
    pairs: PairPolicy = PairPolicy()
    train_size: tuple[Annotated[int, Field(gt=0)], Annotated[int, Field(gt=0)]] = (192, 256)
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
    raw_bytes = path.read_bytes()
    if b"\x00" in raw_bytes[:4096]:
        raise CatalogError(f"{path}: binary content (not text); expected a catalog file (YAML), "
                           "e.g. the catalog.yaml of a site folder")
    try:
        raw = yaml.safe_load(raw_bytes) or {}
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
