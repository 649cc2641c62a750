"""The console in a real browser: Debian's Chromium (``/usr/bin/chromium``) driven by Playwright.

One browser for the whole module; two real server processes with data, one open and one guarded by
tokens. The tests open every page, follow the links, use the filters, the search and the paging,
watch the live region refresh, and check that hostile values stay text and that without a token
nothing is shown. ``WFE_CONSOLE_SCREENSHOTS=DIR`` also writes the README's screenshots into DIR
(``make screenshots``).
"""

from __future__ import annotations

import os
import re
import urllib.parse
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from conftest import ServerProcess
from console_seed import (
    XSS_DESCRIPTION,
    XSS_ERROR,
    XSS_EVENT_NAME,
    XSS_NAME,
    Seeded,
    run_async,
    seed,
    start_console_server,
)
from wfe_client import (
    Event,
    EventSubscription,
    ExecutionError,
    ExecutionPointer,
    GrpcPersistenceProvider,
    WorkflowInstance,
    WorkflowStatus,
)

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TOKEN = "browser-test-token-9f8e7d6c5b4a"

if not CHROMIUM.exists():  # `make test` installs it (apt-get install chromium chromium-driver)
    pytest.fail(f"{CHROMIUM} is missing: run `make browser` (Debian's chromium package)", pytrace=False)

from playwright.sync_api import BrowserContext, ConsoleMessage, Dialog, Page, expect, sync_playwright  # noqa: E402

expect.set_options(timeout=10_000)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrowserContext]:
    """One Chromium for the module, on a fresh profile directory."""
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=str(CHROMIUM),
            args=CHROMIUM_ARGS,
            headless=True,
            viewport={"width": 1360, "height": 900},
        )
        try:
            yield context
        finally:
            context.close()


class Console:
    """A running server process with data, and its console's base URL."""

    def __init__(self, server: ServerProcess, url: str, seeded: Any) -> None:
        self.server = server
        self.url = url
        self.seeded = seeded

    def href(self, path: str) -> str:
        return self.url + path


@pytest.fixture(scope="module")
def open_console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    db = tmp_path_factory.mktemp("browser-open") / "wfe.db"
    server, url = start_console_server(f"sqlite://{db}")
    try:

        async def fill() -> Seeded:
            async with GrpcPersistenceProvider.connect(server.address) as store:
                return await seed(store)

        yield Console(server, url, run_async(fill))
    finally:
        server.kill()


@pytest.fixture(scope="module")
def guarded_console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    db = tmp_path_factory.mktemp("browser-guarded") / "wfe.db"
    server, url = start_console_server(f"sqlite://{db}", env={"WFE_SQLITE_TOKENS": TOKEN})
    try:

        async def fill() -> str:
            async with GrpcPersistenceProvider.connect(server.address, token=TOKEN) as store:
                workflow = WorkflowInstance.new("vault-flow", 1, {"secret": "s3cr3t"})
                workflow.name = "classified-workflow"
                await store.create_new_workflow(workflow)
                return workflow.name

        yield Console(server, url, run_async(fill))
    finally:
        server.kill()


@pytest.fixture
def page(browser: BrowserContext) -> Iterator[Page]:
    """A fresh tab without cookies; fails the test on any script error, CSP report or dialog."""
    browser.clear_cookies()
    tab = browser.new_page()
    problems: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error" and "status of 401" not in message.text:
            problems.append(f"console error: {message.text}")

    def on_dialog(dialog: Dialog) -> None:
        problems.append(f"dialog: {dialog.message}")
        dialog.dismiss()

    tab.on("console", on_console)
    tab.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    tab.on("dialog", on_dialog)
    try:
        yield tab
        assert not problems, problems
    finally:
        tab.close()


def _rows(page: Page, table: str) -> list[str]:
    return [text.strip() for text in page.locator(f"#{table} tbody tr").all_inner_texts()]


def _names(page: Page, table: str = "workflow-list") -> list[str]:
    return [text.strip() for text in page.locator(f"#{table} a.wf-link").all_inner_texts()]


# -- the open console -----------------------------------------------------------------------------


