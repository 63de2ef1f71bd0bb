// Markdown of the advisor's answers, rendered as DOM nodes.
//
// Built with document.createElement / createTextNode only: nothing the model writes is ever parsed
// as HTML, so a `<script>` or an `<img onerror=…>` in an answer shows as the text it is. Links keep
// only http:, https: and mailto: targets. The answer is rendered again on every streamed delta, so
// any prefix of an answer renders without throwing: an unclosed ``` fence is a code block in
// progress, an unclosed `**` stays literal text, a half-written table row is a row with fewer cells.
//
// Blocks: paragraphs (each line break kept as <br>), ATX headings (# to ######), fenced code
// (``` or ~~~, the info string's first word as class `language-x` on <code>), bullet and ordered
// lists nested by indentation, GitHub tables (alignment as class `align-left|center|right` on each
// cell, never an inline style), blockquotes and horizontal rules. Inline: *em*, _em_, **strong**,
// __strong__, ~~del~~, `code`, backslash escapes, HTML entities (decoded into text), [links](url
// "title"), ![images](url) as links (no image is loaded), <url> and bare http(s):// URLs.
// Not supported: raw HTML (shown as text), indented code blocks, setext headings (`---` under a
// line is a rule), reference-style links.

/** Blockquotes and lists nest at most this deep; deeper markers are plain text. */
const MAX_BLOCK_DEPTH = 12;
/** Emphasis and links nest at most this deep; further markers are plain text. */
const MAX_INLINE_DEPTH = 24;

const SAFE_SCHEMES = new Set(['http', 'https', 'mailto']);

/**
 * Render markdown as DOM nodes.
 *
 * @param {unknown} text  the markdown (anything else is turned into a string; null is empty)
 * @param {Document} [doc]  the document that creates the nodes
 * @returns {DocumentFragment}
 */
export function renderMarkdown(text, doc = globalThis.document) {
  if (!doc || typeof doc.createDocumentFragment !== 'function') {
    throw new TypeError('renderMarkdown: no document to create nodes with');
  }
  const src = toText(text);
  try {
    const frag = doc.createDocumentFragment();
    const lines = src.replace(/\0/g, '\uFFFD').split(/\r\n?|\n/);
    blocks(lines, frag, doc, 0, false);
    return frag;
  } catch {
    // Not expected; the answer then shows as plain text (class md-raw) rather than not at all.
    const frag = doc.createDocumentFragment();
    const p = doc.createElement('p');
    p.className = 'md-raw';
    p.appendChild(doc.createTextNode(src));
    frag.appendChild(p);
    return frag;
  }
}

/** @param {unknown} text */
function toText(text) {
  if (typeof text === 'string') return text;
  if (text === null || text === undefined) return '';
  try {
    return String(text);
  } catch {
    return '';
  }
}

// ---- blocks -------------------------------------------------------------------------------------

const HEADING = /^ {0,3}(#{1,6})(?:[ \t]+(.*))?$/;
const RULE = /^ {0,3}(?:(?:\*[ \t]*){3,}|(?:-[ \t]*){3,}|(?:_[ \t]*){3,})$/;
const QUOTE = /^ {0,3}>/;
const QUOTE_MARK = /^ {0,3}>[ \t]?/;
const ITEM = /^([ \t]*)([-*+]|(\d{1,9})[.)])(?:([ \t]+)(.*))?$/;
const FENCE = /^[ \t]*(`{3,}|~{3,})(.*)$/;
const FENCE_CLOSE = /^[ \t]*(`{3,}|~{3,})[ \t]*$/;

/** @param {string} line */
function isBlank(line) {
  return line.trim() === '';
}

/** Columns of leading whitespace (a tab goes to the next multiple of 4). */
function indentOf(line) {
  let col = 0;
  for (let k = 0; k < line.length; k++) {
    const c = line[k];
    if (c === ' ') col++;
    else if (c === '\t') col += 4 - (col % 4);
    else break;
  }
  return col;
}

/** The line without up to `n` columns of leading whitespace. */
function stripCols(line, n) {
  let col = 0;
  let k = 0;
  while (k < line.length && col < n) {
    const c = line[k];
    if (c === ' ') col++;
    else if (c === '\t') {
      const next = col + 4 - (col % 4);
      if (next > n) return ' '.repeat(next - n) + line.slice(k + 1);
      col = next;
    } else break;
    k++;
  }
  return line.slice(k);
}

