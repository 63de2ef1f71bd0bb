// Web Push in Chromium: the dashboard's "notify me when the tab is closed" toggle registers
// web/sw.js and hands the subscription to the hub; a push delivered to the service worker through
// the DevTools protocol (ServiceWorker.deliverPushMessage) shows the alert as a notification.
//
//   GPUSCOUT_BIN=target/debug/gpuscout node --test tests/web/push.test.mjs
//
// Chromium's push service (Google's FCM) cannot be reached here, so pushManager.subscribe is
// the one thing replaced: it answers with a subscription to an FCM endpoint with real P-256 keys,
// as Chromium would. Everything else is the real browser, service worker and hub.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { launchChromium } from './browser.mjs';
import { Hub, BIN } from '../../client-sdk/js/test/helpers.mjs';

const WAIT = 15_000;

const cap = setTimeout(() => {
  console.error('push.test.mjs: overall cap of 90 s exceeded');
  process.exit(1);
}, 90_000);
cap.unref();

// A VAPID key pair from the hub itself (`gpuscout vapid-keys` prints it as environment lines).
const vapid = Object.fromEntries(
  execFileSync(BIN, ['vapid-keys'], { encoding: 'utf8' })
    .trim()
    .split('\n')
    .map((line) => line.split('=')),
);
const hub = new Hub({ ...vapid, GPUSCOUT__PUSH__SUBJECT: 'mailto:ops@example.com' });
let browser;
let context;
let page;
const pageErrors = [];

before(async () => {
  [browser] = await Promise.all([
    launchChromium(),
    hub.start(),
  ]);
  context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  context.setDefaultTimeout(WAIT);
  await context.grantPermissions(['notifications'], { origin: hub.httpUrl });
  await context.addInitScript(() => {
    // The subscription Chromium would get from FCM: an endpoint and real keys.
    PushManager.prototype.subscribe = async function subscribe(options) {
      if (!options || !options.userVisibleOnly || !options.applicationServerKey) {
        throw new DOMException('userVisibleOnly and applicationServerKey are required', 'NotAllowedError');
      }
      const pair = await crypto.subtle.generateKey({ name: 'ECDH', namedCurve: 'P-256' }, true, ['deriveBits']);
      const raw = new Uint8Array(await crypto.subtle.exportKey('raw', pair.publicKey));
      const b64 = (bytes) => btoa(String.fromCharCode(...bytes)).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
      const json = {
        endpoint: `https://fcm.googleapis.com/fcm/send/test-${Date.now()}`,
        expirationTime: null,
        keys: { p256dh: b64(raw), auth: b64(crypto.getRandomValues(new Uint8Array(16))) },
      };
      // @ts-ignore
      window.__subscribed = json;
      return { endpoint: json.endpoint, toJSON: () => json, unsubscribe: async () => true };
    };
  });
  page = await context.newPage();
  page.on('pageerror', (e) => pageErrors.push(e.message));
});

after(async () => {
  await browser?.close();
  await hub.dispose();
});

async function rest(method, path) {
  const token = await hub.devToken('demo', 'professional');
  const res = await fetch(`${hub.httpUrl}${path}`, { method, headers: { Authorization: `Bearer ${token}` } });
  return { status: res.status, body: res.status === 204 ? null : await res.json() };
}

test('the toggle subscribes, a push shows a notification, and the toggle unsubscribes', async () => {
  await page.goto(`${hub.httpUrl}/`);
  await page.locator('#conn[data-state="connected"]').waitFor();
  const toggle = page.locator('#push-toggle');
  await page.locator('#push-toggle-label').waitFor({ state: 'visible' });
  assert.equal(await toggle.isChecked(), false);

  await toggle.check();
  await page.locator('#push-status', { hasText: 'Alerts reach this browser with the tab closed.' }).waitFor();
  const subscribed = await page.evaluate(() => window.__subscribed);
  const listed = await rest('GET', '/api/v1/push/subscriptions');
  assert.equal(listed.status, 200);
  assert.deepEqual(
    listed.body.subscriptions.map((s) => s.endpoint),
    [subscribed.endpoint],
    'the hub has the browser subscription',
  );

  // The service worker is registered; deliver a push to it as the push service would.
  const cdp = await context.newCDPSession(page);
  const registrations = [];
  cdp.on('ServiceWorker.workerRegistrationUpdated', (e) => registrations.push(...e.registrations));
  await cdp.send('ServiceWorker.enable');
  const deadline = Date.now() + WAIT;
  while (!registrations.some((r) => r.scopeURL === `${hub.httpUrl}/` && !r.isDeleted)) {
    assert.ok(Date.now() < deadline, 'web/sw.js is registered');
    await new Promise((r) => setTimeout(r, 100));
  }
  const registration = registrations.find((r) => r.scopeURL === `${hub.httpUrl}/`);
  const alert = {
    type: 'alert',
    id: 'evt-1',
    rule_id: 'r1',
    rule_name: 'cheap 4090',
    kind: 'price',
    model: 'rtx-4090',
    message: 'RTX 4090: median price $0.280/h is below $0.300/h',
    fired_at_ms: Date.now(),
  };
  await cdp.send('ServiceWorker.deliverPushMessage', {
    origin: hub.httpUrl,
    registrationId: registration.registrationId,
    data: JSON.stringify(alert),
  });
  const shown = await page.waitForFunction(
    async () => {
      const reg = await navigator.serviceWorker.getRegistration('/');
      const list = reg ? await reg.getNotifications() : [];
      return list.length ? list.map((n) => ({ title: n.title, body: n.body, tag: n.tag })) : null;
    },
    null,
    { timeout: WAIT, polling: 200 },
  );
  assert.deepEqual(await shown.jsonValue(), [
    { title: 'GPUScout: cheap 4090', body: alert.message, tag: 'gpuscout-evt-1' },
  ]);

  await toggle.uncheck();
  await page.locator('#push-status', { hasText: 'Push alerts are off for this browser.' }).waitFor();
  const after = await rest('GET', '/api/v1/push/subscriptions');
  assert.deepEqual(after.body.subscriptions, [], 'the hub forgot the subscription');
  assert.deepEqual(pageErrors, []);
});
