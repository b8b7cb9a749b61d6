"""Failure notifications: a catalog's ``notify: {webhook: URL}`` as Prefect automations.

For a catalog with ``notify`` two automations watch its deployments (``build-pairs/<stem>``
and ``map-habitats/<stem>``), both sending through one "Custom Webhook" notification block
(``seafloor-notify-<stem>``, a JSON POST ``{"subject", "body", "catalog"}`` to the URL):

    seafloor <stem>: run failed     a run of either deployment entered Failed or Crashed
    seafloor <stem>: run stuck      a run entered Running and no later state followed within
                                    notify.running_limit_s (a proactive trigger)

Both are owned by the resource ``seafloor.notify.<stem>``: applying them again (every serve,
every catalog edit, ``python -m flows.deployments --automations``) deletes the owned ones and
creates them anew, so they never pile up; a catalog without ``notify`` has its automations
removed.
"""

from __future__ import annotations

import datetime as dt
import re

from pipeline.catalog import Catalog

from .names import FLOW_NAMES

FAILED_STATES = ("Failed", "Crashed")
LATER_STATES = ("Completed", "Failed", "Crashed", "Cancelled", "Cancelling", "Paused",
                "Scheduled", "Pending", "AwaitingRetry", "Retrying")

BODY = ("Flow run {{ flow_run.name }} of deployment {{ flow.name }}/{{ deployment.name }} "
        "is {{ flow_run.state.name }}: {{ flow_run.state.message }}")


def owner(stem: str) -> str:
    return f"seafloor.notify.{stem}"


def block_name(stem: str) -> str:
    slug = re.sub(r"[^a-z0-9-]+", "-", stem.lower()).strip("-") or "site"
    return f"seafloor-notify-{slug}"


def automation_names(stem: str) -> list[str]:
    return [f"seafloor {stem}: run failed", f"seafloor {stem}: run stuck"]


def automations(stem: str, cat: Catalog, deployment_ids: list, block_id) -> list:
    """The AutomationCore objects of one catalog (see the module docstring)."""
    from prefect.events.actions import SendNotification
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture

    related = {"prefect.resource.id": [f"prefect.deployment.{i}" for i in deployment_ids]}
    runs = {"prefect.resource.id": "prefect.flow-run.*"}
    failed_name, stuck_name = automation_names(stem)
    limit = cat.notify.running_limit_s
    failed = AutomationCore(
        name=failed_name, owner_resource=owner(stem),
        description=f"failed or crashed runs of the {stem} deployments -> {block_name(stem)}",
        trigger=EventTrigger(match=runs, match_related=related, posture=Posture.Reactive,
                             expect={f"prefect.flow-run.{s}" for s in FAILED_STATES},
                             threshold=1, within=dt.timedelta(0)),
        actions=[SendNotification(block_document_id=block_id,
                                  subject=f"seafloor {stem}: run {{{{ flow_run.state.name }}}}",
                                  body=BODY)])
    stuck = AutomationCore(
        name=stuck_name, owner_resource=owner(stem),
        description=f"runs of the {stem} deployments Running over {limit:g} s -> "
                    f"{block_name(stem)}",
        trigger=EventTrigger(match=runs, match_related=related, posture=Posture.Proactive,
                             after={"prefect.flow-run.Running"},
                             expect={f"prefect.flow-run.{s}" for s in LATER_STATES},
                             for_each={"prefect.resource.id"}, threshold=1,
                             within=dt.timedelta(seconds=max(limit, 10.0))),
        actions=[SendNotification(block_document_id=block_id,
                                  subject=f"seafloor {stem}: run stuck",
                                  body=BODY + f" (Running for more than {limit:g} s)")])
    return [failed, stuck]


async def apply(client, stem: str, cat: Catalog) -> list[str]:
    """Create (or re-create) the catalog's notification automations; remove them when the
    catalog has no ``notify``. Returns the names of the automations in place."""
    from prefect.blocks.notifications import CustomWebhookNotificationBlock
    from prefect.exceptions import ObjectNotFound

    await client.delete_resource_owned_automations(owner(stem))
    if cat.notify is None:
        return []
    ids = []
    for flow_name in FLOW_NAMES:
        try:
            ids.append((await client.read_deployment_by_name(f"{flow_name}/{stem}")).id)
        except ObjectNotFound:
            pass
    if not ids:
        return []
    block = CustomWebhookNotificationBlock(
        name=f"seafloor {stem}", url=cat.notify.webhook,
        json_data={"subject": "{{subject}}", "body": "{{body}}", "catalog": stem})
    block_id = await block.asave(block_name(stem), overwrite=True, client=client)
    for automation in automations(stem, cat, ids, block_id):
        await client.create_automation(automation)
    return automation_names(stem)
