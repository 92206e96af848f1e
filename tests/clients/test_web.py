"""The chat page in a real headless Chromium, against real edges.

Screenshots of every run land in test-artifacts/web/.
"""

from __future__ import annotations

import re
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from playwright.sync_api import (
    Browser,
    Dialog,
    Locator,
    Page,
    WebSocketRoute,
    expect,
    sync_playwright,
)

from tests.clients.conftest import API_KEY
from tests.support.procs import ROOT, Cluster, env_with

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
ARTIFACTS = ROOT / "test-artifacts" / "web"
WAIT_MS = 10_000

expect.set_options(timeout=WAIT_MS)

OpenPage = Callable[..., Page]
Spawn = Callable[..., subprocess.Popen[str]]
NO_RATE_LIMIT = {"CHAT_RATE_LIMIT": "0"}
MISSING = "some messages may be missing"


def room(label: str = "room") -> str:
    return f"{label}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"needs Chromium at {CHROMIUM}: scripts/test.sh installs it (apt-get)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def open_page(browser: Browser) -> Iterator[OpenPage]:
    """`open_page(url, sockets=handler)`: a page in a browser context of its own, closed
    after the test; `sockets` routes its WebSockets (Playwright's route_web_socket)."""
    contexts = []

    def make(url: str, sockets: Callable[[WebSocketRoute], Any] | None = None) -> Page:
        context = browser.new_context(viewport={"width": 1100, "height": 640})
        contexts.append(context)
        page = context.new_page()
        if sockets is not None:
            page.route_web_socket(re.compile(r"^wss?://"), sockets)
        page.goto(url)
        return page

    yield make
    for context in contexts:
        context.close()


@pytest.fixture
def spawn() -> Iterator[Spawn]:
    """`spawn("chatclient.cli", *args)`: a client process with a stdin pipe, killed and
    reaped after the test."""
    procs: list[subprocess.Popen[str]] = []

    def start(module: str, *args: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-m", module, *args], cwd=ROOT, env=env_with(), text=True,
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
        )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        if proc.stdin is not None:
            proc.stdin.close()


def feed(proc: subprocess.Popen[str], lines: list[str], close: bool = False) -> None:
    assert proc.stdin is not None
    proc.stdin.write("".join(f"{line}\n" for line in lines))
    proc.stdin.flush()
    if close:
        proc.stdin.close()


def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"))


def chat_url(http: str, *rooms: str, name: str | None = None, token: str | None = None) -> str:
    query = [f"room={quote(r)}" for r in rooms]
    if name is not None:
        query.append(f"name={quote(name)}")
    if token is not None:
        query.append(f"token={quote(token)}")
    return f"{http}/?{'&'.join(query)}"


def joined(page: Page, room_id: str) -> None:
    expect(page.locator(f'.tab[data-room="{room_id}"]')).to_have_attribute("data-joined", "true")


def say(page: Page, text: str) -> None:
    page.fill("#message", text)
    page.press("#message", "Enter")


def messages(page: Page, room_id: str) -> Locator:
    """The chats the server delivered (not system lines, not own chats still pending)."""
    return page.locator(f'.log[data-room="{room_id}"] .msg:not(.system):not(.pending)')


def last_text(page: Page, room_id: str) -> Locator:
    return messages(page, room_id).locator(".text").last


def missing_notice(page: Page, room_id: str) -> Locator:
    return page.locator(f'.log[data-room="{room_id}"] .system', has_text=MISSING)


def members(page: Page, room_id: str) -> Locator:
    """The room's member list, one item per user."""
    return page.locator(f'.members[data-room="{room_id}"] li')


def presence_line(page: Page, room_id: str, text: str) -> Locator:
    return page.locator(f'.log[data-room="{room_id}"] .system.presence', has_text=text)


def offsets(page: Page, room_id: str) -> list[int]:
    return [int(o or "0") for o in messages(page, room_id).evaluate_all(
        "lines => lines.map(l => l.dataset.offset)"
    )]


def test_plain_get_serves_the_page(client_cluster: Cluster, open_page: OpenPage) -> None:
    page = open_page(client_cluster.edges[0].http + "/")
    expect(page).to_have_title("roomcast")
    expect(page.locator("#status")).to_have_attribute("data-state", "connected")
    expect(page.locator("#message")).to_be_disabled()  # no room yet


