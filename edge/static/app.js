// roomcast web chat: protocol v2 over one WebSocket, several rooms at once.
//
// Everything a server or another user sends is shown with textContent, never
// parsed as HTML. The connection fails over to the next edge of the list the
// server gives at /api/edges, with exponential backoff and full jitter, and
// rejoins every room.
//
// Identity and presence (section 7): without a token the page connects with
// `user` (a random id kept in localStorage, so a reload or another tab is the
// same user) and `name` (the name typed) on the WebSocket URL; with a token,
// the token says who it is. Messages show the sender's `name`. Every room is
// joined with `presence: true`; after each (re)join the page asks for the
// room's users (`presence`, page after page while `next` says more follow)
// and then applies `presence_join` / `presence_leave` as they come: the
// member list, and "alice joined" / "alice left" lines in the room's log.
//
// Every room's stream has an epoch and offsets 1, 2, 3, ... A first join asks
// for the last HISTORY_ON_JOIN chats; a rejoin asks to recover everything
// after the last offset shown (`since`), on whichever edge the page lands.
// A chat is shown only if its offset is past the last one shown in that
// epoch, so a replay that overlaps what is on screen shows nothing twice.
// When the server says the stream cannot be repaired (`recovered: false`,
// `resync`), the room's log says so. Own chats carry a random msgId and stay
// pending until acknowledged; unacknowledged ones are sent again, with the
// same msgId, after every rejoin: the server delivers a msgId once.
"use strict";