def test_overview_counts_and_links(page: Page, open_console: Console) -> None:
    seeded = open_console.seeded
    response = page.goto(open_console.href("/"))
    assert response is not None and response.status == 200
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    expect(page).to_have_title("Overview · wfe-sqlite console")
    cards = {
        label.strip(): value.strip()
        for label, value in zip(
            page.locator(".card .card-label").all_text_contents(),
            page.locator(".card .card-value").all_inner_texts(),
            strict=True,
        )
    }
    assert cards["Workflows"] == "20"
    assert cards["Runnable now"] == "2"
    assert cards["Unprocessed events"] == "3"
    assert (cards["Due commands"], cards["Claimed commands"], cards["Held tokens"]) == ("2", "1", "1")
    assert re.fullmatch(r"\d+\.\d (KiB|MiB)", cards["Database size"]), cards["Database size"]
    per_definition = {row.split("\t")[0]: row.split("\t")[-1] for row in _rows(page, "by-definition")}
    assert per_definition == {d: str(sum(c.values())) for d, c in seeded.by_definition.items()}
    assert len(_rows(page, "recent-errors")) == len(seeded.errors)

    # Definition -> the list filtered by it -> one workflow -> its definition again.
    page.locator("#by-definition").get_by_role("link", name="invoice-approval", exact=True).click()
    expect(page).to_have_url(re.compile(r"/workflows\?definition=invoice-approval$"))
    expect(page.locator("#definition")).to_have_value("invoice-approval")
    names = _names(page)
    assert sorted(names) == sorted(seeded.workflows[f"invoice-{i}"].name for i in (1, 2, 3))
    page.get_by_role("link", name=seeded.workflows["invoice-1"].name, exact=True).click()
    expect(page.locator("h1.wf-title")).to_contain_text(seeded.workflows["invoice-1"].name)
    page.locator(".crumbs").get_by_role("link", name="invoice-approval").click()
    expect(page).to_have_url(re.compile(r"/workflows\?definition=invoice-approval$"))

    # A status count -> the list of that status; the navigation reaches every page.
    page.get_by_role("link", name="Overview").click()
    page.locator("#by-definition").get_by_role("link", name="2", exact=True).first.click()
    expect(page.locator("#result-summary")).to_be_visible()
    page.get_by_role("navigation").get_by_role("link", name="Events").click()
    expect(page.locator("h1")).to_have_text("Events")
    expect(page.get_by_role("link", name="Events")).to_have_attribute("aria-current", "page")


def test_workflow_list_filters_and_paging(page: Page, open_console: Console) -> None:
    seeded = open_console.seeded
    page.goto(open_console.href("/workflows"))
    assert len(_names(page)) == 20  # newest first
    newest = max(seeded.workflows.values(), key=lambda w: w.create_time)
    assert _names(page)[0] == newest.name

    # Status checkboxes (two at once), then a definition on top.
    page.get_by_label("suspended").check()
    page.get_by_label("terminated").check()
    page.get_by_role("button", name="Apply").click()
    expect(page).to_have_url(re.compile(r"status=SUSPENDED&status=TERMINATED"))
    wanted = {
        w.name for w in seeded.workflows.values() if w.status in (WorkflowStatus.SUSPENDED, WorkflowStatus.TERMINATED)
    }
    assert set(_names(page)) == wanted and len(wanted) == 5
    assert all(
        badge in ("SUSPENDED", "TERMINATED") for badge in page.locator("#workflow-list .badge").all_inner_texts()
    )
    page.locator("#definition").fill("order-flow")
    page.get_by_role("button", name="Apply").click()
    assert set(_names(page)) == {w.name for w in seeded.workflows.values() if w.status is WorkflowStatus.TERMINATED}

    # Reference, exactly.
    page.goto(open_console.href("/workflows"))
    page.locator("#reference").fill("order-1003")
    page.get_by_role("button", name="Apply").click()
    assert _names(page) == [seeded.workflows["order-3"].name]

    # A creation-time window: the orders of the last 9 hours (created 2 h apart).
    now = seeded.now
    after = (now - timedelta(hours=9)).strftime("%Y-%m-%dT%H:%M")
    page.goto(open_console.href("/workflows?definition=order-flow"))
    page.locator("#created_after").fill(after)
    page.get_by_role("button", name="Apply").click()
    expected = [
        w.name
        for w in sorted(seeded.workflows.values(), key=lambda w: w.create_time, reverse=True)
        if w.workflow_definition_id == "order-flow" and w.create_time >= now - timedelta(hours=9)
    ]
    assert _names(page) == expected and len(expected) == 4

    # Paging: 10 a page, follow "Next page" to the end; every workflow exactly once.
    page.goto(open_console.href("/workflows"))
    page.locator("#size").select_option("10")
    page.get_by_role("button", name="Apply").click()
    seen = _names(page)
    assert len(seen) == 10
    page.get_by_role("link", name="Next page →").click()
    seen += _names(page)
    expect(page.get_by_role("link", name="Next page →")).to_have_count(0)
    assert sorted(seen) == sorted(w.name for w in seeded.workflows.values())
    page.get_by_role("link", name="← First page").click()
    assert len(_names(page)) == 10


