// Browser tests of the live dashboard (web/, served by the hub at /) against a real hub process
// with a fast simulated market, in Debian's chromium driven by playwright-core.
//
//   GPUSCOUT_BIN=target/debug/gpuscout node --test tests/web/dashboard.test.mjs
//
// Saves artifacts/dashboard.png (and dashboard-375.png) at the repository root.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { launchChromium } from './browser.mjs';
import { Hub, REPO_ROOT } from '../../client-sdk/js/test/helpers.mjs';

const ARTIFACTS = path.join(REPO_ROOT, 'artifacts');
const WAIT = 15_000;
// The dashboard's dev-mode user (GET /api/v1/dev/token?user=demo).
const USER = 'demo';

// A hard cap on the whole file, whatever hangs.
const cap = setTimeout(() => {
  console.error('dashboard.test.mjs: overall cap of 110 s exceeded');
  process.exit(1);
}, 110_000);
cap.unref();

const hub = new Hub({ GPUSCOUT__INGEST__SIMULATED__POLL_INTERVAL_MS: '250' });
let browser;
let context;
let page;
const pageErrors = [];

before(async () => {
  mkdirSync(ARTIFACTS, { recursive: true });
  [browser] = await Promise.all([
    launchChromium(),
    hub.start(),
  ]);
  context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  context.setDefaultTimeout(WAIT);
  await context.grantPermissions(['notifications'], { origin: hub.httpUrl });
  // Record every Notification the page constructs (permission is the real one, granted above).
  await context.addInitScript(() => {
    const Real = window.Notification;
    const calls = [];
    // @ts-ignore
    window.__notifications = calls;
    class RecordingNotification {
      constructor(title, options = {}) {
        calls.push({ title, body: options.body });
      }
      static get permission() {
        return Real ? Real.permission : 'denied';
      }
      static requestPermission(...args) {
        return Real.requestPermission(...args);
      }
    }
    // @ts-ignore
    window.Notification = RecordingNotification;
  });
  page = await context.newPage();
  page.on('pageerror', (e) => pageErrors.push(e.message));
  // The hub serves the dashboard with a strict Content-Security-Policy: anything it blocks is an
  // error of the page, as the tests' `pageErrors` checks see it.
  page.on('console', (m) => {
    if (m.type() === 'error' && /Content Security Policy|Refused to (load|execute|apply|connect|frame)/.test(m.text())) {
      pageErrors.push(`CSP: ${m.text()}`);
    }
  });
});

after(async () => {
  await browser?.close();
  await hub.dispose();
});

const rowsCount = () => page.locator('#market-body tr').count();
/** The texts of every row's numeric cells, keyed by model. */
const cellTexts = () =>
  page.evaluate(() => {
    const out = {};
    for (const tr of document.querySelectorAll('#market-body tr')) {
      out[tr.dataset.model] = [...tr.querySelectorAll('td.num')].map((td) => td.textContent).join('|');
    }
    return out;
  });

async function waitForCellChange(what) {
  const before = await cellTexts();
  await page.waitForFunction(
    (prev) => {
      for (const tr of document.querySelectorAll('#market-body tr')) {
        const now = [...tr.querySelectorAll('td.num')].map((td) => td.textContent).join('|');
        if (prev[tr.dataset.model] !== undefined && prev[tr.dataset.model] !== now) return true;
      }
      return false;
    },
    before,
    { timeout: WAIT, polling: 100 },
  ).catch((e) => {
    throw new Error(`no cell changed (${what}): ${e.message}`);
  });
}

test('the page loads, connects, fills the table and updates it live', async () => {
  const res = await page.goto(`${hub.httpUrl}/`);
  assert.equal(res.status(), 200);
  await page.locator('#conn[data-state="connected"]').waitFor();
  await page.waitForFunction(() => document.querySelectorAll('#market-body tr').length >= 80, null, { timeout: WAIT });
  assert.ok((await rowsCount()) >= 80);
  assert.equal(await page.locator('#token-form').isVisible(), false, 'no token form in dev mode');
  assert.match(await page.locator('#who').textContent(), /^demo/);
  const first = page.locator('#market-body tr[data-model="rtx-4090"]');
  assert.equal(await first.locator('th').textContent(), 'RTX 4090');
  assert.match(await first.locator('td[data-col="median"]').textContent(), /^\$\d+\.\d{2,3}$/);
  assert.match(await first.locator('td[data-col="utilisation"]').textContent(), /^\d+\.\d%$/);

  await waitForCellChange('live deltas');
  // A changed row flashes (CSS class), and sparklines draw from the medians seen.
  await page.locator('#market-body tr.flash').first().waitFor({ state: 'attached' });
  await page.locator('#market-body td.trend svg polyline').first().waitFor({ state: 'attached' });

  // Sources: the simulated one, healthy.
  const src = page.locator('#sources li[data-source="simulated"]');
  await src.waitFor();
  assert.equal(await src.locator('.state').getAttribute('data-state'), 'ok');
  assert.match(await src.locator('.detail').textContent(), /last success \d+ s ago · [\d,]+ offers/);
});

