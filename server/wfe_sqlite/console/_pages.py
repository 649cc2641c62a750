"""The console's pages as HTML, from data already read: pure functions, no I/O.

Each page is a frame (``layout``: header, navigation, the page's own heading and filters) around a
live region that the browser refreshes by asking for the same URL as a fragment. Every value from
the store passes through ``_html.escape`` (via ``html``), never into a template unescaped.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from wfe_client.models import EventSubscription, ExecutionError, ExecutionPointer, WorkflowInstance, WorkflowStatus

from ._html import Html, escape, html, join, pretty_json, url
from ._reads import STATUSES, EventPage, Overview, format_event_cursor

__all__ = [
    "JSON_LIMIT",
    "PAGE_SIZES",
    "EventListView",
    "Frame",
    "WorkflowListView",
    "event_filters",
    "event_region",
    "layout",
    "login_page",
    "message_page",
    "overview_region",
    "workflow_heading",
    "workflow_href",
    "workflow_list_filters",
    "workflow_list_region",
    "workflow_region",
]

ERROR_LIMIT = 200
"""Execution errors of one workflow shown on its page (the latest ones)."""

PAGE_SIZES = (10, 20, 50, 100, 200)
"""Workflows per page the list offers (50 unless asked)."""

JSON_LIMIT = 256 * 1024
"""Characters of one JSON value shown on a page; longer values are cut (the page says so)."""

POINTER_STATUS_CLASS = {
    "PENDING": "pending",
    "PENDING_PREDECESSOR": "pending",
    "RUNNING": "running",
    "COMPLETE": "complete",
    "SKIPPED": "muted",
    "SLEEPING": "waiting",
    "WAITING_FOR_EVENT": "waiting",
    "FAILED": "failed",
    "COMPENSATED": "muted",
    "CANCELLED": "muted",
}
WORKFLOW_STATUS_CLASS = {
    "RUNNABLE": "running",
    "SUSPENDED": "waiting",
    "COMPLETE": "complete",
    "TERMINATED": "failed",
}


# -- small pieces -------------------------------------------------------------------------------


def workflow_href(workflow_id: str) -> str:
    return "/workflows/" + urllib.parse.quote(workflow_id, safe="")


def _events_href(name: str | None = None, key: str | None = None, state: str | None = None) -> str:
    return url("/events", {"name": name, "key": key if name else None, "state": state})


def _list_href(**query: Any) -> str:
    return url("/workflows", query)


def badge(status: str, classes: Mapping[str, str] = WORKFLOW_STATUS_CLASS) -> Html:
    return html('<span class="badge b-{}">{}</span>', classes.get(status, "muted"), status)


def timestamp(value: datetime | None, now: datetime) -> Html:
    """An instant in UTC, with how long ago (or ahead) it is as a tooltip and a second line."""
    if value is None:
        return Html('<span class="none">—</span>')
    text = value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"
    return html(
        '<time datetime="{}" title="{}">{}</time>',
        value.isoformat(),
        relative(value, now),
        text,
    )


def relative(value: datetime, now: datetime) -> str:
    seconds = (now - value).total_seconds()
    ahead = seconds < 0
    span = duration(abs(seconds))
    return f"in {span}" if ahead else f"{span} ago"


def duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes = seconds / 60
    if minutes < 60:
        return f"{minutes:.0f} min"
    hours = minutes / 60
    if hours < 48:
        return f"{hours:.1f} h"
    return f"{hours / 24:.0f} days"


def epoch_millis(value: int | None, now: datetime) -> Html:
    if value is None:
        return Html('<span class="none">never</span>')
    if value == 0:
        return Html("as soon as possible")
    return timestamp(datetime.fromtimestamp(value / 1000, UTC), now)


def number(value: int) -> str:
    return f"{value:,}"


def counted(value: int, noun: str) -> str:
    """``value`` and ``noun``, plural unless one: '1 event', '0 events', '1,024 events'."""
    return f"{value:,} {noun}" if value == 1 else f"{value:,} {noun}s"


def size(value: int) -> str:
    units = ["B", "KiB", "MiB", "GiB", "TiB"]
    amount = float(value)
    for unit in units:
        if amount < 1024 or unit == units[-1]:
            return f"{amount:.0f} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    return str(value)  # pragma: no cover


def optional(value: Any) -> Html:
    if value is None or value == "":
        return Html('<span class="none">—</span>')
    return escape(value)


def json_block(value: Any, label: str = "") -> Html:
    """A JSON value, indented, in a ``<pre>``; cut with a note when very long."""
    shown, cut, length = pretty_json(value, JSON_LIMIT)
    note = (
        html('<p class="note">Shown: the first {} of {} characters.</p>', number(JSON_LIMIT), number(length))
        if cut
        else Html("")
    )
    return html('<pre class="json" aria-label="{}">{}</pre>{}', label, shown, note)


def clip(value: Any, narrow: bool = False) -> Html:
    """``value`` cut to one line by the stylesheet (at most 32 characters' width, 20 when
    ``narrow``), whole in its tooltip: a name of a thousand characters must not widen a table."""
    if value is None or value == "":
        return optional(value)
    return html('<span class="clip{}" title="{}">{}</span>', " narrow" if narrow else "", value, value)


def empty_row(columns: int, text: str) -> Html:
    return html('<tr><td colspan="{}" class="empty">{}</td></tr>', columns, text)


# -- the frame ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Frame:
    """What every page shows around its content."""

    database: str
    static: Mapping[str, str]
    """Static file name -> its URL (with a content hash, so it can be cached)."""
    signed_in: bool = False
    """Show the sign-out button (tokens are configured and this browser is signed in)."""


def layout(
    frame: Frame,
    *,
    title: str,
    section: str,
    heading: Html,
    region: Html,
    refresh: bool = True,
) -> Html:
    """A whole page: the header and navigation, the page heading and filters, the live region."""
    nav = join(
        html('<a href="{}"{}>{}</a>', href, Html(' aria-current="page"') if section == key else Html(""), label)
        for key, href, label in (
            ("overview", "/", "Overview"),
            ("workflows", "/workflows", "Workflows"),
            ("events", "/events", "Events"),
        )
    )
    sign_out = (
        Html('<form method="post" action="/logout" class="signout"><button type="submit">Sign out</button></form>')
        if frame.signed_in
        else Html("")
    )
    live = (
        Html(
            '<div class="live"><span id="live-state" class="live-state">live</span>'
            '<button type="button" id="live-toggle" class="live-toggle" aria-pressed="false">Pause</button></div>'
        )
        if refresh
        else Html("")
    )
    return html(
        """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · wfe-sqlite console</title>