def test_search_and_its_paging(page: Page, open_console: Console) -> None:
    seeded = open_console.seeded
    page.goto(open_console.href("/workflows"))
    page.locator("#q").fill("1003")
    page.locator("#q").press("Enter")
    expect(page.locator("#result-summary")).to_contain_text("1 workflow matching “1003”")
    assert _names(page) == [seeded.workflows["order-3"].name]

    page.goto(open_console.href("/workflows?q=invoice&size=10"))
    expect(page.locator("#result-summary")).to_contain_text("3 workflows matching “invoice”")
    assert sorted(_names(page)) == sorted(seeded.workflows[f"invoice-{i}"].name for i in (1, 2, 3))

    # With a status filter, and paged 10 at a time over the 14 orders.
    page.goto(open_console.href("/workflows?q=order&status=RUNNABLE"))
    runnable_orders = {
        w.name for k, w in seeded.workflows.items() if k.startswith("order-") and w.status is WorkflowStatus.RUNNABLE
    }
    assert set(_names(page)) == runnable_orders
    page.goto(open_console.href("/workflows?q=order&size=10"))
    expect(page.locator("#result-summary")).to_contain_text("14 workflows matching “order” — showing 1\u201310.")
    first = _names(page)
    page.get_by_role("link", name="Next →").click()
    expect(page.locator("#result-summary")).to_contain_text("showing 11\u201314.")
    assert sorted(first + _names(page)) == sorted(w.name for k, w in seeded.workflows.items() if k.startswith("order-"))
    page.get_by_role("link", name="← Previous").click()
    assert _names(page) == first