test('columns sort by clicking (and with the keyboard)', async () => {
  const medianHeader = page.locator('th[data-key="median"]');
  await medianHeader.locator('button').click();
  assert.equal(await medianHeader.getAttribute('aria-sort'), 'descending');
  const sortedDesc = await page.evaluate(() =>
    [...document.querySelectorAll('#market-body td[data-col="median"]')].map((td) => Number(td.textContent.replace(/[^0-9.]/g, '')) || null),
  );
  const present = sortedDesc.filter((v) => v !== null);
  assert.deepEqual(present, [...present].sort((a, b) => b - a), 'medians descending');
  assert.ok(sortedDesc.slice(present.length).every((v) => v === null), 'rows without a median last');

  const nameHeader = page.locator('th[data-key="name"]');
  await nameHeader.locator('button').focus();
  await page.keyboard.press('Enter');
  assert.equal(await nameHeader.getAttribute('aria-sort'), 'ascending');
  assert.equal(await medianHeader.getAttribute('aria-sort'), 'none');
  const names = await page.locator('#market-body th').allTextContents();
  assert.deepEqual(names, [...names].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0)));
  await page.keyboard.press('Enter');
  assert.equal(await nameHeader.getAttribute('aria-sort'), 'descending');
  const desc = await page.locator('#market-body th').allTextContents();
  assert.deepEqual(desc, [...names].reverse());
  await page.keyboard.press('Enter'); // back to ascending
});

test('an alert published to alerts:#demo shows in the panel and raises a notification', async () => {
  assert.equal(await page.locator('#notify-btn').isVisible(), false, 'permission already granted: no button');
  const alert = { type: 'price_below', model: 'rtx-4090', price: 0.271, threshold: 0.3, message: `RTX 4090 median fell to $0.271 (${Date.now()})` };
  await hub.publish(`alerts:#${USER}`, alert);
  const item = page.locator('#alerts li', { hasText: alert.message });
  await item.waitFor();
  assert.equal(await page.locator('#alerts-empty').isVisible(), false);
  const notes = await page.waitForFunction(() => window.__notifications.length > 0 && window.__notifications, null, { timeout: WAIT });
  const calls = await notes.jsonValue();
  assert.equal(calls.length, 1);
  assert.equal(calls[0].title, 'GPUScout alert');
  assert.equal(calls[0].body, alert.message);
  // Another user's alerts never arrive.
  await hub.publish('alerts:#someone-else', { message: 'not for demo' });
  await page.waitForTimeout(300);
  assert.equal(await page.locator('#alerts li', { hasText: 'not for demo' }).count(), 0);
});

/** GET /api/v1/conversations/{id}/messages as the dashboard's user. */
async function storedMessages(conversationId) {
  const token = await hub.devToken(USER);
  const res = await fetch(`${hub.httpUrl}/api/v1/conversations/${encodeURIComponent(conversationId)}/messages`, {
    headers: { Authorization: `Bearer ${token}` },
    signal: AbortSignal.timeout(5000),
  });
  assert.equal(res.status, 200, `GET messages of ${conversationId}`);
  return (await res.json()).messages;
}

/** The text the page's markdown renderer makes of the first `n` characters of `text`, for each n. */
function renderedPrefixes(text, ns) {
  return page.evaluate(async ([t, lengths]) => {
    const { renderMarkdown } = await import('/markdown.js');
    return lengths.map((n) => {
      const div = document.createElement('div');
      div.append(renderMarkdown(t.slice(0, n)));
      return div.textContent;
    });
  }, [text, ns]);
}

/** The ids of the answers in the chat pane. */
const answerIds = () =>
  page.evaluate(() => [...document.querySelectorAll('#chat .msg.assistant[data-message-id]')].map((d) => d.dataset.messageId));

/** Wait for an answer that is not among `known` to appear in the pane; returns its id. */
async function newAnswerId(known) {
  const handle = await page.waitForFunction(
    (ids) => [...document.querySelectorAll('#chat .msg.assistant[data-message-id]')].map((d) => d.dataset.messageId).find((id) => !ids.includes(id)),
    known,
    { timeout: WAIT },
  );
  return handle.jsonValue();
}

/**
 * Record, in the page, what the advisor pane shows after every DOM change: the text of each answer
 * and its state, the pane's state, the status line and the buttons.
 */
async function recordAdvisorPane() {
  await page.evaluate(() => {
    const chat = document.querySelector('#chat');
    const pane = document.querySelector('#advisor');
    const seen = [];
    window.__advisorPane = seen;
    window.__advisorObserver?.disconnect();
    const observer = new MutationObserver(() => {
      for (const div of chat.querySelectorAll('.msg.assistant[data-message-id]')) {
        const snap = {
          id: div.dataset.messageId,
          text: div.querySelector('.text').textContent,
          chars: Number(div.dataset.chars || 0),
          state: div.dataset.state,
          busy: div.getAttribute('aria-busy'),
          pane: pane.dataset.state,
          status: document.querySelector('#advisor-status').textContent,
          stop: !document.querySelector('#stop-btn').disabled,
          ask: !document.querySelector('#ask-btn').disabled,
        };
        const last = seen.findLast((s) => s.id === snap.id);
        if (!last || Object.keys(snap).some((k) => last[k] !== snap[k])) seen.push(snap);
      }
    });
    observer.observe(pane, { subtree: true, childList: true, characterData: true, attributes: true });
    window.__advisorObserver = observer;
  });
}

