"""The habitat map follows re-indexing, and failures are notified: a real Prefect server, a real
`python -m flows.serve`, the build-pairs event triggering map-habitats, and a failed build
reaching a webhook receiver on 127.0.0.1 through the catalog's notification automation."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from prefect_stack import (
    REPO,
    copy_dive,
    make_survey,
    prefect_stack,
    serving,
    site_with,
    state_name,
    wait_for,
    write_catalog,
)

from flows import deployments, map_habitats, notify
from flows.map_habitats import offers
from flows.server import wait_for_deployment
from pipeline.build import build
from pipeline.catalog import CatalogError, load_catalog

pytestmark = pytest.mark.slow

SMALL = ["--backbone", "tiny", "--image-size", "32", "--batch-size", "8", "--workers", "0",
         "--device", "cpu", "--objective", "simclr", "--steps", "2"]


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return make_survey(tmp_path_factory.mktemp("src") / "site", dives=2, images_per_dive=20)


@pytest.fixture(scope="module")
def checkpoint(source, tmp_path_factory) -> Path:
    """A two-step tiny encoder, trained on the survey built apart from the served output."""
    from seafloor_ssl.training.run import build_parser, train

    build(load_catalog(source / "catalog.yaml"), workers=2, log=lambda *_: None)
    out = tmp_path_factory.mktemp("runs") / "tiny"
    train(build_parser().parse_args(["--manifest", str(source / "manifests" / "pairs.parquet"),
                                     "--out", str(out), *SMALL]))
    return out / "last.pt"


class Receiver:
    """A webhook receiver on 127.0.0.1 (free port) collecting the JSON bodies posted to it."""

    def __init__(self):
        received = self.received = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - the stdlib's name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                received.append(json.loads(body or b"{}"))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.httpd = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/hook"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def receiver():
    r = Receiver()
    yield r
    r.close()


@pytest.fixture(scope="module")
def served(source, checkpoint, receiver, tmp_path_factory):
    """One server and one serve for two catalogs: 'tsite' (mapping, first dive only) and
    'lost' (notify; its root is removed by the test that builds it)."""
    base = tmp_path_factory.mktemp("served")
    site = site_with(source, base / "site", ["dive01"])
    lost = site_with(source, base / "lost-site", ["dive01"])
    catalogs = base / "catalogs"
    # labels of the first dive only: the dive added later is predicted, never labelled
    rows = (source / "labels.csv").read_text().splitlines()
    labels = base / "labels-dive01.csv"
    labels.write_text("\n".join([rows[0], *[r for r in rows[1:] if r.startswith("dive01/")]])
                      + "\n")
    write_catalog(catalogs, "tsite", site, base / "out",
                  mapping={"checkpoint": str(checkpoint), "labels": str(labels), "k": 2,
                           "device": "cpu"},
                  notify={"webhook": receiver.url})
    write_catalog(catalogs, "lost", lost, base / "lost-out", notify={"webhook": receiver.url})
    with prefect_stack(base / "home") as stack, \
            serving(stack, catalogs, base / "serve.log") as proc:
        wait_for_deployment(stack.url, "map-habitats/tsite", proc=proc, auth=stack.auth)
        yield stack, catalogs, site, base / "out", base / "serve.log", source


def runs_of(stack, name: str) -> list:
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    with stack.client() as c:
        dep = c.read_deployment_by_name(name)
        return c.read_flow_runs(deployment_filter=DeploymentFilter(
            id=DeploymentFilterId(any_=[dep.id])), limit=50)


def automations(stack) -> list[str]:
    with stack.client() as c:
        return sorted(a.name for a in c.read_automations())


def test_new_manifests_trigger_a_published_map_that_follows_reindexing(served):
    stack, catalogs, site, out, log, source = served
    res = stack.cli("deployment", "run", "build-pairs/tsite", "--watch", timeout=300)
    assert "Completed" in res.stdout, res.stdout[-3000:]

    def finished(n):
        runs = [r for r in runs_of(stack, "map-habitats/tsite") if state_name(r) in
                ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")]
        return runs if len(runs) >= n else None

    first = wait_for(lambda: finished(1), 180, "the triggered map-habitats run")[0]
    assert state_name(first) == "COMPLETED", (first.state.message,
                                              log.read_text(errors="replace")[-4000:])
    assert first.parameters == {"catalog": "tsite"}
    current = out / "maps" / "current"
    rec = json.loads((current / "map.json").read_text())
    gen1 = rec["generation"]
    assert rec["k"] == 2 and rec["images"] == 20
    assert (out / "pairs.parquet").resolve().parent.name == gen1
    assert (current / "habitats" / "cluster_map.png").read_bytes()[:4] == b"\x89PNG"
    arts = {a.key: a for a in stack.artifacts(first.id)}
    assert arts["tsite-habitat-map"].type == "image"
    assert arts["tsite-habitat-map"].data.startswith("data:image/png;base64,")
    assert "k | 2" in arts["tsite-habitat-summary"].data

    # nothing new: no event, no map run
    stack.cli("deployment", "run", "build-pairs/tsite", "--watch", timeout=300)
    # a new dive: new manifests, a new map from them, the previous map kept beside it
    copy_dive(source, site, "dive02")
    stack.cli("deployment", "run", "build-pairs/tsite", "--watch", timeout=300)
    second = [r for r in wait_for(lambda: finished(2), 180, "the second map run")
              if r.id != first.id]
    assert len(second) == 1 and state_name(second[0]) == "COMPLETED", second[0].state.message
    rec2 = json.loads((current / "map.json").read_text())
    assert rec2["generation"] != gen1 and rec2["images"] == 40 and rec2["previous"] == rec["map"]
    # the previous map is passed on where the commands offer it
    assert rec["reused"] == [] and rec2["reused"] == [
        what for what, module, flag in (("embeddings", "ssl.embed", "--reuse"),
                                        ("clusters", "ssl.habitats", "--previous"))
        if offers(module, flag)]
    assert sorted(p.name for p in (out / "maps").iterdir() if p.name.isdigit()) == \
        sorted([rec["map"], rec2["map"]])
    # the unchanged first dive was not embedded again, the new one was
    if "embeddings" in rec2["reused"]:
        meta = pq.read_schema(current / "embeddings.parquet").metadata
        reuse = json.loads(meta[b"reuse"])
        assert (reuse["reused"], reuse["embedded"], reuse["why_none"]) == (20, 20, None), reuse
    # the new dive is in the predicted map without a label of its own
    pred = pq.read_table(current / "habitats" / "predictions.parquet",
                         columns=["image_id", "label", "predicted"]).to_pydict()
    new_dive = [i for i, im in enumerate(pred["image_id"]) if im.startswith("dive02/")]
    assert len(pred["image_id"]) == 40 and len(new_dive) == 20
    assert all(pred["label"][i] is None and pred["predicted"][i] for i in new_dive)
    assert len(runs_of(stack, "map-habitats/tsite")) == 2  # none for the build without change

    # flows.status: both deployments of the catalog, the map's age
    res = subprocess.run([sys.executable, "-m", "flows.status", "--catalogs", str(catalogs),
                          "--catalog", "tsite"], cwd=REPO, env=stack.env, capture_output=True,
                         text=True, timeout=120)
    assert "build-pairs/tsite" in res.stdout and "map-habitats/tsite" in res.stdout, res.stdout
    assert "map        published" in res.stdout and f"maps/{rec2['map']}" in res.stdout
    assert "seafloor.manifests.published" in res.stdout


def test_a_failed_build_is_notified_and_automations_do_not_pile_up(served, receiver):
    stack, catalogs, site, out, log, source = served
    names = sorted(notify.automation_names("lost") + notify.automation_names("tsite"))
    # serve applies them right after registering the deployments
    wait_for(lambda: [n for n in automations(stack) if n.startswith("seafloor ")] == names, 30,
             "the notification automations")
    # applying again (as every serve and `flows.deployments --automations` do) replaces them
    res = subprocess.run([sys.executable, "-m", "flows.deployments", "--catalogs",
                          str(catalogs), "--automations"], cwd=REPO, env=stack.env,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert [n for n in automations(stack) if n.startswith("seafloor ")] == names

    lost = Path(load_catalog(catalogs / "lost.yaml").root)
    shutil.rmtree(lost)
    res = stack.cli("deployment", "run", "build-pairs/lost", "--watch", timeout=300, check=False)
    run = runs_of(stack, "build-pairs/lost")[0]
    assert state_name(run) == "FAILED", res.stdout[-2000:]
    notice = wait_for(lambda: [m for m in receiver.received if m.get("catalog") == "lost"],
                      90, "the failure notice at the webhook receiver")[0]
    assert "Failed" in notice["subject"] and run.name in notice["body"], notice
    assert "build-pairs/lost" in notice["body"] and str(lost) in notice["body"]  # the cause


def test_catalog_keys_of_mapping_and_notify(tmp_path):
    base = {"root": ".", "output": "out", "nav": [{"format": "exif"}]}
    for bad, key in (({"mapping": {"checkpoint": "a.pt", "k": 1}}, "mapping.k"),
                     ({"mapping": {"checkpoint": "a.pt", "device": "gpu"}}, "mapping.device"),
                     ({"mapping": {"k": 3, "export": ["squidle"]}}, "mapping.export.0"),
                     ({"notify": {"webhook": "hooks.example.org"}}, "notify.webhook")):
        path = tmp_path / "c.yaml"
        path.write_text(yaml.safe_dump({**base, **bad}))
        with pytest.raises(CatalogError, match=rf"c.yaml: key '{key}'"):
            load_catalog(path)
    path.write_text(yaml.safe_dump({**base, "mapping": {"checkpoint": "runs/last.pt",
                                                        "labels": "labels.csv"}}))
    cat = load_catalog(path)
    assert cat.mapping.checkpoint == tmp_path / "runs" / "last.pt" and cat.mapping.k == "auto"
    assert cat.mapping.labels == tmp_path / "labels.csv"
    # a site whose encoder is not trained yet: mapping without a checkpoint; a map run says so
    path.write_text(yaml.safe_dump({**base, "mapping": {"k": 3, "export": ["biigle"]}}))
    cat = load_catalog(path)
    assert cat.mapping.checkpoint is None and cat.mapping.export == ["biigle"]
    with pytest.raises(map_habitats.NoEncoder, match="no encoder yet"):
        map_habitats.map_catalog(cat, logger=None)
    with pytest.raises(map_habitats.MappingError, match="the parameter checkpoint: .*nope.pt"):
        map_habitats.map_catalog(cat, None, tmp_path / "nope.pt")


def test_map_deployment_only_with_mapping_and_its_trigger_in_prefect_yaml(tmp_path):
    site = {"root": str(tmp_path), "output": str(tmp_path / "out"), "nav": [{"format": "exif"}]}
    (tmp_path / "cats").mkdir()
    (tmp_path / "cats" / "plain.yaml").write_text(yaml.safe_dump(site))
    (tmp_path / "cats" / "mapped.yaml").write_text(yaml.safe_dump(
        {**site, "name": "reef", "mapping": {"checkpoint": "last.pt", "k": 4}}))
    deps = {(d.flow_name, d.name): d for p in sorted((tmp_path / "cats").glob("*.yaml"))
            for d in deployments.runner_deployments_of(p)}
    assert set(deps) == {("build-pairs", "plain"), ("build-pairs", "mapped"),
                         ("map-habitats", "mapped")}
    trig = deps[("map-habitats", "mapped")].triggers[0]
    assert trig.expect == {"seafloor.manifests.published"}
    assert trig.match.root == {"prefect.resource.id": "seafloor.catalog.reef"}
    assert trig.parameters == {"catalog": "mapped"}
    spec = yaml.safe_load(deployments.prefect_yaml(tmp_path / "cats", map_pool="gpu-pool"))
    maps = [d for d in spec["deployments"] if d["entrypoint"] == deployments.MAP_ENTRYPOINT]
    assert len(maps) == 1 and maps[0]["work_pool"] == {"name": "gpu-pool"}
    assert maps[0]["triggers"][0]["expect"] == ["seafloor.manifests.published"]
    assert maps[0]["triggers"][0]["match"] == {"prefect.resource.id": "seafloor.catalog.reef"}
    from prefect.events import DeploymentEventTrigger

    DeploymentEventTrigger(**maps[0]["triggers"][0])  # what prefect deploy reads it as