def test_one_workflow_fields_data_timeline_subscriptions_and_errors(page: Page, open_console: Console) -> None:
    seeded = open_console.seeded
    done = seeded.workflows["order-4"]  # complete: three steps, the charge retried twice
    page.goto(open_console.href("/workflows/" + urllib.parse.quote(done.id, safe="")))
    fields = dict(
        zip(
            page.locator("#workflow-fields dt").all_text_contents(),
            [text.strip() for text in page.locator("#workflow-fields dd").all_text_contents()],
            strict=True,
        )
    )
    assert fields["Id"] == done.id and fields["Name"] == done.name
    assert (fields["Definition"], fields["Status"], fields["Reference"]) == ("order-flow v2", "COMPLETE", "order-1004")
    assert fields["Description"] == "Order 1004 for customer-4"
    assert fields["Completed"].endswith(" UTC") and fields["Next execution"] == "never"
    steps = page.locator("#pointer-timeline > li")
    expect(steps).to_have_count(3)
    assert [n.split("step")[0].strip() for n in page.locator("#pointer-timeline .step-name").all_inner_texts()] == [
        "ValidateOrder",
        "ChargeCard",
        "Ship",
    ]
    charge = steps.nth(1)
    expect(charge.locator(".badge")).to_have_text("COMPLETE")
    expect(charge.locator(".step-facts")).to_contain_text("2 retries")
    expect(charge.locator(".step-facts")).to_contain_text("(4 min)")
    expect(charge.locator(".step-facts")).to_contain_text("ended")
    charge.locator("summary").click()
    expect(charge.locator("pre.json")).to_contain_text('"charged": true')
    data = page.locator("#data pre.json").inner_text()
    assert '"order": 1004' in data and '\n  "customer"' in data  # formatted, not one line
    expect(page.locator("#workflow-subscriptions tbody")).to_contain_text("No subscriptions.")

    # A waiting order: its wait names the event, and the link leads to the waiting subscription.
    waiting = seeded.workflows["order-5"]
    page.goto(open_console.href("/workflows/" + urllib.parse.quote(waiting.id, safe="")))
    wait_step = page.locator("#pointer-timeline > li").nth(1)
    expect(wait_step.locator(".badge").first).to_have_text("WAITING_FOR_EVENT")
    expect(wait_step.locator(".step-facts")).to_contain_text("waits for order.paid / 1005 not yet")
    subscriptions = _rows(page, "workflow-subscriptions")
    assert len(subscriptions) == 1 and "open" in subscriptions[0] and "order.paid / 1005" in subscriptions[0]
    wait_step.get_by_role("link", name="order.paid / 1005").click()
    expect(page).to_have_url(re.compile(r"/events\?name=order.paid&key=1005$"))
    expect(page.locator("#waiting-subscriptions")).to_contain_text(waiting.id)
    page.locator("#waiting-subscriptions").get_by_role("link", name=waiting.id).click()
    expect(page.locator("h1.wf-title")).to_contain_text(waiting.name)

    # A terminated order: the failed step and its three errors, newest first.
    failed = seeded.workflows["order-7"]
    page.goto(open_console.href("/workflows/" + urllib.parse.quote(failed.id, safe="")))
    expect(page.locator("#pointer-timeline > li").nth(1).locator(".badge").first).to_have_text("FAILED")
    expect(page.locator("#pointer-timeline > li").nth(1)).to_contain_text("5 retries")
    errors = _rows(page, "workflow-errors")
    assert [e.split("\t")[-1] for e in errors] == [f"card declined (attempt {n})" for n in (3, 2, 1)]
    assert all("ChargeCard" in e for e in errors)

    # An invoice held by an external worker's token; the nightly report's steps link each other.
    held = seeded.workflows["invoice-1"]
    page.goto(open_console.href("/workflows/" + urllib.parse.quote(held.id, safe="")))
    expect(page.locator("#workflow-subscriptions")).to_contain_text("approver-7 until")
    report = seeded.workflows["report-1"]
    page.goto(open_console.href("/workflows/" + urllib.parse.quote(report.id, safe="")))
    render = page.locator("#pointer-timeline > li").nth(1)
    expect(render.locator(".step-facts")).to_contain_text("sleeps until")
    render.locator("summary").click()
    render.get_by_role("link", name=report.execution_pointers[0].id).click()
    expect(page).to_have_url(re.compile(r"#p-0$"))


def test_events_page_filters_and_links(page: Page, open_console: Console) -> None:
    seeded = open_console.seeded
    page.goto(open_console.href("/events"))
    assert len(_rows(page, "event-list")) == len(seeded.events) == 5
    page.locator("#state").select_option("unprocessed")
    page.get_by_role("button", name="Apply").click()
    rows = _rows(page, "event-list")
    assert len(rows) == 3 and all("unprocessed" in row for row in rows)
    page.locator("#state").select_option("processed")
    page.get_by_role("button", name="Apply").click()
    assert len(_rows(page, "event-list")) == 2
    page.goto(open_console.href("/events"))
    page.locator("#event-list").get_by_role("link", name="order.paid").first.click()
    expect(page.locator("#name")).to_have_value("order.paid")
    assert len(_rows(page, "event-list")) == 3
    page.locator("#event-list").get_by_role("link", name="1001", exact=True).click()
    expect(page.locator("#key")).to_have_value("1001")
    assert len(_rows(page, "event-list")) == 1
    expect(page.locator("#waiting-subscriptions")).to_contain_text(seeded.workflows["order-1"].id)
    details = page.locator("#event-list details").first
    details.locator("summary").click()
    expect(details.locator("pre.json")).to_contain_text('"amount": 20.5')
    # The overview's card leads here with the unprocessed filter.
    page.goto(open_console.href("/"))
    page.get_by_role("link", name=re.compile("Unprocessed events")).click()
    expect(page.locator("#state")).to_have_value("unprocessed")


