// The seed design: one Node.js process, rooms in a Map, the `ws` package.
// Speaks protocol v1; run by `chat-bench` as `node server.js --port P`.
'use strict';

const http = require('http');
const { WebSocketServer } = require('ws');

const MAX_ROOM_ID = 128;
const MAX_MESSAGE = 4096;

function flag(name, fallback) {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : fallback;
}

const port = Number(flag('--port', '8090'));
const host = flag('--host', '127.0.0.1');
const instance = Date.now().toString(36);
const rooms = new Map(); // roomId -> Set of sockets
let connections = 0;
let messages = 0;

const server = http.createServer((req, res) => {
  if (req.url === '/healthz') {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end('{"status":"ok"}');
    return;
  }
  res.writeHead(404);
  res.end();
});

const wss = new WebSocketServer({ server, perMessageDeflate: false, maxPayload: 64 * 1024 });

function send(ws, type, payload) {
  ws.send(JSON.stringify(payload === undefined ? { type } : { type, payload }));
}

function error(ws, code, message) {
  send(ws, 'error', { code, message });
}

function leave(ws, roomId) {
  const members = rooms.get(roomId);
  if (!members) return;
  members.delete(ws);
  if (members.size === 0) rooms.delete(roomId);
}

function onFrame(ws, data) {
  let frame;
  try {
    frame = JSON.parse(data);
  } catch (e) {
    return error(ws, 'bad_json', 'frame is not valid JSON');
  }
  if (frame === null || typeof frame !== 'object') {
    return error(ws, 'bad_json', 'frame must be a JSON object');
  }
  const payload = frame.payload || {};
  switch (frame.type) {
    case 'ping':
      return send(ws, 'pong');
    case 'join': {
      const roomId = payload.roomId;
      if (typeof roomId !== 'string' || roomId.length < 1 || roomId.length > MAX_ROOM_ID) {
        return error(ws, 'invalid_payload', 'roomId must be 1..128 characters');
      }
      if (!rooms.has(roomId)) rooms.set(roomId, new Set());
      rooms.get(roomId).add(ws);
      ws.rooms.add(roomId);
      return send(ws, 'joined', { roomId, connectionId: ws.id });
    }
    case 'leave': {
      const roomId = payload.roomId;
      if (!ws.rooms.has(roomId)) return error(ws, 'not_in_room', `not in room ${roomId}`);
      ws.rooms.delete(roomId);
      leave(ws, roomId);
      return send(ws, 'left', { roomId });
    }
    case 'chat': {
      let roomId = payload.roomId;
      if (roomId === undefined && ws.rooms.size === 1) roomId = ws.rooms.values().next().value;
      if (!ws.rooms.has(roomId)) return error(ws, 'not_in_room', 'join the room before chatting');
      const message = payload.message;
      if (typeof message !== 'string' || message.length > MAX_MESSAGE) {
        return error(ws, 'invalid_payload', 'message must be text up to 4096 chars');
      }
      messages += 1;
      const out = JSON.stringify({
        type: 'chat',
        payload: { roomId, message, id: `${instance}-${messages}`, from: ws.id, ts: Date.now() },
      });
      for (const member of rooms.get(roomId)) member.send(out);
      return undefined;
    }
    default:
      return error(ws, 'unknown_type', `unknown type ${JSON.stringify(frame.type)}`);
  }
}

wss.on('connection', (ws) => {
  connections += 1;
  ws.id = `${instance}.${connections.toString(36)}`;
  ws.rooms = new Set();
  ws.on('message', (data, isBinary) => {
    if (isBinary) return error(ws, 'bad_json', 'send JSON text frames');
    return onFrame(ws, data.toString());
  });
  ws.on('close', () => {
    for (const roomId of ws.rooms) leave(ws, roomId);
    ws.rooms.clear();
  });
  ws.on('error', () => {});
});

server.listen({ port, host, backlog: 4096 });

for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => process.exit(0));
}
