// The DOTS web softphone: a JsSIP user agent over the node's SIP WebSocket.
//
// It reads GET /api/v1/webrtc ({ws, ice_servers, domain}) from the node that
// served it, registers with an AOR and a device password, and then places
// and answers audio calls and sends and receives SIP MESSAGEs. Everything it
// shows carries a stable id or data-test attribute; `window.softphone` gives
// tests the peer connection's state and statistics.

import * as JsSIP from 'jssip';
import { IncomingResponse } from 'jssip/lib/SIPMessage';

// A DOTS node offers two digest challenges, MD5 and SHA-256 (RFC 8760). JsSIP
// 3.13 answers MD5 only, and its parser keeps only the last WWW-Authenticate
// (or Proxy-Authenticate) header of a response: keep an MD5 challenge once
// one is seen, whatever the order the node lists them in.
{
  const isMd5 = (v) => !/algorithm\s*=/i.test(v) || /algorithm\s*=\s*"?MD5"?\s*(,|$)/i.test(v);
  const setHeader = IncomingResponse.prototype.setHeader;
  IncomingResponse.prototype.setHeader = function keepMd5Challenge(name, value) {
    const lower = String(name).toLowerCase();
    if (lower === 'www-authenticate' || lower === 'proxy-authenticate') {
      const key = lower === 'www-authenticate' ? 'WWW-Authenticate' : 'Proxy-Authenticate';
      const held = this.headers[key];
      if (held && held.length && isMd5(held[0].raw) && !isMd5(String(value))) return;
    }
    setHeader.call(this, name, value);
  };
}

const $ = (id) => document.getElementById(id);

const ui = {
  nodeInfo: $('node-info'),
  error: $('error'),
  loginPanel: $('login-panel'),
  loginForm: $('login-form'),
  aor: $('aor'),
  password: $('password'),
  login: $('login'),
  phonePanel: $('phone-panel'),
  regState: $('reg-state'),
  logout: $('logout'),
  dialForm: $('dial-form'),
  target: $('target'),
  dial: $('dial'),
  callPanel: $('call-panel'),
  callStatus: $('call-status'),
  callPeer: $('call-peer'),
  callTimer: $('call-timer'),
  answer: $('answer'),
  decline: $('decline'),
  mute: $('mute'),
  hangup: $('hangup'),
  remoteAudio: $('remote-audio'),
  messageForm: $('message-form'),
  msgTo: $('msg-to'),
  msgText: $('msg-text'),
  messages: $('messages'),
  callLog: $('call-log'),
  callLogEmpty: $('call-log-empty'),
};

/** What /api/v1/webrtc said: {ws: [...], ice_servers: [...], domain}. */
let config = null;
/** The JsSIP user agent while logged in. */
let ua = null;
/** Our AOR without the scheme ("alice@example.org") while logged in. */
let me = null;
/** The one call at a time: {session, direction, peer, started, answered}. */
let call = null;
let timer = null;

// ---------------------------------------------------------------------------
// Errors and small helpers
// ---------------------------------------------------------------------------

function showError(text) {
  ui.error.textContent = text;
  ui.error.hidden = false;
}

function clearError() {
  ui.error.textContent = '';
  ui.error.hidden = true;
}

/** "sip:alice@example.org" → "alice@example.org". */
function bare(uri) {
  return String(uri).replace(/^sips?:/i, '');
}

/** The domain part of an AOR, or the node's domain. */
function domainOf(aor) {
  const at = aor.lastIndexOf('@');
  return at >= 0 ? aor.slice(at + 1) : config.domain;
}

/** What the user typed as a target → a SIP URI: "bob" gets our domain. */
function targetUri(text) {
  const t = text.trim();
  if (/^sips?:/i.test(t)) return t;
  if (t.startsWith('did:')) return `sip:${t.replace(/^did:key:/, '')}@${domainOf(me)}`;
  return t.includes('@') ? `sip:${t}` : `sip:${t}@${domainOf(me)}`;
}