def test_hostile_values_show_as_text(page: Page, open_console: Console) -> None:
    seeded = open_console.seeded
    xss = seeded.workflows["xss"]
    page.goto(open_console.href("/"))
    expect(page.locator("#region")).to_contain_text(XSS_NAME)
    page.goto(open_console.href("/workflows?q=pwned"))
    page.goto(open_console.href("/workflows/" + urllib.parse.quote(xss.id, safe="")))
    expect(page.locator("h1.wf-title")).to_contain_text(XSS_NAME)
    expect(page.locator("#workflow-fields")).to_contain_text(XSS_DESCRIPTION)
    expect(page.locator("#workflow-errors")).to_contain_text(XSS_ERROR)
    expect(page.locator("#pointer-timeline")).to_contain_text("<i>Welcome</i>")
    expect(page.locator("#data pre.json")).to_contain_text("</pre><script>document.title='pwned'</script>")
    page.goto(open_console.href("/events?" + urllib.parse.urlencode({"name": XSS_EVENT_NAME, "key": "<k>"})))
    expect(page.locator("#event-list")).to_contain_text(XSS_EVENT_NAME)
    expect(page.locator("#waiting-subscriptions")).to_contain_text(xss.id)
    for path in ("/", "/workflows/" + urllib.parse.quote(xss.id, safe=""), "/events"):
        page.goto(open_console.href(path))
        assert page.title() != "pwned"
        assert page.locator("#region script, #region img, #region i, #region b").count() == 0
        assert page.locator("svg[onload], [onerror]").count() == 0
        assert page.evaluate("document.scripts.length") == 1  # console.js, nothing else


_OVERFLOW = """() => {
  const wide = [];
  document.querySelectorAll("main, .panel, .fields, .crumbs, .wf-title, .step, td").forEach((e) => {
    if (e.scrollWidth > e.clientWidth + 1) {
      wide.push(`${e.tagName}#${e.id}.${e.className}: ${e.scrollWidth} > ${e.clientWidth}`);
    }
  });
  const page = document.documentElement.scrollWidth;
  if (page > window.innerWidth) wide.push(`page: ${page}`);
  return wide;
}"""


def test_very_long_values_do_not_widen_the_pages(page: Page, tmp_path: Path) -> None:
    """Names, definitions, references, step and event names of 1,000 characters without a space,
    and a 5,000-character error: every page keeps the window's width (no table or panel wider than
    itself, no sideways scrolling), lists cut such values to a few lines with the whole in a
    tooltip, and the workflow's own page shows them whole, wrapped."""
    server, url = start_console_server(f"sqlite://{tmp_path / 'long.db'}")
    name, definition, reference = "n" * 1000, "d" * 1000, "r" * 1000
    event_name, event_key = "e" * 1000, "k" * 1000
    try:

        async def fill() -> str:
            async with GrpcPersistenceProvider.connect(server.address) as store:
                workflow = WorkflowInstance.new(definition, 1, {"long": "v" * 5000})
                workflow.name, workflow.reference, workflow.description = name, reference, "t" * 1000
                pointer = ExecutionPointer.new(0)
                pointer.step_name, pointer.start_time = "s" * 1000, datetime.now(UTC)
                pointer.event_name, pointer.event_key = event_name, event_key
                workflow.execution_pointers = [pointer]
                await store.create_new_workflow(workflow)
                now = datetime.now(UTC)
                subscription = EventSubscription.new(workflow.id, 0, pointer.id, event_name, event_key, now)
                await store.persist_workflow_with_subscriptions(workflow, [subscription])
                await store.persist_errors([ExecutionError.new(workflow.id, pointer.id, "m" * 5000)])
                await store.create_event(Event.new(event_name, event_key, {"d": "z" * 3000}))
                return workflow.id

        workflow_id = run_async(fill)
        events = "/events?" + urllib.parse.urlencode({"name": event_name, "key": event_key})
        for path in ("/", "/workflows", "/workflows?q=" + name, "/workflows/" + workflow_id, "/events", events):
            page.goto(url + path)
            assert page.evaluate(_OVERFLOW) == [], path
        page.goto(url + "/workflows")
        link = page.locator("#workflow-list a.wf-link").first
        assert link.get_attribute("title") == name and link.inner_text() == name  # all there, cut by CSS
        assert link.bounding_box()["height"] < 80  # type: ignore[index]
        page.goto(url + "/workflows/" + workflow_id)
        assert page.locator("h1.wf-title").inner_text().startswith(name)
        expect(page.locator("#workflow-errors")).to_contain_text("m" * 5000)
    finally:
        server.kill()


