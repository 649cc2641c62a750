"""The Python side of the interop tests (tests/test_interop.py), a small program on the Python adapter.

    python tests/interop_py.py write ADDR FIXTURE.json
    python tests/interop_py.py read ADDR KIND:ID ...

``write`` creates the records of FIXTURE.json (canonical JSON, below) on the server at ADDR with
``GrpcPersistenceProvider``. ``read`` reads the named records back (KIND is ``workflow``, ``event``
or ``subscription``) and prints them as canonical JSON on one line:
``{"workflows": [...], "workflows_batch": [...], "events": [...], "subscriptions": [...]}``, in the
order of the arguments (``workflows`` one ``get_workflow_instance`` per id, ``workflows_batch`` one
``get_workflow_instances`` call for all of them).

Canonical JSON, the same in the Rust and TypeScript programs: snake_case field names as in WFE,
every field present (an absent optional field is ``null``), instants as RFC 3339 UTC strings with
exactly six fractional digits, enums as their upper-case names, JSON values embedded as JSON.
"""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import UTC, datetime
from typing import Any

from wfe_client import (
    Event,
    EventSubscription,
    ExecutionPointer,
    GrpcPersistenceProvider,
    PointerStatus,
    WorkflowInstance,
    WorkflowStatus,
)


def instant(text: str | None) -> datetime | None:
    if text is None:
        return None
    parsed = datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ")
    return parsed.replace(tzinfo=UTC)