(() => {
  const BACKOFF_BASE_MS = 250;
  const BACKOFF_MAX_MS = 8000;
  const KEEPALIVE_MS = 15000;
  const SILENCE_LIMIT_MS = 40000; // nothing heard for this long: the connection is dead
  const MAX_LINES = 500; // per room; older lines are dropped from the page
  const HISTORY_ON_JOIN = 50; // chats replayed on a first join (and when recovery fails)
  const RESEND_AFTER_MS = 1000; // after `unavailable`, a pending chat is sent again
  const MISSING = "some messages may be missing";
  const MAX_LABEL = 64; // a user or name: 1 to 64 characters, no control characters
  const USER_KEY = "roomcast.user";
  const RELIST_MS = 30000; // a room too big for presence events: its list is asked again

  const $ = (id) => document.getElementById(id);
  const ui = {
    status: $("status"),
    statusText: $("status-text"),
    joinForm: $("join-form"),
    name: $("name"),
    room: $("room"),
    token: $("token"),
    tokenBox: $("token-box"),
    rooms: $("rooms"),
    logs: $("logs"),
    rosters: $("rosters"),
    peopleCount: $("people-count"),
    empty: $("empty"),
    sendForm: $("send-form"),
    message: $("message"),
    send: $("send"),
    shareBox: $("share-box"),
    share: $("share"),
    notice: $("notice"),
  };

  const state = {
    edges: [],
    edgeIndex: 0,
    attempt: 0, // failed attempts since the last working connection
    ws: null,
    retryTimer: null,
    url: null,
    connectionId: null,
    ownIds: new Set(), // every connection id this page has had: its own messages
    rooms: new Map(), // room id -> {joined, tab, log, badge, unread, epoch, shown, top, ...}
    // Own chats by msgId: {roomId, message, acked, line}. `line` is the pending
    // line shown until the server's copy arrives; unacked ones are resent.
    sent: new Map(),
    ownMsgIds: new Set(),
    active: null,
    name: "",
    token: "",
    user: "", // this browser's user id, sent with `name` when there is no token
    connName: null, // the name the current connection was opened with
    connToken: null, // and the token
    lastHeard: 0,
    // Requests awaiting the server's verdict, oldest first. Each request is
    // followed by a ping and the server answers in order, so an error belongs
    // to the oldest request whose pong has not come back yet.
    inFlight: [],
  };

  // Connection.

  function setStatus(kind, text) {
    ui.status.dataset.state = kind;
    ui.statusText.textContent = text;
    const ready = kind === "connected";
    ui.send.disabled = !ready || !activeJoined();
  }

  function describeConnected() {
    const who = state.name ? `${state.name} · ` : "";
    const id = state.connectionId ? ` as ${state.connectionId}` : "";
    setStatus("connected", `${who}connected to ${state.url}${id}`);
  }

  function label(text) {
    // What the edge accepts as a user or a name; anything else would be refused (400).
    return Array.from(text.replace(/[\u0000-\u001f\u007f-\u009f]/g, "")).slice(0, MAX_LABEL).join("");
  }

  function withIdentity(url) {
    const u = new URL(url);
    if (state.token) {
      u.searchParams.set("token", state.token); // the token names the user
    } else {
      u.searchParams.set("user", state.user);
      const name = label(state.name);
      if (name) u.searchParams.set("name", name);
    }
    return u.toString();
  }

  function browserUser() {
    // One id per browser: a reload, or another tab, is the same user.
    let user = "";
    try {
      user = localStorage.getItem(USER_KEY) || "";
    } catch (err) {
      // storage blocked: an id for this page only
    }
    if (label(user) !== user || !user) {
      user = `u-${newMsgId().replace(/-/g, "").slice(0, 16)}`;
      try {
        localStorage.setItem(USER_KEY, user);
      } catch (err) {
        // storage blocked
      }
    }
    return user;
  }

  function connect() {
    clearTimeout(state.retryTimer);
    state.retryTimer = null;
    const url = state.edges[state.edgeIndex];
    state.url = url;
    setStatus("connecting", `connecting to ${url}…`);
    state.connName = state.name;
    state.connToken = state.token;
    let ws;
    try {
      ws = new WebSocket(withIdentity(url));
    } catch (err) {
      retry(`cannot connect to ${url}`);
      return;
    }
    state.ws = ws;
    let opened = false;
    ws.onopen = () => {
      if (ws !== state.ws) return;
      opened = true;
      state.lastHeard = Date.now();
      state.inFlight = [];
      describeConnected();
      for (const room of state.rooms.values()) request(joinFrame(room));
      if (state.rooms.size === 0) request({ type: "ping" });
    };
    ws.onmessage = (event) => {
      if (ws !== state.ws) return;
      state.lastHeard = Date.now();
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch (err) {
        return;
      }
      handle(frame);
    };
    ws.onclose = (event) => {
      if (ws !== state.ws) return;
      // A refused upgrade (edge down, or a token required) closes before opening.
      const hint = state.token ? "" : " (is a token required?)";
      lost(opened ? `connection to ${url} closed (${event.code})` : `cannot connect to ${url}${hint}`);
    };
  }

  function drop() {
    const ws = state.ws;
    state.ws = null;
    state.connectionId = null;
    state.inFlight = [];
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = null;
      try {
        ws.close();
      } catch (err) {
        // already closed
      }
    }
    for (const room of state.rooms.values()) markJoined(room, false);
  }

  function lost(why) {
    drop();
    retry(why);
  }

  function reconnectNow() {
    // A new token or name applies to a new connection: to the same edge, at once.
    drop();
    clearTimeout(state.retryTimer);
    state.retryTimer = null;
    connect();
  }

  function retry(why) {
    // Exponential backoff with full jitter, each attempt on the next edge.
    state.edgeIndex = (state.edgeIndex + 1) % state.edges.length;
    const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** state.attempt);
    const delay = Math.round(Math.random() * ceiling);
    state.attempt += 1;
    const next = state.edges[state.edgeIndex];
    setStatus("reconnecting", `${why}; trying ${next} in ${(delay / 1000).toFixed(1)} s`);
    state.retryTimer = setTimeout(connect, delay);
  }

  function request(frame) {
    const ws = state.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) return false;
    ws.send(JSON.stringify(frame));
    if (frame.type !== "ping") ws.send('{"type":"ping"}');
    state.inFlight.push(frame);
    return true;
  }

  setInterval(() => {
    const ws = state.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) return;
    if (Date.now() - state.lastHeard > SILENCE_LIMIT_MS) {
      lost(`no reply from ${state.url}`);
    } else {
      request({ type: "ping" });
    }
  }, KEEPALIVE_MS);

  setInterval(() => {
    // Without events the list is only as fresh as its last listing: the open room's.
    const room = state.rooms.get(state.active);
    if (room && room.joined && !room.live && !room.incoming) askPresence(room, null);
  }, RELIST_MS);

  // Frames from the server.

  function handle(frame) {
    const payload = frame.payload || {};
    switch (frame.type) {
      case "chat":
        showChat(payload);
        break;
      case "joined": {
        state.attempt = 0;
        state.connectionId = payload.connectionId;
        state.ownIds.add(payload.connectionId);
        const room = state.rooms.get(payload.roomId);
        if (room) {
          const again = room.everJoined ? "rejoined" : "joined";
          const caughtUp = payload.recovered === true ? ": nothing missed" : "";
          systemLine(room, `${again} through ${state.url} as ${payload.connectionId}${caughtUp}`);
          takeJoined(room, payload);
          room.everJoined = true;
          markJoined(room, true);
          resendPending(room);
          askPresence(room, null);
        }
        describeConnected();
        break;
      }
      case "resync": {
        const room = state.rooms.get(payload.roomId);
        if (room && typeof payload.epoch === "string" && Number.isInteger(payload.offset)) {
          // Chats continue from offset + 1 of this epoch; what came before is gone.
          room.epoch = payload.epoch;
          room.shown = payload.offset;
          room.top = payload.offset;
          missingLine(room);
        }
        break;
      }
      case "ack":
        acknowledged(payload);
        break;
      case "presence":
        listed(payload);
        break;
      case "presence_join":
      case "presence_leave":
        presenceEvent(frame.type, payload);
        break;
      case "left":
        break;
      case "pong":
        state.attempt = 0;
        state.inFlight.shift();
        break;
      case "error":
        showError(payload);
        break;
      default:
        break;
    }
  }

  function showError(payload) {
    const text = `${payload.code}: ${payload.message}`;
    if (typeof payload.msgId === "string" && state.sent.has(payload.msgId)) {
      sendFailed(payload.msgId, payload.code, text);
      return;
    }
    const frame = state.inFlight.length ? state.inFlight[0] : null;
    if (frame && frame.type === "presence") {
      // No list for now (an edge without presence, or the room was just left).
      const room = state.rooms.get(frame.payload.roomId);
      if (room) room.incoming = null;
      return;
    }
    if (frame && frame.type === "join") {
      const roomId = frame.payload.roomId;
      if (payload.code === "rate_limited" || payload.code === "unavailable") {
        // Many rooms rejoined at once can exceed the join rate: ask again shortly.
        setTimeout(() => {
          const room = state.rooms.get(roomId);
          if (room && !room.joined) request(joinFrame(room));
        }, 1000);
        return;
      }
      notify(`could not join ${roomId}: ${text}`);
      removeRoom(roomId);
      return;
    }
    const roomId = frame && frame.payload && frame.payload.roomId;
    const room = state.rooms.get(roomId) || state.rooms.get(state.active);
    if (room) systemLine(room, `not sent: ${text}`, "error");
    else notify(text);
  }

  // Rooms.

  function addRoom(roomId) {
    if (state.rooms.has(roomId)) {
      activate(roomId);
      return;
    }
    const tab = document.createElement("li");
    tab.className = "tab";
    tab.dataset.room = roomId;
    tab.dataset.joined = "false";
    const pick = document.createElement("button");
    pick.type = "button";
    pick.className = "pick";
    const label = document.createElement("span");
    label.className = "label";
    label.textContent = roomId;
    const badge = document.createElement("span");
    badge.className = "badge";
    pick.append(label, badge);
    pick.addEventListener("click", () => activate(roomId));
    const leave = document.createElement("button");
    leave.type = "button";
    leave.className = "leave";
    leave.title = `Leave ${roomId}`;
    leave.setAttribute("aria-label", `Leave ${roomId}`);
    leave.textContent = "×";
    leave.addEventListener("click", () => leaveRoom(roomId));
    tab.append(pick, leave);
    ui.rooms.append(tab);

    const log = document.createElement("div");
    log.className = "log";
    log.dataset.room = roomId;
    log.setAttribute("role", "log");
    log.setAttribute("aria-live", "polite");
    ui.logs.append(log);

    const roster = document.createElement("ul");
    roster.className = "members";
    roster.dataset.room = roomId;
    roster.setAttribute("aria-label", `People in ${roomId}`);
    ui.rosters.append(roster);

    const room = {
      id: roomId, joined: false, everJoined: false, tab, log, badge, unread: 0,
      roster, // the member list's element
      members: new Map(), // user -> name: who is in the room, from presence
      listed: false, // a listing arrived: the count means something
      live: true, // the server sends this room's presence events (not in very big rooms)
      incoming: null, // a listing arriving page by page: user -> name

      epoch: null, // the stream's epoch, once joined
      shown: null, // last offset shown in that epoch (null: none yet)
      top: 0, // the room's top when last (re)joined without recovery
      historyTop: 0, // chats up to this offset are history replayed on join
    };
    state.rooms.set(roomId, room);
    activate(roomId);
    request(joinFrame(room));
    updateShare();
  }

  function leaveRoom(roomId) {
    const room = state.rooms.get(roomId);
    if (!room) return;
    if (room.joined) request({ type: "leave", payload: { roomId } });
    removeRoom(roomId);
  }

  function removeRoom(roomId) {
    const room = state.rooms.get(roomId);
    if (!room) return;
    room.tab.remove();
    room.log.remove();
    room.roster.remove();
    state.rooms.delete(roomId);
    for (const [msgId, entry] of state.sent) if (entry.roomId === roomId) state.sent.delete(msgId);
    if (state.active === roomId) {
      const next = state.rooms.keys().next();
      state.active = null;
      if (!next.done) activate(next.value);
    }
    refreshComposer();
    updateShare();
  }

  function activate(roomId) {
    state.active = roomId;
    for (const room of state.rooms.values()) {
      const on = room.id === roomId;
      room.tab.classList.toggle("active", on);
      room.log.hidden = !on;
      room.roster.hidden = !on;
      if (on) {
        room.unread = 0;
        room.badge.textContent = "";
        room.log.scrollTop = room.log.scrollHeight;
      }
    }
    refreshComposer();
    countPeople();
    ui.message.focus();
  }

  function markJoined(room, joined) {
    room.joined = joined;
    room.tab.dataset.joined = String(joined);
    refreshComposer();
  }

  function activeJoined() {
    const room = state.rooms.get(state.active);
    return Boolean(room && room.joined);
  }

  function refreshComposer() {
    const hasRoom = state.active !== null;
    ui.empty.hidden = hasRoom;
    ui.message.disabled = !hasRoom;
    ui.message.placeholder = hasRoom ? `Message #${state.active} (Enter sends)` : "Join a room first";
    ui.send.disabled = !(state.ws && state.ws.readyState === WebSocket.OPEN && activeJoined());
  }

  // Messages.

  function two(n) {
    return String(n).padStart(2, "0");
  }

  function clock(ms) {
    const t = new Date(ms);
    return `${two(t.getHours())}:${two(t.getMinutes())}:${two(t.getSeconds())}`;
  }

  function append(room, line) {
    const log = room.log;
    const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
    // Own chats still pending stay last, below everything the server sent.
    const pending = line.classList.contains("pending") ? null : log.querySelector(":scope > .pending");
    log.insertBefore(line, pending);
    while (log.childElementCount > MAX_LINES && !log.firstElementChild.classList.contains("pending")) {
      log.firstElementChild.remove();
    }
    if (atBottom || room.id !== state.active) log.scrollTop = log.scrollHeight;
  }

  function span(cls, text) {
    const s = document.createElement("span");
    s.className = cls;
    s.textContent = text; // text, never markup
    return s;
  }

  // Streams: where each room is, and which chats are new.

  function position(room) {
    return room.shown !== null ? room.shown : room.top;
  }

  function joinFrame(room) {
    const payload = { roomId: room.id, history: HISTORY_ON_JOIN, presence: true };
    // `history` applies only when recovery from `since` fails.
    if (room.epoch !== null) payload.since = { epoch: room.epoch, offset: position(room) };
    return { type: "join", payload };
  }

  function takeJoined(room, p) {
    if (typeof p.epoch !== "string" || !Number.isInteger(p.offset)) return; // a v1 server
    if (p.recovered === true) return; // chats after room.shown follow, in order
    if (p.recovered === false) missingLine(room);
    // The last HISTORY_ON_JOIN chats up to p.offset follow, then live ones.
    // In the same epoch, the ones already on screen are skipped as they come.
    if (p.epoch !== room.epoch) {
      room.epoch = p.epoch;
      room.shown = null;
    }
    room.top = p.offset;
    room.historyTop = p.offset;
    for (const [msgId, entry] of state.sent) {
      // Accepted but maybe never delivered to this page: stop waiting for the copy.
      if (entry.roomId === room.id && entry.acked && p.recovered === false) settle(msgId, entry);
    }
  }

  function isNew(room, p) {
    if (typeof p.epoch !== "string" || !Number.isInteger(p.offset)) return true; // a v1 server
    if (p.epoch !== room.epoch) {
      // A new epoch without resync or joined first: continuity is not certain.
      if (room.epoch !== null) missingLine(room);
      room.epoch = p.epoch;
      room.shown = null;
      room.top = 0;
      room.historyTop = 0;
    }
    if (room.shown !== null && p.offset <= room.shown) return false;
    room.shown = p.offset;
    return true;
  }

  function isMe(user) {
    // Without a token `from` is the user this page sent; v1 edges: a connection id.
    return (!state.token && user === state.user) || state.ownIds.has(user);
  }

  function showChat(p) {
    const room = state.rooms.get(p.roomId);
    if (!room || !isNew(room, p)) return;
    const own = typeof p.msgId === "string" && state.ownMsgIds.has(p.msgId);
    if (own) delivered(p.msgId);
    const mine = own || isMe(p.from);
    const line = document.createElement("div");
    line.className = mine ? "msg mine" : "msg";
    line.dataset.id = String(p.id);
    line.dataset.from = String(p.from);
    if (Number.isInteger(p.offset)) line.dataset.offset = String(p.offset);
    if (typeof p.epoch === "string") line.dataset.epoch = p.epoch;
    const time = span("time", clock(p.ts || Date.now()));
    time.title = new Date(p.ts || Date.now()).toISOString();
    const name = typeof p.name === "string" && p.name ? p.name : String(p.from);
    const from = span("from", mine ? `${name} (you)` : name);
    from.title = String(p.from); // the user id: names are not unique
    line.append(time, from, span("text", String(p.message)));
    append(room, line);
    const replayed = p.epoch === room.epoch && p.offset <= room.historyTop;
    if (room.id !== state.active && !replayed) {
      room.unread += 1;
      room.badge.textContent = String(room.unread);
    }
  }

  // Presence: who is in each room.

  function askPresence(room, cursor) {
    const payload = { roomId: room.id };
    if (cursor) payload.cursor = cursor;
    if (!cursor) room.incoming = new Map();
    request({ type: "presence", payload });
  }

  function listed(p) {
    const room = state.rooms.get(p.roomId);
    if (!room || !room.incoming || !Array.isArray(p.users)) return;
    for (const u of p.users) {
      if (u && typeof u.user === "string") room.incoming.set(u.user, String(u.name || u.user));
    }
    if (typeof p.next === "string" && p.next) {
      askPresence(room, p.next); // more users follow
      return;
    }
    room.members = room.incoming;
    room.incoming = null;
    room.listed = true;
    room.live = p.events !== false;
    room.roster.dataset.live = String(room.live);
    renderMembers(room);
  }

  function presenceEvent(type, p) {
    const room = state.rooms.get(p.roomId);
    if (!room || typeof p.user !== "string") return;
    let name;
    if (type === "presence_join") {
      name = String(p.name || p.user);
      room.members.set(p.user, name);
      if (room.incoming) room.incoming.set(p.user, name);
    } else {
      name = room.members.get(p.user) || p.user;
      room.members.delete(p.user);
      if (room.incoming) room.incoming.delete(p.user);
    }
    renderMembers(room);
    // The page says itself when it joins; its own user's lines would only repeat that.
    if (isMe(p.user)) return;
    systemLine(room, `${name} ${type === "presence_join" ? "joined" : "left"}`, "presence");
  }

  function renderMembers(room) {
    const people = Array.from(room.members, ([user, name]) => ({ user, name }));
    people.sort((a, b) => a.name.localeCompare(b.name) || (a.user < b.user ? -1 : 1));
    const items = people.map(({ user, name }) => {
      const item = document.createElement("li");
      item.dataset.user = user;
      item.title = user;
      item.textContent = name; // text, never markup
      if (isMe(user)) {
        item.classList.add("me");
        item.append(span("you", " (you)"));
      }
      return item;
    });
    room.roster.replaceChildren(...items);
    countPeople();
  }

  function countPeople() {
    const room = state.rooms.get(state.active);
    ui.peopleCount.textContent = room && room.listed ? String(room.members.size) : "";
  }

  function missingLine(room) {
    systemLine(room, MISSING, "gap");
  }

  function systemLine(room, text, kind) {
    const line = document.createElement("div");
    line.className = kind ? `msg system ${kind}` : "msg system";
    line.append(span("time", clock(Date.now())), span("text", text));
    append(room, line);
  }

  function notify(text) {
    ui.notice.textContent = text;
  }

  // Sending and joining.

  function newMsgId() {
    if (crypto.randomUUID) return crypto.randomUUID();
    // Outside a secure context randomUUID is missing; getRandomValues is not.
    const bytes = crypto.getRandomValues(new Uint8Array(16));
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function sendMessage() {
    const text = ui.message.value;
    const room = state.rooms.get(state.active);
    if (!text.trim() || !room) return;
    const msgId = newMsgId();
    const line = document.createElement("div");
    line.className = "msg mine pending";
    line.dataset.msgId = msgId;
    line.title = "sending…";
    line.append(span("time", "…"), span("from", `${state.connName || state.name} (you)`), span("text", text));
    append(room, line);
    state.sent.set(msgId, { roomId: room.id, message: text, acked: false, line });
    state.ownMsgIds.add(msgId);
    ui.message.value = "";
    // Not joined right now: it goes out, with this msgId, once the room is rejoined.
    if (room.joined) transmit(msgId);
    notify(room.joined ? "" : "not connected: the message is sent once the room is rejoined");
  }

  function transmit(msgId) {
    const entry = state.sent.get(msgId);
    if (!entry || entry.acked) return;
    request({ type: "chat", payload: { roomId: entry.roomId, message: entry.message, msgId } });
  }

  function resendPending(room) {
    for (const [msgId, entry] of state.sent) {
      if (entry.roomId === room.id && !entry.acked) {
        transmit(msgId);
        notify("");
      }
    }
  }

  function acknowledged(p) {
    const entry = state.sent.get(p.msgId);
    if (!entry) return;
    entry.acked = true;
    if (entry.line) entry.line.title = "sent";
    const room = state.rooms.get(entry.roomId);
    // A duplicate was accepted earlier: its copy was shown, is being replayed,
    // or was lost with a broken stream. Otherwise the copy is on its way.
    const passed = room && p.epoch === room.epoch && room.shown !== null && p.offset <= room.shown;
    if (!entry.line || p.duplicate === true || passed) settle(p.msgId, entry);
  }

  function delivered(msgId) {
    // The server's copy of an own chat: it was accepted even if its ack was lost.
    const entry = state.sent.get(msgId);
    if (entry) settle(msgId, entry);
  }

  function settle(msgId, entry) {
    if (entry.line) entry.line.remove();
    entry.line = null;
    state.sent.delete(msgId);
  }

  function sendFailed(msgId, code, text) {
    const entry = state.sent.get(msgId);
    if (code === "unavailable") {
      // No verdict from the broker yet: the same msgId again is safe.
      setTimeout(() => {
        const room = state.rooms.get(entry.roomId);
        if (room && room.joined) transmit(msgId);
      }, RESEND_AFTER_MS);
      return;
    }
    settle(msgId, entry);
    const room = state.rooms.get(entry.roomId);
    if (room) systemLine(room, `not sent: ${text}`, "error");
  }

  ui.message.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      sendMessage();
    }
  });
  ui.sendForm.addEventListener("submit", (event) => {
    event.preventDefault();
    sendMessage();
  });

  function chooseName() {
    const typed = ui.name.value.trim();
    if (typed) return typed;
    const guest = `guest-${Math.floor(Math.random() * 0x10000).toString(16).padStart(4, "0")}`;
    ui.name.value = guest;
    return guest;
  }

  ui.joinForm.addEventListener("submit", (event) => {
    event.preventDefault();
    state.name = chooseName();
    const token = ui.token.value.trim();
    const roomId = ui.room.value.trim();
    if (!roomId) {
      notify("type a room name");
      return;
    }
    ui.room.value = "";
    notify("");
    if (token !== state.token) {
      state.token = token;
      sessionStorage.setItem("roomcast.token", token);
    }
    // A new token or name only applies to a new connection.
    const renamed = !state.token && state.name !== state.connName;
    if ((token !== state.connToken || renamed) && (state.ws || state.retryTimer)) reconnectNow();
    addRoom(roomId);
    if (state.ws) describeConnected();
  });

  function updateShare() {
    const params = new URLSearchParams();
    for (const roomId of state.rooms.keys()) params.append("room", roomId);
    if (state.name) params.set("name", state.name);
    const link = `${location.pathname}?${params}`;
    ui.share.href = link;
    ui.share.textContent = `${location.host}${link}`;
    ui.shareBox.hidden = state.rooms.size === 0;
    // The address bar becomes the shareable link; a token is never put in it.
    history.replaceState(null, "", state.rooms.size ? link : location.pathname);
  }

  // Start-up.

  async function loadEdges() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const own = `${scheme}//${location.host}/`;
    try {
      const reply = await fetch("/api/edges", { cache: "no-store" });
      const body = await reply.json();
      const edges = (body.edges || []).filter((u) => typeof u === "string" && u);
      const self = typeof body.self === "string" ? body.self : own;
      const at = edges.indexOf(self);
      if (at >= 0) return { edges, start: at };
      return { edges: [self, ...edges], start: 0 };
    } catch (err) {
      return { edges: [own], start: 0 };
    }
  }

  async function start() {
    const params = new URLSearchParams(location.search);
    state.token = params.get("token") || sessionStorage.getItem("roomcast.token") || "";
    if (state.token) sessionStorage.setItem("roomcast.token", state.token);
    ui.token.value = state.token;
    state.user = browserUser();
    ui.name.value = params.get("name") || "";
    state.name = ui.name.value.trim();
    const wanted = params.getAll("room").map((r) => r.trim()).filter(Boolean);
    if (wanted.length && !state.name) state.name = chooseName();
    const { edges, start: first } = await loadEdges();
    state.edges = edges;
    state.edgeIndex = first;
    for (const roomId of wanted) addRoom(roomId);
    if (wanted.length) activate(wanted[0]);
    refreshComposer();
    updateShare();
    connect();
  }

  start();
})();
