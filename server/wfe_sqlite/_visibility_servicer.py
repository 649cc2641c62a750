"""``wfe.persistence.v1.VisibilityService``: validate the request, call one provider operation, convert."""

from __future__ import annotations

import grpc

from wfe.persistence.v1 import visibility_pb2, visibility_pb2_grpc
from wfe_client.conversion import filter_from_proto, instant, purge_statuses_from_proto, summary_to_proto
from wfe_client.errors import InvalidArgument
from wfe_client.limits import LIST_PAGE_SIZE, MAX_LIST_PAGE_SIZE

from ._provider import StoreProvider
from ._status import Context, translate_errors

__all__ = ["VISIBILITY_SERVICE_NAME", "VisibilityServicer", "add_visibility_servicer"]

VISIBILITY_SERVICE_NAME = visibility_pb2.DESCRIPTOR.services_by_name["VisibilityService"].full_name


def _size(value: int, field: str) -> int:
    """0 means the default, above the maximum is capped, negative is invalid."""
    if value < 0:
        raise InvalidArgument(f"{field}: must not be negative", field=field)
    return min(value or LIST_PAGE_SIZE, MAX_LIST_PAGE_SIZE)


class VisibilityServicer(visibility_pb2_grpc.VisibilityServiceServicer):
    """List, search, delete and purge workflows of the provider's store."""

    def __init__(self, provider: StoreProvider) -> None:
        self._p = provider

    @translate_errors
    async def ListWorkflows(
        self, request: visibility_pb2.ListWorkflowsRequest, context: Context
    ) -> visibility_pb2.ListWorkflowsResponse:
        selected = filter_from_proto(request.filter)
        items, token = await self._p.list_summaries(selected, _size(request.page_size, "page_size"), request.page_token)
        return visibility_pb2.ListWorkflowsResponse(
            workflows=[summary_to_proto(s) for s in items], next_page_token=token or ""
        )

    @translate_errors
    async def SearchWorkflows(
        self, request: visibility_pb2.SearchWorkflowsRequest, context: Context
    ) -> visibility_pb2.SearchWorkflowsResponse:
        selected = filter_from_proto(request.filter)
        if request.skip < 0:
            raise InvalidArgument("skip: must not be negative", field="skip")
        found = await self._p.search_summaries(request.query, selected, request.skip, _size(request.take, "take"))
        return visibility_pb2.SearchWorkflowsResponse(
            workflows=[summary_to_proto(s) for s in found.items], total=found.total
        )

    @translate_errors
    async def DeleteWorkflow(
        self, request: visibility_pb2.DeleteWorkflowRequest, context: Context
    ) -> visibility_pb2.DeleteWorkflowResponse:
        if not request.id:
            raise InvalidArgument("id: must not be empty", field="id")
        await self._p.delete_workflow(request.id)
        return visibility_pb2.DeleteWorkflowResponse()

    @translate_errors
    async def PurgeWorkflows(
        self, request: visibility_pb2.PurgeWorkflowsRequest, context: Context
    ) -> visibility_pb2.PurgeWorkflowsResponse:
        older_than = instant(request, "older_than", "request")
        statuses = purge_statuses_from_proto(request.statuses)
        deleted = await self._p.purge_workflows(older_than, statuses, dry_run=request.dry_run)
        return visibility_pb2.PurgeWorkflowsResponse(deleted=deleted)


def add_visibility_servicer(server: grpc.aio.Server, provider: StoreProvider) -> None:
    """Register ``VisibilityService`` of ``provider`` on ``server``."""
    visibility_pb2_grpc.add_VisibilityServiceServicer_to_server(VisibilityServicer(provider), server)