/** A SIP failure in words: "480 Temporarily Unavailable: … is offline". */
function describeFailure(e, what) {
  const resp = e && e.message && typeof e.message.status_code === 'number' ? e.message : null;
  const code = resp ? resp.status_code : null;
  const phrase = resp ? `${code} ${resp.reason_phrase || ''}`.trim() : '';
  const C = JsSIP.C.causes;
  switch (code) {
    case 403:
      return `${what} refused: ${phrase} (wrong user name or password, or not allowed)`;
    case 404:
      return `${what} failed: ${phrase} (no such user)`;
    case 480:
      return `${what} failed: ${phrase} (the user is offline)`;
    case 486:
    case 600:
      return `${what} failed: ${phrase} (busy)`;
    case 408:
      return `${what} failed: ${phrase} (no answer in time)`;
    default:
      break;
  }
  if (phrase) return `${what} failed: ${phrase}`;
  if (e && e.cause === C.CONNECTION_ERROR) return `${what} failed: the node cannot be reached`;
  if (e && e.cause === C.REQUEST_TIMEOUT) return `${what} failed: the node did not answer`;
  if (e && e.cause === C.USER_DENIED_MEDIA_ACCESS) return `${what} failed: microphone access was denied`;
  return `${what} failed: ${e && e.cause ? e.cause : 'unknown error'}`;
}

function setRegState(state, text) {
  ui.regState.dataset.state = state;
  ui.regState.textContent = text;
}

function clock(ms) {
  const s = Math.floor(ms / 1000);
  return `${String(Math.floor(s / 60)).padStart(2, '0')}:${String(s % 60).padStart(2, '0')}`;
}

// ---------------------------------------------------------------------------
// Node settings
// ---------------------------------------------------------------------------

async function loadConfig() {
  let resp;
  try {
    resp = await fetch('/api/v1/webrtc', { cache: 'no-store' });
  } catch (err) {
    throw new Error(`Cannot reach this node (GET /api/v1/webrtc: ${err.message})`);
  }
  if (!resp.ok) {
    throw new Error(`This node does not offer WebRTC (GET /api/v1/webrtc: ${resp.status})`);
  }
  const body = await resp.json();
  if (!Array.isArray(body.ws) || body.ws.length === 0) {
    throw new Error('This node lists no SIP WebSocket address (GET /api/v1/webrtc)');
  }
  return {
    ws: body.ws,
    iceServers: Array.isArray(body.ice_servers) ? body.ice_servers : [],
    domain: body.domain || location.hostname,
  };
}

/** The WebSocket addresses to use: wss first on an https page, which cannot open ws. */
function socketUrls() {
  const secure = location.protocol === 'https:';
  const usable = config.ws.filter((u) => !secure || u.startsWith('wss:'));
  return usable.length ? usable : config.ws;
}

// ---------------------------------------------------------------------------
// Log in and out
// ---------------------------------------------------------------------------

