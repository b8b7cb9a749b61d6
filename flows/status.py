"""``python -m flows.status``: an operator's view of the build-pairs deployments.

    python -m flows.status [--catalog NAME] [--catalogs DIR] [--json] [--stuck-after MIN]

One block per catalog file in the catalogs folder (default: $SEAFLOOR_CATALOGS, else the
repository's catalogs/), i.e. per deployment ``build-pairs/<stem>``:

    build-pairs/seafloor  (seafloor.yaml)
      last run   sly-silkworm  COMPLETED/Completed, ended 12 min ago (2026-12-02 01:02 UTC)
      next run   daffodil-polecat at 2026-12-02 02:02 UTC (in 48 min); late runs: 0
      schedule   every 1 h, active; runner READY (last polled 3 s ago)
      slot       0/1 in use
      live runs  none
      manifests  published 12 min ago (20 images, 145 pairs)
      problems   none

- last run: the newest run that finished or is running (runs cancelled by the concurrency limit
  before they started are skipped), its state type/name and the state's message as its cause;
- next run: the earliest scheduled run ("in 12 min", or "late by 3 min"), whether the schedule
  is active or paused (or there is none), how many scheduled runs are late, and whether a runner
  (``python -m flows.serve`` or a worker) polls for the deployment's runs;
- slot: the deployment's concurrency limit (its active slots out of its limit) and the runs that
  can hold it, those RUNNING, PENDING or CANCELLING, each with the time it entered that state;
- manifests: the age of the published set, from ``report.json`` in the catalog's output folder.

A catalog with a ``mapping:`` block has a second block, ``map-habitats/<stem>``: the same rows
for that deployment, its trigger (the event that starts it) in place of a schedule, and the
published habitat map (``maps/current``: its age, k, images and the manifests it was made from).

Problems, listed in the block: the last run FAILED or CRASHED; the slot held while no run is
RUNNING/PENDING/CANCELLING (new runs are then cancelled, CANCEL_NEW); a run CANCELLING for longer
than --stuck-after minutes (default 5); a scheduled run late by more than --stuck-after (runs
piling up: nobody picks them up); an invalid catalog file. A catalog whose deployment the server
does not know yet is reported ("not registered") but is not a problem.

Exit status: 0 no problem; 1 at least one problem; 2 nothing could be checked (no server
answers at PREFECT_API_URL, it refuses the credentials, or no catalog to check).
``--json`` prints the same, as one JSON object, for scripts (same exit status).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path
from typing import Any

from pipeline.catalog import CatalogError, load_catalog

from . import server

# from the light flows.names, not flows.build_pairs/deployments: those load Prefect's flow
# engine, Dask and the pipeline, which would double the time this command takes to answer
from .names import FLOW_NAME, MANIFESTS_PUBLISHED, MAP_FLOW_NAME, catalog_files, catalogs_dir
from .runs import LIVE, run_filters

OK, PROBLEM, UNCHECKED = 0, 1, 2
STUCK_AFTER_MIN = 5.0
CAUSE_CHARS = 160
FINISHED = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")
BAD_ENDINGS = ("FAILED", "CRASHED")


class Unreachable(RuntimeError):
    """The Prefect API cannot be used: the message says which URL and what to do."""


# ---------------------------------------------------------------------------------------------
# formatting helpers


def _utc(t: dt.datetime | None) -> dt.datetime | None:
    if t is None:
        return None
    return t.replace(tzinfo=dt.UTC) if t.tzinfo is None else t.astimezone(dt.UTC)


def iso(t: dt.datetime | None) -> str | None:
    """ISO 8601 in UTC with a Z, to the second (JSON output)."""
    t = _utc(t)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ") if t else None


def clock(t: dt.datetime | None) -> str:
    """'2026-12-02 01:02 UTC' (text output)."""
    t = _utc(t)
    return t.strftime("%Y-%m-%d %H:%M UTC") if t else "?"


def span(seconds: float) -> str:
    """A duration, rounded down to its largest unit: '45 s', '12 min', '3 h', '2 d'."""
    s = abs(seconds)
    if s < 60:
        return f"{int(s)} s"
    if s < 3600:
        return f"{int(s // 60)} min"
    if s < 2 * 86400:
        return f"{int(s // 3600)} h"
    return f"{int(s // 86400)} d"


def ago(seconds: float) -> str:
    return "just now" if seconds < 1 else f"{span(seconds)} ago"


def relative(seconds_until: float) -> str:
    """'in 12 min' for a time ahead, 'late by 3 min' for one already past."""
    return f"in {span(seconds_until)}" if seconds_until >= 0 else f"late by {span(seconds_until)}"


def one_line(message: str | None, limit: int = CAUSE_CHARS) -> str | None:
    """A state message on one line: its lines joined with ' / ', cut at `limit` characters."""
    if not message:
        return None
    text = " / ".join(line.strip() for line in message.splitlines() if line.strip())
    return text if len(text) <= limit else text[:limit - 1].rstrip() + "…"


def describe_schedule(schedule: Any) -> str:
    """'every 1 h', 'cron 0 3 * * *' or 'rrule ...' for a Prefect schedule object."""
    interval = getattr(schedule, "interval", None)
    if interval is not None:  # exact, unlike span(): every 90 min is not every 1 h
        secs = interval.total_seconds()
        for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
            if secs >= size and secs % size == 0:
                return f"every {int(secs // size)} {unit}"
        return f"every {secs:g} s"
    if getattr(schedule, "cron", None):
        return f"cron {schedule.cron}"
    if getattr(schedule, "rrule", None):
        return f"rrule {schedule.rrule}"
    return type(schedule).__name__


# ---------------------------------------------------------------------------------------------
# reading the server


def _runs(client, dep_id, states: tuple[str, ...], sort: str, limit: int, **time_filter) -> list:
    from prefect.client.schemas.sorting import FlowRunSort

    return client.read_flow_runs(**run_filters([dep_id], states, **time_filter),
                                 sort=FlowRunSort[sort], limit=limit)


def _count(client, dep_id, states: tuple[str, ...], **time_filter) -> int:
    return client.count_flow_runs(**run_filters([dep_id], states, **time_filter))


def _state(run) -> tuple[str, str]:
    if run.state is None:
        return "NONE", "None"
    return run.state.type.value, run.state.name or run.state.type.value.title()


def _run_brief(run, now: dt.datetime) -> dict:
    kind, name = _state(run)
    since = _utc(run.state.timestamp) if run.state else None
    return {"name": run.name, "id": str(run.id), "state_type": kind, "state_name": name,
            "since": iso(since), "for_s": round((now - since).total_seconds()) if since else None}


def last_run(client, dep_id, now: dt.datetime) -> dict | None:
    """The newest run that finished or is running; a run cancelled before it ever started
    (a collision with the concurrency limit, CANCEL_NEW) does not count."""
    runs = _runs(client, dep_id, (*FINISHED, "RUNNING", "CANCELLING"),
                 "EXPECTED_START_TIME_DESC", 50)
    runs = [r for r in runs if not (_state(r)[0] == "CANCELLED" and r.start_time is None)] \
        or runs
    if not runs:
        return None
    active = [r for r in runs if _state(r)[0] in LIVE]

    def when(r) -> dt.datetime:
        return _utc(r.end_time or r.start_time or (r.state.timestamp if r.state else None)
                    or r.expected_start_time) or now

    run = max(active or runs, key=when)
    kind, name = _state(run)
    finished = kind in FINISHED
    if finished:
        event, t = "ended", _utc(run.end_time) or when(run)
    elif run.start_time:
        event, t = "started", _utc(run.start_time)
    else:  # e.g. cancelled while still PENDING: it never started
        event, t = "state set", when(run)
    return {"name": run.name, "id": str(run.id), "state_type": kind, "state_name": name,
            "event": event, "when": iso(t),
            "age_s": round((now - t).total_seconds()),
            "cause": one_line(run.state.message if run.state else None)}


def deployment_view(client, stem: str, now: dt.datetime, stuck_after_s: float,
                    flow: str = FLOW_NAME) -> dict:
    """What the server knows of `<flow>/<stem>`; `registered` False when it knows nothing."""
    from prefect.exceptions import ObjectNotFound

    name = f"{flow}/{stem}"
    try:
        dep = client.read_deployment_by_name(name)
    except ObjectNotFound:
        return {"registered": False}
    view: dict[str, Any] = {"registered": True, "id": str(dep.id)}
    view["last_run"] = last_run(client, dep.id, now)

    # schedule, next run, late runs
    active = [s for s in dep.schedules if s.active]
    view["schedule"] = {
        "status": "none" if not dep.schedules else
                  "paused" if dep.paused or not active else "active",
        "description": ", ".join(describe_schedule(s.schedule)
                                 for s in (active or dep.schedules)) or None}
    upcoming = _runs(client, dep.id, ("SCHEDULED",), "EXPECTED_START_TIME_ASC", 1)
    view["next_run"] = None
    if upcoming:
        r = upcoming[0]
        start = _utc(r.expected_start_time or r.next_scheduled_start_time)
        view["next_run"] = {"name": r.name, "id": str(r.id), "state_name": _state(r)[1],
                            "expected_start": iso(start),
                            "in_s": round((start - now).total_seconds()) if start else None}
    late = _count(client, dep.id, ("SCHEDULED",), before_=now)
    oldest = view["next_run"]["in_s"] if late and view["next_run"] else None
    view["late_runs"] = {"count": late, "oldest_late_by_s": -oldest if oldest is not None else None}
    polled = _utc(dep.last_polled)
    view["runner"] = {"status": dep.status.value if dep.status else None,
                      "last_polled": iso(polled),
                      "polled_s_ago": round((now - polled).total_seconds()) if polled else None}

    # the concurrency slot and the runs that can hold it; a slot held by no live run is read
    # once more after a moment, so that a run starting or ending between the reads is no alarm
    for attempt in range(2):
        live = _runs(client, dep.id, LIVE, "EXPECTED_START_TIME_DESC", 20)
        gcl = client.read_deployment_by_name(name).global_concurrency_limit if attempt \
            else dep.global_concurrency_limit
        held = gcl.active_slots if gcl else 0
        if not (held and not live) or attempt:
            break
        time.sleep(1.0)
    view["slot"] = {"name": gcl.name if gcl else None, "limit": gcl.limit if gcl else None,
                    "active_slots": held}
    view["live_runs"] = [_run_brief(r, now) for r in live]

    problems = []
    lr = view["last_run"]
    if lr and lr["state_type"] in BAD_ENDINGS:
        problems.append(f"last run {lr['name']} {lr['state_type']}"
                        + (f": {lr['cause']}" if lr["cause"] else ""))
    if held and not live:
        problems.append(f"concurrency slot held ({held}/{gcl.limit}) but no run is RUNNING, "
                        "PENDING or CANCELLING: new runs are cancelled until it is freed "
                        f"(prefect gcl update {gcl.name} --active-slots 0)")
    for r in view["live_runs"]:
        if r["state_type"] == "CANCELLING" and (r["for_s"] or 0) >= stuck_after_s:
            problems.append(f"run {r['name']} CANCELLING for {span(r['for_s'])}: its process "
                            "may be gone; set it to Cancelled (UI: Change state) or delete it "
                            f"(prefect flow-run delete {r['id']})")
    late_by = view["late_runs"]["oldest_late_by_s"]
    if late and late_by is not None and late_by >= stuck_after_s:
        runner = view["runner"]["status"]
        problems.append(f"{late} scheduled run{'s' if late != 1 else ''} late (the oldest by "
                        f"{span(late_by)}): "
                        + ("nothing polls for them; is python -m flows.serve (or the worker) "
                           "running?" if runner != "READY" else
                           "a runner polls but does not start them (slot busy? runner at its "
                           "--limit?)"))
    view["problems"] = problems
    return view


def manifests_view(output: Path, now: dt.datetime) -> dict:
    """The published set's age and size, from report.json in the catalog's output folder."""
    report = output / "report.json"
    if not report.exists():
        return {"published": False}
    try:
        data = json.loads(report.read_text())
        created = _utc(dt.datetime.fromisoformat(data["created_utc"]))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return {"published": True, "error": f"report.json unreadable: {exc}"}
    return {"published": True, "created_utc": iso(created),
            "age_s": round((now - created).total_seconds()),
            "images": data.get("images_located"), "pairs": data.get("pairs")}


def map_view(client, path: Path, cat, now: dt.datetime, stuck_after_s: float) -> dict:
    """The block of `map-habitats/<stem>`: its deployment and the age of the published map."""
    from pipeline.maps import map_age

    view: dict[str, Any] = {"deployment": f"{MAP_FLOW_NAME}/{path.stem}", "catalog": path.name,
                            "trigger": f"{MANIFESTS_PUBLISHED} of {cat.name}"}
    view.update(deployment_view(client, path.stem, now, stuck_after_s, flow=MAP_FLOW_NAME))
    age = map_age(cat.output, now)
    if age.get("age_s") is not None:
        age["age_s"] = round(age["age_s"])
    view["map"] = age
    view.setdefault("problems", [])
    return view


def catalog_views(client, path: Path, now: dt.datetime, stuck_after_s: float) -> list[dict]:
    """The blocks of one catalog: build-pairs, and map-habitats when it has a mapping block."""
    views = [catalog_view(client, path, now, stuck_after_s)]
    if "error" not in views[0]:
        cat = load_catalog(path)
        if cat.mapping is not None:
            views.append(map_view(client, path, cat, now, stuck_after_s))
    return views


def catalog_view(client, path: Path, now: dt.datetime, stuck_after_s: float) -> dict:
    """One block: the catalog file, its deployment on the server and its published manifests."""
    view: dict[str, Any] = {"deployment": f"{FLOW_NAME}/{path.stem}", "catalog": path.name}
    try:
        cat = load_catalog(path)
    except (CatalogError, OSError) as exc:
        # the block names the file: its path need not start every line of the message
        text = "\n".join(line.removeprefix(f"{path}: ") for line in str(exc).splitlines())
        view.update(error=text, problems=[f"invalid catalog file: {one_line(text)}"])
        return view
    view.update(deployment_view(client, path.stem, now, stuck_after_s))
    view["manifests"] = manifests_view(cat.output, now)
    view.setdefault("problems", [])
    return view


def select_catalogs(folder: Path, name: str | None) -> list[Path]:
    """The catalog files to report on: all of `folder`, or the one named (stem, file name or
    deployment name)."""
    files = catalog_files(folder)
    if name is None:
        return files
    stem = Path(name.removeprefix(f"{FLOW_NAME}/").removeprefix(f"{MAP_FLOW_NAME}/")).name
    stem = stem.rsplit(".", 1)[0] if stem.endswith((".yaml", ".yml")) else stem
    chosen = [p for p in files if p.stem == stem]
    if not chosen:
        raise CatalogError(f"no catalog named {name!r} in {folder} "
                           f"(known: {', '.join(p.stem for p in files)})")
    return chosen[:1]


def api_settings() -> tuple[str, str | None]:
    """PREFECT_API_URL (environment or Prefect profile) and the basic-auth string to send."""
    from prefect.settings import get_current_settings

    settings = get_current_settings()
    url = settings.api.url
    secret = settings.api.auth_string
    auth = (secret.get_secret_value() if hasattr(secret, "get_secret_value") else secret) \
        or server.auth_from_env()
    if not url:
        raise Unreachable("PREFECT_API_URL is not set: start a server (make server, or python "
                          "-m flows.server start) and export PREFECT_API_URL="
                          "http://127.0.0.1:4200/api")
    return url.rstrip("/"), auth


def collect(folder: Path, name: str | None, stuck_after_s: float) -> dict:
    """Everything the command prints, as one JSON-able dict. Raises Unreachable when the
    server does not answer or refuses the credentials, CatalogError when nothing to check."""
    import httpx

    paths = select_catalogs(folder, name)
    url, auth = api_settings()
    now = dt.datetime.now(dt.UTC)
    try:
        server.check_auth(url, auth=auth or "")
        with server.api_client(url, auth or "", retries=None) as client:
            blocks = [b for p in paths for b in catalog_views(client, p, now, stuck_after_s)]
    except server.AuthError as exc:
        raise Unreachable(str(exc)) from None
    except (httpx.TransportError, OSError) as exc:
        raise Unreachable(server.unreachable_message(url, exc)) from None
    with_problems = sum(1 for b in blocks if b["problems"])
    return {"api_url": url, "checked_utc": iso(now), "catalogs": str(folder),
            "stuck_after_s": stuck_after_s, "deployments": blocks,
            "with_problems": with_problems, "exit_code": PROBLEM if with_problems else OK}


# ---------------------------------------------------------------------------------------------
# text output


def render_block(b: dict, serve_args: str = "") -> str:
    """The plain-text block of one deployment; `serve_args` ends the command suggested for a
    deployment not registered (" --catalogs DIR" for a folder given on the command line)."""
    lines = [f"{b['deployment']}  ({b['catalog']})"]

    def row(label: str, text: str) -> None:
        lines.append(f"  {label:<10} {text}")

    if "error" in b:
        first, *rest = b["error"].splitlines()
        row("catalog", f"INVALID: {first}")
        for more in rest:
            row("", more)
        row("problems", "- invalid catalog file")
        return "\n".join(lines)
    if not b["registered"]:
        row("server", "not registered: start python -m flows.serve" + serve_args)
    else:
        lr = b["last_run"]
        row("last run", "none yet" if lr is None else
            f"{lr['name']}  {lr['state_type']}/{lr['state_name']}, {lr['event']} "
            f"{ago(lr['age_s'])} ({clock(_parse(lr['when']))})")
        if lr and lr["cause"]:
            row("cause", lr["cause"])
        nr, late = b["next_run"], b["late_runs"]["count"]
        row("next run", ("none scheduled" if nr is None else
                         f"{nr['name']} at {clock(_parse(nr['expected_start']))} "
                         f"({relative(nr['in_s'])})") + f"; late runs: {late}")
        sch, runner = b["schedule"], b["runner"]
        polled = (f"last polled {ago(runner['polled_s_ago'])}"
                  if runner["polled_s_ago"] is not None else "never polled")
        if b.get("trigger"):
            row("trigger", b["trigger"])
        row("schedule", ("no schedule" if sch["status"] == "none" else
                         f"{sch['description']}, {sch['status']}")
            + f"; runner {runner['status'] or '?'} ({polled})")
        slot, live = b["slot"], b["live_runs"]
        if slot["limit"] is None:
            row("slot", "no concurrency limit")
        elif slot["active_slots"]:
            holders = ", ".join(r["name"] for r in live) or "no live run"
            row("slot", f"{slot['active_slots']}/{slot['limit']} held by {holders}")
        else:
            row("slot", f"0/{slot['limit']} in use")
        if not live:
            row("live runs", "none")
        for i, r in enumerate(live):
            row("live runs" if i == 0 else "",
                f"{r['name']}  {r['state_type']}/{r['state_name']} since "
                f"{clock(_parse(r['since']))} ({span(r['for_s'] or 0)})")
    if "map" in b:
        mp = b["map"]
        row("map", "no map published yet" if not mp["published"] else mp["error"]
            if "error" in mp else
            f"published {ago(mp['age_s'])} (maps/{mp['map']}: k={mp['k']}, {mp['images']} "
            f"images, from manifests {mp['generation']})")
    m = b.get("manifests", {"published": True, "skip": True})
    if m.get("skip"):
        pass
    elif not m["published"]:
        row("manifests", "no manifests published yet")
    elif "error" in m:
        row("manifests", m["error"])
    else:
        row("manifests", f"published {ago(m['age_s'])} ({m['images']} images, "
                         f"{m['pairs']} pairs)")
    if not b["problems"]:
        row("problems", "none")
    for i, p in enumerate(b["problems"]):
        row("problems" if i == 0 else "", f"- {p}")
    return "\n".join(lines)


def _parse(text: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(text) if text else None


def render(report: dict, serve_args: str = "") -> str:
    """The whole text report: a header line, one block per deployment, a summary line."""
    blocks = report["deployments"]
    head = f"Prefect API {report['api_url']}, checked {clock(_parse(report['checked_utc']))}"
    n, bad = len(blocks), report["with_problems"]
    tail = (f"{n} deployment{'s' if n != 1 else ''} checked: "
            + (f"{bad} with problems" if bad else "no problems"))
    return "\n\n".join([head, *(render_block(b, serve_args) for b in blocks), tail])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m flows.status",
        description="the state of every build-pairs deployment: last run, next run, "
                    "concurrency slot, published manifests",
        epilog="exit status: 0 no problem, 1 a problem in at least one deployment, "
               "2 nothing checked (server unreachable, credentials refused, no catalog)")
    ap.add_argument("--catalog", default=None, metavar="NAME",
                    help="only this catalog (file stem, e.g. seafloor)")
    ap.add_argument("--catalogs", type=Path, default=None, metavar="DIR",
                    help="catalog folder (default: $SEAFLOOR_CATALOGS, else catalogs/)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--stuck-after", type=float, default=STUCK_AFTER_MIN, metavar="MIN",
                    help="minutes a run may stay CANCELLING, or a scheduled run be late, "
                         "before it counts as a problem (default %(default)g)")
    args = ap.parse_args(argv)
    folder = args.catalogs or catalogs_dir()
    try:
        report = collect(folder, args.catalog, args.stuck_after * 60.0)
    except (Unreachable, CatalogError) as exc:
        message = str(exc) if isinstance(exc, Unreachable) else f"error: {exc}"
        if args.json:
            print(json.dumps({"error": str(exc), "exit_code": UNCHECKED}))
        print(message, file=sys.stderr)
        return UNCHECKED
    serve_args = f" --catalogs {args.catalogs}" if args.catalogs else ""
    print(json.dumps(report, indent=1) if args.json else render(report, serve_args))
    return report["exit_code"]


if __name__ == "__main__":
    sys.exit(main())