def test_live_region_refreshes_without_a_reload(page: Page, open_console: Console) -> None:
    page.goto(open_console.href("/workflows?definition=late-arrival"))
    expect(page.locator("#workflow-list tbody")).to_contain_text("No workflows match.")
    page.evaluate("window.__sameDocument = true")

    async def add() -> str:
        async with GrpcPersistenceProvider.connect(open_console.server.address) as store:
            workflow = WorkflowInstance.new("late-arrival", 1, {})
            await store.create_new_workflow(workflow)
            return workflow.name

    name = run_async(add)
    expect(page.locator("#workflow-list")).to_contain_text(name, timeout=15_000)
    assert page.evaluate("window.__sameDocument") is True  # swapped in place, not reloaded
    expect(page.locator("#live-state")).to_contain_text("live ·")

    # Paused, it stays as it is.
    page.get_by_role("button", name="Pause").click()
    expect(page.locator("#live-state")).to_have_text("paused")
    page.evaluate("document.getElementById('workflow-list').dataset.marker = 'kept'")
    page.wait_for_timeout(6_500)
    assert page.locator("#workflow-list[data-marker=kept]").count() == 1
    page.get_by_role("button", name="Resume").click()
    expect(page.locator("#workflow-list[data-marker=kept]")).to_have_count(0, timeout=15_000)

    # A workflow's page follows the workflow: it completes, its heading and timeline say so.
    page.get_by_role("link", name=name, exact=True).click()
    expect(page.locator("h1.wf-title .badge")).to_have_text("RUNNABLE")
    page.evaluate("window.__sameDocument = true")

    async def complete() -> None:
        async with GrpcPersistenceProvider.connect(open_console.server.address) as store:
            workflow = await store.get_workflow_instance_by_name(name)
            workflow.status = WorkflowStatus.COMPLETE
            workflow.complete_time = datetime.now(UTC)
            workflow.execution_pointers = [ExecutionPointer.new(0)]
            workflow.execution_pointers[0].step_name = "FinalStep"
            await store.persist_workflow(workflow)

    run_async(complete)
    expect(page.locator("h1.wf-title .badge")).to_have_text("COMPLETE", timeout=15_000)
    expect(page.locator("#pointer-timeline")).to_contain_text("FinalStep")
    assert page.evaluate("window.__sameDocument") is True


def test_the_refresh_time_is_in_utc_like_every_other_time(page: Page, open_console: Console) -> None:
    """Every time on the pages is UTC and says so; the header's 'live · ...' was the browser's
    local time in its locale's format, with no zone ('live · 6:10:03 AM')."""
    page.goto(open_console.href("/events"))
    state = page.locator("#live-state")
    expect(state).to_have_text(re.compile(r"^live · \d\d:\d\d:\d\d UTC$"), timeout=15_000)
    shown = datetime.strptime(state.inner_text().split("· ")[1], "%H:%M:%S UTC")
    now = datetime.now(UTC)
    behind = now.hour * 3600 + now.minute * 60 + now.second - shown.hour * 3600 - shown.minute * 60 - shown.second
    assert behind % 86400 < 30, (shown, now)  # a UTC time of the last few seconds


