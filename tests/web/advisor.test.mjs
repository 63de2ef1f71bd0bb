// The advisor's answers in Chromium, from a real model path: the hub's OpenAI-compatible provider
// talks to a fake model on loopback that streams a markdown answer (a heading, a list, a table,
// code, a link, and a <script> and an <img onerror> a model could write). The answer is rendered
// as markdown while it streams, at most once per animation frame, and the markup shows as text;
// past conversations are listed, reopened and continued.
//
//   GPUSCOUT_BIN=target/debug/gpuscout node --test tests/web/advisor.test.mjs
//
// Saves artifacts/advisor.png at the repository root.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { launchChromium } from './browser.mjs';
import { Hub, REPO_ROOT } from '../../client-sdk/js/test/helpers.mjs';
import { WAIT, fakeModel, newPage } from './support.mjs';

const ARTIFACTS = path.join(REPO_ROOT, 'artifacts');
const USER = 'demo';

const cap = setTimeout(() => {
  console.error('advisor.test.mjs: overall cap of 90 s exceeded');
  process.exit(1);
}, 90_000);
cap.unref();

const ANSWER = `## RTX 4090: hold your price

Your price of **$0.45/h** sits *above* the median. Two ways:

1. Lower it to \`$0.38/h\` to be rented within a day.
2. Keep it and wait for demand.

| Segment | Median | GPUs |
|:--|--:|--:|
| Verified | $0.36 | 4,131 |
| Community | $0.33 | 855 |

\`\`\`sh
curl -s "$HUB/api/v1/market/snapshot"
\`\`\`

Details on [the market page](https://example.com/gpu/rtx-4090).

<script>window.__injected = 'script'</script>
<img src="x" onerror="window.__injected = 'img'">`;

const FOLLOW_UP = 'Noted: for your RTX 3090, **$0.20/h** is the median.';
const QUESTION = 'Should I lower my RTX 4090 price of $0.45/h?';

let model;
let hub;
let browser;

before(async () => {
  mkdirSync(ARTIFACTS, { recursive: true });
  model = await fakeModel((q) => (q.includes('3090') ? FOLLOW_UP : ANSWER));
  hub = new Hub({
    GPUSCOUT__ADVISOR__PROVIDER: 'openai',
    GPUSCOUT__ADVISOR__OPENAI__BASE_URL: model.url,
    GPUSCOUT__ADVISOR__OPENAI__MODEL: 'gpt-test',
  });
  [browser] = await Promise.all([launchChromium(), hub.start()]);
});

after(async () => {
  await browser?.close();
  await hub?.dispose();
  await model?.close();
});

/** GET /api/v1/conversations/{id}/messages as the dashboard's user. */
async function storedMessages(id) {
  const token = await hub.devToken(USER);
  const res = await fetch(`${hub.httpUrl}/api/v1/conversations/${encodeURIComponent(id)}/messages`, {
    headers: { Authorization: `Bearer ${token}` },
    signal: AbortSignal.timeout(5000),
  });
  assert.equal(res.status, 200);
  return (await res.json()).messages;
}

/** Record, in the page, the frame in which each answer's text is rendered. */
function recordRenders(page) {
  return page.evaluate(() => {
    const state = { frame: 0, renders: [] };
    window.__renders = state;
    const tick = () => {
      state.frame++;
      requestAnimationFrame(tick);
    };
    requestAnimationFrame(tick);
    new MutationObserver((records) => {
      for (const r of records) {
        const text = r.target;
        if (r.type !== 'childList' || !(text instanceof HTMLElement) || !text.matches('.msg.assistant .text.md')) continue;
        state.renders.push({ frame: state.frame, id: text.closest('.msg').dataset.messageId, chars: Number(text.closest('.msg').dataset.chars) });
      }
    }).observe(document.querySelector('#chat'), { subtree: true, childList: true });
  });
}