test('an answer published on advisor:#demo (asked elsewhere) streams into the chat pane, and an error event shows there', async () => {
  const id = `m-${Date.now()}`;
  const chunks = ['Your RTX 4090 ', 'is priced 12% above ', 'the median: lower it to $0.35.'];
  await hub.publish(`advisor:#${USER}`, { type: 'start', message_id: id });
  const bubble = page.locator(`#chat [data-message-id="${id}"]`);
  await bubble.waitFor();
  assert.equal(await page.locator('#stop-btn').isEnabled(), true, 'a stream is stoppable');
  assert.equal(await page.locator('#advisor').getAttribute('data-state'), 'streaming');
  assert.equal(await page.locator('#ask-btn').isEnabled(), true, 'an answer asked elsewhere does not block asking');
  // The text so far, rendered as markdown: a paragraph without its trailing space.
  for (let i = 0; i < chunks.length; i++) {
    await hub.publish(`advisor:#${USER}`, { type: 'delta', message_id: id, index: i, text: chunks[i] });
    await page.waitForFunction(
      ([sel, text]) => document.querySelector(sel)?.textContent === text,
      [`#chat [data-message-id="${id}"] .text`, chunks.slice(0, i + 1).join('').trim()],
      { timeout: WAIT },
    );
  }
  assert.equal(await bubble.locator('.text p').count(), 1);
  assert.match(await bubble.getAttribute('class'), /streaming/);
  assert.equal(await bubble.getAttribute('aria-busy'), 'true');
  await hub.publish(`advisor:#${USER}`, { type: 'done', message_id: id, usage: { output_tokens: 20 }, stop_reason: 'end_turn' });
  await page.waitForFunction((sel) => !document.querySelector(sel).classList.contains('streaming'), `#chat [data-message-id="${id}"]`, { timeout: WAIT });
  assert.equal(await bubble.locator('.text').textContent(), chunks.join(''));
  assert.equal(await bubble.getAttribute('aria-busy'), 'false');
  assert.equal(await page.locator('#stop-btn').isEnabled(), false);
  assert.equal(await page.locator('#advisor').getAttribute('data-state'), 'idle');

  // An answer that fails midway: what came stays, the error shows in its bubble and the status line.
  const failing = `f-${Date.now()}`;
  await hub.publish(`advisor:#${USER}`, { type: 'start', message_id: failing });
  await hub.publish(`advisor:#${USER}`, { type: 'delta', message_id: failing, index: 0, text: 'Half an ' });
  await hub.publish(`advisor:#${USER}`, { type: 'error', message_id: failing, code: 'overloaded', message: 'anthropic: model overloaded' });
  const failed = page.locator(`#chat [data-message-id="${failing}"]`);
  await page.locator(`#chat [data-message-id="${failing}"][data-state="error"]`).waitFor();
  assert.match(await failed.getAttribute('class'), /\berror\b/);
  assert.equal(await failed.locator('.text').textContent(), 'Half an');
  assert.match(await failed.locator('.note').textContent(), /anthropic: model overloaded/);
  assert.equal(await page.locator('#advisor-status').textContent(), 'Advisor error: anthropic: model overloaded');
  assert.equal(await page.locator('#stop-btn').isEnabled(), false);
});

test('a question typed in the pane is answered by the offline advisor, streamed into the pane as it comes', async () => {
  const question = 'Should I raise my RTX 4090 price of $0.45/h?';
  const known = await answerIds();
  await recordAdvisorPane();
  const input = page.locator('#ask-input');
  await input.click();
  await input.pressSequentially(question);
  await page.locator('#ask-btn').click();

  const id = await newAnswerId(known);
  const bubble = page.locator(`#chat [data-message-id="${id}"]`);
  await page.locator(`#chat [data-message-id="${id}"]:not([data-state="streaming"])`).waitFor({ timeout: WAIT });
  assert.equal(await bubble.getAttribute('data-state'), 'done', `ended: ${await bubble.textContent()}`);
  const final = await bubble.locator('.text').textContent();
  assert.match(final, /offline advisor/);
  assert.match(final, /RTX 4090: median \$\d+\.\d\d\/h available/);
  assert.match(final, /Your price of \$0\.45\/h is/);
  assert.equal(await page.locator('#chat .msg.user .text').last().textContent(), question);
  assert.equal(await input.inputValue(), '', 'the box is cleared once the question is sent');

  // What the hub stored for this answer, and what the pane showed of it while it streamed: each
  // update the markdown of a longer start of the answer, in the streaming state.
  const conversation = await bubble.getAttribute('data-conversation-id');
  assert.ok(conversation, 'the start event named the conversation');
  const messages = await storedMessages(conversation);
  const stored = messages.find((m) => m.id === id);
  const seen = await page.evaluate(() => window.__advisorPane);
  const mine = seen.filter((s) => s.id === id);
  const partial = mine.filter((s) => s.state === 'streaming' && s.text !== '');
  const lengths = JSON.stringify(mine.map((s) => `${s.state}:${s.chars}:${s.text.length}`));
  const rendered = await renderedPrefixes(stored.content, partial.map((s) => s.chars));
  for (let i = 0; i < partial.length; i++) {
    assert.equal(partial[i].text, rendered[i], `update ${i} shows the first ${partial[i].chars} characters of the answer`);
    if (i > 0) assert.ok(partial[i].chars >= partial[i - 1].chars, `update ${i} did not go back`);
    assert.equal(partial[i].busy, 'true');
  }
  const texts = new Set(partial.filter((s) => s.chars < stored.content.length).map((s) => s.text));
  assert.ok(texts.size >= 2, `at least two partial answers shown before the end: ${texts.size} (${lengths})`);
  assert.ok(
    partial.some((s) => s.pane === 'streaming' && s.status === 'Streaming the answer…' && s.stop && !s.ask),
    `a visible streaming state with Stop enabled: ${JSON.stringify(partial.slice(0, 3))}`,
  );
  const end = mine.at(-1);
  assert.deepEqual(
    { state: end.state, busy: end.busy, pane: end.pane, stop: end.stop, ask: end.ask, text: end.text },
    { state: 'done', busy: 'false', pane: 'idle', stop: false, ask: true, text: final },
  );

  // What the pane shows is what the hub stored for this answer, rendered.
  assert.equal(stored.status, 'complete');
  assert.equal(stored.provider, 'offline');
  assert.equal((await renderedPrefixes(stored.content, [stored.content.length]))[0], final);
  assert.equal(Number(await bubble.getAttribute('data-chars')), stored.content.length);
  assert.ok(messages.some((m) => m.role === 'user' && m.content === question), 'the question was stored');

  await page.screenshot({ path: path.join(ARTIFACTS, 'dashboard.png') });
});