/** An opening code fence: its character, length, indentation and info string. */
function fenceOpen(line) {
  const m = FENCE.exec(line);
  if (!m) return null;
  const mark = m[1];
  if (mark[0] === '`' && m[2].includes('`')) return null; // ```x``` is inline code
  return { ch: mark[0], len: mark.length, indent: indentOf(line), info: m[2].trim() };
}

/** A list item marker: its kind, start number, indentation, content and content column. */
function listItem(line) {
  const m = ITEM.exec(line);
  if (!m) return null;
  const indent = indentOf(m[1]);
  const marker = m[2];
  const gap = m[4] ? indentOf(m[4]) : 0;
  const text = m[5] ?? '';
  const content = indent + marker.length + (gap >= 1 && gap <= 4 && text ? gap : 1);
  return {
    ordered: m[3] !== undefined,
    start: m[3] !== undefined ? Number(m[3]) : 1,
    indent,
    text: text.trim(),
    content,
  };
}

/** A line that ends a paragraph (or a lazy list or quote line) by starting another block. */
function interrupts(lines, j, depth) {
  const line = lines[j];
  if (fenceOpen(line) || HEADING.test(line) || RULE.test(line)) return true;
  if (depth < MAX_BLOCK_DEPTH) {
    if (QUOTE.test(line)) return true;
    const item = listItem(line);
    if (item && item.text) return true;
  }
  return tableAt(lines, j) !== null;
}

/**
 * Render lines as blocks into `parent`.
 * @param {string[]} lines
 * @param {Node} parent
 * @param {Document} doc
 * @param {number} depth  how deep in lists and quotes
 * @param {boolean} tight  paragraphs go straight into the parent (a tight list's item)
 */
function blocks(lines, parent, doc, depth, tight) {
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    if (isBlank(line)) {
      i++;
      continue;
    }
    const fence = fenceOpen(line);
    if (fence) {
      i = codeBlock(lines, i, fence, parent, doc);
      continue;
    }
    const h = HEADING.exec(line);
    if (h) {
      const el = doc.createElement(`h${h[1].length}`);
      const body = (h[2] ?? '').replace(/(?:^|[ \t]+)#+[ \t]*$/, '').trim();
      inline(body, el, doc);
      parent.appendChild(el);
      i++;
      continue;
    }
    if (RULE.test(line)) {
      parent.appendChild(doc.createElement('hr'));
      i++;
      continue;
    }
    if (depth < MAX_BLOCK_DEPTH && QUOTE.test(line)) {
      i = quote(lines, i, parent, doc, depth);
      continue;
    }
    if (depth < MAX_BLOCK_DEPTH && listItem(line)) {
      i = list(lines, i, parent, doc, depth);
      continue;
    }
    const table = tableAt(lines, i);
    if (table) {
      i = tableBlock(lines, i, table, parent, doc);
      continue;
    }
    i = paragraph(lines, i, parent, doc, depth, tight);
  }
}

function paragraph(lines, i, parent, doc, depth, tight) {
  const text = [lines[i].trim()];
  let j = i + 1;
  while (j < lines.length && !isBlank(lines[j]) && !interrupts(lines, j, depth)) {
    text.push(lines[j].trim());
    j++;
  }
  if (tight) {
    inline(text.join('\n'), parent, doc);
  } else {
    const p = doc.createElement('p');
    inline(text.join('\n'), p, doc);
    parent.appendChild(p);
  }
  return j;
}