<link rel="stylesheet" href="{css}">
<link rel="icon" href="{icon}" type="image/svg+xml">
<script src="{js}" defer></script>
</head>
<body>
<header class="top">
<a class="brand" href="/"><span class="mark" aria-hidden="true"></span>wfe-sqlite</a>
<nav class="sections">{nav}</nav>
<span class="db" title="database">{database}</span>
{live}
{sign_out}
</header>
<main>
{heading}
<div id="region" class="region"{refresh}>
{region}
</div>
</main>
</body>
</html>
""",
        title=title,
        css=frame.static["console.css"],
        icon=frame.static["favicon.svg"],
        js=frame.static["console.js"],
        nav=nav,
        database=frame.database,
        live=live,
        sign_out=sign_out,
        heading=heading,
        region=region,
        refresh=Html(' data-refresh="5"') if refresh else Html(""),
    )


def login_page(frame: Frame, next_path: str, failed: bool) -> Html:
    problem = Html('<p class="problem" role="alert">That token is not accepted.</p>') if failed else Html("")
    return html(
        """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sign in · wfe-sqlite console</title>
<link rel="stylesheet" href="{css}">
<link rel="icon" href="{icon}" type="image/svg+xml">
</head>
<body class="login">
<form method="post" action="/login" class="login-box">
<h1><span class="mark" aria-hidden="true"></span>wfe-sqlite console</h1>
<p>This server requires a bearer token. Sign in with one of its tokens.</p>
{problem}
<label for="token">Token</label>
<input id="token" name="token" type="password" autocomplete="current-password" required autofocus>
<input type="hidden" name="next" value="{next}">
<button type="submit">Sign in</button>
</form>
</body>
</html>
""",
        css=frame.static["console.css"],
        icon=frame.static["favicon.svg"],
        problem=problem,
        next=next_path,
    )


def message_page(frame: Frame, title: str, message: str, section: str = "") -> Html:
    return layout(
        frame,
        title=title,
        section=section,
        heading=html("<h1>{}</h1>", title),
        region=html('<p class="message">{}</p>', message),
        refresh=False,
    )


# -- overview -----------------------------------------------------------------------------------


def _card(label: str, value: str, href: str, note: str) -> Html:
    """One figure of the overview; a link when there is a page listing what it counts."""
    inner = html(
        '<span class="card-label">{}</span><span class="card-value">{}</span><span class="card-note">{}</span>',
        label,
        value,
        note,
    )
    return html('<a class="card" href="{}">{}</a>', href, inner) if href else html('<div class="card">{}</div>', inner)


def overview_region(data: Overview, recent: Sequence[Any], now: datetime) -> Html:
    figures = data.figures
    cards = [
        ("Workflows", number(data.workflows), "/workflows", ""),
        (
            "Runnable now",
            number(figures.runnable_workflows),
            _list_href(status="RUNNABLE"),
            "RUNNABLE, next execution due",
        ),
        ("Unprocessed events", number(figures.unprocessed_events), _events_href(state="unprocessed"), ""),
        ("Due commands", number(figures.due_commands), "", "due and held by no lease"),
        ("Claimed commands", number(figures.claimed_commands), "", "held by a live lease"),
        ("Held tokens", number(figures.held_tokens), "", "subscriptions held by a live external token"),
        (
            "Database size",
            size(data.database_bytes + (data.wal_bytes or 0)),
            "",
            "the database"
            if data.wal_bytes is None
            else f"file {size(data.database_bytes)}, WAL {size(data.wal_bytes)}",
        ),
    ]
    card_html = join(_card(label, value, href, note) for label, value, href, note in cards)
    status_rows = join(
        html(
            '<tr><td>{}</td><td class="num"><a href="{}">{}</a></td></tr>',
            badge(status),
            _list_href(status=status),
            number(count),
        )
        for status, count in data.by_status.items()
    )
    head = join(html('<th class="num">{}</th>', status) for status in STATUSES)
    definition_rows = join(
        html(
            '<tr><td><a href="{}">{}</a></td>{}<td class="num"><a href="{}">{}</a></td></tr>',
            _list_href(definition=d.definition_id),
            clip(d.definition_id),
            join(
                html(
                    '<td class="num"><a href="{}">{}</a></td>',
                    _list_href(definition=d.definition_id, status=status),
                    number(d.by_status.get(status, 0)),
                )
                if d.by_status.get(status, 0)
                else Html('<td class="num zero">0</td>')
                for status in STATUSES
            ),
            _list_href(definition=d.definition_id),
            number(d.total),
        )
        for d in data.definitions
    ) or empty_row(len(STATUSES) + 2, "No workflows yet.")
    more = (
        html(
            '<p class="note">The {} definitions with most workflows of {}.</p>',
            len(data.definitions),
            data.definition_count,
        )
        if data.definition_count > len(data.definitions)
        else Html("")
    )
    error_rows = join(
        html(
            '<tr><td>{}</td><td><a href="{}">{}</a></td><td class="mono">{}</td>'
            '<td class="message-cell"><span class="clip-lines">{}</span></td></tr>',
            timestamp(error.error_time, now),
            workflow_href(error.workflow_id),
            clip(error.workflow_name or error.workflow_id),
            error.execution_pointer_id,
            error.message,
        )
        for error in data.recent_errors
    ) or empty_row(4, "No execution errors.")
    return html(
        """<section class="cards">{cards}</section>