function login(aorText, password) {
  clearError();
  let aor = aorText.trim().replace(/^sips?:/i, '');
  if (!aor.includes('@')) aor = `${aor}@${config.domain}`;
  const urls = socketUrls();
  let configuration;
  try {
    configuration = {
      sockets: urls.map((u) => new JsSIP.WebSocketInterface(u)),
      uri: `sip:${aor}`,
      password,
      register: true,
      register_expires: 300,
      session_timers: false,
      user_agent: 'DOTS softphone (JsSIP)',
      connection_recovery_min_interval: 2,
      connection_recovery_max_interval: 30,
    };
    ua = new JsSIP.UA(configuration);
  } catch (err) {
    showError(`Cannot log in: ${err.message || err}`);
    ua = null;
    return;
  }
  me = aor;
  const mine = ua;
  // Events of a user agent that has since been stopped are not ours.
  const on = (event, handler) => mine.on(event, (e) => ua === mine && handler(e));
  ui.login.disabled = true;
  setRegState('connecting', `connecting to ${urls.join(', ')}…`);
  let everRegistered = false;

  on('connected', () => {
    if (!everRegistered) setRegState('connecting', 'registering…');
  });
  on('disconnected', (e) => {
    const url = e && e.socket && e.socket.url ? e.socket.url : urls.join(', ');
    setRegState('disconnected', 'not connected');
    if (!everRegistered) {
      // Never got through: stop trying and say so.
      stopUa();
      showLogin();
      showError(`WebSocket connection to ${url} failed: the node is unreachable.`);
      return;
    }
    if (e && e.error) {
      showError(`WebSocket connection to ${url} failed: the node is unreachable. Retrying…`);
    } else {
      showError(`The WebSocket connection to ${url} closed. Retrying…`);
    }
  });
  on('registered', (e) => {
    everRegistered = true;
    clearError();
    const expires = e && e.response ? e.response.getHeader('Expires') : null;
    setRegState('registered', `registered as ${me}`);
    ui.regState.title = expires ? `expires in ${expires} s` : '';
    showPhone();
  });
  on('unregistered', () => setRegState('unregistered', 'not registered'));
  on('registrationFailed', (e) => {
    const text = describeFailure({ message: e.response, cause: e.cause }, 'Registration');
    setRegState('failed', 'registration failed');
    showError(text);
    if (!everRegistered) {
      // Wrong password or user: back to the login form, nothing left running.
      stopUa();
      showLogin();
      ui.password.focus();
    }
  });
  on('newRTCSession', (e) => onNewSession(e));
  on('newMessage', (e) => {
    if (e.originator !== 'remote') return;
    const from = bare(e.request.from.uri.toString());
    addMessage('in', from, e.request.body || '');
    // Reply to the sender by default.
    if (!ui.msgTo.value) ui.msgTo.value = from;
  });
  mine.start();
}

function stopUa() {
  const old = ua;
  ua = null;
  if (old) {
    try {
      old.stop();
    } catch (_) {
      /* already stopped */
    }
  }
  ui.login.disabled = false;
}

function logout() {
  if (call) call.session.terminate();
  stopUa();
  setRegState('unregistered', 'not registered');
  me = null;
  clearError();
  showLogin();
  ui.aor.focus();
}

function showPhone() {
  const first = ui.phonePanel.hidden;
  ui.loginPanel.hidden = true;
  ui.phonePanel.hidden = false;
  ui.login.disabled = false;
  if (first) {
    renderCallLog();
    ui.target.focus();
  }
}

function showLogin() {
  ui.phonePanel.hidden = true;
  ui.loginPanel.hidden = false;
}

// ---------------------------------------------------------------------------
// Calls
// ---------------------------------------------------------------------------

function mediaOptions() {
  return {
    mediaConstraints: { audio: true, video: false },
    pcConfig: { iceServers: config.iceServers },
    rtcOfferConstraints: { offerToReceiveAudio: true, offerToReceiveVideo: false },
  };
}

function dial(text) {
  clearError();
  if (!ua) return;
  if (call) {
    showError('Hang up the current call first.');
    return;
  }
  const uri = targetUri(text);
  try {
    ua.call(uri, {
      ...mediaOptions(),
      eventHandlers: {},
    });
  } catch (err) {
    showError(`Cannot call ${text}: ${err.message || err}`);
  }
}