def test_a_stale_region_says_why_in_words(browser: BrowserContext, open_console: Console) -> None:
    """When the live refresh cannot get the region, the header said 'stale (404)' or 'stale (503)':
    a status code, not a reason. A workflow deleted while its page is open now reads as gone."""
    browser.clear_cookies()
    tab = browser.new_page()  # its own tab: the 404 of the refresh is the point, not a script error
    errors: list[str] = []
    tab.on("pageerror", lambda error: errors.append(str(error)))
    try:

        async def add() -> str:
            async with GrpcPersistenceProvider.connect(open_console.server.address) as store:
                return await store.create_new_workflow(WorkflowInstance.new("short-lived", 1, {}))

        workflow_id = run_async(add)
        tab.goto(open_console.href("/workflows/" + urllib.parse.quote(workflow_id, safe="")))
        expect(tab.locator("#live-state")).to_contain_text("live ·", timeout=15_000)

        async def delete() -> None:
            async with GrpcPersistenceProvider.connect(open_console.server.address) as store:
                await store.delete_workflow(workflow_id)

        run_async(delete)
        expect(tab.locator("#live-state")).to_have_text("stale: no longer there", timeout=15_000)
        assert errors == []
    finally:
        tab.close()


def test_screenshots(page: Page, open_console: Console, tmp_path: Path) -> None:
    """The main pages as PNGs (into ``WFE_CONSOLE_SCREENSHOTS`` when set, for the README)."""
    target = Path(os.environ.get("WFE_CONSOLE_SCREENSHOTS") or tmp_path)
    target.mkdir(parents=True, exist_ok=True)
    seeded = open_console.seeded
    shots = {
        "console-overview.png": "/",
        "console-workflows.png": "/workflows?size=10",
        "console-workflow.png": "/workflows/" + urllib.parse.quote(seeded.workflows["order-4"].id, safe=""),
        "console-events.png": "/events",
    }
    for name, path in shots.items():
        page.goto(open_console.href(path))
        page.get_by_role("button", name="Pause").click()  # a still picture
        if name == "console-workflow.png":
            page.locator("#pointer-timeline details").nth(1).locator("summary").click()
        page.screenshot(path=str(target / name), full_page=True)
        assert (target / name).stat().st_size > 20_000
        assert (target / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# -- the console of a server with tokens ----------------------------------------------------------


def test_tokens_guard_every_page(page: Page, guarded_console: Console, tmp_path: Path) -> None:
    secret = guarded_console.seeded
    for path in ("/", "/workflows", "/events", "/workflows?q=classified"):
        response = page.goto(guarded_console.href(path))
        assert response is not None and response.status == 401
        expect(page.get_by_label("Token")).to_be_visible()
        assert secret not in page.content() and "s3cr3t" not in page.content()
    assert page.context.cookies(guarded_console.url) == []
    shots = Path(os.environ.get("WFE_CONSOLE_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shots / "console-sign-in.png"))

    # A wrong token: refused, still nothing shown, no cookie.
    page.goto(guarded_console.href("/workflows"))
    page.get_by_label("Token").fill("not-the-token")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_have_text("That token is not accepted.")
    assert secret not in page.content()
    assert page.context.cookies(guarded_console.url) == []

    # The right one: back to the page asked for, with a strict HttpOnly session cookie.
    page.get_by_label("Token").fill(TOKEN)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(guarded_console.href("/workflows"))
    expect(page.locator("#workflow-list")).to_contain_text(secret)
    cookies = page.context.cookies(guarded_console.url)
    assert len(cookies) == 1
    cookie = cookies[0]
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict"
    assert TOKEN not in cookie["value"] and cookie["value"] not in TOKEN
    assert page.evaluate("document.cookie") == ""  # scripts cannot read it
    page.get_by_role("link", name="Overview").click()
    expect(page.locator("#region")).to_contain_text(secret)

    # The live refresh keeps working with the session; signing out ends it.
    expect(page.locator("#live-state")).to_contain_text("live ·", timeout=15_000)
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_label("Token")).to_be_visible()
    assert secret not in page.content()
    response = page.goto(guarded_console.href("/"))
    assert response is not None and response.status == 401