def test_two_pages_on_different_edges_chat(client_cluster: Cluster, open_page: OpenPage) -> None:
    r = room("lobby")
    first, second = client_cluster.edges[0], client_cluster.edges[1]
    alice = open_page(chat_url(first.http, r, name="alice"))
    bob = open_page(chat_url(second.http, r, name="bob"))
    joined(alice, r)
    joined(bob, r)
    expect(alice.locator("#status-text")).to_contain_text(f"connected to {first.url}")
    expect(bob.locator("#status-text")).to_contain_text(f"connected to {second.url}")

    say(alice, "hello from alice")
    expect(last_text(bob, r)).to_have_text("hello from alice")
    expect(last_text(alice, r)).to_have_text("hello from alice")
    expect(alice.locator("#message")).to_have_value("")
    say(bob, "hi alice")
    expect(last_text(alice, r)).to_have_text("hi alice")

    # Every message carries its sender's name, sent by its page; `from` is the user
    # id the page keeps in localStorage, shown as the name's tooltip.
    mine = messages(alice, r).first
    alice_id = mine.get_attribute("data-from")
    assert alice_id is not None and alice_id.startswith("u-")
    expect(mine.locator(".from")).to_have_text("alice (you)")
    expect(messages(bob, r).first.locator(".from")).to_have_text("alice")
    expect(messages(bob, r).first.locator(".from")).to_have_attribute("title", alice_id)
    expect(messages(alice, r).last.locator(".from")).to_have_text("bob")
    expect(messages(bob, r).first.locator(".time")).to_have_text(re.compile(r"^\d\d:\d\d:\d\d$"))
    shot(alice, "two-pages-alice")
    shot(bob, "two-pages-bob")


def test_names_member_lists_and_join_and_leave_lines_on_two_edges(
    client_cluster: Cluster, open_page: OpenPage
) -> None:
    r = room("people")
    first, second = client_cluster.edges[0], client_cluster.edges[1]
    alice = open_page(chat_url(first.http, r, name="Alice"))
    joined(alice, r)
    expect(members(alice, r)).to_have_text(["Alice (you)"])
    bob = open_page(chat_url(second.http, r, name="Bob"))
    joined(bob, r)
    # Each page lists both, live: alice's learnt of bob from a presence_join.
    expect(members(bob, r)).to_have_text(["Alice", "Bob (you)"])
    expect(members(alice, r)).to_have_text(["Alice (you)", "Bob"])
    expect(presence_line(alice, r, "Bob joined")).to_have_count(1)
    expect(alice.locator("#people-count")).to_have_text("2")
    expect(alice.locator(f'.log[data-room="{r}"] .presence')).to_have_count(1)  # none of hers

    say(bob, "hi from Bob")
    expect(last_text(alice, r)).to_have_text("hi from Bob")
    expect(messages(alice, r).last.locator(".from")).to_have_text("Bob")
    say(alice, "hi Bob")
    expect(last_text(bob, r)).to_have_text("hi Bob")
    expect(messages(bob, r).last.locator(".from")).to_have_text("Alice")
    alice_user = messages(bob, r).last.get_attribute("data-from")
    shot(alice, "presence-alice")

    # A reload is the same user (its id is kept in localStorage): listed once.
    alice.reload()
    joined(alice, r)
    say(alice, "back")
    expect(last_text(bob, r)).to_have_text("back")
    assert messages(bob, r).last.get_attribute("data-from") == alice_user
    expect(members(bob, r)).to_have_text(["Alice", "Bob (you)"])
    expect(members(alice, r)).to_have_text(["Alice (you)", "Bob"])

    bob.close()
    expect(presence_line(alice, r, "Bob left")).to_have_count(1, timeout=20_000)
    expect(members(alice, r)).to_have_text(["Alice (you)"])
    expect(alice.locator("#people-count")).to_have_text("1")
    shot(alice, "presence-bob-left")


