// Drives a real headless Chromium over the Chrome DevTools Protocol (--remote-debugging-pipe: no
// WebSocket client, no npm package) from an authorization URL through the test provider's sign-in
// and consent pages to Vault's callback page, and saves a screenshot of that page. Run by
// scripts/browser-check.sh, which sets the environment:
//
//   AUTH_URL      the auth_url of `vault write -force oauth/authorize/<role>`
//   CALLBACK_URL  the role's redirect_uri (Vault's callback), without a query
//   SCREENSHOT    where the PNG goes
//   ROLE          the role the callback page must name
//   FLOW_USER, FLOW_PASSWORD   the provider's user
//   CHROMIUM      the browser binary (default chromium)
//
// Prints each step with the page's path (never its query, which carries the code and state).

import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
};
const authURL = env('AUTH_URL');
const callbackURL = env('CALLBACK_URL');
const screenshot = env('SCREENSHOT');
const role = env('ROLE');
const user = env('FLOW_USER');
const password = env('FLOW_PASSWORD');
const STEP_TIMEOUT_MS = 15000;

const profile = mkdtempSync(join(tmpdir(), 'browser-check-'));
const browser = spawn(process.env.CHROMIUM || 'chromium', [
  '--headless=new', '--no-sandbox', '--disable-gpu', '--no-first-run', '--no-default-browser-check',
  '--disable-extensions', '--window-size=900,640', '--remote-debugging-pipe', `--user-data-dir=${profile}`,
  'about:blank',
], { stdio: ['ignore', 'ignore', 'pipe', 'pipe', 'pipe'] });
let browserLog = '';
browser.stderr.on('data', (c) => { browserLog += c; });

// CDP over the pipe: JSON messages separated by NUL, requests on fd 3, answers and events on fd 4.
let nextId = 1;
const pending = new Map();
let buffered = Buffer.alloc(0);
browser.stdio[4].on('data', (chunk) => {
  buffered = Buffer.concat([buffered, chunk]);
  for (let end = buffered.indexOf(0); end >= 0; end = buffered.indexOf(0)) {
    const msg = JSON.parse(buffered.subarray(0, end).toString());
    buffered = buffered.subarray(end + 1);
    const call = pending.get(msg.id);
    if (!call) continue;
    pending.delete(msg.id);
    if (msg.error) call.reject(new Error(`${call.method}: ${msg.error.message}`));
    else call.resolve(msg.result);
  }
});
browser.on('exit', (code) => {
  for (const call of pending.values()) call.reject(new Error(`chromium exited (${code}) during ${call.method}\n${browserLog}`));
  pending.clear();
});

function send(method, params = {}, sessionId = undefined) {
  const id = nextId++;
  return new Promise((resolve, reject) => {
    pending.set(id, { resolve, reject, method });
    browser.stdio[3].write(`${JSON.stringify({ id, method, params, sessionId })}\0`);
  });
}

let session;
async function evaluate(expression) {
  const { result, exceptionDetails } = await send('Runtime.evaluate', { expression, returnByValue: true }, session);
  if (exceptionDetails) throw new Error(`${expression}: ${exceptionDetails.exception?.description || exceptionDetails.text}`);
  return result.value;
}

// waitFor polls a page expression until it is true, for at most STEP_TIMEOUT_MS.
async function waitFor(what, expression) {
  const deadline = Date.now() + STEP_TIMEOUT_MS;
  for (;;) {
    try {
      if (await evaluate(`document.readyState === 'complete' && (${expression})`)) return;
    } catch {
      // A navigation replaced the execution context: try again.
    }
    if (Date.now() > deadline) {
      const where = await evaluate('location.origin + location.pathname + " :: " + document.body.innerText').catch(() => '?');
      throw new Error(`${what}: not within ${STEP_TIMEOUT_MS} ms (at ${where})`);
    }
    await new Promise((r) => { setTimeout(r, 100); });
  }
}

async function where() {
  return evaluate('location.origin + location.pathname');
}

// Types into a field as a user does: focus it, then insert the text through the input pipeline.
async function type(selector, text) {
  await evaluate(`document.querySelector(${JSON.stringify(selector)}).focus()`);
  await send('Input.insertText', { text }, session);
}

// Clicks the middle of an element with the mouse.
async function click(selector) {
  const box = await evaluate(`(() => { const r = document.querySelector(${JSON.stringify(selector)}).getBoundingClientRect();
    return { x: r.x + r.width / 2, y: r.y + r.height / 2 }; })()`);
  for (const type of ['mousePressed', 'mouseReleased']) {
    await send('Input.dispatchMouseEvent', { type, x: box.x, y: box.y, button: 'left', clickCount: 1 }, session);
  }
}

async function main() {
  const { targetInfos } = await send('Target.getTargets');
  const page = targetInfos.find((t) => t.type === 'page');
  ({ sessionId: session } = await send('Target.attachToTarget', { targetId: page.targetId, flatten: true }));
  await send('Page.enable', {}, session);
  await send('Runtime.enable', {}, session);
  const { product } = await send('Browser.getVersion');
  console.log(`browser-check: ${product}`);

  await send('Page.navigate', { url: authURL }, session);
  await waitFor('the sign-in page', "!!document.querySelector('form#login')");
  console.log(`browser-check: sign-in page at ${await where()}`);
  await type('input[name=username]', user);
  await type('input[name=password]', password);
  await click('form#login button[type=submit]');

  await waitFor('the consent page', "!!document.querySelector('form#consent')");
  console.log(`browser-check: consent page at ${await where()}: ${await evaluate("document.querySelector('#scopes').innerText.replace(/\\n/g, ' ')")}`);
  await click('form#consent button[type=submit]');

  await waitFor("Vault's callback page", `location.origin + location.pathname === ${JSON.stringify(callbackURL)}`);
  const text = await evaluate('document.body.innerText');
  console.log(`browser-check: landed on ${await where()} (title "${await evaluate('document.title')}"):\n${text.trim().replace(/^/gm, '  | ')}`);
  if (!text.includes(role)) throw new Error(`the callback page does not name the role ${role}`);
  const query = await evaluate('location.search');
  for (const param of ['code', 'state']) {
    const value = new URLSearchParams(query).get(param);
    if (value && (await evaluate('document.documentElement.outerHTML')).includes(value)) {
      throw new Error(`the callback page echoes the ${param}`);
    }
  }

  const { data } = await send('Page.captureScreenshot', { format: 'png' }, session);
  writeFileSync(screenshot, Buffer.from(data, 'base64'));
  console.log(`browser-check: screenshot saved to ${screenshot}`);
}

let failed = false;
try {
  await main();
} catch (err) {
  failed = true;
  console.error(`browser-check: FAILED: ${err.message}`);
} finally {
  await send('Browser.close').catch(() => browser.kill());
  await new Promise((r) => { if (browser.exitCode !== null) r(); else browser.once('exit', r); });
  rmSync(profile, { recursive: true, force: true });
}
process.exit(failed ? 1 : 0);
