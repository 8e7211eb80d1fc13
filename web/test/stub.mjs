// A stand-in for a DOTS node, for testing the page alone: it serves
// web/dist/, answers GET /api/v1/webrtc, and is a tiny SIP registrar and
// relay over WebSocket (path /sip, subprotocol sip) with digest for REGISTER
// (MD5 and SHA-256 offered, MD5 checked). It relays requests to the registered WebSocket of the
// Request-URI's user and responses back by their Via branch; it answers 404
// for unknown users and 480 for known ones that are not registered.
//
//   node test/stub.mjs '{"users": {"alice": "pw1", "bob": "pw2"}}'
//
// prints {"url": "http://127.0.0.1:PORT/"} and serves until killed.
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const dist = join(dirname(fileURLToPath(import.meta.url)), '..', 'dist');
const FILES = {
  '/': ['index.html', 'text/html; charset=utf-8'],
  '/softphone.js': ['softphone.js', 'text/javascript; charset=utf-8'],
  '/softphone.css': ['softphone.css', 'text/css; charset=utf-8'],
};
const REALM = 'dots';
const md5 = (s) => createHash('md5').update(s).digest('hex');

// ---- SIP text ------------------------------------------------------------

function parseSip(text) {
  const end = text.indexOf('\r\n\r\n');
  const head = end >= 0 ? text.slice(0, end) : text;
  const body = end >= 0 ? text.slice(end + 4) : '';
  const [first, ...lines] = head.split('\r\n');
  const headers = [];
  for (const line of lines) {
    const i = line.indexOf(':');
    if (i > 0) headers.push([line.slice(0, i).trim().toLowerCase(), line.slice(i + 1).trim()]);
  }
  const get = (n, c) => (headers.find(([k]) => k === n || k === c) || [])[1];
  const isResponse = first.startsWith('SIP/2.0 ');
  const [method, ruri] = first.split(' ');
  return { first, headers, body, get, isResponse, method, ruri };
}

function userOf(uri) {
  const m = /sips?:([^@;>]+)@/.exec(uri || '');
  return m ? m[1] : null;
}

function branchOf(msg) {
  const via = (msg.get('via', 'v') || '').split(',')[0];
  const m = /;branch=([^;,\s]+)/.exec(via);
  return m ? m[1] : null;
}

function respond(req, code, phrase, extra = []) {
  const copy = req.headers
    .filter(([k]) => ['via', 'v', 'from', 'f', 'to', 't', 'call-id', 'i', 'cseq'].includes(k))
    .map(([k, v]) => {
      if ((k === 'to' || k === 't') && !/;tag=/.test(v) && code > 100) return `${k}: ${v};tag=${randomBytes(4).toString('hex')}`;
      return `${k}: ${v}`;
    });
  return [`SIP/2.0 ${code} ${phrase}`, ...copy, ...extra, 'Content-Length: 0', '', ''].join('\r\n');
}

function digestParams(value) {
  const out = {};
  for (const m of value.replace(/^Digest\s+/i, '').matchAll(/(\w+)=("([^"]*)"|[^,\s]+)/g)) {
    out[m[1].toLowerCase()] = m[3] !== undefined ? m[3] : m[2];
  }
  return out;
}

// ---- WebSocket (RFC 6455), just what a SIP client needs ---------------------

