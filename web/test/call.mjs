// The softphone in a real browser: headless Chromium (Debian's), driven by
// playwright-core, with fake audio devices. Two pages, alice's and bob's,
// each served by (and registered at) its own node:
//
//   - alice's page refuses a wrong password (403) and says so;
//   - bob's page says when the callee is offline (480);
//   - both log in; bob calls alice; alice's page rings; she answers;
//   - both pages show the call; each RTCPeerConnection is `connected` and
//     its inbound audio bytes grow between two samples;
//   - mute toggles; a message each way during the call;
//   - a screenshot of bob's page in the call;
//   - bob hangs up; both pages show the end and log the call; one more
//     message after it;
//   - a page whose node's WebSocket cannot be reached says so.
//
//   node test/call.mjs '{"alice": {"url": "http://127.0.0.1:P1/", "aor": "alice@127.0.0.1",
//     "password": "…"}, "bob": {…}, "offline": "carol@127.0.0.1", "screenshot": "out.png",
//     "ignore_https_errors": true}'
//
// Run it where only loopback exists (crates/dots/tests/browser.rs runs it,
// the nodes and so the browser in a network namespace of their own), so that
// the calls' media goes from 127.0.0.1 to 127.0.0.1; Chromium gathers
// loopback candidates with --allow-loopback-in-peer-connection.
//
// Prints one JSON object on stdout: {"ok": true, "steps": [...], ...} or
// {"ok": false, "error": "...", "steps": [...]} (exit status 1). Progress
// goes to stderr.
import { mkdirSync } from 'node:fs';
import { createServer } from 'node:net';
import { dirname } from 'node:path';
import { chromium } from 'playwright-core';

const args = JSON.parse(process.argv[2] || '{}');
const TIMEOUT = args.timeout_ms || 30_000;
const started = Date.now();
const result = { ok: false, steps: [] };
let browser = null;
const pages = [];

function step(name, extra = {}) {
  const entry = { name, ms: Date.now() - started, ...extra };
  result.steps.push(entry);
  process.stderr.write(`call.mjs: ${JSON.stringify(entry)}\n`);
}

function need(cond, what) {
  if (!cond) throw new Error(what);
}

/** A TCP port on 127.0.0.1 that nothing listens on (bound, then closed). */
function closedPort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

async function openPage(name, url) {
  const context = await browser.newContext({
    viewport: { width: 760, height: 800 },
    permissions: ['microphone'],
    // A node's own self-signed certificate (its --https listener).
    ignoreHTTPSErrors: !!args.ignore_https_errors,
  });
  const page = await context.newPage();
  page.setDefaultTimeout(TIMEOUT);
  const consoleLines = [];
  if (args.sip_trace) {
    // JsSIP's own log (the `debug` package reads localStorage.debug).
    await context.addInitScript(() => localStorage.setItem('debug', 'JsSIP:Transport'));
  }
  page.on('console', (m) => {
    consoleLines.push(`${m.type()}: ${m.text()}`);
    if (args.sip_trace) process.stderr.write(`[${name}] ${m.text()}\n`);
  });
  page.on('pageerror', (e) => consoleLines.push(`pageerror: ${e.message}`));
  page.consoleLines = consoleLines;
  page.who = name;
  pages.push(page);
  await page.goto(url);
  await page.waitForSelector('body[data-ready="true"]');
  return page;
}

async function login(page, aor, password) {
  await page.fill('#aor', aor);
  await page.fill('#password', password);
  await page.press('#password', 'Enter');
}

async function text(page, selector) {
  return (await page.textContent(selector)) || '';
}

async function waitState(page, selector, state) {
  try {
    await page.waitForSelector(`${selector}[data-state="${state}"]`);
  } catch (e) {
    const now = await page.getAttribute(selector, 'data-state');
    const err = await text(page, '#error');
    throw new Error(`${page.who}: ${selector} never reached "${state}" (is "${now}"; error: "${err}")`);
  }
}

async function waitError(page, needle) {
  try {
    await page.waitForFunction(
      (n) => {
        const e = document.getElementById('error');
        return !e.hidden && e.textContent.includes(n);
      },
      needle,
    );
  } catch (_) {
    throw new Error(`${page.who}: no error mentioning "${needle}" (shows "${await text(page, '#error')}")`);
  }
  return text(page, '#error');
}