function onNewSession(e) {
  const { session } = e;
  const direction = e.originator === 'remote' ? 'in' : 'out';
  const peer = bare(session.remote_identity.uri.toString());
  if (call) {
    // One call at a time.
    if (direction === 'in') session.terminate({ status_code: 486, reason_phrase: 'Busy Here' });
    return;
  }
  call = { session, direction, peer, started: Date.now(), answered: null, muted: false };
  const current = call;

  const attach = (pc) => {
    current.pc = pc;
    pc.addEventListener('track', (ev) => {
      const stream = ev.streams && ev.streams[0] ? ev.streams[0] : new MediaStream([ev.track]);
      ui.remoteAudio.srcObject = stream;
      ui.remoteAudio.play().catch(() => {});
    });
  };
  if (session.connection) attach(session.connection);
  session.on('peerconnection', (ev) => attach(ev.peerconnection));

  if (direction === 'in') {
    const name = session.remote_identity.display_name;
    setCallState('incoming', 'Incoming call', name ? `${name} <${peer}>` : peer);
    ui.answer.focus();
  } else {
    setCallState('outgoing', 'Calling…', peer);
    ui.hangup.focus();
  }

  session.on('progress', () => {
    if (direction === 'out') setCallState('ringing', 'Ringing…', peer);
  });
  session.on('accepted', () => {
    current.answered = Date.now();
    setCallState('active', 'In call', peer);
    startTimer();
  });
  session.on('confirmed', () => {
    if (!current.answered) current.answered = Date.now();
    setCallState('active', 'In call', peer);
    startTimer();
  });
  session.on('ended', (ev) => {
    const by = ev.originator === 'local' ? 'you' : 'the other side';
    finishCall(current, 'answered', `Call ended by ${by}`);
  });
  session.on('failed', (ev) => {
    const C = JsSIP.C.causes;
    let outcome = 'failed';
    let text;
    if (direction === 'in') {
      if (ev.originator === 'local') {
        outcome = 'declined';
        text = 'Call declined';
      } else {
        outcome = 'missed';
        text = `Missed call from ${peer}`;
      }
    } else if (ev.originator === 'local' && ev.cause === C.CANCELED) {
      outcome = 'cancelled';
      text = 'Call cancelled';
    } else if (ev.cause === C.REJECTED || ev.cause === C.BUSY) {
      outcome = 'declined';
      text = describeFailure(ev, 'Call');
      if (ev.message && ev.message.status_code === 603) text = `${peer} declined the call (603 Decline)`;
    } else {
      text = describeFailure(ev, 'Call');
    }
    if (outcome === 'failed' || (direction === 'out' && outcome === 'declined')) showError(text);
    const code = ev.message && typeof ev.message.status_code === 'number' ? ev.message.status_code : null;
    finishCall(current, outcome, text, code);
  });
}

/** A ring tone while a call comes in (two tones, 2 s on, 4 s off), and the title says so. */
let ringer = null;

function startRinging() {
  document.title = 'Incoming call · DOTS softphone';
  if (ringer) return;
  const Ctx = window.AudioContext || window.webkitAudioContext;
  if (!Ctx) return;
  try {
    const ctx = new Ctx();
    const gain = ctx.createGain();
    gain.gain.value = 0;
    gain.connect(ctx.destination);
    for (const f of [440, 480]) {
      const osc = ctx.createOscillator();
      osc.frequency.value = f;
      osc.connect(gain);
      osc.start();
    }
    const burst = () => {
      const t = ctx.currentTime;
      gain.gain.setValueAtTime(0.08, t);
      gain.gain.setValueAtTime(0, t + 2);
    };
    burst();
    ringer = { ctx, timer: setInterval(burst, 6000) };
  } catch (_) {
    ringer = null;
  }
}

function stopRinging() {
  document.title = 'DOTS softphone';
  if (!ringer) return;
  clearInterval(ringer.timer);
  ringer.ctx.close().catch(() => {});
  ringer = null;
}

function setCallState(state, status, peer) {
  if (state === 'incoming') startRinging();
  else stopRinging();
  ui.callPanel.hidden = false;
  ui.callPanel.dataset.state = state;
  ui.callStatus.textContent = status;
  ui.callPeer.textContent = peer;
  const live = state !== 'ended';
  ui.answer.hidden = state !== 'incoming';
  ui.decline.hidden = state !== 'incoming';
  ui.hangup.hidden = !live || state === 'incoming';
  ui.mute.hidden = state !== 'active';
  ui.dial.disabled = live;
  if (state !== 'active') ui.callTimer.textContent = '';
}