test('Stop cancels an answer mid-stream at the hub; a question the hub refuses shows its error in the pane', async () => {
  // Page-side record of the hub's events for the answer.
  await page.evaluate(() => {
    window.__advisorEvents = [];
    window.gpuscout.advisor.on((e) => window.__advisorEvents.push(e));
  });
  const known = await answerIds();
  // No model named: the offline advisor gives an overview of the largest markets (a long answer).
  await page.locator('#ask-input').fill('What should we charge for our fleet this week?');
  await page.locator('#ask-input').press('Enter');
  const id = await newAnswerId(known);
  const bubble = page.locator(`#chat [data-message-id="${id}"]`);
  await page.waitForFunction((sel) => /offline advisor/.test(document.querySelector(sel)?.textContent ?? ''), `#chat [data-message-id="${id}"] .text`, {
    timeout: WAIT,
  });
  await page.locator('#stop-btn:not([disabled])').waitFor();
  await page.locator('#stop-btn').click();
  await page.locator(`#chat [data-message-id="${id}"][data-state="cancelled"]`).waitFor();
  assert.match(await bubble.locator('.note').textContent(), /stopped/);
  assert.equal(await page.locator('#advisor-status').textContent(), 'Stopped.');
  assert.equal(await page.locator('#stop-btn').isEnabled(), false);
  assert.equal(await page.locator('#ask-btn').isEnabled(), true);
  assert.equal(await page.locator('#advisor').getAttribute('data-state'), 'idle');
  const shown = await bubble.locator('.text').textContent();
  const chars = Number(await bubble.getAttribute('data-chars'));

  // The hub stopped the answer: it ends with stop_reason "cancelled", stored as cancelled, cut short.
  const done = await page.waitForFunction(
    (mid) => window.__advisorEvents.find((e) => e.message_id === mid && (e.type === 'done' || e.type === 'error')),
    id,
    { timeout: WAIT },
  );
  assert.deepEqual(
    await done.evaluate((e) => [e.type, e.stop_reason]),
    ['done', 'cancelled'],
  );
  assert.equal(await bubble.locator('.text').textContent(), shown, 'nothing is appended after Stop');
  assert.equal(Number(await bubble.getAttribute('data-chars')), chars);
  const messages = await storedMessages(await bubble.getAttribute('data-conversation-id'));
  const stored = messages.find((m) => m.id === id);
  assert.equal(stored.status, 'cancelled');
  assert.ok(stored.content.length >= chars);
  assert.equal((await renderedPrefixes(stored.content, [chars]))[0], shown, 'the pane showed the start of what the hub generated');
  assert.doesNotMatch(stored.content, /for a comparison\.$/, 'the answer was cut short');

  // A question longer than the hub accepts: the hub's error shows in the pane, the question is kept.
  const tooLong = 'x'.repeat(4001);
  await page.locator('#ask-input').fill(tooLong);
  await page.locator('#ask-btn').click();
  const error = page.locator('#chat .msg.assistant.error:not([data-message-id])').last();
  await error.waitFor();
  assert.match(await error.locator('.text').textContent(), /^Advisor error: .*4000 characters/);
  assert.match(await page.locator('#advisor-status').textContent(), /^Advisor error: .*4000 characters/);
  assert.equal(await page.locator('#ask-input').inputValue(), tooLong, 'the question is back in the box');
  assert.equal(await page.locator('#ask-btn').isEnabled(), true);
  assert.equal(await page.locator('#advisor').getAttribute('data-state'), 'idle');
  await page.locator('#ask-input').fill('');
});

test('after the hub restarts the page reconnects and the table updates again', async () => {
  await hub.stop('SIGKILL');
  await page.waitForFunction(() => document.querySelector('#conn').dataset.state !== 'connected', null, { timeout: WAIT });
  const text = await page.locator('#conn').textContent();
  assert.match(text, /1006/, `the close code is shown: ${text}`);
  await hub.start(); // same port
  await page.locator('#conn[data-state="connected"]').waitFor({ timeout: 30_000 });
  // The restarted hub may answer the resubscribe before its first poll (an empty snapshot): wait
  // for the table to fill again, then for a cell to change.
  await page.waitForFunction(() => document.querySelectorAll('#market-body tr').length >= 80, null, {
    timeout: 30_000,
  });
  await waitForCellChange('after the restart');
  assert.ok((await rowsCount()) >= 80);
});

test('at 375 px wide nothing overflows horizontally and less important columns are hidden', async () => {
  await page.setViewportSize({ width: 375, height: 812 });
  await page.waitForTimeout(200);
  const m = await page.evaluate(() => ({
    doc: document.documentElement.scrollWidth,
    body: document.body.scrollWidth,
    table: document.querySelector('#market-table').getBoundingClientRect().right,
    inner: window.innerWidth,
  }));
  assert.ok(m.doc <= m.inner && m.body <= m.inner, `no horizontal overflow: ${JSON.stringify(m)}`);
  assert.ok(m.table <= m.inner, `the table fits: ${JSON.stringify(m)}`);
  assert.equal(await page.locator('th[data-key="p10"]').isVisible(), false);
  assert.equal(await page.locator('th[data-key="p90"]').isVisible(), false);
  assert.equal(await page.locator('th[data-key="median"]').isVisible(), true);
  assert.equal(await page.locator('#conn').isVisible(), true);
  await page.screenshot({ path: path.join(ARTIFACTS, 'dashboard-375.png') });
  await page.setViewportSize({ width: 1280, height: 900 });
});