<div class="columns">
<section class="panel narrow">
<h2>Workflows by status</h2>
<table class="grid"><thead><tr><th>Status</th><th class="num">Workflows</th></tr></thead>
<tbody>{status_rows}</tbody></table>
<p class="note">{events} in all, {subscriptions}, {errors}.</p>
</section>
<section class="panel wide">
<h2>Workflows by definition</h2>
<table class="grid" id="by-definition"><thead><tr><th>Definition</th>{head}<th class="num">Total</th></tr>
</thead><tbody>{definition_rows}</tbody></table>
{more}
</section>
</div>
<section class="panel">
<h2>Latest workflows <a class="more" href="/workflows">all workflows →</a></h2>
{recent}
</section>
<section class="panel">
<h2>Latest execution errors</h2>
<table class="grid" id="recent-errors"><thead><tr><th>Time</th><th>Workflow</th><th>Pointer</th>
<th>Message</th></tr></thead><tbody>{error_rows}</tbody></table>
</section>
<p class="note">Counted {read_at}.</p>""",
        cards=card_html,
        status_rows=status_rows,
        events=counted(data.events, "event"),
        subscriptions=counted(data.subscriptions_open, "open subscription"),
        errors=counted(data.errors, "execution error"),
        head=head,
        definition_rows=definition_rows,
        more=more,
        recent=workflow_table(recent, now, empty="No workflows yet."),
        error_rows=error_rows,
        read_at=timestamp(data.read_at, now),
    )


# -- workflow list ------------------------------------------------------------------------------


def workflow_table(items: Sequence[Any], now: datetime, table_id: str = "", empty: str = "No workflows match.") -> Html:
    """Workflow summaries (anything with the summary's fields) as a table, one link each; ``empty``
    is what an empty one says."""
    rows = join(
        html(
            '<tr><td>{}</td><td><a class="wf-link clip" href="{}" title="{}">{}</a><div class="sub mono">{}</div></td>'
            '<td><a href="{}">{}</a> <span class="version">v{}</span></td><td>{}</td><td>{}</td><td>{}</td></tr>',
            badge(_status_name(item.status)),
            workflow_href(item.id),
            item.name or item.id,
            item.name or item.id,
            item.id,
            _list_href(definition=item.workflow_definition_id),
            clip(item.workflow_definition_id, narrow=True),
            item.version,
            clip(item.reference, narrow=True),
            timestamp(item.create_time, now),
            timestamp(item.complete_time, now)
            if item.complete_time is not None
            else html('<span class="sub">next run</span> {}', epoch_millis(item.next_execution, now)),
        )
        for item in items
    ) or empty_row(6, empty)
    attribute = html(' id="{}"', table_id) if table_id else Html("")
    return html(
        '<table class="grid workflows"{}><thead><tr><th>Status</th><th>Workflow</th><th>Definition</th>'
        "<th>Reference</th><th>Created</th><th>Completed / next run</th></tr></thead><tbody>{}</tbody></table>",
        attribute,
        rows,
    )


def _status_name(status: Any) -> str:
    return status.name if isinstance(status, WorkflowStatus) else str(status)


@dataclass(frozen=True)
class WorkflowListView:
    """The list's filters as read from the URL (already validated)."""

    statuses: tuple[str, ...] = ()
    definition: str | None = None
    reference: str | None = None
    created_after: str | None = None
    """As typed in the form (``YYYY-MM-DDTHH:MM``, UTC)."""
    created_before: str | None = None
    text: str | None = None
    page_token: str | None = None
    skip: int = 0
    size: int = 50
    problems: tuple[str, ...] = field(default=())
    """Filters that could not be read (shown, and left out of the query)."""

    def query(self, **changes: Any) -> dict[str, Any]:
        values: dict[str, Any] = {
            "q": self.text,
            "status": list(self.statuses),
            "definition": self.definition,
            "reference": self.reference,
            "created_after": self.created_after,
            "created_before": self.created_before,
            "size": self.size if self.size != 50 else None,
        }
        values.update(changes)
        return values


def workflow_list_filters(view: WorkflowListView, definitions: Sequence[str]) -> Html:
    checks = join(
        html(
            '<label class="check"><input type="checkbox" name="status" value="{}"{}> {}</label>',
            status,
            Html(" checked") if status in view.statuses else Html(""),
            status.lower(),
        )
        for status in STATUSES
    )
    options = join(html('<option value="{}"></option>', d) for d in definitions)
    sizes = join(
        html('<option value="{}"{}>{}</option>', n, Html(" selected") if n == view.size else Html(""), n)
        for n in PAGE_SIZES
    )
    problems = join(html('<p class="problem" role="alert">{}</p>', p) for p in view.problems)
    return html(
        """<h1>Workflows</h1>
<form class="filters" method="get" action="/workflows" id="workflow-filters">
<div class="field grow"><label for="q">Search</label>
<input id="q" name="q" type="search" value="{text}" placeholder="words of the name, reference, description or data">
</div>
<fieldset class="field"><legend>Status</legend>{checks}</fieldset>
<div class="field"><label for="definition">Definition</label>
<input id="definition" name="definition" value="{definition}" list="definitions" autocomplete="off">
<datalist id="definitions">{options}</datalist></div>
<div class="field"><label for="reference">Reference</label>
<input id="reference" name="reference" value="{reference}"></div>
<div class="field"><label for="created_after">Created from (UTC)</label>
<input id="created_after" name="created_after" type="datetime-local" value="{after}"></div>
<div class="field"><label for="created_before">Created before (UTC)</label>
<input id="created_before" name="created_before" type="datetime-local" value="{before}"></div>
<div class="field"><label for="size">Per page</label><select id="size" name="size">{sizes}</select></div>
<div class="field buttons"><button type="submit">Apply</button>
<a class="button secondary" href="/workflows">Clear</a></div>
</form>
{problems}""",
        text=view.text or "",
        checks=checks,
        definition=view.definition or "",
        options=options,
        reference=view.reference or "",
        after=view.created_after or "",
        before=view.created_before or "",
        sizes=sizes,
        problems=problems,
    )


def workflow_list_region(
    view: WorkflowListView,
    items: Sequence[Any],
    now: datetime,
    *,
    next_token: str | None = None,
    total: int | None = None,
) -> Html:
    """The table and its paging: by page token (list) or by skip/take with a total (search)."""
    links: list[Html] = []
    if total is not None:
        shown_from = view.skip + 1 if items else 0
        summary = html(
            '<p class="summary" id="result-summary">{} matching “{}” — showing {}&#8211;{}.</p>',
            f"{number(total)} workflow{'s' if total != 1 else ''}",
            view.text,
            shown_from,
            view.skip + len(items),
        )
        if view.skip > 0:
            links.append(
                html(
                    '<a class="button secondary" rel="prev" href="{}">← Previous</a>',
                    url("/workflows", view.query(skip=max(0, view.skip - view.size))),
                )
            )
        if view.skip + len(items) < total:
            links.append(
                html(
                    '<a class="button" rel="next" href="{}">Next →</a>',
                    url("/workflows", view.query(skip=view.skip + view.size)),
                )
            )
    elif view.text:  # a search the store refused: its reason is among the problems above
        summary = Html(
            '<p class="summary" id="result-summary">The search could not be run (see above); nothing is shown.</p>'
        )
    else:
        summary = html(
            '<p class="summary" id="result-summary">{} workflow{} on this page, newest first.</p>',
            len(items),
            "" if len(items) == 1 else "s",
        )
        if view.page_token:
            links.append(
                html('<a class="button secondary" href="{}">← First page</a>', url("/workflows", view.query()))
            )
        if next_token:
            links.append(
                html(
                    '<a class="button" rel="next" href="{}">Next page →</a>',
                    url("/workflows", view.query(page=next_token)),
                )
            )
    return html(
        '<section class="panel">{}{}<nav class="paging">{}</nav></section>',
        summary,
        workflow_table(items, now, "workflow-list"),
        join(links),
    )


# -- one workflow -------------------------------------------------------------------------------


def workflow_heading(workflow: WorkflowInstance) -> Html:
    return html(
        '<nav class="crumbs"><a href="/workflows">Workflows</a> / <a href="{}">{}</a></nav>'
        '<h1 class="wf-title">{} {}</h1>',
        _list_href(definition=workflow.workflow_definition_id),
        workflow.workflow_definition_id,
        workflow.name or workflow.id,
        badge(workflow.status.name),
    )


def workflow_region(
    workflow: WorkflowInstance,
    subscriptions: Sequence[EventSubscription],
    terminated: Collection[str],
    errors: Sequence[ExecutionError],
    now: datetime,
) -> Html:
    """The workflow's fields, timeline, data, subscriptions (``terminated``: ids of the ended ones)
    and errors (the latest ``ERROR_LIMIT`` shown, newest first)."""
    fields = [
        ("Id", html('<span class="mono">{}</span>', workflow.id)),
        ("Name", escape(workflow.name)),
        (
            "Definition",
            html(
                '<a href="{}">{}</a> v{}',
                _list_href(definition=workflow.workflow_definition_id),
                workflow.workflow_definition_id,
                workflow.version,
            ),
        ),
        ("Status", badge(workflow.status.name)),
        ("Reference", optional(workflow.reference)),
        ("Description", optional(workflow.description)),
        (
            "Root workflow",
            html('<a href="{}">{}</a>', workflow_href(workflow.root_workflow_id), workflow.root_workflow_id)
            if workflow.root_workflow_id
            else optional(None),
        ),
        ("Created", timestamp(workflow.create_time, now)),
        ("Completed", timestamp(workflow.complete_time, now)),
        ("Next execution", epoch_millis(workflow.next_execution, now)),
    ]
    revision = getattr(workflow, "revision", None)
    if revision:
        fields.append(("Revision", escape(revision)))
    summary = join(html("<div><dt>{}</dt><dd>{}</dd></div>", label, value) for label, value in fields)
    return html(
        """<dl class="fields" id="workflow-fields">{summary}</dl>
<nav class="jump"><a href="#timeline">Timeline ({pointers})</a><a href="#data">Data</a>
<a href="#subscriptions">Subscriptions ({subs})</a><a href="#errors">Errors ({errors})</a></nav>
<section class="panel" id="timeline">
<h2>Timeline</h2>
{timeline}
</section>
<section class="panel" id="data">
<h2>Data</h2>
{data}
</section>
<section class="panel" id="subscriptions">
<h2>Event subscriptions</h2>
{subscriptions}
</section>
<section class="panel" id="errors">
<h2>Execution errors</h2>
{error_table}
</section>""",
        summary=summary,
        pointers=len(workflow.execution_pointers),
        subs=len(subscriptions),
        errors=len(errors),
        timeline=timeline(workflow, now),
        data=json_block(workflow.data, "workflow data"),
        subscriptions=subscription_table(subscriptions, terminated, now, "workflow-subscriptions", link_workflow=False),
        error_table=error_table(workflow, errors, now),
    )


def timeline(workflow: WorkflowInstance, now: datetime) -> Html:
    """The pointers in the order they started, each with a bar on the workflow's time span."""
    pointers = workflow.execution_pointers
    if not pointers:
        return Html('<p class="empty">No execution pointers.</p>')
    position = {p.id: i for i, p in enumerate(pointers)}
    start = min([p.start_time for p in pointers if p.start_time] + [workflow.create_time])
    ends = [t for p in pointers for t in (p.start_time, p.end_time) if t]
    if workflow.complete_time:
        ends.append(workflow.complete_time)
    if any(p.start_time and not p.end_time for p in pointers) or not workflow.complete_time:
        ends.append(max(now, start))
    end = max([*ends, start])
    span = max((end - start).total_seconds(), 1e-6)
    order = sorted(
        range(len(pointers)), key=lambda i: (pointers[i].start_time is None, pointers[i].start_time or start, i)
    )
    items = join(_timeline_item(pointers[i], i, position, start, span, now) for i in order)
    return html(
        '<div class="axis"><span>{}</span><span>{}</span></div><ol class="timeline" id="pointer-timeline">{}</ol>',
        timestamp(start, now),
        timestamp(end, now),
        items,
    )


def _bar(pointer: ExecutionPointer, start: datetime, span: float, now: datetime) -> Html:
    if pointer.start_time is None:
        return Html('<svg class="bar" viewBox="0 0 1000 12" preserveAspectRatio="none" aria-hidden="true"></svg>')
    left = (pointer.start_time - start).total_seconds() / span * 1000
    finish = pointer.end_time or now
    width = max((finish - pointer.start_time).total_seconds() / span * 1000, 4)
    left = min(max(left, 0), 996)
    width = min(width, 1000 - left)
    return html(
        '<svg class="bar" viewBox="0 0 1000 12" preserveAspectRatio="none" aria-hidden="true">'
        '<rect class="b-{}{}" x="{}" y="0" width="{}" height="12" rx="2"></rect></svg>',
        POINTER_STATUS_CLASS.get(pointer.status.name, "muted"),
        "" if pointer.end_time else " open",
        f"{left:.1f}",
        f"{width:.1f}",
    )


def _timeline_item(
    pointer: ExecutionPointer, index: int, position: Mapping[str, int], start: datetime, span: float, now: datetime
) -> Html:
    status = pointer.status.name
    facts: list[Html] = []
    if pointer.start_time:
        facts.append(html("started {}", timestamp(pointer.start_time, now)))
    else:
        facts.append(Html('<span class="none">not started</span>'))
    if pointer.end_time:
        took = duration((pointer.end_time - pointer.start_time).total_seconds()) if pointer.start_time else "?"
        facts.append(html('ended {} <span class="took">({})</span>', timestamp(pointer.end_time, now), took))
    if pointer.retry_count:
        facts.append(
            html(
                '<span class="retries">{} retr{}</span>',
                pointer.retry_count,
                "y" if pointer.retry_count == 1 else "ies",
            )
        )
    if pointer.sleep_until:
        facts.append(html("sleeps until {}", timestamp(pointer.sleep_until, now)))
    if pointer.event_name is not None:
        facts.append(
            html(
                'waits for <a class="event-link" href="{}">{} / {}</a> {}',
                _events_href(pointer.event_name, pointer.event_key or ""),
                pointer.event_name,
                pointer.event_key or "",
                Html('<span class="badge b-complete">published</span>')
                if pointer.event_published
                else Html('<span class="badge b-waiting">not yet</span>'),
            )
        )
    children = join(
        (
            html('<a href="#p-{}" class="mono">{}</a>', position[child], child)
            if child in position
            else html('<span class="mono">{}</span>', child)
        )
        for child in pointer.children
    )
    predecessor = pointer.predecessor_id
    details = [
        ("Pointer id", html('<span class="mono">{}</span>', pointer.id)),
        ("Active", escape("yes" if pointer.active else "no")),
        (
            "Predecessor",
            html('<a href="#p-{}" class="mono">{}</a>', position[predecessor], predecessor)
            if predecessor is not None and predecessor in position
            else optional(predecessor),
        ),
        ("Children", children or optional(None)),
        ("Scope", join((html('<span class="mono">{}</span>', s) for s in pointer.scope), ", ") or optional(None)),
    ]
    blocks = [
        ("Context item", pointer.context_item),
        ("Persistence data", pointer.persistence_data),
        ("Event data", pointer.event_data),
        ("Outcome", pointer.outcome),
        ("Extension attributes", pointer.extension_attributes or None),
    ]
    detail_html = join(html("<div><dt>{}</dt><dd>{}</dd></div>", label, value) for label, value in details)
    block_html = join(
        html("<div><dt>{}</dt><dd>{}</dd></div>", label, json_block(value, label))
        for label, value in blocks
        if value is not None
    )
    return html(
        """<li class="step s-{cls}" id="p-{index}">
<div class="step-head">
<span class="dot" aria-hidden="true"></span>
<span class="step-name">{name}<span class="step-id">step {step_id}</span></span>
{badge}
{bar}
</div>
<div class="step-facts">{facts}</div>
<details class="step-more" data-key="p-{index}"><summary>Details</summary>
<dl class="fields small">{details}{blocks}</dl></details>
</li>""",
        cls=POINTER_STATUS_CLASS.get(status, "muted"),
        index=index,
        name=pointer.step_name or f"Step {pointer.step_id}",
        step_id=pointer.step_id,
        badge=badge(status, POINTER_STATUS_CLASS),
        bar=_bar(pointer, start, span, now),
        facts=join(facts, " · "),
        details=detail_html,
        blocks=block_html,
    )


def subscription_table(
    subscriptions: Sequence[EventSubscription],
    terminated: Collection[str],
    now: datetime,
    table_id: str,
    *,
    link_workflow: bool,
) -> Html:
    rows = join(
        html(
            '<tr><td>{}</td><td>{}</td><td><a href="{}">{} / {}</a></td><td>{}</td><td>{}</td><td>{}</td></tr>',
            html('<span class="badge b-muted">terminated</span>')
            if s.id in terminated
            else html('<span class="badge b-waiting">open</span>'),
            html('<a href="{}" class="mono">{}</a>', workflow_href(s.workflow_id), s.workflow_id)
            if link_workflow
            else html('step {} <span class="sub mono">{}</span>', s.step_id, s.execution_pointer_id),
            _events_href(s.event_name, s.event_key),
            clip(s.event_name, narrow=True),
            clip(s.event_key, narrow=True),
            timestamp(s.subscribe_as_of, now),
            html(
                '{} <span class="sub">until</span> {}',
                s.external_worker_id or s.external_token,
                timestamp(s.external_token_expiry, now),
            )
            if s.external_token
            else optional(None),
            html(
                '<details data-key="sub-{}"><summary>data</summary>{}</details>',
                s.id,
                json_block(s.subscription_data, "subscription data"),
            )
            if s.subscription_data is not None
            else optional(None),
        )
        for s in subscriptions
    ) or empty_row(6, "No subscriptions.")
    return html(
        '<table class="grid" id="{}"><thead><tr><th>State</th><th>{}</th><th>Event (name / key)</th>'
        "<th>Subscribed as of</th><th>Token held by</th><th>Data</th></tr></thead><tbody>{}</tbody></table>",
        table_id,
        "Workflow" if link_workflow else "Step / pointer",
        rows,
    )


def error_table(workflow: WorkflowInstance, errors: Sequence[ExecutionError], now: datetime) -> Html:
    steps = {p.id: p.step_name or f"step {p.step_id}" for p in workflow.execution_pointers}
    total = len(errors)
    errors = sorted(errors, key=lambda e: e.error_time, reverse=True)[:ERROR_LIMIT]
    rows = join(
        html(
            '<tr><td>{}</td><td>{} <span class="sub mono">{}</span></td><td class="message-cell">{}</td></tr>',
            timestamp(e.error_time, now),
            steps.get(e.execution_pointer_id, ""),
            e.execution_pointer_id,
            e.message,
        )
        for e in errors
    ) or empty_row(3, "No execution errors.")
    note = (
        html('<p class="note">The latest {} of {} errors.</p>', len(errors), number(total))
        if total > len(errors)
        else Html("")
    )
    return html(
        '<table class="grid" id="workflow-errors"><thead><tr><th>Time</th><th>Pointer</th><th>Message</th></tr></thead>'
        "<tbody>{}</tbody></table>{}",
        rows,
        note,
    )


# -- events -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EventListView:
    state: str = "all"
    """``all``, ``unprocessed`` or ``processed``."""
    name: str | None = None
    key: str | None = None
    before: str | None = None
    """The page cursor as it came in the URL."""
    problems: tuple[str, ...] = ()
    """Parameters that could not be read (shown, and left out)."""

    def query(self, **changes: Any) -> dict[str, Any]:
        values: dict[str, Any] = {
            "state": self.state if self.state != "all" else None,
            "name": self.name,
            "key": self.key if self.name else None,
        }
        values.update(changes)
        return values


def event_filters(view: EventListView) -> Html:
    options = join(
        html('<option value="{}"{}>{}</option>', value, Html(" selected") if view.state == value else Html(""), label)
        for value, label in (("all", "all events"), ("unprocessed", "unprocessed"), ("processed", "processed"))
    )
    return html(
        """<h1>Events</h1>
<form class="filters" method="get" action="/events" id="event-filters">
<div class="field"><label for="state">Show</label><select id="state" name="state">{options}</select></div>
<div class="field"><label for="name">Event name</label><input id="name" name="name" value="{name}"></div>
<div class="field"><label for="key">Event key (with a name)</label><input id="key" name="key" value="{key}"></div>
<div class="field buttons"><button type="submit">Apply</button>
<a class="button secondary" href="/events">Clear</a></div>
</form>
{problems}""",
        options=options,
        name=view.name or "",
        key=view.key or "",
        problems=join(html('<p class="problem" role="alert">{}</p>', p) for p in view.problems),
    )


def event_region(
    view: EventListView, page: EventPage, waiting: Sequence[EventSubscription] | None, now: datetime
) -> Html:
    rows = join(
        html(
            '<tr><td>{}</td><td><a href="{}">{}</a></td><td><a href="{}">{}</a></td><td>{}</td>'
            '<td class="mono">{}</td><td><details data-key="ev-{}"><summary>{}</summary>{}</details></td></tr>',
            timestamp(e.event_time, now),
            _events_href(e.event_name),
            clip(e.event_name, narrow=True),
            _events_href(e.event_name, e.event_key),
            clip(e.event_key, narrow=True),
            Html('<span class="badge b-complete">processed</span>')
            if e.is_processed
            else Html('<span class="badge b-waiting">unprocessed</span>'),
            e.id,
            e.id,
            _preview(e.event_data),
            json_block(e.event_data, "event data"),
        )
        for e in page.items
    ) or empty_row(6, "No events match.")
    links: list[Html] = []
    if view.before:
        links.append(html('<a class="button secondary" href="{}">← Newest</a>', url("/events", view.query())))
    if page.next_cursor:
        links.append(
            html(
                '<a class="button" rel="next" href="{}">Older →</a>',
                url("/events", view.query(before=format_event_cursor(page.next_cursor))),
            )
        )
    waiting_html = Html("")
    if waiting is not None:
        waiting_html = html(
            '<section class="panel"><h2>Open subscriptions for {} / {}</h2>{}</section>',
            view.name,
            view.key,
            subscription_table(waiting, (), now, "waiting-subscriptions", link_workflow=True),
        )
    return html(
        """{waiting}<section class="panel">
<table class="grid" id="event-list"><thead><tr><th>Event time</th><th>Name</th><th>Key</th><th>State</th>
<th>Id</th><th>Data</th></tr></thead><tbody>{rows}</tbody></table>
<nav class="paging">{links}</nav>
</section>""",
        waiting=waiting_html,
        rows=rows,
        links=join(links),
    )


def _preview(value: Any, limit: int = 80) -> str:
    """A JSON value on one line, cut at ``limit`` characters."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return text if len(text) <= limit else text[: limit - 1] + "…"
