// The advisor's past conversations (`GET /api/v1/conversations`), newest first, each a button that
// reopens it (`GET /api/v1/conversations/{id}/messages`).

import { api, errorText } from './api.js';
import { moment } from './format.js';

const $ = (/** @type {string} */ id) => /** @type {HTMLElement} */ (document.getElementById(id));
const el = {
  box: /** @type {HTMLDetailsElement} */ ($('conversations-box')),
  list: $('conversations'),
  empty: $('conversations-empty'),
  status: $('conversations-status'),
};

/** The conversation questions continue now ('' for a new one). */
let current = '';
/** @type {(id: string) => void} */
let reopen = () => {};

/** Load the list (marking `currentId` as the one shown); a failure is shown in the list's status. */
export async function loadConversations(/** @type {string} */ currentId = current) {
  current = currentId;
  try {
    const body = await api('GET', '/api/v1/conversations');
    show(body.conversations || []);
    el.status.textContent = '';
  } catch (err) {
    el.status.textContent = `Could not load past conversations: ${errorText(err)}`;
  }
}

/**
 * @param {{id: string, title: string, created_at_ms: number, updated_at_ms: number}[]} conversations
 */
function show(conversations) {
  el.list.replaceChildren(
    ...conversations.map((c) => {
      const li = document.createElement('li');
      const b = document.createElement('button');
      b.type = 'button';
      b.className = 'conversation';
      b.dataset.conversationId = c.id;
      if (c.id === current) b.setAttribute('aria-current', 'true');
      const title = document.createElement('span');
      title.className = 'title';
      title.textContent = c.title || 'Untitled';
      const time = document.createElement('time');
      time.dateTime = new Date(c.updated_at_ms).toISOString();
      time.textContent = moment(c.updated_at_ms);
      b.append(title, time);
      li.append(b);
      return li;
    }),
  );
  el.empty.hidden = conversations.length > 0;
}

/** Mark `id` as the conversation shown ('' for a new one). */
export function markCurrent(/** @type {string} */ id) {
  current = id;
  for (const b of el.list.querySelectorAll('button[data-conversation-id]')) {
    if (/** @type {HTMLElement} */ (b).dataset.conversationId === id) b.setAttribute('aria-current', 'true');
    else b.removeAttribute('aria-current');
  }
}

/** Call `fn` with a conversation's id when the user picks it. */
export function onReopen(/** @type {(id: string) => void} */ fn) {
  reopen = fn;
}

el.list.addEventListener('click', (e) => {
  const b = /** @type {HTMLElement} */ (e.target).closest('button[data-conversation-id]');
  const id = /** @type {HTMLElement | null} */ (b)?.dataset.conversationId;
  if (id) reopen(id);
});

/**
 * A conversation and its messages, oldest first.
 * @returns {Promise<{conversation: {id: string, title: string}, messages: any[]}>}
 */
export function loadMessages(/** @type {string} */ id) {
  return api('GET', `/api/v1/conversations/${encodeURIComponent(id)}/messages`);
}

/** Say something about the list (e.g. why a conversation could not be opened). */
export function conversationsStatus(/** @type {string} */ text) {
  el.status.textContent = text;
}