test('a ?token= from the URL is used (and removed from the address); a refused token shows the token form', async () => {
  const p = await context.newPage();
  try {
    const token = await hub.token('url-user', 'professional');
    await p.goto(`${hub.httpUrl}/?token=${encodeURIComponent(token)}`);
    await p.locator('#conn[data-state="connected"]').waitFor();
    assert.match(await p.locator('#who').textContent(), /^url-user/);
    assert.equal(new URL(p.url()).searchParams.get('token'), null);
    await p.waitForFunction(() => document.querySelectorAll('#market-body tr').length >= 80, null, { timeout: WAIT });
    // The token was kept in localStorage: a reload uses it.
    await p.reload();
    await p.locator('#conn[data-state="connected"]').waitFor();
    assert.match(await p.locator('#who').textContent(), /^url-user/);
    await p.evaluate(() => localStorage.clear());

    // No dev endpoint (as in production) and a forged token: the page asks for a token.
    await p.route('**/api/v1/dev/token**', (route) => route.fulfill({ status: 404, body: '{}' }));
    const forged = hub.signToken({ sub: 'mallory', tier: 'enterprise', exp: Math.floor(Date.now() / 1000) + 600 }, 'x'.repeat(40));
    await p.goto(`${hub.httpUrl}/?token=${encodeURIComponent(forged)}`);
    await p.locator('#token-form').waitFor({ state: 'visible' });
    assert.match(await p.locator('#token-error').textContent(), /refused/);
    assert.match(await p.locator('#conn').textContent(), /3500/);
    await p.locator('#token-input').fill(await hub.token('typed-user', 'professional'));
    await p.locator('#token-input').press('Enter');
    await p.locator('#conn[data-state="connected"]').waitFor();
    assert.match(await p.locator('#who').textContent(), /^typed-user/);
    assert.equal(await p.locator('#token-form').isVisible(), false);
  } finally {
    await p.close();
  }
  assert.deepEqual(pageErrors, [], 'no uncaught errors in the page');
});

test('a ?token= of another user than the stored token asks before switching; one of the same user does not', async () => {
  // A context of its own: nothing stored yet.
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  ctx.setDefaultTimeout(WAIT);
  const p = await ctx.newPage();
  const errors = [];
  p.on('pageerror', (e) => errors.push(e.message));
  const stored = () => p.evaluate(() => localStorage.getItem('gpuscout.token'));
  /** Open the dashboard with `?token=` and, unless it asks first, wait until it is connected. */
  const open = async (token, { asks = false } = {}) => {
    await p.goto(`${hub.httpUrl}/?token=${encodeURIComponent(token)}`);
    if (asks) await p.getByRole('alertdialog').waitFor();
    else await p.locator('#conn[data-state="connected"]').waitFor();
    assert.equal(new URL(p.url()).searchParams.get('token'), null, 'the token left the address bar');
  };
  const question = 'This link signs you in as user 77. You are signed in as user 42. Switch to user 77?';
  try {
    const [a, b, b2] = await Promise.all([hub.devToken('42'), hub.devToken('77'), hub.devToken('77', 'professional', 900)]);
    assert.notEqual(b, b2);

    // Nothing stored: the link's token is used and stored without asking.
    await open(a);
    assert.match(await p.locator('#who').textContent(), /^42 /);
    assert.equal(await stored(), a);
    assert.equal(await p.locator('#switch-user').isVisible(), false);

    // Another user's link: the page asks, naming both users, and connects only once answered. Keep.
    await open(b, { asks: true });
    const dialog = p.getByRole('alertdialog', { name: question });
    assert.equal(await dialog.isVisible(), true, `the question: ${await p.locator('#switch-text').textContent()}`);
    assert.equal(await stored(), a, 'nothing is replaced while the page asks');
    assert.notEqual(await p.locator('#conn').getAttribute('data-state'), 'connected');
    await dialog.getByRole('button', { name: 'Stay signed in as user 42' }).click();
    await p.locator('#conn[data-state="connected"]').waitFor();
    assert.equal(await dialog.isVisible(), false);
    assert.match(await p.locator('#who').textContent(), /^42 /);
    assert.equal(await stored(), a, 'keep: the stored token stays');

    // The same link again, and Switch: the link's token is stored and used.
    await open(b, { asks: true });
    await p.getByRole('alertdialog', { name: question }).getByRole('button', { name: 'Switch to user 77' }).click();
    await p.locator('#conn[data-state="connected"]').waitFor();
    assert.equal(await p.locator('#switch-user').isVisible(), false);
    assert.match(await p.locator('#who').textContent(), /^77 /);
    assert.equal(await stored(), b, 'switch: the link\'s token is stored');

    // A link with another token of the stored user: used without asking (e.g. a fresher one).
    await open(b2);
    assert.equal(await p.locator('#switch-user').isVisible(), false);
    assert.match(await p.locator('#who').textContent(), /^77 /);
    assert.equal(await stored(), b2);

    // A stored token that cannot be read is not replaced silently either.
    await p.evaluate(() => localStorage.setItem('gpuscout.token', 'not-a-token'));
    await open(a, { asks: true });
    const unknown = p.getByRole('alertdialog', { name: 'This link signs you in as user 42. You are signed in as an unknown user. Switch to user 42?' });
    await unknown.getByRole('button', { name: 'Switch to user 42' }).click();
    await p.locator('#conn[data-state="connected"]').waitFor();
    assert.match(await p.locator('#who').textContent(), /^42 /);
    assert.equal(await stored(), a);
  } finally {
    await ctx.close();
  }
  assert.deepEqual(errors, [], 'no uncaught errors in the page');
});