/** Samples the page's call statistics until `ok` holds for them. */
async function statsUntil(page, ok, what) {
  const deadline = Date.now() + TIMEOUT;
  let s = null;
  while (Date.now() < deadline) {
    s = await page.evaluate(() => window.softphone.stats());
    if (s && ok(s)) return s;
    await page.waitForTimeout(200);
  }
  throw new Error(`${page.who}: ${what} (last stats: ${JSON.stringify(s)})`);
}

async function messageList(page) {
  return page.$$eval('#messages li', (l) =>
    l.map((li) => `${li.dataset.direction}: ${li.querySelector('.text').textContent}`),
  );
}

async function main() {
  const { alice, bob } = args;
  need(alice && bob, 'give alice and bob: {url, aor, password}');
  browser = await chromium.launch({
    executablePath: args.chromium || '/usr/bin/chromium',
    headless: true,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--use-fake-device-for-media-stream',
      '--use-fake-ui-for-media-stream',
      '--autoplay-policy=no-user-gesture-required',
      '--allow-loopback-in-peer-connection',
      '--disable-features=WebRtcHideLocalIpsWithMdns',
    ],
  });
  result.browser = browser.version();
  step('browser started', { version: result.browser });

  const a = await openPage('alice', alice.url);
  const b = await openPage('bob', bob.url);
  step('pages loaded');

  // A wrong password: the node's 403, shown; back at the login form.
  await login(a, alice.aor, `${alice.password}-wrong`);
  result.wrong_password_error = await waitError(a, '403');
  need(await a.isVisible('#login-panel'), 'alice: the login form is gone after a refused login');
  step('wrong password refused', { error: result.wrong_password_error });

  // Both log in.
  await login(a, alice.aor, alice.password);
  await login(b, bob.aor, bob.password);
  await waitState(a, '#reg-state', 'registered');
  await waitState(b, '#reg-state', 'registered');
  need(await a.isHidden('#error'), 'alice: an error is still shown after logging in');
  result.alice_node = await text(a, '#node-info');
  result.bob_node = await text(b, '#node-info');
  result.alice_reg = await text(a, '#reg-state');
  result.bob_reg = await text(b, '#reg-state');
  step('registered', {
    alice: result.alice_reg,
    bob: result.bob_reg,
    alice_node: result.alice_node,
    bob_node: result.bob_node,
  });

  // A user who is not registered anywhere: 480, shown.
  if (args.offline) {
    await b.fill('#target', args.offline);
    await b.press('#target', 'Enter');
    result.offline_error = await waitError(b, '480');
    await waitState(b, '#call-panel', 'ended');
    await b.waitForSelector('#call-log li[data-outcome="failed"][data-code="480"]');
    step('offline callee', { error: result.offline_error });
  }

  // The presence of alice (registered at her node) may take a moment to
  // reach bob's node: retry the call while it answers 404/480.
  let ringing = false;
  for (let attempt = 1; attempt <= 20 && !ringing; attempt++) {
    const logged = await b.$$eval('#call-log li', (l) => l.length);
    await b.fill('#target', args.alice_target || alice.aor);
    await b.click('#dial');
    // Either alice's page rings, or bob's call ends (and is logged).
    const outcome = await Promise.race([
      a.waitForSelector('#call-panel[data-state="incoming"]').then(() => 'ringing'),
      b
        .waitForFunction((n) => document.querySelectorAll('#call-log li').length > n, logged)
        .then(() => 'ended'),
    ]);
    if (outcome === 'ringing') ringing = true;
    else {
      const why = await text(b, '#error');
      step('call attempt failed', { attempt, error: why });
      if (!/\b(404|480)\b/.test(why)) throw new Error(`bob's call failed: ${why}`);
      await b.waitForTimeout(500);
    }
  }
  need(ringing, "alice's page never rang");
  result.alice_incoming = await text(a, '#call-peer');
  step('alice rings', { from: result.alice_incoming });
  need(result.alice_incoming.includes(bob.aor.split('@')[0]), `alice's page shows the caller as ${result.alice_incoming}`);

  await a.click('#answer');
  await waitState(a, '#call-panel', 'active');
  await waitState(b, '#call-panel', 'active');
  result.alice_call = await text(a, '#call-status');
  result.bob_call = await text(b, '#call-status');
  step('call active on both pages', { alice: result.alice_call, bob: result.bob_call });

  // Media: connected, and inbound audio bytes grow on both sides.
  for (const [page, key] of [
    [a, 'alice_media'],
    [b, 'bob_media'],
  ]) {
    const first = await statsUntil(
      page,
      (s) => s.connectionState === 'connected' && s.inboundBytes > 0,
      'the peer connection never got connected with inbound audio',
    );
    await page.waitForTimeout(1000);
    const second = await statsUntil(
      page,
      (s) => s.inboundBytes > first.inboundBytes,
      'inbound audio bytes did not grow',
    );
    result[key] = {
      connectionState: second.connectionState,
      inbound_bytes: [first.inboundBytes, second.inboundBytes],
      outbound_bytes: second.outboundBytes,
      route: second.route,
      ice_servers: second.iceServers,
    };
    step(`${page.who} media flows`, result[key]);
  }

  // Mute toggles (and is announced by aria-pressed).
  await a.click('#mute');
  need((await a.getAttribute('#mute', 'aria-pressed')) === 'true', 'mute is not pressed');
  await a.click('#mute');
  need((await a.getAttribute('#mute', 'aria-pressed')) === 'false', 'mute stays pressed');
  step('mute toggles');

  // A message each way, during the call.
  const send = async (from, to, body) => {
    await from.fill('#msg-to', to);
    await from.fill('#msg-text', body);
    await from.press('#msg-text', 'Enter');
    await from.waitForSelector('#messages li[data-direction="out"][data-status="sent"]:last-child');
  };
  const received = async (page, body) => {
    await page.waitForFunction(
      (t) => [...document.querySelectorAll('#messages li[data-direction="in"]')].some((li) => li.textContent.includes(t)),
      body,
    );
  };
  await send(a, args.bob_target || bob.aor, 'hello bob, from alice');
  await received(b, 'hello bob, from alice');
  await send(b, args.alice_target || alice.aor, 'hello alice, from bob');
  await received(a, 'hello alice, from bob');
  result.messages = { alice: await messageList(a), bob: await messageList(b) };
  step('messages both ways', result.messages);

  if (args.screenshot) {
    mkdirSync(dirname(args.screenshot), { recursive: true });
    await b.waitForTimeout(1200); // let the call timer show a second or two
    await b.screenshot({ path: args.screenshot, fullPage: true });
    step('screenshot', { path: args.screenshot });
  }

  // Bob hangs up; both pages show the end and log the call as answered.
  await b.click('#hangup');
  await waitState(b, '#call-panel', 'ended');
  await waitState(a, '#call-panel', 'ended');
  result.alice_ended = await text(a, '#call-status');
  result.bob_ended = await text(b, '#call-status');
  await a.waitForSelector('#call-log li[data-direction="in"][data-outcome="answered"]');
  await b.waitForSelector('#call-log li[data-direction="out"][data-outcome="answered"]');
  step('hung up', { alice: result.alice_ended, bob: result.bob_ended });

  // And one after it.
  await send(b, args.alice_target || alice.aor, 'bye alice');
  await received(a, 'bye alice');
  result.messages.alice = await messageList(a);
  step('message after the call');

  // A node whose WebSocket cannot be reached: the page says so.
  const port = await closedPort();
  const context = await browser.newContext({ ignoreHTTPSErrors: !!args.ignore_https_errors });
  await context.route('**/api/v1/webrtc', (route) =>
    route.fulfill({
      contentType: 'application/json',
      body: JSON.stringify({ ws: [`ws://127.0.0.1:${port}/sip`], ice_servers: [], domain: '127.0.0.1' }),
    }),
  );
  const c = await context.newPage();
  c.setDefaultTimeout(TIMEOUT);
  c.who = 'unreachable';
  await c.goto(bob.url);
  await c.waitForSelector('body[data-ready="true"]');
  await login(c, alice.aor, alice.password);
  result.unreachable_error = await waitError(c, 'WebSocket');
  need(await c.isVisible('#login-panel'), 'the login form is gone after a failed connection');
  step('unreachable node', { error: result.unreachable_error });

  result.ok = true;
}

try {
  await main();
} catch (e) {
  result.error = String(e && e.message ? e.message : e);
  // What each page showed and logged, for the report.
  for (const page of pages) {
    try {
      result[`${page.who}_page`] = {
        reg: await text(page, '#reg-state'),
        call: `${await page.getAttribute('#call-panel', 'data-state')}: ${await text(page, '#call-status')}`,
        error: await text(page, '#error'),
        console: page.consoleLines.slice(-30),
      };
    } catch (_) {
      /* the page is gone */
    }
  }
}
result.ms = Date.now() - started;
if (browser) await browser.close().catch(() => {});
process.stdout.write(`${JSON.stringify(result)}\n`);
process.exit(result.ok ? 0 : 1);