/** Ask `question` in the pane; resolves with the answer's bubble once it is done. */
async function ask(page, question) {
  const known = await page.evaluate(() => [...document.querySelectorAll('#chat .msg.assistant[data-message-id]')].map((d) => d.dataset.messageId));
  await page.locator('#ask-input').fill(question);
  await page.locator('#ask-btn').click();
  const handle = await page.waitForFunction(
    (ids) => [...document.querySelectorAll('#chat .msg.assistant[data-message-id]')].map((d) => d.dataset.messageId).find((id) => !ids.includes(id)),
    known,
    { timeout: WAIT },
  );
  const id = await handle.jsonValue();
  const bubble = page.locator(`#chat [data-message-id="${id}"]`);
  await page.locator(`#chat [data-message-id="${id}"][data-state="done"]`).waitFor({ timeout: WAIT });
  return { id, bubble };
}

/** What a rendered answer holds: its blocks and the markup a model might try. */
function anatomy(bubble) {
  return bubble.evaluate((div) => {
    const text = div.querySelector('.text');
    const all = (sel) => [...text.querySelectorAll(sel)].map((e) => e.textContent);
    const link = text.querySelector('a');
    return {
      h2: all('h2'),
      strong: all('strong'),
      em: all('em'),
      items: all('ol > li'),
      inlineCode: all('li code'),
      head: all('table thead th'),
      rows: [...text.querySelectorAll('table tbody tr')].map((tr) => [...tr.cells].map((c) => c.textContent)),
      rightAligned: [...text.querySelectorAll('table tbody td.align-right')].length,
      pre: all('pre code'),
      link: link && { href: link.getAttribute('href'), rel: link.getAttribute('rel'), target: link.getAttribute('target'), text: link.textContent },
      markup: text.querySelectorAll('script, img, iframe, [onerror], [onclick], [style]').length,
      text: text.textContent,
    };
  });
}

function assertRendered(a) {
  assert.deepEqual(a.h2, ['RTX 4090: hold your price']);
  assert.deepEqual(a.strong, ['$0.45/h']);
  assert.deepEqual(a.em, ['above']);
  assert.deepEqual(a.items, ['Lower it to $0.38/h to be rented within a day.', 'Keep it and wait for demand.']);
  assert.deepEqual(a.inlineCode, ['$0.38/h']);
  assert.deepEqual(a.head, ['Segment', 'Median', 'GPUs']);
  assert.deepEqual(a.rows, [['Verified', '$0.36', '4,131'], ['Community', '$0.33', '855']]);
  assert.equal(a.rightAligned, 4);
  assert.deepEqual(a.pre, ['curl -s "$HUB/api/v1/market/snapshot"']);
  assert.deepEqual(a.link, { href: 'https://example.com/gpu/rtx-4090', rel: 'noopener noreferrer', target: '_blank', text: 'the market page' });
  // The model's markup is text: shown, never made into elements.
  assert.equal(a.markup, 0);
  assert.ok(a.text.includes(`<script>window.__injected = 'script'</script>`), a.text);
  assert.ok(a.text.includes(`<img src="x" onerror="window.__injected = 'img'">`), a.text);
}