function startTimer() {
  if (timer) return;
  const tick = () => {
    if (call && call.answered) ui.callTimer.textContent = clock(Date.now() - call.answered);
  };
  tick();
  timer = setInterval(tick, 1000);
}

function finishCall(c, outcome, text, code) {
  if (call !== c) return;
  call = null;
  if (timer) clearInterval(timer);
  timer = null;
  ui.remoteAudio.srcObject = null;
  setMuted(false);
  setCallState('ended', text, c.peer);
  const duration = c.answered ? Date.now() - c.answered : 0;
  if (c.answered) ui.callTimer.textContent = clock(duration);
  addCallLog({
    at: c.started,
    direction: c.direction,
    peer: c.peer,
    outcome,
    code: code || null,
    duration,
  });
  ui.target.focus();
}

function setMuted(on) {
  ui.mute.setAttribute('aria-pressed', on ? 'true' : 'false');
  ui.mute.textContent = on ? 'Unmute' : 'Mute';
}

// ---------------------------------------------------------------------------
// Call log (kept in this browser, per AOR)
// ---------------------------------------------------------------------------

function logKey() {
  return `dots-softphone:call-log:${me}`;
}

function readCallLog() {
  try {
    const v = JSON.parse(localStorage.getItem(logKey()) || '[]');
    return Array.isArray(v) ? v : [];
  } catch (_) {
    return [];
  }
}

function addCallLog(entry) {
  const entries = [entry, ...readCallLog()].slice(0, 50);
  try {
    localStorage.setItem(logKey(), JSON.stringify(entries));
  } catch (_) {
    /* storage full or disabled: the log is only on screen */
  }
  renderCallLog(entries);
}

function renderCallLog(entries = readCallLog()) {
  ui.callLog.replaceChildren(
    ...entries.map((e) => {
      const li = document.createElement('li');
      li.dataset.direction = e.direction;
      li.dataset.outcome = e.outcome;
      li.dataset.peer = e.peer;
      const when = document.createElement('span');
      when.className = 'when';
      when.textContent = new Date(e.at).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
      const who = document.createElement('span');
      who.className = 'who';
      who.textContent = `${e.direction === 'in' ? '↙ from' : '↗ to'} ${e.peer}`;
      const outcome = document.createElement('span');
      outcome.className = 'outcome';
      if (e.code) li.dataset.code = e.code;
      outcome.textContent =
        e.outcome === 'answered' ? clock(e.duration) : e.code ? `${e.outcome} (${e.code})` : e.outcome;
      li.append(when, who, outcome);
      return li;
    }),
  );
  ui.callLogEmpty.hidden = entries.length > 0;
}

// ---------------------------------------------------------------------------
// Messages
// ---------------------------------------------------------------------------

function addMessage(direction, peer, text) {
  const li = document.createElement('li');
  li.dataset.direction = direction;
  li.dataset.peer = peer;
  li.dataset.status = direction === 'in' ? 'received' : 'sending';
  const meta = document.createElement('span');
  meta.className = 'meta';
  const time = new Date().toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  meta.textContent = `${direction === 'in' ? 'from' : 'to'} ${peer} · ${time}`;
  const body = document.createElement('span');
  body.className = 'text';
  body.textContent = text;
  li.append(meta, body);
  ui.messages.append(li);
  return { li, meta };
}

function sendMessage(to, text) {
  clearError();
  if (!ua) return;
  const uri = targetUri(to);
  const { li, meta } = addMessage('out', bare(uri), text);
  const fail = (e) => {
    li.dataset.status = 'failed';
    const reason = describeFailure({ message: e.response, cause: e.cause }, 'Message');
    meta.textContent += ` · not delivered`;
    li.title = reason;
    showError(reason);
  };
  try {
    ua.sendMessage(uri, text, {
      contentType: 'text/plain',
      eventHandlers: {
        succeeded: () => {
          li.dataset.status = 'sent';
          meta.textContent += ' · delivered';
        },
        failed: fail,
      },
    });
  } catch (err) {
    fail({ cause: err.message || String(err) });
  }
}