function accept(req, socket, onText, onClose) {
  const key = req.headers['sec-websocket-key'];
  const protocols = (req.headers['sec-websocket-protocol'] || '').split(',').map((s) => s.trim());
  if (!key || !protocols.includes('sip')) {
    socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n');
    return null;
  }
  const acceptKey = createHash('sha1').update(`${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest('base64');
  socket.write(
    'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
      `Sec-WebSocket-Accept: ${acceptKey}\r\nSec-WebSocket-Protocol: sip\r\n\r\n`,
  );
  let buf = Buffer.alloc(0);
  const conn = {
    send(text) {
      const data = Buffer.from(text);
      let header;
      if (data.length < 126) header = Buffer.from([0x81, data.length]);
      else if (data.length < 65536) {
        header = Buffer.alloc(4);
        header[0] = 0x81;
        header[1] = 126;
        header.writeUInt16BE(data.length, 2);
      } else {
        header = Buffer.alloc(10);
        header[0] = 0x81;
        header[1] = 127;
        header.writeBigUInt64BE(BigInt(data.length), 2);
      }
      socket.write(Buffer.concat([header, data]));
    },
  };
  socket.on('data', (chunk) => {
    buf = Buffer.concat([buf, chunk]);
    for (;;) {
      if (buf.length < 2) return;
      const op = buf[0] & 0x0f;
      let len = buf[1] & 0x7f;
      let off = 2;
      if (len === 126) {
        if (buf.length < 4) return;
        len = buf.readUInt16BE(2);
        off = 4;
      } else if (len === 127) {
        if (buf.length < 10) return;
        len = Number(buf.readBigUInt64BE(2));
        off = 10;
      }
      const masked = (buf[1] & 0x80) !== 0;
      const total = off + (masked ? 4 : 0) + len;
      if (buf.length < total) return;
      const mask = masked ? buf.subarray(off, off + 4) : null;
      const payload = Buffer.from(buf.subarray(off + (masked ? 4 : 0), total));
      if (mask) for (let i = 0; i < payload.length; i++) payload[i] ^= mask[i % 4];
      buf = buf.subarray(total);
      if (op === 0x1 || op === 0x2) onText(payload.toString('utf8'));
      else if (op === 0x8) socket.end(Buffer.from([0x88, 0]));
      else if (op === 0x9) socket.write(Buffer.concat([Buffer.from([0x8a, payload.length]), payload]));
    }
  });
  socket.on('close', onClose);
  socket.on('error', () => {});
  return conn;
}

// ---- The stub node --------------------------------------------------------

export function startStub({ users = {}, host = '127.0.0.1', port = 0, iceServers = [] } = {}) {
  const registry = new Map(); // user (AOR or Contact user part) → connection
  const pending = new Map(); // Via branch → connection that sent the request
  const nonces = new Set();
  const log = [];

  const server = createServer((req, res) => {
    const path = new URL(req.url, 'http://x').pathname;
    if (path === '/api/v1/webrtc') {
      const addr = server.address();
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ ws: [`ws://${host}:${addr.port}/sip`], ice_servers: iceServers, domain: host }));
      return;
    }
    const file = FILES[path === '/index.html' ? '/' : path];
    if (!file) {
      res.writeHead(404).end('not found\n');
      return;
    }
    res.writeHead(200, { 'content-type': file[1], 'cache-control': 'no-cache' });
    res.end(readFileSync(join(dist, file[0])));
  });

  function onSip(conn, text) {
    const msg = parseSip(text);
    log.push(msg.first);
    if (msg.isResponse) {
      const to = pending.get(branchOf(msg));
      if (to) to.send(text);
      return;
    }
    if (msg.method === 'REGISTER') {
      const user = userOf(msg.get('to', 't'));
      const auth = msg.get('authorization');
      if (!auth) {
        const nonce = randomBytes(8).toString('hex');
        nonces.add(nonce);
        // Both challenges, as a DOTS node offers them (RFC 8760).
        conn.send(
          respond(msg, 401, 'Unauthorized', [
            `WWW-Authenticate: Digest realm="${REALM}", nonce="${nonce}", algorithm=MD5, qop="auth"`,
            `WWW-Authenticate: Digest realm="${REALM}", nonce="${nonce}", algorithm=SHA-256, qop="auth"`,
          ]),
        );
        return;
      }
      const p = digestParams(auth);
      const pw = users[p.username];
      const ha1 = md5(`${p.username}:${REALM}:${pw}`);
      const ha2 = md5(`REGISTER:${p.uri}`);
      const want = p.qop ? md5(`${ha1}:${p.nonce}:${p.nc}:${p.cnonce}:${p.qop}:${ha2}`) : md5(`${ha1}:${p.nonce}:${ha2}`);
      if (pw === undefined || p.username !== user || p.response !== want || !nonces.has(p.nonce)) {
        conn.send(respond(msg, 403, 'Forbidden'));
        return;
      }
      const contact = msg.get('contact', 'm') || '';
      const expires = /expires=(\d+)/.exec(contact)?.[1] ?? msg.get('expires') ?? '600';
      if (expires === '0') {
        registry.delete(user);
        registry.delete(userOf(contact));
      } else {
        registry.set(user, conn);
        registry.set(userOf(contact), conn);
        conn.users.add(user);
        conn.users.add(userOf(contact));
      }
      conn.send(respond(msg, 200, 'OK', [`Contact: ${contact.replace(/;expires=\d+/, '')};expires=${expires}`, `Expires: ${expires}`]));
      return;
    }
    const target = userOf(msg.ruri);
    const to = registry.get(target);
    if (!to) {
      if (msg.method !== 'ACK') {
        conn.send(target in users ? respond(msg, 480, 'Temporarily Unavailable') : respond(msg, 404, 'Not Found'));
      }
      return;
    }
    pending.set(branchOf(msg), conn);
    to.send(text);
  }

  server.on('upgrade', (req, socket) => {
    if (new URL(req.url, 'http://x').pathname !== '/sip') {
      socket.end('HTTP/1.1 404 Not Found\r\nConnection: close\r\n\r\n');
      return;
    }
    let conn = null;
    conn = accept(
      req,
      socket,
      (text) => onSip(conn, text),
      () => {
        if (!conn) return;
        for (const u of conn.users) if (registry.get(u) === conn) registry.delete(u);
      },
    );
    if (conn) conn.users = new Set();
  });

  return new Promise((resolve) => {
    server.listen(port, host, () => {
      const { port: p } = server.address();
      resolve({ url: `http://${host}:${p}/`, port: p, log, close: () => server.close() });
    });
  });
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const opts = JSON.parse(process.argv[2] || '{}');
  const stub = await startStub(opts);
  console.log(JSON.stringify({ url: stub.url }));
}