/** A fenced code block; without its closing fence (still streaming) it runs to the end. */
function codeBlock(lines, i, fence, parent, doc) {
  const body = [];
  let j = i + 1;
  while (j < lines.length) {
    const m = FENCE_CLOSE.exec(lines[j]);
    if (m && m[1][0] === fence.ch && m[1].length >= fence.len) {
      j++;
      break;
    }
    body.push(stripCols(lines[j], fence.indent));
    j++;
  }
  const pre = doc.createElement('pre');
  const code = doc.createElement('code');
  const lang = (fence.info.split(/[ \t]/)[0] ?? '').replace(/[^\w+#.-]/g, '').slice(0, 32);
  if (lang) code.className = `language-${lang}`;
  code.appendChild(doc.createTextNode(body.join('\n')));
  pre.appendChild(code);
  parent.appendChild(pre);
  return j;
}

function quote(lines, i, parent, doc, depth) {
  const body = [];
  let j = i;
  let fenced = false;
  while (j < lines.length) {
    const line = lines[j];
    if (QUOTE.test(line)) {
      const inner = line.replace(QUOTE_MARK, '');
      if (fenceOpen(inner) || FENCE_CLOSE.test(inner)) fenced = !fenced;
      body.push(inner);
    } else if (!isBlank(line) && !fenced && body.length && !isBlank(body[body.length - 1]) && !interrupts(lines, j, depth)) {
      body.push(line); // a lazy continuation of the quoted paragraph
    } else {
      break;
    }
    j++;
  }
  const el = doc.createElement('blockquote');
  blocks(body, el, doc, depth + 1, false);
  parent.appendChild(el);
  return j;
}

/**
 * A list: items of the same kind (bullet or ordered) at about the first item's indentation; lines
 * indented past it (two columns or the item's content column) belong to the item, nested lists
 * included. A list is loose (paragraphs in <p>) when a blank line separates its items or blocks.
 */
function list(lines, i, parent, doc, depth) {
  const first = /** @type {NonNullable<ReturnType<typeof listItem>>} */ (listItem(lines[i]));
  const base = first.indent;
  const el = doc.createElement(first.ordered ? 'ol' : 'ul');
  if (first.ordered && first.start !== 1) el.setAttribute('start', String(first.start));
  /** @type {{lines: string[], content: number, fence: {ch: string, len: number} | null}[]} */
  const items = [];
  let cur = { lines: [first.text], content: first.content, fence: fenceOpen(first.text) };
  items.push(cur);
  let loose = false;
  let blanks = 0;
  let j = i + 1;
  for (; j < lines.length; j++) {
    const line = lines[j];
    if (isBlank(line)) {
      blanks++;
      continue;
    }
    const ind = indentOf(line);
    const item = listItem(line);
    const inner = Math.min(cur.content, base + 2);
    if (ind < inner && !cur.fence && RULE.test(line)) break;
    if (item && ind < base + 2) {
      if (item.ordered !== first.ordered) break;
      if (blanks) loose = true;
      cur = { lines: [item.text], content: item.content, fence: fenceOpen(item.text) };
      items.push(cur);
      blanks = 0;
      continue;
    }
    let text;
    if (ind >= inner || item) {
      if (blanks && !cur.fence) loose = true;
      text = stripCols(line, cur.content);
    } else if (!blanks && (cur.fence || !interrupts(lines, j, depth))) {
      text = line.trim(); // a lazy continuation line
    } else {
      break;
    }
    for (; blanks > 0; blanks--) cur.lines.push('');
    cur.lines.push(text);
    if (cur.fence) {
      const m = FENCE_CLOSE.exec(text);
      if (m && m[1][0] === cur.fence.ch && m[1].length >= cur.fence.len) cur.fence = null;
    } else {
      cur.fence = fenceOpen(text);
    }
  }
  for (const it of items) {
    const li = doc.createElement('li');
    blocks(it.lines, li, doc, depth + 1, !loose);
    el.appendChild(li);
  }
  parent.appendChild(el);
  return j;
}

/** A table row's cells: outer pipes dropped, split on pipes, `\|` kept as a pipe. */
function splitCells(line) {
  let s = line.trim();
  if (s.startsWith('|')) s = s.slice(1);
  if (s.endsWith('|') && !s.endsWith('\\|')) s = s.slice(0, -1);
  const cells = [];
  let cell = '';
  for (let k = 0; k < s.length; k++) {
    const c = s[k];
    if (c === '\\' && s[k + 1] === '|') {
      cell += '|';
      k++;
    } else if (c === '|') {
      cells.push(cell.trim());
      cell = '';
    } else {
      cell += c;
    }
  }
  cells.push(cell.trim());
  return cells;
}

/** The alignments of a delimiter row (`| --- | :-: |`), or null when the line is not one. */
function delimiterRow(line) {
  const t = line.trim();
  if (!t.includes('|') || !t.includes('-') || !/^[|:\- \t]+$/.test(t)) return null;
  const aligns = [];
  for (const c of splitCells(t)) {
    // A cell may still be being written (`:` alone) while the answer streams.
    if (!/^:?-*:?$/.test(c)) return null;
    const left = c.startsWith(':');
    const right = c.length > 1 && c.endsWith(':');
    aligns.push(left && right ? 'center' : right ? 'right' : left ? 'left' : '');
  }
  return aligns;
}

/** A table starting at line i (a header row, then a delimiter row), or null. */
function tableAt(lines, i) {
  if (i + 1 >= lines.length) return null;
  const head = lines[i];
  if (!head.includes('|') || indentOf(head) > 3) return null;
  const aligns = delimiterRow(lines[i + 1]);
  if (!aligns) return null;
  const cells = splitCells(head);
  if (aligns.length > cells.length) return null;
  return { cells, aligns };
}

function tableBlock(lines, i, { cells, aligns }, parent, doc) {
  const table = doc.createElement('table');
  const thead = doc.createElement('thead');
  thead.appendChild(row(cells, 'th', cells.length, aligns, doc));
  table.appendChild(thead);
  let j = i + 2;
  let tbody = null;
  for (; j < lines.length; j++) {
    const line = lines[j];
    if (isBlank(line) || !line.includes('|') || fenceOpen(line) || HEADING.test(line) || QUOTE.test(line) || listItem(line)) break;
    if (!tbody) tbody = doc.createElement('tbody');
    tbody.appendChild(row(splitCells(line), 'td', cells.length, aligns, doc));
  }
  if (tbody) table.appendChild(tbody);
  parent.appendChild(table);
  return j;
}

function row(cells, tag, count, aligns, doc) {
  const tr = doc.createElement('tr');
  for (let c = 0; c < count; c++) {
    const cell = doc.createElement(tag);
    if (aligns[c]) cell.className = `align-${aligns[c]}`;
    inline(cells[c] ?? '', cell, doc);
    tr.appendChild(cell);
  }
  return tr;
}

// ---- inline -------------------------------------------------------------------------------------
//
// The text becomes a linked list of pieces (text, code, breaks, links, delimiter runs of * _ ~),
// then emphasis is matched on the delimiter runs as CommonMark does (left/right flanking, the rule
// of 3), each match moving the pieces between its delimiters under one emphasis piece; unmatched
// runs stay literal text. Links are matched when their `]` is read, with the emphasis inside them.

const SPECIAL = /[\\`*_~[\]!<&\nhH]/g;
const ASCII_PUNCT = /^[!-/:-@[-`{-~]$/;
const PUNCT = /^[\p{P}\p{S}]$/u;
const SPACE = /^\s$/;
const ANGLE_LINK = /<([A-Za-z][A-Za-z0-9+.-]{1,31}:[^\s<>]*)>/y;
const ANGLE_EMAIL =
  /<([A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*)>/y;
const BARE_URL = /https?:\/\/[^\s<>`[\]]+/iy;
const ENTITY = /&(#[xX][0-9a-fA-F]{1,6}|#[0-9]{1,7}|[A-Za-z][A-Za-z0-9]{1,31});/y;
const ESCAPE_OR_ENTITY = /\\([!-/:-@[-`{-~])|&(#[xX][0-9a-fA-F]{1,6}|#[0-9]{1,7}|[A-Za-z][A-Za-z0-9]{1,31});/g;

const NAMED_ENTITIES = {
  amp: '&', lt: '<', gt: '>', quot: '"', apos: "'", nbsp: '\u00a0', ensp: '\u2002', emsp: '\u2003',
  thinsp: '\u2009', ndash: '\u2013', mdash: '\u2014', hellip: '\u2026', lsquo: '\u2018', rsquo: '\u2019',
  ldquo: '\u201c', rdquo: '\u201d', laquo: '\u00ab', raquo: '\u00bb', bull: '\u2022', middot: '\u00b7',
  copy: '\u00a9', reg: '\u00ae', trade: '\u2122', deg: '\u00b0', plusmn: '\u00b1', times: '\u00d7',
  divide: '\u00f7', micro: '\u00b5', para: '\u00b6', sect: '\u00a7', cent: '\u00a2', pound: '\u00a3',
  euro: '\u20ac', yen: '\u00a5', larr: '\u2190', rarr: '\u2192', uarr: '\u2191', darr: '\u2193',
  harr: '\u2194', le: '\u2264', ge: '\u2265', ne: '\u2260', asymp: '\u2248', infin: '\u221e',
  minus: '\u2212', frac12: '\u00bd', frac14: '\u00bc', frac34: '\u00be', check: '\u2713',
};

/** An entity's text (`amp`, `#38`, `#x26`), or null when it is not one this knows. */
function decodeEntity(name) {
  if (name[0] === '#') {
    const code = name[1] === 'x' || name[1] === 'X' ? parseInt(name.slice(2), 16) : parseInt(name.slice(1), 10);
    if (!(code > 0) || code > 0x10ffff || (code >= 0xd800 && code <= 0xdfff)) return '\uFFFD';
    return String.fromCodePoint(code);
  }
  return Object.hasOwn(NAMED_ENTITIES, name) ? NAMED_ENTITIES[name] : null;
}

/** A link destination or title with its backslash escapes and entities resolved. */
function unescapeText(s) {
  return s.replace(ESCAPE_OR_ENTITY, (m, punct, entity) => punct ?? decodeEntity(entity) ?? m);
}

/**
 * The href to set for a link target, or null when it is not an http:, https: or mailto: URL.
 * It is checked as a browser reads it: leading and trailing controls and spaces dropped, tabs and
 * newlines inside removed; the returned string is the one checked.
 * @param {string} raw
 */
function safeHref(raw) {
  const url = raw.replace(/^[\0-\x20]+|[\0-\x20]+$/g, '').replace(/[\t\n\r]/g, '');
  if (/[\0-\x1f\x7f]/.test(url)) return null;
  const m = /^([A-Za-z][A-Za-z0-9+.-]*):/.exec(url);
  if (!m || !SAFE_SCHEMES.has(m[1].toLowerCase())) return null;
  if (m[1].toLowerCase() === 'mailto') return url.length > 7 ? url : null;
  return /^https?:\/\/[^/?#\s]/i.test(url) ? url : null;
}

/** A bare http(s) URL at `i`, without the trailing punctuation around it, or null. */
function bareUrl(src, i) {
  BARE_URL.lastIndex = i;
  const m = BARE_URL.exec(src);
  if (!m) return null;
  let url = m[0];
  for (;;) {
    const last = url[url.length - 1];
    if ('?!.,:;*_~\'"'.includes(last)) {
      url = url.slice(0, -1);
    } else if (last === ')' && count(url, ')') > count(url, '(')) {
      url = url.slice(0, -1);
    } else {
      break;
    }
  }
  if (!/^https?:\/\/[^/?#.]/i.test(url)) return null;
  return safeHref(url) ? url : null;
}

function count(s, ch) {
  let n = 0;
  for (let k = s.indexOf(ch); k >= 0; k = s.indexOf(ch, k + 1)) n++;
  return n;
}

/** Whether a bare URL may start after this character (GitHub's rule, plus quotes and brackets). */
function urlMayFollow(c) {
  return c === undefined || SPACE.test(c) || '*_~(["\'<>'.includes(c);
}

/** `(dest "title")` after a link's `]`: its destination, title and end, or null. */
function linkTail(src, p) {
  if (src[p] !== '(') return null;
  const n = src.length;
  let j = p + 1;
  const skip = () => {
    while (j < n && (src[j] === ' ' || src[j] === '\t' || src[j] === '\n')) j++;
  };
  skip();
  let dest;
  if (src[j] === '<') {
    let e = j + 1;
    while (e < n && src[e] !== '>' && src[e] !== '<' && src[e] !== '\n') e += src[e] === '\\' ? 2 : 1;
    if (src[e] !== '>') return null;
    dest = src.slice(j + 1, e);
    j = e + 1;
  } else {
    const start = j;
    let depth = 0;
    while (j < n) {
      const c = src[j];
      if (c === '\\' && j + 1 < n && ASCII_PUNCT.test(src[j + 1])) {
        j += 2;
        continue;
      }
      if (c === '(') {
        if (++depth > 32) return null;
      } else if (c === ')') {
        if (depth === 0) break;
        depth--;
      } else if (c <= ' ' || c === '\x7f') {
        break;
      }
      j++;
    }
    if (depth !== 0) return null;
    dest = src.slice(start, j);
  }
  const gap = j;
  skip();
  let title = null;
  if (j > gap && (src[j] === '"' || src[j] === "'" || src[j] === '(')) {
    const close = src[j] === '(' ? ')' : src[j];
    let e = j + 1;
    while (e < n && src[e] !== close) e += src[e] === '\\' ? 2 : 1;
    if (e >= n) return null;
    title = unescapeText(src.slice(j + 1, e));
    j = e + 1;
    skip();
  }
  if (src[j] !== ')') return null;
  return { dest: unescapeText(dest), title, end: j + 1 };
}

/**
 * @typedef {object} Piece
 * @property {'root'|'text'|'delim'|'code'|'br'|'auto'|'link'|'em'|'strong'|'del'} t
 * @property {Piece|null} prev
 * @property {Piece|null} next
 * @property {string} [s]  text, code
 * @property {string} [ch]  delim: its character
 * @property {number} [n]  delim: characters left
 * @property {number} [orig]  delim: characters at first
 * @property {boolean} [open]  delim: may open
 * @property {boolean} [close]  delim: may close
 * @property {Piece|null} [dprev]  delim: the one before in the delimiter list
 * @property {Piece|null} [dnext]  delim: the one after in the delimiter list
 * @property {string} [href]  auto, link
 * @property {string|null} [title]  link
 * @property {Piece|null} [first]  link, em, strong, del: the pieces inside
 * @property {number} [depth]  link, em, strong, del: how deep they nest
 */

/** Render inline markdown into `parent`. */
function inline(src, parent, doc) {
  /** @type {Piece} */
  const head = { t: 'root', prev: null, next: null };
  const st = { tail: head, lastDelim: /** @type {Piece|null} */ (null) };
  /** @type {{node: Piece, bang: Piece|null, bottom: Piece|null, active: boolean}[]} */
  const brackets = [];
  const noCloser = new Set(); // code span lengths with no closing run further on
  const push = (/** @type {Piece} */ piece) => {
    piece.prev = st.tail;
    piece.next = null;
    st.tail.next = piece;
    st.tail = piece;
    return piece;
  };
  let buf = '';
  const flush = () => {
    if (buf) push({ t: 'text', s: buf, prev: null, next: null });
    buf = '';
  };
  const lineBreak = () => {
    buf = buf.replace(/[ \t]+$/, '');
    flush();
    push({ t: 'br', prev: null, next: null });
  };

  const n = src.length;
  let i = 0;
  while (i < n) {
    SPECIAL.lastIndex = i;
    const m = SPECIAL.exec(src);
    if (!m) {
      buf += src.slice(i);
      break;
    }
    if (m.index > i) buf += src.slice(i, m.index);
    i = m.index;
    const c = src[i];

    if (c === '\n' || (c === '\\' && src[i + 1] === '\n')) {
      lineBreak();
      i += c === '\n' ? 1 : 2;
      while (src[i] === ' ' || src[i] === '\t') i++;
    } else if (c === '\\') {
      const next = src[i + 1];
      if (next !== undefined && ASCII_PUNCT.test(next)) {
        buf += next;
        i += 2;
      } else {
        buf += '\\';
        i++;
      }
    } else if (c === '`') {
      let e = i;
      while (src[e] === '`') e++;
      const len = e - i;
      const span = noCloser.has(len) ? null : codeSpan(src, e, len);
      if (span) {
        flush();
        push({ t: 'code', s: span.text, prev: null, next: null });
        i = span.end;
      } else {
        noCloser.add(len);
        buf += src.slice(i, e);
        i = e;
      }
    } else if (c === '*' || c === '_' || c === '~') {
      let e = i;
      while (src[e] === c) e++;
      const len = e - i;
      const before = i > 0 ? src[i - 1] : '\n';
      const after = e < n ? src[e] : '\n';
      const bSpace = SPACE.test(before);
      const aSpace = SPACE.test(after);
      const bPunct = PUNCT.test(before);
      const aPunct = PUNCT.test(after);
      const left = !aSpace && (!aPunct || bSpace || bPunct);
      const right = !bSpace && (!bPunct || aSpace || aPunct);
      let open = left;
      let close = right;
      if (c === '_') {
        open = left && (!right || bPunct);
        close = right && (!left || aPunct);
      }
      // A single ~ is "about" ($~2/h), not strikethrough.
      if ((c === '~' && len !== 2) || (!open && !close)) {
        buf += src.slice(i, e);
      } else {
        flush();
        const d = push({ t: 'delim', ch: c, n: len, orig: len, open, close, dprev: st.lastDelim, dnext: null, prev: null, next: null });
        if (st.lastDelim) st.lastDelim.dnext = d;
        st.lastDelim = d;
      }
      i = e;
    } else if (c === '[' || (c === '!' && src[i + 1] === '[')) {
      flush();
      const bang = c === '!' ? push({ t: 'text', s: '!', prev: null, next: null }) : null;
      const node = push({ t: 'text', s: '[', prev: null, next: null });
      brackets.push({ node, bang, bottom: st.lastDelim, active: true });
      i += c === '!' ? 2 : 1;
    } else if (c === ']') {
      const op = brackets.pop();
      const tail = op && op.active ? linkTail(src, i + 1) : null;
      const href = tail ? safeHref(tail.dest) : null;
      let linked = false;
      if (op && tail && href) {
        flush();
        processEmphasis(st, op.bottom);
        let depth = 0;
        for (let x = op.node.next; x; x = x.next) depth = Math.max(depth, x.depth ?? 0);
        if (depth < MAX_INLINE_DEPTH) {
          const first = op.node.next;
          if (first) first.prev = null;
          const before = /** @type {Piece} */ ((op.bang ?? op.node).prev);
          /** @type {Piece} */
          const link = { t: 'link', href, title: tail.title, first, depth: depth + 1, prev: before, next: null };
          before.next = link;
          st.tail = link;
          // No links inside links: the brackets before this one are text now.
          for (const b of brackets) b.active = false;
          i = tail.end;
          linked = true;
        }
      }
      if (!linked) {
        buf += ']';
        i++;
      }
    } else if (c === '<') {
      ANGLE_LINK.lastIndex = i;
      ANGLE_EMAIL.lastIndex = i;
      const a = ANGLE_LINK.exec(src);
      const href = a ? safeHref(a[1]) : null;
      const mail = a ? null : ANGLE_EMAIL.exec(src);
      if (href) {
        flush();
        push({ t: 'auto', href, s: a[1], prev: null, next: null });
        i += a[0].length;
      } else if (mail) {
        flush();
        push({ t: 'auto', href: `mailto:${mail[1]}`, s: mail[1], prev: null, next: null });
        i += mail[0].length;
      } else {
        buf += '<';
        i++;
      }
    } else if (c === '&') {
      ENTITY.lastIndex = i;
      const e = ENTITY.exec(src);
      const text = e ? decodeEntity(e[1]) : null;
      if (e && text !== null) {
        buf += text;
        i += e[0].length;
      } else {
        buf += '&';
        i++;
      }
    } else if ((c === 'h' || c === 'H') && urlMayFollow(src[i - 1])) {
      const url = bareUrl(src, i);
      if (url) {
        flush();
        push({ t: 'auto', href: url, s: url, prev: null, next: null });
        i += url.length;
      } else {
        buf += c;
        i++;
      }
    } else {
      buf += c;
      i++;
    }
  }
  flush();
  processEmphasis(st, null);
  emit(head.next, parent, doc, false);
}

/** The code span whose content starts at `from` and closes with a run of exactly `len` backticks. */
function codeSpan(src, from, len) {
  let j = from;
  for (;;) {
    const k = src.indexOf('`', j);
    if (k < 0) return null;
    let e = k;
    while (src[e] === '`') e++;
    if (e - k === len) {
      let text = src.slice(from, k).replace(/\n/g, ' ');
      if (text.length > 2 && text[0] === ' ' && text[text.length - 1] === ' ' && text.trim() !== '') {
        text = text.slice(1, -1);
      }
      return { text, end: e };
    }
    j = e;
  }
}

function unlinkPiece(st, x) {
  /** @type {Piece} */ (x.prev).next = x.next;
  if (x.next) x.next.prev = x.prev;
  else st.tail = x.prev;
}

function unlinkDelim(st, d) {
  if (d.dprev) d.dprev.dnext = d.dnext;
  if (d.dnext) d.dnext.dprev = d.dprev;
  if (st.lastDelim === d) st.lastDelim = d.dprev;
}

/** Match the delimiter runs above `bottom` into emphasis (CommonMark's "process emphasis"). */
function processEmphasis(st, bottom) {
  let closer = st.lastDelim;
  if (!closer || closer === bottom) return;
  while (closer.dprev && closer.dprev !== bottom) closer = closer.dprev;
  /** @type {Map<string, Piece|null>} */
  const floors = new Map();
  while (closer) {
    if (!closer.close) {
      closer = closer.dnext;
      continue;
    }
    const key = `${closer.ch}${closer.open ? 1 : 0}${closer.orig % 3}`;
    const floor = floors.has(key) ? floors.get(key) : bottom;
    let opener = closer.dprev;
    let found = null;
    while (opener && opener !== bottom && opener !== floor) {
      if (opener.ch === closer.ch && opener.open) {
        const odd =
          (opener.close || closer.open) &&
          (opener.orig + closer.orig) % 3 === 0 &&
          !(opener.orig % 3 === 0 && closer.orig % 3 === 0);
        if (!odd) {
          found = opener;
          break;
        }
      }
      opener = opener.dprev;
    }
    if (!found) {
      floors.set(key, closer.dprev);
      const next = closer.dnext;
      if (!closer.open) unlinkDelim(st, closer);
      closer = next;
      continue;
    }
    let depth = 0;
    for (let x = found.next; x && x !== closer; x = x.next) depth = Math.max(depth, x.depth ?? 0);
    if (depth >= MAX_INLINE_DEPTH) break; // the rest stays literal
    const use = closer.ch === '~' ? 2 : found.n >= 2 && closer.n >= 2 ? 2 : 1;
    found.n -= use;
    closer.n -= use;
    found.dnext = closer; // the runs in between are literal text now
    closer.dprev = found;
    /** @type {Piece} */
    const wrap = {
      t: closer.ch === '~' ? 'del' : use === 2 ? 'strong' : 'em',
      first: null,
      depth: depth + 1,
      prev: found,
      next: closer,
    };
    if (found.next !== closer) {
      wrap.first = found.next;
      /** @type {Piece} */ (wrap.first).prev = null;
      /** @type {Piece} */ (closer.prev).next = null;
    }
    found.next = wrap;
    closer.prev = wrap;
    if (found.n === 0) {
      unlinkPiece(st, found);
      unlinkDelim(st, found);
    }
    if (closer.n === 0) {
      const next = closer.dnext;
      unlinkPiece(st, closer);
      unlinkDelim(st, closer);
      closer = next;
    }
  }
  // Whatever did not match is literal text.
  if (bottom) bottom.dnext = null;
  st.lastDelim = bottom;
}

/** Create the DOM nodes of a list of pieces; a bare URL inside a link is text. */
function emit(first, parent, doc, inLink) {
  let text = '';
  const flushText = () => {
    if (text) parent.appendChild(doc.createTextNode(text));
    text = '';
  };
  for (let x = first; x; x = x.next) {
    switch (x.t) {
      case 'text':
        text += x.s;
        break;
      case 'delim':
        text += x.ch.repeat(x.n);
        break;
      case 'br':
        flushText();
        parent.appendChild(doc.createElement('br'));
        break;
      case 'code': {
        flushText();
        const code = doc.createElement('code');
        code.appendChild(doc.createTextNode(x.s));
        parent.appendChild(code);
        break;
      }
      case 'auto':
        if (inLink) {
          text += x.s;
        } else {
          flushText();
          const a = anchor(doc, x.href, null);
          a.appendChild(doc.createTextNode(x.s));
          parent.appendChild(a);
        }
        break;
      case 'link': {
        flushText();
        const a = anchor(doc, x.href, x.title);
        if (x.first) emit(x.first, a, doc, true);
        else a.appendChild(doc.createTextNode(x.href));
        parent.appendChild(a);
        break;
      }
      default: {
        flushText();
        const el = doc.createElement(x.t);
        emit(x.first, el, doc, inLink);
        parent.appendChild(el);
      }
    }
  }
  flushText();
}

function anchor(doc, href, title) {
  const a = doc.createElement('a');
  a.setAttribute('href', href);
  a.setAttribute('target', '_blank');
  a.setAttribute('rel', 'noopener noreferrer');
  if (title) a.setAttribute('title', title);
  return a;
}