test('a model answer streams in as markdown, rendered at most once a frame; its <script> shows as text and never runs', async () => {
  const { context, page, errors } = await newPage(browser);
  try {
    // At 375 px the advisor is far below the market: the header's link brings it up, ready to type.
    await page.setViewportSize({ width: 375, height: 700 });
    await page.goto(`${hub.httpUrl}/`);
    await page.locator('#conn[data-state="connected"]').waitFor();
    await page.getByRole('link', { name: 'Ask the advisor' }).click();
    assert.equal(await page.evaluate(() => document.activeElement?.id), 'ask-input');
    assert.equal(await page.evaluate(() => location.hash), '', 'the address stays');
    assert.ok(await page.locator('#ask-input').isVisible());
    const box = await page.locator('#ask-input').boundingBox();
    assert.ok(box.y >= 0 && box.y + box.height <= 700, `the box is on screen: ${JSON.stringify(box)}`);
    await page.setViewportSize({ width: 1280, height: 900 });
    await recordRenders(page);
    const { id, bubble } = await ask(page, QUESTION);
    assert.equal(model.questions.at(-1), QUESTION);
    assertRendered(await anatomy(bubble));
    assert.equal(await page.evaluate(() => window.__injected ?? null), null, 'nothing the model wrote ran');

    // Streamed: rendered several times as it grew, never twice in one frame.
    const renders = (await page.evaluate(() => window.__renders.renders)).filter((r) => r.id === id);
    assert.ok(renders.length >= 3, `rendered as it streamed: ${JSON.stringify(renders)}`);
    const frames = renders.map((r) => r.frame);
    assert.equal(new Set(frames).size, frames.length, `one render per frame at most: ${frames}`);
    const chars = renders.map((r) => r.chars);
    assert.deepEqual(chars, [...chars].sort((a, b) => a - b), 'each render shows more of the answer');
    assert.equal(chars.at(-1), ANSWER.length);

    // What was rendered is what the hub stored.
    const stored = (await storedMessages(await bubble.getAttribute('data-conversation-id'))).find((m) => m.id === id);
    assert.equal(stored.content, ANSWER);
    assert.equal(stored.provider, 'openai');
    await bubble.scrollIntoViewIfNeeded();
    await page.locator('#advisor').screenshot({ path: path.join(ARTIFACTS, 'advisor.png') });
    assert.deepEqual(errors, []);
  } finally {
    await context.close();
  }
});

test('past conversations are listed, reopened with their answers rendered, and continued', async () => {
  const { context, page, errors } = await newPage(browser);
  try {
    await page.goto(`${hub.httpUrl}/`);
    await page.locator('#conn[data-state="connected"]').waitFor();
    await page.locator('#conversations-box summary').click();
    const item = page.locator('#conversations button', { hasText: QUESTION });
    await item.waitFor();
    const conversation = await item.getAttribute('data-conversation-id');
    assert.equal(await page.locator('#conversations li').count(), 1);
    assert.equal(await page.locator('#chat .msg').count(), 0, 'a new page starts with an empty pane');

    // Reopen: the question and the answer as they were, rendered.
    await item.click();
    await page.locator('#chat .msg.user', { hasText: QUESTION }).waitFor();
    const answer = page.locator('#chat .msg.assistant[data-message-id]').first();
    assert.equal(await answer.getAttribute('data-state'), 'done');
    assertRendered(await anatomy(answer));
    assert.equal(await item.getAttribute('aria-current'), 'true');
    assert.match(await page.locator('#advisor-status').textContent(), /^Reopened “Should I lower my RTX 4090 price/);
    assert.equal(await page.evaluate(() => window.__injected ?? null), null);

    // A question now continues that conversation.
    const { bubble } = await ask(page, 'And for my RTX 3090?');
    assert.equal(await bubble.getAttribute('data-conversation-id'), conversation);
    assert.equal(await bubble.locator('.text strong').textContent(), '$0.20/h');
    const messages = await storedMessages(conversation);
    assert.deepEqual(messages.map((m) => m.role), ['user', 'assistant', 'user', 'assistant']);
    await page.waitForFunction(() => document.querySelectorAll('#conversations li').length === 1);

    // New conversation: the pane empties and the next question starts another.
    await page.locator('#new-chat-btn').click();
    assert.equal(await page.locator('#chat .msg').count(), 0);
    assert.equal(await page.locator('#conversations button[aria-current]').count(), 0);
    const next = await ask(page, 'What about the RTX 3090 market today?');
    assert.notEqual(await next.bubble.getAttribute('data-conversation-id'), conversation);
    await page.waitForFunction(() => document.querySelectorAll('#conversations li').length === 2);
    assert.equal(
      await page.locator('#conversations li').first().locator('button').getAttribute('aria-current'),
      'true',
      'the newest conversation first, and current',
    );
    assert.deepEqual(errors, []);
  } finally {
    await context.close();
  }
});