def test_several_rooms_form_join_share_link_and_http_publish(
    client_cluster: Cluster, open_page: OpenPage
) -> None:
    import json
    import urllib.request

    r1, r2 = room("one"), room("two")
    edge = client_cluster.edges[2]
    page = open_page(edge.http + "/")
    page.fill("#name", "carol")
    for r in (r1, r2):
        page.fill("#room", r)
        page.click("#join")
        joined(page, r)
    expect(page.locator(".tab.active")).to_have_attribute("data-room", r2)
    assert f"room={r1}&room={r2}&name=carol" in page.url
    expect(page.locator("#share")).to_have_attribute("href", re.compile(f"room={r1}&room={r2}"))

    say(page, "into two")
    expect(last_text(page, r2)).to_have_text("into two")

    request = urllib.request.Request(
        f"{client_cluster.edges[0].http}/api/rooms/{r1}/messages",
        data=json.dumps({"message": "announcement"}).encode(),
        headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=5) as resp:
        assert resp.status == 202
    expect(page.locator(f'.tab[data-room="{r1}"] .badge')).to_have_text("1")
    page.click(f'.tab[data-room="{r1}"] .pick')
    expect(last_text(page, r1)).to_have_text("announcement")
    expect(messages(page, r1).last.locator(".from")).to_have_text("api")
    expect(page.locator(f'.tab[data-room="{r1}"] .badge')).to_have_text("")
    shot(page, "several-rooms")

    page.click(f'.tab[data-room="{r1}"] .leave')
    expect(page.locator(".tab")).to_have_count(1)
    expect(page.locator(".tab.active")).to_have_attribute("data-room", r2)


