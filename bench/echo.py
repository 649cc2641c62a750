"""The transport limit: a ``grpc.aio`` server speaking the same services with no store behind them.

Each method parses its request (as the real server does, through the generated stubs) and answers
a response of the same size as the real one, built once: a 3-pointer ~1 KiB workflow for
``GetWorkflow``, 100 ids for ``GetRunnableWorkflows``, 100 workflows for ``BatchGetWorkflows``.
Scheduled commands are kept in a list so ``process_commands`` ends as it does on the real server.
Same server options (message limits) as ``wfe_sqlite.server``. Prints ``listening on HOST:PORT``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import uuid

import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from google.protobuf import timestamp_pb2

import workload
from wfe.persistence.v1 import (
    events_pb2,
    events_pb2_grpc,
    scheduled_commands_pb2,
    scheduled_commands_pb2_grpc,
    subscriptions_pb2,
    subscriptions_pb2_grpc,
    workflows_pb2,
    workflows_pb2_grpc,
)
from wfe_client.conversion import workflow_to_proto
from wfe_sqlite.server import server_options

_WORKFLOW = workflow_to_proto(workload.workflow(0))
_GET = workflows_pb2.GetWorkflowResponse(workflow=_WORKFLOW)
_BATCH = workflows_pb2.BatchGetWorkflowsResponse(workflows=[_WORKFLOW] * workload.BATCH)
_RUNNABLE = workflows_pb2.GetRunnableWorkflowsResponse(workflow_ids=[str(uuid.uuid4()) for _ in range(workload.DUE)])


class Workflows(workflows_pb2_grpc.WorkflowServiceServicer):
    async def CreateWorkflow(self, request, context):  # type: ignore[no-untyped-def]
        return workflows_pb2.CreateWorkflowResponse(id=request.workflow.id, name=request.workflow.name)

    async def GetWorkflow(self, request, context):  # type: ignore[no-untyped-def]
        return _GET

    async def PersistWorkflow(self, request, context):  # type: ignore[no-untyped-def]
        return workflows_pb2.PersistWorkflowResponse()

    async def GetRunnableWorkflows(self, request, context):  # type: ignore[no-untyped-def]
        return _RUNNABLE

    async def BatchGetWorkflows(self, request, context):  # type: ignore[no-untyped-def]
        yield _BATCH


class Events(events_pb2_grpc.EventServiceServicer):
    async def CreateEvent(self, request, context):  # type: ignore[no-untyped-def]
        return events_pb2.CreateEventResponse(id=request.event.id or str(uuid.uuid4()))


class Subscriptions(subscriptions_pb2_grpc.SubscriptionServiceServicer):
    async def CreateSubscription(self, request, context):  # type: ignore[no-untyped-def]
        return subscriptions_pb2.CreateSubscriptionResponse(id=request.subscription.id or str(uuid.uuid4()))

    async def SetSubscriptionToken(self, request, context):  # type: ignore[no-untyped-def]
        return subscriptions_pb2.SetSubscriptionTokenResponse(acquired=True)


class Commands(scheduled_commands_pb2_grpc.ScheduledCommandServiceServicer):
    def __init__(self) -> None:
        self.queue: list[scheduled_commands_pb2.ScheduledCommand] = []

    async def ScheduleCommand(self, request, context):  # type: ignore[no-untyped-def]
        self.queue.append(request.command)
        return scheduled_commands_pb2.ScheduleCommandResponse()

    async def ClaimCommands(self, request, context):  # type: ignore[no-untyped-def]
        count = request.max_commands or 100
        taken, self.queue = self.queue[:count], self.queue[count:]
        return scheduled_commands_pb2.ClaimCommandsResponse(
            commands=[scheduled_commands_pb2.ClaimedCommand(command=c) for c in taken],
            lease_id=str(uuid.uuid4()) if taken else "",
            lease_expiry=timestamp_pb2.Timestamp(seconds=4_000_000_000),
        )

    async def AcknowledgeCommand(self, request, context):  # type: ignore[no-untyped-def]
        return scheduled_commands_pb2.AcknowledgeCommandResponse()

    async def ReleaseCommand(self, request, context):  # type: ignore[no-untyped-def]
        return scheduled_commands_pb2.ReleaseCommandResponse()


async def main(listen: str) -> None:
    server = grpc.aio.server(options=server_options())
    workflows_pb2_grpc.add_WorkflowServiceServicer_to_server(Workflows(), server)
    events_pb2_grpc.add_EventServiceServicer_to_server(Events(), server)
    subscriptions_pb2_grpc.add_SubscriptionServiceServicer_to_server(Subscriptions(), server)
    scheduled_commands_pb2_grpc.add_ScheduledCommandServiceServicer_to_server(Commands(), server)
    port = server.add_insecure_port(listen)
    await server.start()
    print(f"listening on {listen.rsplit(':', 1)[0]}:{port}", flush=True)
    await server.wait_for_termination()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--listen", default="127.0.0.1:0")
    parser.add_argument("--loop", default="asyncio", choices=["asyncio", "uvloop"])
    args = parser.parse_args()
    if args.loop == "uvloop":
        import uvloop

        uvloop.install()
    asyncio.run(main(args.listen))