// ---------------------------------------------------------------------------
// Wiring
// ---------------------------------------------------------------------------

ui.loginForm.addEventListener('submit', (ev) => {
  ev.preventDefault();
  if (!config || ua) return;
  login(ui.aor.value, ui.password.value);
});
ui.logout.addEventListener('click', logout);
ui.dialForm.addEventListener('submit', (ev) => {
  ev.preventDefault();
  dial(ui.target.value);
});
ui.answer.addEventListener('click', () => {
  if (call && call.direction === 'in') call.session.answer(mediaOptions());
});
ui.decline.addEventListener('click', () => {
  if (call) call.session.terminate({ status_code: 603, reason_phrase: 'Decline' });
});
ui.hangup.addEventListener('click', () => {
  if (call) call.session.terminate();
});
ui.mute.addEventListener('click', () => {
  if (!call) return;
  call.muted = !call.muted;
  if (call.muted) call.session.mute({ audio: true });
  else call.session.unmute({ audio: true });
  setMuted(call.muted);
});
ui.messageForm.addEventListener('submit', (ev) => {
  ev.preventDefault();
  const text = ui.msgText.value;
  if (!text.trim()) return;
  sendMessage(ui.msgTo.value, text);
  ui.msgText.value = '';
  ui.msgText.focus();
});
document.addEventListener('keydown', (ev) => {
  // Escape hangs up or declines the current call.
  if (ev.key === 'Escape' && call) {
    if (call.direction === 'in' && !call.answered) ui.decline.click();
    else ui.hangup.click();
  }
});
window.addEventListener('beforeunload', () => {
  if (ua) ua.stop();
});

/** For tests and the curious: the current call's peer connection, in numbers. */
window.softphone = {
  get registered() {
    return !!(ua && ua.isRegistered());
  },
  async stats() {
    const pc = call && call.pc;
    if (!pc) return null;
    let inboundBytes = 0;
    let outboundBytes = 0;
    const report = await pc.getStats();
    let route = null;
    report.forEach((s) => {
      if (s.type === 'transport' && s.selectedCandidatePairId) {
        const pair = report.get(s.selectedCandidatePairId);
        const local = pair && report.get(pair.localCandidateId);
        const remote = pair && report.get(pair.remoteCandidateId);
        if (local && remote) {
          route = `${local.candidateType} ${local.address}:${local.port} -> ${remote.candidateType} ${remote.address}:${remote.port}`;
        }
      }
      if (s.type === 'inbound-rtp' && (s.kind || s.mediaType) === 'audio') inboundBytes += s.bytesReceived || 0;
      if (s.type === 'outbound-rtp' && (s.kind || s.mediaType) === 'audio') outboundBytes += s.bytesSent || 0;
    });
    return {
      connectionState: pc.connectionState,
      iceConnectionState: pc.iceConnectionState,
      inboundBytes,
      outboundBytes,
      route,
      iceServers: (pc.getConfiguration().iceServers || []).flatMap((s) => [].concat(s.urls)),
    };
  },
};

loadConfig().then(
  (c) => {
    config = c;
    ui.nodeInfo.textContent = `Node ${config.domain} · SIP over ${socketUrls().join(', ')}`;
    ui.aor.placeholder = `alice@${config.domain}`;
    document.body.dataset.ready = 'true';
    if (!window.isSecureContext) {
      // Browsers give the microphone to secure pages only (https, or localhost).
      const wss = config.ws.find((u) => u.startsWith('wss:'));
      const https = wss ? wss.replace(/^wss:/, 'https:').replace(/\/sip$/, '/') : null;
      showError(
        'This page is not served over HTTPS, so the browser will not give it the microphone: ' +
          (https ? `open ${https} instead.` : 'start the node with --https and open that address.'),
      );
    }
    ui.aor.focus();
  },
  (err) => {
    ui.nodeInfo.textContent = 'Not available';
    showError(err.message);
    ui.login.disabled = true;
  },
);