/**
 * A fake 500.farm exporter (`/machines`) whose RTX 4090 and RTX 3090 prices the test sets: a market
 * that moves only when told, so a rule can be made to cross.
 */
async function fakeFarm500() {
  const { createServer } = await import('node:http');
  const prices = { 'RTX 4090': 0.4, 'RTX 3090': 0.2 };
  const machines = () =>
    Object.entries(prices).flatMap(([gpu, usd], m) =>
      [0, 1, 2, 3].map((i) => ({
        machine_id: 1000 + m * 10 + i,
        host_id: 500 + m * 10 + i,
        gpu_name: gpu,
        num_gpus: 4,
        num_gpus_rented: i % 2,
        dph_base: usd * 4,
        verification: 'verified',
        verified: true,
        hosting_type: 0,
        geolocation: 'Sweden, SE',
        reliability2: 0.99,
        gpu_ram: 24 * 1024,
        chunks: [],
        min_chunk: 1,
      })),
    );
  const server = createServer((req, res) => {
    if (!req.url.startsWith('/machines')) {
      res.writeHead(404).end();
      return;
    }
    const offers = machines();
    res.writeHead(200, { 'Content-Type': 'application/json' });
    res.end(JSON.stringify({ url: '/machines', timestamp: new Date().toISOString(), count: offers.length, note: 'Sorted from newest to oldest.', offers }));
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    /** Price every GPU of `gpu` at `usd` per GPU-hour from the next poll. */
    setPrice(gpu, usd) {
      prices[gpu] = usd;
    },
    close: () => new Promise((resolve) => server.close(resolve)),
  };
}

/** The alert REST API of a hub as `user`: the JSON answer and the status. */
async function alertsApi(target, user, method, apiPath) {
  const token = await target.devToken(user);
  const res = await fetch(`${target.httpUrl}${apiPath}`, { method, headers: { Authorization: `Bearer ${token}` }, signal: AbortSignal.timeout(5000) });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
}

test('alert rules: create one in the form, see it listed and fire, acknowledge it, edit, disable, test and delete it', async () => {
  const farm = await fakeFarm500();
  const marketHub = new Hub({
    GPUSCOUT__INGEST__FARM500__ENABLED: 'true',
    GPUSCOUT__INGEST__FARM500__BASE_URL: farm.url,
    GPUSCOUT__INGEST__FARM500__POLL_INTERVAL_MS: '150',
    GPUSCOUT__INGEST__FARM500__JITTER_RATIO: '0',
  });
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  ctx.setDefaultTimeout(WAIT);
  const p = await ctx.newPage();
  const errors = [];
  p.on('pageerror', (e) => errors.push(e.message));
  try {
    await marketHub.start();
    await p.goto(`${marketHub.httpUrl}/`);
    await p.locator('#conn[data-state="connected"]').waitFor();
    await p.locator('#market-body tr[data-model="rtx-4090"]').waitFor();
    await p.locator('#rules-empty').waitFor();
    assert.equal(await p.locator('#past-empty').isVisible(), true);

    // The form: kind-specific fields, the model picker fed by the market.
    const panel = p.getByRole('region', { name: 'Alert rules' });
    await panel.getByRole('button', { name: 'New rule' }).click();
    const form = p.locator('#rule-form');
    await form.waitFor();
    assert.deepEqual(
      (await p.locator('#rule-model option').allTextContents()).sort(),
      ['RTX 3090', 'RTX 4090'],
      'the picker offers the models of the market',
    );
    assert.equal(await p.getByLabel('Threshold ($ per GPU-hour)').isVisible(), true);
    assert.equal(await p.getByLabel('Machine ID').isVisible(), false);
    await p.getByLabel('Kind').selectOption('undercut');
    assert.equal(await p.getByLabel('Machine ID').isVisible(), true);
    assert.equal(await p.getByLabel('GPU model').isVisible(), false);
    await p.getByLabel('Kind').selectOption('price');

    // The hub's refusal shows next to the form (a plain-http webhook), and nothing is created.
    const name = 'cheap 4090';
    await p.getByLabel('Name', { exact: true }).fill(name);
    await p.getByLabel('GPU model').selectOption({ label: 'RTX 4090' });
    await p.getByLabel('Price', { exact: true }).selectOption('median');
    await p.getByLabel('Direction').selectOption('below');
    await p.getByLabel('Threshold ($ per GPU-hour)').fill('0.3');
    await p.getByLabel('Cooldown (minutes)').fill('60');
    await p.getByLabel('Webhook URL (optional)').fill('http://127.0.0.1:9/hook');
    await form.getByRole('button', { name: 'Create rule' }).click();
    await p.locator('#rule-error:not(:empty)').waitFor();
    assert.match(await p.locator('#rule-error').textContent(), /webhook\.url/);
    assert.equal(await p.locator('#rules li').count(), 0);
    assert.deepEqual((await alertsApi(marketHub, USER, 'GET', '/api/v1/alerts/rules')).body.rules, []);

    // Delivery channels: this hub sends no push (no VAPID keys), and says so.
    await p.getByLabel('Webhook URL (optional)').fill('');
    await p.getByLabel('Browser push').check();
    await form.getByRole('button', { name: 'Create rule' }).click();
    await p.locator('#rule-error', { hasText: 'this hub does not send push alerts' }).waitFor();
    assert.equal(await p.locator('#rules li').count(), 0);
    await p.getByLabel('Browser push').uncheck();
    await p.getByLabel('This page and apps').uncheck();
    await form.getByRole('button', { name: 'Create rule' }).click();
    await p.locator('#rule-error', { hasText: 'Choose where the alerts go.' }).waitFor();
    await p.getByLabel('This page and apps').check();

    // Without the webhook, to the socket: created, listed with its condition, stored as the form said.
    await form.getByRole('button', { name: 'Create rule' }).click();
    const item = p.locator('#rules li', { hasText: name });
    await item.waitFor();
    assert.equal(await form.isVisible(), false, 'the form closes once saved');
    assert.match(await item.locator('.summary').textContent(), /^RTX 4090 median price below \$0\.30\/h · cooldown 1 h$/);
    assert.equal(await item.getByRole('checkbox', { name: `Enabled: ${name}` }).isChecked(), true);
    let rules = (await alertsApi(marketHub, USER, 'GET', '/api/v1/alerts/rules')).body.rules;
    assert.equal(rules.length, 1);
    const rule = rules[0];
    assert.deepEqual(
      { name: rule.name, kind: rule.kind, model: rule.model, stat: rule.stat, direction: rule.direction, threshold_usd: rule.threshold_usd, cooldown_s: rule.cooldown_s, enabled: rule.enabled, deliver: rule.deliver },
      { name, kind: 'price', model: 'rtx-4090', stat: 'median', direction: 'below', threshold_usd: 0.3, cooldown_s: 3600, enabled: true, deliver: ['socket'] },
    );
    assert.equal(await item.getAttribute('data-rule-id'), rule.id);

    // The rule learns the market stands above the threshold; then the price falls below: it fires,
    // and the alert joins Past alerts live (pushed, not reloaded).
    await p.waitForTimeout(800);
    assert.equal(await p.locator('#past-alerts li').count(), 0, 'no alert before the crossing');
    farm.setPrice('RTX 4090', 0.2);
    const fired = p.locator('#past-alerts li[data-acknowledged="false"]');
    await fired.waitFor();
    assert.equal(await p.locator('#past-alerts li').count(), 1);
    assert.equal(await fired.locator('.rule').textContent(), name);
    assert.match(await fired.locator('.text').textContent(), /RTX 4090: median price \$0\.200\/h is below \$0\.300\/h/);
    assert.equal(await p.locator('#past-meta').textContent(), '1 unacknowledged');
    assert.equal(await p.locator('#past-empty').isVisible(), false);
    let events = (await alertsApi(marketHub, USER, 'GET', '/api/v1/alerts/events?limit=50')).body.events;
    assert.equal(events.length, 1);
    assert.equal(events[0].rule_id, rule.id);
    assert.equal(events[0].acknowledged_at_ms, null);
    assert.equal(await fired.getAttribute('data-event-id'), events[0].id, 'the pushed alert is the stored event');

    // Acknowledge: the list says so, and so does the hub.
    await fired.getByRole('button', { name: /^Acknowledge alert of cheap 4090/ }).click();
    const acked = p.locator(`#past-alerts li[data-event-id="${events[0].id}"][data-acknowledged="true"]`);
    await acked.waitFor();
    assert.match(await acked.locator('.ack').textContent(), /^Acknowledged /);
    assert.equal(await acked.getByRole('button').count(), 0, 'no Acknowledge button any more');
    assert.equal(await p.locator('#past-meta').textContent(), '0 unacknowledged');
    events = (await alertsApi(marketHub, USER, 'GET', '/api/v1/alerts/events?limit=50')).body.events;
    assert.equal(typeof events[0].acknowledged_at_ms, 'number', `acknowledged at the hub: ${JSON.stringify(events[0])}`);

    // A reload shows the stored alert, acknowledged, and the rule with when it last fired.
    await p.reload();
    await p.locator('#conn[data-state="connected"]').waitFor();
    await p.locator(`#past-alerts li[data-event-id="${events[0].id}"][data-acknowledged="true"]`).waitFor();
    await p.locator('#rules li', { hasText: name }).waitFor();
    assert.match(await item.locator('.summary').textContent(), /last fired /);

    // Edit: the form opens with the rule's values; the new threshold is saved.
    await item.getByRole('button', { name: `Edit rule ${name}` }).click();
    await form.waitFor();
    assert.equal(await p.getByLabel('Name', { exact: true }).inputValue(), name);
    assert.equal(await p.getByLabel('GPU model').inputValue(), 'rtx-4090');
    assert.equal(await p.getByLabel('Threshold ($ per GPU-hour)').inputValue(), '0.3');
    await p.getByLabel('Threshold ($ per GPU-hour)').fill('0.25');
    await form.getByRole('button', { name: 'Save rule' }).click();
    await p.locator('#rules li .summary', { hasText: 'below $0.25/h' }).waitFor();
    rules = (await alertsApi(marketHub, USER, 'GET', '/api/v1/alerts/rules')).body.rules;
    assert.equal(rules.length, 1, 'edited, not added');
    assert.equal(rules[0].threshold_usd, 0.25);

    // Disable, then test (a test alert is pushed, not stored).
    await item.getByRole('checkbox', { name: `Enabled: ${name}` }).uncheck();
    await p.locator(`#rules li[data-rule-id="${rule.id}"][data-enabled="false"]`).waitFor();
    rules = (await alertsApi(marketHub, USER, 'GET', '/api/v1/alerts/rules')).body.rules;
    assert.equal(rules[0].enabled, false);
    await item.getByRole('button', { name: `Test rule ${name}` }).click();
    await p.locator('#rules-status', { hasText: `Test alert of ${name} sent.` }).waitFor();
    await p.locator('#alerts li', { hasText: `Test of "${name}"` }).waitFor();
    assert.equal(await p.locator('#past-alerts li').count(), 1, 'a test is not a past alert');

    // A second rule of another kind, then delete the first: only the second is left.
    await panel.getByRole('button', { name: 'New rule' }).click();
    await p.getByLabel('Name', { exact: true }).fill('busy 3090');
    await p.getByLabel('Kind').selectOption('utilisation');
    await p.getByLabel('GPU model').selectOption({ label: 'RTX 3090' });
    await p.getByLabel('Direction').selectOption('above');
    await p.getByLabel('Threshold (% of GPUs rented)').fill('90');
    await form.getByRole('button', { name: 'Create rule' }).click();
    await p.locator('#rules li', { hasText: 'busy 3090' }).waitFor();
    assert.match(await p.locator('#rules li', { hasText: 'busy 3090' }).locator('.summary').textContent(), /^RTX 3090 utilisation above 90\.0%/);
    p.once('dialog', (d) => d.accept());
    await item.getByRole('button', { name: `Delete rule ${name}` }).click();
    await item.waitFor({ state: 'detached' });
    rules = (await alertsApi(marketHub, USER, 'GET', '/api/v1/alerts/rules')).body.rules;
    assert.deepEqual(rules.map((r) => [r.name, r.kind, r.threshold]), [['busy 3090', 'utilisation', 0.9]]);
    assert.equal(await p.locator('#rules li').count(), 1);
    await p.screenshot({ path: path.join(ARTIFACTS, 'dashboard-alerts.png'), fullPage: true });
  } finally {
    await ctx.close();
    await marketHub.dispose();
    await farm.close();
  }
  assert.deepEqual(errors, [], 'no uncaught errors in the page');
});

test('developers: create an API key, run the shown curl requests with it, revoke it and get 401', async () => {
  await page.goto(`${hub.httpUrl}/`);
  await page.locator('#conn[data-state="connected"]').waitFor();
  const panel = page.getByRole('region', { name: 'Developers' });
  await panel.getByLabel('Key name').fill('browser test key');
  await panel.getByLabel('advisor').check();
  await panel.getByRole('button', { name: 'Create key' }).click();
  await page.locator('#new-key-value', { hasText: /^gsk_/ }).waitFor();
  const key = (await page.locator('#new-key-value').textContent()).trim();
  assert.match(key, /^gsk_[0-9A-Za-z]{43}$/);
  const item = page.locator('#keys li', { hasText: 'browser test key' });
  await item.waitFor();
  assert.match(await item.textContent(), /subscribe.*market:read.*advisor|advisor.*market:read.*subscribe/);
  assert.ok(!(await item.textContent()).includes(key.slice(12)), 'the list shows the prefix only');

  // The curl example, run as written: its two requests.
  const curl = await page.locator('#ex-curl').textContent();
  const urls = [...curl.matchAll(/(http:\/\/[^\s)]+)/g)].map((m) => m[1]);
  assert.deepEqual(urls, [`${hub.httpUrl}/api/v1/token`, `${hub.httpUrl}/api/v1/market/snapshot`]);
  assert.ok(curl.includes(`Bearer ${key}`));
  const exchanged = await fetch(urls[0], { method: 'POST', headers: { Authorization: `Bearer ${key}` } });
  assert.equal(exchanged.status, 200);
  assert.ok((await exchanged.json()).token);
  const market = await fetch(urls[1], { headers: { Authorization: `Bearer ${key}` } });
  assert.equal(market.status, 200);
  // The SDK example names this hub and the key.
  assert.ok((await page.locator('#ex-js').textContent()).includes(`apiKey: '${key}'`));

  await item.getByRole('button', { name: /Revoke/ }).click();
  await item.waitFor({ state: 'detached' });
  const after = await fetch(urls[1], { headers: { Authorization: `Bearer ${key}` } });
  assert.equal(after.status, 401);
  assert.deepEqual(pageErrors, []);
});

test('a free-tier token sees the minute market with a note, never an endless wait', async () => {
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  ctx.setDefaultTimeout(WAIT);
  const p = await ctx.newPage();
  const errors = [];
  p.on('pageerror', (e) => errors.push(e.message));
  try {
    const token = await hub.devToken('freebie', 'free');
    await p.goto(`${hub.httpUrl}/?token=${encodeURIComponent(token)}`);
    await p.locator('#conn[data-state="connected"]').waitFor();
    await p.waitForFunction(() => document.querySelectorAll('#market-body tr').length >= 10, null, { timeout: WAIT });
    assert.match(await p.locator('#market-meta').textContent(), /\d+ models · .*updated every minute — live prices from the Individual tier/);
    // The free tier's channel, not the refused real-time one.
    const [minute, live] = await p.evaluate(() => [
      window.gpuscout.getSubscription('market:summary.1m')?.state,
      window.gpuscout.getSubscription('market:summary')?.state,
    ]);
    assert.deepEqual([minute, live], ['subscribed', undefined]);
    assert.deepEqual(errors, []);
  } finally {
    await ctx.close();
  }
});