def test_html_in_a_message_is_shown_as_text(client_cluster: Cluster, open_page: OpenPage) -> None:
    r = room("xss")
    evil = "<img src=x onerror=alert(1)>"
    sender = open_page(chat_url(client_cluster.edges[0].http, r, name="<b>mallory</b>"))
    reader = open_page(chat_url(client_cluster.edges[1].http, r, name="reader"))
    dialogs: list[str] = []

    def on_dialog(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    for page in (sender, reader):
        page.on("dialog", on_dialog)
    joined(sender, r)
    joined(reader, r)
    say(sender, evil)
    for page in (sender, reader):
        expect(last_text(page, r)).to_have_text(evil)
        expect(page.locator(".log img")).to_have_count(0)
    expect(messages(sender, r).last.locator(".from")).to_have_text("<b>mallory</b> (you)")
    expect(messages(reader, r).last.locator(".from")).to_have_text("<b>mallory</b>")
    expect(members(reader, r).filter(has_text="<b>mallory</b>")).to_have_count(1)
    for page in (sender, reader):
        expect(page.locator(".log b, .members b")).to_have_count(0)
    shot(reader, "html-as-text")
    assert dialogs == []


def test_page_fails_over_when_its_edge_is_killed(
    fresh_cluster: Callable[..., Cluster], open_page: OpenPage
) -> None:
    cluster = fresh_cluster(edges=3)
    doomed, survivor, _ = cluster.edges
    r = room("failover")
    alice = open_page(chat_url(doomed.http, r, name="alice"))
    bob = open_page(chat_url(survivor.http, r, name="bob"))
    joined(alice, r)
    joined(bob, r)
    say(alice, "before")
    expect(last_text(bob, r)).to_have_text("before")
    shot(alice, "failover-before")

    doomed.proc.kill9()

    # The next edge of the list the page got from /api/edges.
    expect(alice.locator("#status-text")).to_contain_text(f"connected to {survivor.url}")
    joined(alice, r)
    expect(alice.locator(f'.log[data-room="{r}"] .system').last).to_contain_text("rejoined")
    say(alice, "after the crash")
    expect(last_text(bob, r)).to_have_text("after the crash")
    say(bob, "welcome back")
    expect(last_text(alice, r)).to_have_text("welcome back")
    shot(alice, "failover-after")


SECRET = "a-test-secret-that-is-at-least-32-bytes-long"


def test_page_passes_its_token_on_the_websocket_url(
    fresh_cluster: Callable[..., Cluster], open_page: OpenPage
) -> None:
    from edge.tokens import mint

    cluster = fresh_cluster(edges=1, env={"CHAT_JWT_SECRET": SECRET})
    token = mint(SECRET, "alice", rooms=["team-*"])
    edge = cluster.edges[0]
    page = open_page(chat_url(edge.http, "team-a", name="alice", token=token))
    joined(page, "team-a")
    assert "token=" not in page.url  # kept out of the address bar and the share link
    say(page, "signed in")
    expect(last_text(page, "team-a")).to_have_text("signed in")
    expect(messages(page, "team-a").last).to_have_attribute("data-from", "alice")

    # The token field works too: a fresh page, token typed in, room joined.
    sockets: list[str] = []
    other = open_page(edge.http + "/")
    other.on("websocket", lambda ws: sockets.append(ws.url))
    expect(other.locator("#status")).not_to_have_attribute("data-state", "connected")
    other.click("#token-box summary")
    other.fill("#token", mint(SECRET, "bob"))
    other.fill("#name", "bob")
    other.fill("#room", "team-a")
    other.click("#join")
    joined(other, "team-a")
    assert any("token=" in url for url in sockets)
    expect(other.locator(".tab")).to_have_count(1)


def test_page_script_parses_and_uses_no_markup_sinks() -> None:
    import shutil
    import subprocess

    script = ROOT / "edge" / "static" / "app.js"
    node = shutil.which("node")
    if node is not None:
        subprocess.run([node, "--check", str(script)], check=True, timeout=30)
    source = script.read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in source, sink


def test_a_page_joining_shows_the_last_50_messages_then_live_ones(
    fresh_cluster: Callable[..., Cluster], open_page: OpenPage, spawn: Spawn
) -> None:
    cluster = fresh_cluster(edges=2, env=NO_RATE_LIMIT)
    r = room("history")
    earlier = [f"earlier {i:02d}" for i in range(1, 61)]
    sender = spawn("chatclient.cli", cluster.edges[0].url, "--room", r)
    feed(sender, earlier, close=True)
    assert sender.wait(30) == 0  # every line came back: all 60 are in the room

    page = open_page(chat_url(cluster.edges[1].http, r, name="late"))
    joined(page, r)
    expect(messages(page, r)).to_have_count(50)
    assert messages(page, r).locator(".text").all_text_contents() == earlier[10:]
    assert offsets(page, r) == list(range(11, 61))
    say(page, "live after history")
    expect(last_text(page, r)).to_have_text("live after history")
    expect(messages(page, r)).to_have_count(51)
    assert offsets(page, r)[-1] == 61
    shot(page, "history-on-join")


def test_edge_killed_while_a_sender_posts_100_the_page_shows_each_once_in_order(
    fresh_cluster: Callable[..., Cluster], open_page: OpenPage, spawn: Spawn
) -> None:
    cluster = fresh_cluster(edges=3, env=NO_RATE_LIMIT)
    doomed, next_edge, sender_edge = cluster.edges
    r = room("failover")
    page = open_page(chat_url(doomed.http, r, name="watcher"))
    joined(page, r)
    texts = [f"message {i:03d}" for i in range(1, 101)]
    sender = spawn("chatclient.cli", sender_edge.url, "--room", r)
    feed(sender, texts[:30])
    expect(messages(page, r)).to_have_count(30)

    doomed.proc.kill9()
    feed(sender, texts[30:], close=True)  # posted while the page has no edge, or a new one

    expect(page.locator("#status-text")).to_contain_text(f"connected to {next_edge.url}")
    joined(page, r)
    assert sender.wait(30) == 0
    expect(messages(page, r)).to_have_count(100)
    assert messages(page, r).locator(".text").all_text_contents() == texts
    assert offsets(page, r) == list(range(1, 101))
    expect(missing_notice(page, r)).to_have_count(0)
    # Nothing more arrives late: the page's own next chat is the 101st line.
    say(page, "all there")
    expect(last_text(page, r)).to_have_text("all there")
    expect(messages(page, r)).to_have_count(101)
    expect(page.locator(".pending")).to_have_count(0)
    shot(page, "edge-killed-100")
    rejoined = page.locator(f'.log[data-room="{r}"] .system', has_text="rejoined")
    rejoined.evaluate("line => line.scrollIntoView({block: 'center'})")
    shot(page, "edge-killed-rejoined")


def test_a_chat_unacknowledged_when_the_connection_drops_is_resent_and_shown_once(
    client_cluster: Cluster, open_page: OpenPage
) -> None:
    r = room("resend")
    holding = True
    routes: list[WebSocketRoute] = []
    sent: list[str] = []

    def sockets(ws: WebSocketRoute) -> None:
        server = ws.connect_to_server()
        routes.extend((ws, server))

        def from_page(message: str | bytes) -> None:
            sent.append(str(message))
            server.send(message)

        def from_server(message: str | bytes) -> None:
            # Lose the ack and the copy of a chat the edge did accept.
            if not (holding and re.match(r'\{"type":"(ack|chat)"', str(message))):
                ws.send(message)

        ws.on_message(from_page)
        server.on_message(from_server)

    page = open_page(chat_url(client_cluster.edges[0].http, r, name="alice"), sockets=sockets)
    observer = open_page(chat_url(client_cluster.edges[1].http, r, name="bob"))
    joined(page, r)
    joined(observer, r)
    say(page, "said once")
    expect(last_text(observer, r)).to_have_text("said once")  # the edge accepted it
    expect(page.locator(".pending .text")).to_have_text("said once")  # no ack seen

    holding = False
    for route in routes:
        route.close()
    expect(page.locator(f'.log[data-room="{r}"] .system').last).to_contain_text("rejoined")
    expect(page.locator(".pending")).to_have_count(0)
    expect(last_text(page, r)).to_have_text("said once")
    chats = [m for m in sent if '"type":"chat"' in m]
    assert len(chats) == 2 and len({re.sub(r'"msgId":"[^"]+"', "", m) for m in chats}) == 1
    msg_ids = {re.search(r'"msgId":"([^"]+)"', m).group(1) for m in chats}  # type: ignore[union-attr]
    assert len(msg_ids) == 1  # the same msgId, sent again after the rejoin

    say(observer, "marker")
    for p in (page, observer):
        expect(last_text(p, r)).to_have_text("marker")
        assert messages(p, r).locator(".text").all_text_contents() == ["said once", "marker"]
    expect(missing_notice(page, r)).to_have_count(0)


def test_a_failed_recovery_says_messages_may_be_missing(
    fresh_cluster: Callable[..., Cluster], open_page: OpenPage, spawn: Spawn
) -> None:
    # The broker keeps 5 chats per room: 10 posted while the page has no edge are too many.
    cluster = fresh_cluster(edges=1, env=NO_RATE_LIMIT | {"CHAT_HISTORY_SIZE": "5"})
    (edge,) = cluster.edges
    r = room("gap")
    page = open_page(chat_url(edge.http, r, name="watcher"))
    joined(page, r)
    say(page, "before the gap")
    expect(last_text(page, r)).to_have_text("before the gap")

    edge.proc.kill9()
    expect(page.locator("#status")).not_to_have_attribute("data-state", "connected")
    away = [f"while away {i:02d}" for i in range(1, 11)]
    publisher = spawn(
        "chatclient.publish_cli", "--room", r, "--broker-pub", cluster.broker_pub,
        "--broker-sub", cluster.broker_sub, "-",
    )
    feed(publisher, away, close=True)
    assert publisher.wait(30) == 0
    say(page, "typed while offline")  # kept as pending, sent once the room is rejoined
    expect(page.locator(".pending .text")).to_have_text("typed while offline")
    cluster.start_edge(edge.port).wait_healthy()

    # The page's backoff may have grown to 8 s meanwhile.
    expect(missing_notice(page, r)).to_be_visible(timeout=30_000)
    # The one shown, the 5 the broker still holds, then the one sent after the rejoin.
    expect(messages(page, r)).to_have_count(7)
    assert messages(page, r).locator(".text").all_text_contents() == [
        "before the gap", *away[5:], "typed while offline"
    ]
    assert offsets(page, r) == [1, 7, 8, 9, 10, 11, 12]
    expect(page.locator(".pending")).to_have_count(0)
    shot(page, "recovery-failed")


def test_a_broker_restart_says_messages_may_be_missing(
    fresh_cluster: Callable[..., Cluster], open_page: OpenPage
) -> None:
    cluster = fresh_cluster(edges=1)
    edge = cluster.edges[0]
    r = room("resync")
    page = open_page(chat_url(edge.http, r, name="watcher"))
    joined(page, r)
    say(page, "before the restart")
    expect(last_text(page, r)).to_have_text("before the restart")
    first_epoch = messages(page, r).last.get_attribute("data-epoch")

    assert cluster.broker is not None
    cluster.broker.kill9()
    cluster.start_broker()
    expect(missing_notice(page, r)).to_be_visible(timeout=20_000)  # a resync, same connection
    say(page, "after the restart")
    expect(last_text(page, r)).to_have_text("after the restart")
    assert messages(page, r).last.get_attribute("data-epoch") != first_epoch
    expect(messages(page, r)).to_have_count(2)
