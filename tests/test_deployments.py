"""Deployments come from the catalogs folder (no server needed), and the flow's retry rule."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from flows import deployments
from flows.build_pairs import _retry_on_io_error, catalogs_dir, resolve_catalog
from pipeline.catalog import CatalogError

REPO = Path(__file__).resolve().parents[1]


def copy_catalog(folder: Path, stem: str, **changes) -> Path:
    cat = yaml.safe_load((REPO / "catalogs" / "seafloor.yaml").read_text())
    cat.pop("name", None)  # the file stem names it
    cat.update(root=str(REPO / "data" / "seafloor"), output=str(folder / f"{stem}-out"), **changes)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{stem}.yaml"
    path.write_text(yaml.safe_dump(cat))
    return path


def test_a_new_catalog_file_is_a_new_deployment(tmp_path):
    copy_catalog(tmp_path, "reef-2024", schedule={"interval_s": 600})
    copy_catalog(tmp_path, "canyon", schedule={"cron": "0 3 * * *"})
    deps = {d.name: d for d in deployments.runner_deployments(tmp_path)}
    assert set(deps) == {"reef-2024", "canyon"}
    reef, canyon = deps["reef-2024"], deps["canyon"]
    assert reef.parameters == {"catalog": "reef-2024"}
    assert reef.schedules[0].schedule.interval.total_seconds() == 600
    assert canyon.schedules[0].schedule.cron == "0 3 * * *"
    for d in deps.values():
        assert d.entrypoint == deployments.ENTRYPOINT
        assert d.concurrency_limit == 1
        assert d.concurrency_options.collision_strategy.value == "CANCEL_NEW"
    text = deployments.prefect_yaml(tmp_path)
    every = yaml.safe_load(text)["deployments"]
    spec = {d["name"]: d for d in every if d["entrypoint"] == deployments.ENTRYPOINT}
    assert spec["canyon"]["schedules"] == [{"cron": "0 3 * * *"}]
    assert spec["reef-2024"]["concurrency_limit"] == {"limit": 1,
                                                      "collision_strategy": "CANCEL_NEW"}
    # the copied demo catalog has a mapping block: each site also has its map deployment,
    # triggered by its own site's published manifests, never scheduled
    maps = {d["name"]: d for d in every if d["entrypoint"] == deployments.MAP_ENTRYPOINT}
    assert set(maps) == {"reef-2024", "canyon"} and len(every) == 4
    for name, d in maps.items():
        assert d["parameters"] == {"catalog": name} and "schedules" not in d
        (trigger,) = d["triggers"]
        assert trigger["match"] == {"prefect.resource.id": f"seafloor.catalog.{name}"}
        assert trigger["expect"] == ["seafloor.manifests.published"]
        assert trigger["posture"] == "Reactive" and trigger["parameters"] == {"catalog": name}


def test_committed_prefect_yaml_matches_the_catalogs():
    assert (REPO / "prefect.yaml").read_text() == deployments.prefect_yaml(REPO / "catalogs"), \
        "run: python -m flows.deployments --write"
    assert deployments.main(["--check"]) == 0


def test_catalog_names_resolve_in_the_configured_folder(tmp_path, monkeypatch):
    assert catalogs_dir() == REPO / "catalogs"
    copy_catalog(tmp_path, "elsewhere")
    monkeypatch.setenv("SEAFLOOR_CATALOGS", str(tmp_path))
    assert resolve_catalog("elsewhere").name == "elsewhere"
    with pytest.raises(Exception, match="no catalog named 'seafloor'.*known: elsewhere"):
        resolve_catalog("seafloor")
    shutil.rmtree(tmp_path)
    with pytest.raises(CatalogError, match="no catalog files"):
        deployments.catalog_files(tmp_path)


def test_ingest_retries_only_io_errors():
    from prefect.states import Completed, Failed

    assert _retry_on_io_error(None, None, Failed(data=OSError("stale NFS handle")))
    assert _retry_on_io_error(None, None, Failed(data=TimeoutError("share timed out")))
    assert not _retry_on_io_error(None, None, Failed(data=ValueError("bad navigation row")))
    assert not _retry_on_io_error(None, None, Completed(data=1))
