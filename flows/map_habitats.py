"""Flow ``map-habitats``: one catalog's published manifests -> a published habitat map.

    embed the published images with the catalog's checkpoint     python -m ssl.embed
    cluster them (and, with labels, predict habitats)            python -m ssl.habitats
    publish the map beside the manifests (maps/current)          pipeline.maps.publish_map
    artifacts: the cluster map and a summary

Both commands run as subprocess tasks (their output in the run's log) into a new map folder
``<output>/maps/<n>/``; only a complete folder is published, with one atomic switch of
``maps/current``. Where the commands offer it, the previous map is reused: ``ssl.embed
--reuse`` (embeddings of unchanged images) and ``ssl.habitats --previous`` (clusters kept
stable across re-indexing); a command that does not list the flag in its --help is run without.

The deployment ``map-habitats/<catalog>`` exists for a catalog with a ``mapping:`` block; it is
triggered by the event the build-pairs flow emits when it publishes new manifests
(flows.events.MANIFESTS_PUBLISHED). Domain logic stays in pipeline/ and ssl/: this module only
runs the commands, publishes through pipeline.maps and records artifacts.
"""

from __future__ import annotations

import base64
import functools
import os
import subprocess
import sys
import time
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_image_artifact, create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.states import Failed

from pipeline import build as pb
from pipeline import maps as pm
from pipeline.catalog import Catalog
from pipeline.output import read_json

from . import lifeline
from .build_pairs import resolve_catalog
from .names import MAP_FLOW_NAME

REPO = Path(__file__).resolve().parents[1]
TAIL_LINES = 20  # lines of a failed command's output quoted in the run's message


class MappingError(ValueError):
    """The catalog cannot be mapped (no mapping block, no checkpoint, a command failed)."""


@functools.cache
def offers(module: str, flag: str) -> bool:
    """Whether `python -m module --help` lists `flag` (flags other engineers add over time)."""
    try:
        res = subprocess.run([sys.executable, "-m", module, "--help"], cwd=REPO,
                             capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return res.returncode == 0 and flag in res.stdout.replace(",", " ").split()


def embed_command(cat: Catalog, pairs: Path, out: Path, previous: pm.PublishedMap | None,
                  checkpoint: Path | None = None) -> list:
    m = cat.mapping
    cmd = [sys.executable, "-m", "ssl.embed", "--checkpoint", str(checkpoint or m.checkpoint),
           "--manifest", str(pairs), "--out", str(out)]
    if m.device in ("cpu", "cuda"):
        cmd += ["--device", m.device]
    if previous is not None and previous.embeddings.is_file() and offers("ssl.embed", "--reuse"):
        cmd += ["--reuse", str(previous.embeddings)]
    return cmd


def habitats_command(cat: Catalog, pairs: Path, embeddings: Path, out: Path,
                     previous: pm.PublishedMap | None) -> list:
    m = cat.mapping
    cmd = [sys.executable, "-m", "ssl.habitats", "--embeddings", str(embeddings),
           "--manifest", str(pairs), "--k", str(m.k), "--out", str(out)]
    if m.labels is not None:
        cmd += ["--labels", str(m.labels)]
    if m.export:
        cmd += ["--export", *m.export]
    if previous is not None and previous.habitats.is_dir() and \
            offers("ssl.habitats", "--previous"):
        cmd += ["--previous", str(previous.habitats)]
    return cmd


@task(name="command", task_run_name="{name}", cache_policy=NO_CACHE)
def command_task(name: str, cmd: list[str]) -> float:
    """Run one command, its output line by line into the run's log; MappingError with the
    last lines when it fails."""
    logger = get_run_logger()
    logger.info("%s: %s", name, " ".join(cmd[1:]))
    t0 = time.perf_counter()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    tail: list[str] = []
    with subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, errors="replace") as proc:
        for line in proc.stdout:
            line = line.rstrip()
            if line:
                logger.info("%s: %s", name, line)
                tail = [*tail[-(TAIL_LINES - 1):], line]
        rc = proc.wait()
    if rc != 0:
        raise MappingError(f"{name} failed (exit status {rc}): " + " | ".join(tail[-5:]))
    return time.perf_counter() - t0


@task(name="map-artifacts", cache_policy=NO_CACHE)
def artifacts_task(cat: Catalog, published: pm.PublishedMap) -> None:
    key = cat.name.lower().replace("_", "-").replace(".", "-")
    rec = published.record
    png = published.habitats / "cluster_map.png"
    rows = [("catalog", cat.name), ("map", f"maps/{published.folder.name}"),
            ("manifests generation", rec.get("generation")), ("images", rec.get("images")),
            ("k", rec.get("k")), ("k chosen by", rec.get("criterion")),
            ("labels", rec.get("labels") or "none"),
            ("reused", ", ".join(rec.get("reused", [])) or "nothing"),
            ("seconds", rec.get("seconds"))]
    md = [f"# Habitat map: {cat.name}", "", "| | |", "|---|---|",
          *[f"| {k} | {v} |" for k, v in rows], "",
          f"Published in `{published.folder}` (also `maps/current`): `cluster_map.png`, "
          "`clusters.parquet`/`clusters.gpkg`, `labelling_list.csv`"
          + (", `predictions.gpkg`" if rec.get("labels") else "") + "."]
    create_markdown_artifact(markdown="\n".join(md), key=f"{key}-habitat-summary",
                             description=f"map-habitats summary for {cat.name}")
    if png.is_file():
        create_image_artifact(
            image_url="data:image/png;base64," + base64.b64encode(png.read_bytes()).decode(),
            key=f"{key}-habitat-map", description="the survey coloured by habitat cluster")