def render(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def pointer_from(c: dict[str, Any]) -> ExecutionPointer:
    return ExecutionPointer(
        id=c["id"],
        step_id=c["step_id"],
        active=c["active"],
        status=PointerStatus[c["status"]],
        sleep_until=instant(c["sleep_until"]),
        persistence_data=c["persistence_data"],
        start_time=instant(c["start_time"]),
        end_time=instant(c["end_time"]),
        event_name=c["event_name"],
        event_key=c["event_key"],
        event_published=c["event_published"],
        event_data=c["event_data"],
        step_name=c["step_name"],
        retry_count=c["retry_count"],
        children=list(c["children"]),
        context_item=c["context_item"],
        predecessor_id=c["predecessor_id"],
        outcome=c["outcome"],
        scope=list(c["scope"]),
        extension_attributes=dict(c["extension_attributes"]),
    )


def workflow_from(c: dict[str, Any]) -> WorkflowInstance:
    return WorkflowInstance(
        id=c["id"],
        name=c["name"],
        root_workflow_id=c["root_workflow_id"],
        workflow_definition_id=c["workflow_definition_id"],
        version=c["version"],
        description=c["description"],
        reference=c["reference"],
        execution_pointers=[pointer_from(p) for p in c["execution_pointers"]],
        next_execution=c["next_execution"],
        status=WorkflowStatus[c["status"]],
        data=c["data"],
        create_time=instant(c["create_time"]),  # type: ignore[arg-type]
        complete_time=instant(c["complete_time"]),
    )


def event_from(c: dict[str, Any]) -> Event:
    return Event(
        id=c["id"],
        event_name=c["event_name"],
        event_key=c["event_key"],
        event_data=c["event_data"],
        event_time=instant(c["event_time"]),  # type: ignore[arg-type]
        is_processed=c["is_processed"],
    )


def subscription_from(c: dict[str, Any]) -> EventSubscription:
    return EventSubscription(
        id=c["id"],
        workflow_id=c["workflow_id"],
        step_id=c["step_id"],
        execution_pointer_id=c["execution_pointer_id"],
        event_name=c["event_name"],
        event_key=c["event_key"],
        subscribe_as_of=instant(c["subscribe_as_of"]),  # type: ignore[arg-type]
        subscription_data=c["subscription_data"],
        external_token=c["external_token"],
        external_worker_id=c["external_worker_id"],
        external_token_expiry=instant(c["external_token_expiry"]),
    )


def pointer_canonical(p: ExecutionPointer) -> dict[str, Any]:
    return {
        "id": p.id,
        "step_id": p.step_id,
        "active": p.active,
        "status": p.status.name,
        "sleep_until": render(p.sleep_until),
        "persistence_data": p.persistence_data,
        "start_time": render(p.start_time),
        "end_time": render(p.end_time),
        "event_name": p.event_name,
        "event_key": p.event_key,
        "event_published": p.event_published,
        "event_data": p.event_data,
        "step_name": p.step_name,
        "retry_count": p.retry_count,
        "children": list(p.children),
        "context_item": p.context_item,
        "predecessor_id": p.predecessor_id,
        "outcome": p.outcome,
        "scope": list(p.scope),
        "extension_attributes": dict(p.extension_attributes),
    }


def workflow_canonical(w: WorkflowInstance) -> dict[str, Any]:
    return {
        "id": w.id,
        "name": w.name,
        "root_workflow_id": w.root_workflow_id,
        "workflow_definition_id": w.workflow_definition_id,
        "version": w.version,
        "description": w.description,
        "reference": w.reference,
        "execution_pointers": [pointer_canonical(p) for p in w.execution_pointers],
        "next_execution": w.next_execution,
        "status": w.status.name,
        "data": w.data,
        "create_time": render(w.create_time),
        "complete_time": render(w.complete_time),
    }


def event_canonical(e: Event) -> dict[str, Any]:
    return {
        "id": e.id,
        "event_name": e.event_name,
        "event_key": e.event_key,
        "event_data": e.event_data,
        "event_time": render(e.event_time),
        "is_processed": e.is_processed,
    }


def subscription_canonical(s: EventSubscription) -> dict[str, Any]:
    return {
        "id": s.id,
        "workflow_id": s.workflow_id,
        "step_id": s.step_id,
        "execution_pointer_id": s.execution_pointer_id,
        "event_name": s.event_name,
        "event_key": s.event_key,
        "subscribe_as_of": render(s.subscribe_as_of),
        "subscription_data": s.subscription_data,
        "external_token": s.external_token,
        "external_worker_id": s.external_worker_id,
        "external_token_expiry": render(s.external_token_expiry),
    }


async def write(address: str, fixture_path: str) -> None:
    with open(fixture_path, encoding="utf-8") as f:
        fixture = json.load(f)
    async with GrpcPersistenceProvider.connect(address) as store:
        for w in fixture["workflows"]:
            print("workflow", await store.create_new_workflow(workflow_from(w)))
        for e in fixture["events"]:
            print("event", await store.create_event(event_from(e)))
        for s in fixture["subscriptions"]:
            print("subscription", await store.create_event_subscription(subscription_from(s)))


async def read(address: str, refs: list[str]) -> None:
    out: dict[str, list[Any]] = {"workflows": [], "workflows_batch": [], "events": [], "subscriptions": []}
    workflow_ids: list[str] = []
    async with GrpcPersistenceProvider.connect(address) as store:
        for ref in refs:
            kind, _, id = ref.partition(":")
            if kind == "workflow":
                workflow_ids.append(id)
                out["workflows"].append(workflow_canonical(await store.get_workflow_instance(id)))
            elif kind == "event":
                out["events"].append(event_canonical(await store.get_event(id)))
            elif kind == "subscription":
                out["subscriptions"].append(subscription_canonical(await store.get_subscription(id)))
            else:
                raise SystemExit(f"unknown record kind in {ref!r}")
        batch = await store.get_workflow_instances(workflow_ids)
        out["workflows_batch"] = [workflow_canonical(w) for w in batch]
    sys.stdout.buffer.write((json.dumps(out, ensure_ascii=False) + "\n").encode("utf-8"))


def main(argv: list[str]) -> None:
    if len(argv) >= 3 and argv[0] == "write":
        asyncio.run(write(argv[1], argv[2]))
    elif len(argv) >= 2 and argv[0] == "read":
        asyncio.run(read(argv[1], argv[2:]))
    else:
        raise SystemExit("usage: interop_py.py write ADDR FIXTURE.json | read ADDR KIND:ID ...")


if __name__ == "__main__":
    main(sys.argv[1:])
