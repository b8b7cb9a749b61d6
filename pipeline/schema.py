"""The manifest contract as the pipeline sees it: schemas, file names, metadata keys, versions.

They are defined once, in ``ssl/contract.py``, because the trainer reads the same files and
must not import ``pipeline`` (nor the pipeline import torch). This module loads that file, as
``seafloor_ssl.contract`` where the project is installed (the second import name of ``ssl/``,
which never collides with the standard library's TLS module), or straight from the checkout's
``ssl/contract.py`` where it is not, and re-exports its names, so ``schema.X`` is the
contract's ``X``.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType


def load_trainer_module(name: str) -> ModuleType:
    """``ssl/<name>.py`` (a module of the trainer's side that uses no torch: the contract, the
    habitat palette) as ``seafloor_ssl.<name>`` where the project is installed, else straight
    from the checkout under a private name."""
    try:
        module = importlib.import_module(f"seafloor_ssl.{name}")
    except ModuleNotFoundError as exc:
        if exc.name not in ("seafloor_ssl", f"seafloor_ssl.{name}"):
            raise  # the module itself misses a dependency: that is the error to see
    else:
        return module
    private = f"_seafloor_pipeline_{name}"
    if private in sys.modules:
        return sys.modules[private]
    path = Path(__file__).resolve().parents[1] / "ssl" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(private, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[private] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(private, None)
        raise
    return module


contract = load_trainer_module("contract")

SCHEMA_VERSION = contract.SCHEMA_VERSION
BUILDER_VERSION = contract.BUILDER_VERSION
BUILDER_FOR_SCHEMA = contract.BUILDER_FOR_SCHEMA

LOCATIONS_FILE = contract.LOCATIONS_FILE
PAIRS_FILE = contract.PAIRS_FILE
QUARANTINE_FILE = contract.QUARANTINE_FILE
IMAGES_DIR = contract.IMAGES_DIR
shard_name = contract.shard_name
store_name = contract.store_name

LOCATIONS = contract.LOCATIONS
BBOX_TYPE = contract.BBOX_TYPE
GEOMETRY_COLUMN = contract.GEOMETRY_COLUMN
BBOX_COLUMN = contract.BBOX_COLUMN
geoparquet_points = contract.geoparquet_points
PAIRS = contract.PAIRS
QUARANTINE = contract.QUARANTINE
IMAGE_SHARD = contract.IMAGE_SHARD
IMAGE_STORE = contract.IMAGE_STORE

META_SCHEMA_VERSION = contract.META_SCHEMA_VERSION
META_CATALOG = contract.META_CATALOG
META_CATALOG_SHA256 = contract.META_CATALOG_SHA256
META_CRS = contract.META_CRS
META_CRS_WKT = contract.META_CRS_WKT
META_BUILDER = contract.META_BUILDER
META_CREATED = contract.META_CREATED
META_COUNTS = contract.META_COUNTS
META_PAIR_POLICY = contract.META_PAIR_POLICY
META_LOCATIONS_SHA256 = contract.META_LOCATIONS_SHA256
META_LOCATIONS_PATH = contract.META_LOCATIONS_PATH
META_DATASET = contract.META_DATASET
META_IMAGE_VALIDATION = contract.META_IMAGE_VALIDATION
PAIRS_REQUIRED_META = contract.PAIRS_REQUIRED_META

schema_problem = contract.schema_problem
shard_digest = contract.shard_digest
dataset_identity = contract.dataset_identity
identity_changes = contract.identity_changes