class NoEncoder(Exception):
    """The site names no encoder yet: nothing to map (not a failure)."""


def map_catalog(cat: Catalog, logger, checkpoint: Path | None = None) -> pm.PublishedMap:
    """Embed, cluster and publish; MappingError / USER_ERRORS for what the user must fix,
    NoEncoder when neither the catalog nor ``checkpoint`` names an encoder."""
    m = cat.mapping
    if m is None:
        raise MappingError(f"{cat.source}: no 'mapping' block (checkpoint, k, ...); add one to "
                           "map the site's habitats (README, Catalog reference)")
    checkpoint = Path(checkpoint).resolve() if checkpoint else m.checkpoint
    if checkpoint is None:
        raise NoEncoder(f"{cat.name}: no encoder yet (key 'mapping.checkpoint' of "
                        f"{cat.source} is not set): nothing mapped; train one (python -m "
                        "ssl.train) and name its last.pt there, or run this deployment with "
                        "the parameter checkpoint")
    where = "the parameter checkpoint" if checkpoint != m.checkpoint \
        else f"{cat.source}: key 'mapping.checkpoint'"
    if not checkpoint.is_file():
        raise MappingError(f"{where}: {checkpoint} not found; expected the last.pt of a "
                           "training run (python -m ssl.train)")
    if m.labels is not None and not m.labels.is_file():
        raise MappingError(f"{cat.source}: key 'mapping.labels': {m.labels} not found")
    out = cat.output
    if not (out / "pairs.parquet").exists():
        raise MappingError(f"{out} holds no published manifests (pairs.parquet) of {cat.name} "
                           "yet; run its build-pairs deployment first")
    lk = pm.lock_maps(out)
    try:
        folder = pm.begin_map(out, cat.name)
        # the published generation, resolved now: a build publishing meanwhile changes nothing
        pairs = (out / "pairs.parquet").resolve()
        report = read_json(pairs.parent / "report.json") or {}
        previous = pm.current_map(out)
        embeddings = folder / pm.EMBEDDINGS
        try:
            embed_cmd = embed_command(cat, pairs, embeddings, previous, checkpoint)
            secs = {"embed": command_task("ssl.embed", embed_cmd)}
            hab_cmd = habitats_command(cat, pairs, embeddings, folder / pm.HABITATS, previous)
            secs["habitats"] = command_task("ssl.habitats", hab_cmd)
        except BaseException:
            pm.discard_map(folder)
            raise
        hab = read_json(folder / pm.HABITATS / "habitats.json") or {}
        record = {"catalog": cat.name, "generation": pairs.parent.name,
                  "manifests_created_utc": report.get("created_utc"),
                  "checkpoint": str(checkpoint), "labels": str(m.labels) if m.labels else None,
                  "k": hab.get("k", m.k), "k_setting": m.k, "criterion": hab.get("criterion"),
                  "images": hab.get("n_images"),
                  "previous": previous.folder.name if previous else None,
                  "reused": [f for f, on in (("embeddings", "--reuse" in embed_cmd),
                                             ("clusters", "--previous" in hab_cmd)) if on],
                  "seconds": {k: round(v, 1) for k, v in secs.items()}}
        published = pm.publish_map(out, folder, record)
        logger.info("%s: habitat map published: %s (k=%s, %s images, from manifests %s)",
                    cat.name, published.folder, record["k"], record["images"],
                    record["generation"])
        return published
    finally:
        lk.release()


@flow(name=MAP_FLOW_NAME, log_prints=True)
def map_habitats(catalog: str = "seafloor", checkpoint: str | None = None) -> dict:
    """Published manifests of a catalog -> a habitat map published in <output>/maps/current.

    catalog: a name in catalogs/ (the deployment's own) or a path to a catalog YAML; its
    `mapping:` block says which checkpoint, labels, k and device; ``checkpoint`` (a last.pt)
    overrides the catalog's. A site with no encoder yet completes with a note and no map. A
    user's mistake (no mapping, a missing checkpoint, no manifests yet, a command that fails)
    fails the run with one message."""
    logger = get_run_logger()
    lifeline.start(logger)
    try:
        cat = resolve_catalog(catalog)
        published = map_catalog(cat, logger, Path(checkpoint) if checkpoint else None)
    except NoEncoder as exc:
        logger.warning("%s", exc)
        return {"catalog": catalog, "map": None, "note": str(exc)}
    except (*pb.USER_ERRORS, MappingError, pm.MapLocked) as exc:
        logger.error("%s", exc)
        return Failed(message=str(exc))
    artifacts_task(cat, published)
    return {"catalog": cat.name, "map": str(published.folder), **{
        k: published.record.get(k) for k in ("generation", "k", "images", "created_utc")}}
