"""Names the flows, serve, worker and status agree on, in a module light enough to import from a
command that must answer fast (it loads neither Prefect's engine nor Dask nor the pipeline).

Catalog names are looked up in one folder: $SEAFLOOR_CATALOGS (serve sets it for its runs),
else the repository's catalogs/. Each catalog file there is one deployment of the flow."""

from __future__ import annotations

import os
from pathlib import Path

from pipeline.catalog import CatalogError

FLOW_NAME = "build-pairs"
MAP_FLOW_NAME = "map-habitats"  # a deployment per catalog with a `mapping:` block
FLOW_NAMES = (FLOW_NAME, MAP_FLOW_NAME)
# emitted by build-pairs when it publishes a new generation; it triggers map-habitats
MANIFESTS_PUBLISHED = "seafloor.manifests.published"
CATALOGS_ENV = "SEAFLOOR_CATALOGS"


def catalogs_dir() -> Path:
    env = os.environ.get(CATALOGS_ENV)
    return Path(env) if env else Path(__file__).resolve().parents[1] / "catalogs"


def catalog_files(folder: Path | None = None) -> list[Path]:
    """The catalog files (*.yaml, *.yml) of `folder` (default catalogs_dir()), sorted."""
    folder = Path(folder) if folder else catalogs_dir()
    files = sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")])
    if not files:
        raise CatalogError(f"{folder}: no catalog files (*.yaml) there; expected one YAML per "
                           "site (see catalogs/seafloor.yaml), or pass --catalogs DIR")
    return files


def catalog_resource(name: str) -> str:
    """The resource id events about a catalog's published data carry."""
    return f"seafloor.catalog.{name}"
