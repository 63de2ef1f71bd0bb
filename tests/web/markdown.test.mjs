// web/markdown.js without a browser: every feature, the ways model text could inject markup or
// script, every prefix of a streamed answer, and a timing sanity check. The document is a small
// fake that has only what the renderer may use (createElement, createTextNode,
// createDocumentFragment, appendChild, setAttribute, className) and refuses innerHTML.
//
//   node --test tests/web/markdown.test.mjs

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { renderMarkdown } from '../../web/markdown.js';

// ---- a fake document --------------------------------------------------------------------------

/** Elements the renderer may create, and the attributes it may set. */
const TAGS = new Set([
  'p', 'br', 'h1', 'h2', 'h3', 'h4', 'h5', 'h6', 'em', 'strong', 'del', 'code', 'pre', 'ul', 'ol', 'li',
  'table', 'thead', 'tbody', 'tr', 'th', 'td', 'blockquote', 'hr', 'a',
]);
const ATTRS = new Set(['href', 'target', 'rel', 'title', 'start', 'class']);

class FakeNode {
  constructor(doc) {
    this.ownerDocument = doc;
    /** @type {FakeNode[]} */
    this.childNodes = [];
    /** @type {FakeNode|null} */
    this.parentNode = null;
  }

  appendChild(child) {
    if (!(child instanceof FakeNode)) throw new TypeError('appendChild: not a node');
    if (child.ownerDocument !== this.ownerDocument) throw new Error('appendChild: node of another document');
    if (child instanceof FakeFragment) {
      for (const c of child.childNodes.splice(0)) {
        c.parentNode = this;
        this.childNodes.push(c);
      }
      return child;
    }
    if (child.parentNode) child.parentNode.childNodes.splice(child.parentNode.childNodes.indexOf(child), 1);
    child.parentNode = this;
    this.childNodes.push(child);
    return child;
  }

  get textContent() {
    return this.childNodes.map((c) => c.textContent).join('');
  }

  get innerHTML() {
    return this.childNodes.map(serialize).join('');
  }

  set innerHTML(_) {
    throw new Error('innerHTML must not be used');
  }

  insertAdjacentHTML() {
    throw new Error('insertAdjacentHTML must not be used');
  }
}

class FakeText extends FakeNode {
  constructor(doc, data) {
    super(doc);
    this.data = data;
  }

  get textContent() {
    return this.data;
  }

  appendChild() {
    throw new Error('a text node has no children');
  }
}

class FakeElement extends FakeNode {
  constructor(doc, tag) {
    super(doc);
    this.tagName = tag.toUpperCase();
    this.localName = tag;
    /** @type {Map<string, string>} */
    this.attributes = new Map();
  }

  setAttribute(name, value) {
    const n = String(name).toLowerCase();
    this.ownerDocument.attrNames.add(n);
    this.attributes.set(n, String(value));
  }

  getAttribute(name) {
    return this.attributes.get(String(name).toLowerCase()) ?? null;
  }

  get className() {
    return this.attributes.get('class') ?? '';
  }

  set className(value) {
    this.setAttribute('class', value);
  }

  set outerHTML(_) {
    throw new Error('outerHTML must not be used');
  }
}

class FakeFragment extends FakeNode {}

class FakeDocument {
  constructor() {
    /** Every tag created and attribute set, to check against the allowed ones. */
    this.tags = new Set();
    this.attrNames = new Set();
  }

  createElement(tag) {
    const t = String(tag).toLowerCase();
    this.tags.add(t);
    return new FakeElement(this, t);
  }

  createTextNode(data) {
    return new FakeText(this, String(data));
  }

  createDocumentFragment() {
    return new FakeFragment(this);
  }
}

function escapeText(s) {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

/** HTML of a node, as a browser would serialize it (void elements without an end tag). */
function serialize(node) {
  if (node instanceof FakeText) return escapeText(node.data);
  if (node instanceof FakeElement) {
    const attrs = [...node.attributes].map(([k, v]) => ` ${k}="${escapeText(v).replace(/"/g, '&quot;')}"`).join('');
    if (node.localName === 'br' || node.localName === 'hr') return `<${node.localName}${attrs}>`;
    return `<${node.localName}${attrs}>${node.childNodes.map(serialize).join('')}</${node.localName}>`;
  }
  return node.childNodes.map(serialize).join('');
}

/** Every element under a node, depth first. */
function* elements(node) {
  for (const c of node.childNodes) {
    if (c instanceof FakeElement) {
      yield c;
      yield* elements(c);
    }
  }
}

/**
 * Render with a fresh fake document and check what any output must be: a fragment, only allowed
 * tags and attributes, no plain-text fallback (which would mean the renderer failed inside), and
 * every link's href an http(s) or mailto URL with target and rel set.
 */
function render(text) {
  const doc = new FakeDocument();
  const frag = renderMarkdown(text, doc);
  assert.ok(frag instanceof FakeFragment, 'returns a DocumentFragment');
  for (const t of doc.tags) assert.ok(TAGS.has(t), `created <${t}>`);
  for (const a of doc.attrNames) assert.ok(ATTRS.has(a), `set attribute ${a}`);
  for (const el of elements(frag)) {
    if (el.className.includes('md-raw')) assert.fail(`fell back to plain text for ${describe(text)}`);
    if (el.localName === 'a') {
      assert.match(el.getAttribute('href'), /^(https?:\/\/[^/?#\s]|mailto:.)/i);
      assert.equal(el.getAttribute('target'), '_blank');
      assert.equal(el.getAttribute('rel'), 'noopener noreferrer');
    }
    if (el.attributes.has('class')) assert.match(el.className, /^(language-[\w+#.-]+|align-(left|center|right))$/);
  }
  return frag;
}

function describe(value) {
  try {
    return JSON.stringify(String(value)).slice(0, 200);
  } catch {
    return typeof value;
  }
}

const html = (text) => render(text).innerHTML;
const A = (href) => `<a href="${href}" target="_blank" rel="noopener noreferrer">`;

// ---- blocks -----------------------------------------------------------------------------------

test('paragraphs and line breaks', () => {
  assert.equal(html('one\ntwo\n\nthree'), '<p>one<br>two</p><p>three</p>');
  assert.equal(html('  indented  \n\n\n\nafter blank lines  '), '<p>indented</p><p>after blank lines</p>');
  assert.equal(html('hard\\\nbreak'), '<p>hard<br>break</p>');
  assert.equal(html('crlf\r\nline\rend'), '<p>crlf<br>line<br>end</p>');
  assert.equal(html(''), '');
  assert.equal(html('\n \n\t\n'), '');
});

test('headings', () => {
  assert.equal(html('# One\n## Two ##\n### Three *em*\n#### Four'), '<h1>One</h1><h2>Two</h2><h3>Three <em>em</em></h3><h4>Four</h4>');
  assert.equal(html('##### Five\n###### Six'), '<h5>Five</h5><h6>Six</h6>');
  assert.equal(html('#hashtag and ####### seven'), '<p>#hashtag and ####### seven</p>');
  assert.equal(html('text\n## Heading\nmore'), '<p>text</p><h2>Heading</h2><p>more</p>');
  assert.equal(html('#'), '<h1></h1>');
});

test('emphasis and strong', () => {
  assert.equal(html('*a* _b_ **c** __d__'), '<p><em>a</em> <em>b</em> <strong>c</strong> <strong>d</strong></p>');
  assert.equal(html('***both***'), '<p><em><strong>both</strong></em></p>');
  assert.equal(html('**bold *and em* inside**'), '<p><strong>bold <em>and em</em> inside</strong></p>');
  assert.equal(html('gpu_price_per_hour and 2 * 3 * 4'), '<p>gpu_price_per_hour and 2 * 3 * 4</p>');
  assert.equal(html('in**word**bold'), '<p>in<strong>word</strong>bold</p>');
  assert.equal(html('~~old~~ now ~$2/h, ~3x'), '<p><del>old</del> now ~$2/h, ~3x</p>');
  assert.equal(html('\\*not em\\*'), '<p>*not em*</p>');
  assert.equal(html('**unclosed'), '<p>**unclosed</p>');
  assert.equal(html('*unclosed em'), '<p>*unclosed em</p>');
  assert.equal(html('__a**'), '<p>__a**</p>');
});

test('inline code', () => {
  assert.equal(html('run `nvidia-smi <x>` now'), '<p>run <code>nvidia-smi &lt;x&gt;</code> now</p>');
  assert.equal(html('`` a ` b ``'), '<p><code>a ` b</code></p>');
  assert.equal(html('`**not bold** [no](https://x.io)`'), '<p><code>**not bold** [no](https://x.io)</code></p>');
  assert.equal(html('`unclosed code'), '<p>`unclosed code</p>');
  assert.equal(html('`&amp;`'), '<p><code>&amp;amp;</code></p>');
});

test('fenced code blocks', () => {
  assert.equal(
    html('```python\nprint("<b>")\n  indented\n```\nafter'),
    '<pre><code class="language-python">print("&lt;b&gt;")\n  indented</code></pre><p>after</p>',
  );
  assert.equal(html('```\nplain\n```'), '<pre><code>plain</code></pre>');
  assert.equal(html('~~~sh\necho ```\n~~~'), '<pre><code class="language-sh">echo ```</code></pre>');
  assert.equal(html('````md\n```\ninner\n```\n````'), '<pre><code class="language-md">```\ninner\n```</code></pre>');
  assert.equal(html('text\n```js\nx\n```'), '<p>text</p><pre><code class="language-js">x</code></pre>');
  // The class is only the language's word characters.
  assert.equal(html('```js" onload="alert(1) extra\nx\n```'), '<pre><code class="language-js">x</code></pre>');
  assert.equal(html('```<script>\nx\n```'), '<pre><code class="language-script">x</code></pre>');
  // Still streaming: no closing fence yet.
  assert.equal(html('```bash\nnvidia-smi\n\n# more'), '<pre><code class="language-bash">nvidia-smi\n\n# more</code></pre>');
  assert.equal(html('```'), '<pre><code></code></pre>');
  assert.equal(html('```python'), '<pre><code class="language-python"></code></pre>');
});

test('unordered and ordered lists', () => {
  assert.equal(html('- a\n- b\n* c\n+ d'), '<ul><li>a</li><li>b</li><li>c</li><li>d</li></ul>');
  assert.equal(html('1. one\n2. two\n3) three'), '<ol><li>one</li><li>two</li><li>three</li></ol>');
  assert.equal(html('4. four\n5. five'), '<ol start="4"><li>four</li><li>five</li></ol>');
  assert.equal(html('Options:\n- cheap\n- fast\n\nAfter.'), '<p>Options:</p><ul><li>cheap</li><li>fast</li></ul><p>After.</p>');
  assert.equal(html('- **H100**: $2.10/h\n- *A100*'), '<ul><li><strong>H100</strong>: $2.10/h</li><li><em>A100</em></li></ul>');
  assert.equal(html('- wrapped\n  continued\nlazy'), '<ul><li>wrapped<br>continued<br>lazy</li></ul>');
  assert.equal(html('- a\n1. b'), '<ul><li>a</li></ul><ol><li>b</li></ol>');
  assert.equal(html('- '), '<ul><li></li></ul>');
  assert.equal(html('1.5x faster, -1 and +2'), '<p>1.5x faster, -1 and +2</p>');
});

test('nested lists by indentation', () => {
  const two = '<ul><li>a<ul><li>b<ul><li>c</li></ul></li></ul></li><li>d</li></ul>';
  assert.equal(html('- a\n  - b\n    - c\n- d'), two);
  assert.equal(html('- a\n    - b\n        - c\n- d'), two);
  assert.equal(html('- a\n\t- b\n\t\t- c\n- d'), two);
  assert.equal(
    html('1. Pick a GPU\n   - H100\n   - A100\n2. Compare\n  1. price\n  2. uptime\n3. Rent'),
    '<ol><li>Pick a GPU<ul><li>H100</li><li>A100</li></ul></li><li>Compare<ol><li>price</li><li>uptime</li></ol></li><li>Rent</li></ol>',
  );
  assert.equal(html('- a\n  - b\n  - c\n- d\n  1. e'), '<ul><li>a<ul><li>b</li><li>c</li></ul></li><li>d<ol><li>e</li></ol></li></ul>');
});

test('loose lists and blocks inside items', () => {
  assert.equal(html('- a\n\n- b'), '<ul><li><p>a</p></li><li><p>b</p></li></ul>');
  assert.equal(html('1. **Title**\n\n   Details.\n2. Next'), '<ol><li><p><strong>Title</strong></p><p>Details.</p></li><li><p>Next</p></li></ol>');
  assert.equal(
    html('1. Install:\n   ```sh\n   pip install x\n\n   x --help\n   ```\n2. Run'),
    '<ol><li>Install:<pre><code class="language-sh">pip install x\n\nx --help</code></pre></li><li>Run</li></ol>',
  );
  assert.equal(html('- quote:\n  > said'), '<ul><li>quote:<blockquote><p>said</p></blockquote></li></ul>');
  assert.equal(html('- a\n\n---'), '<ul><li>a</li></ul><hr>');
  assert.equal(html('- a\n# Head'), '<ul><li>a</li></ul><h1>Head</h1>');
});

test('tables with alignment', () => {
  assert.equal(
    html('| GPU | $/h | Region |\n|:---|:---:|---:|\n| **H100** | 2.10 | `us-east` |\n| A100 | 1.20 | eu |'),
    '<table><thead><tr><th class="align-left">GPU</th><th class="align-center">$/h</th><th class="align-right">Region</th></tr></thead>' +
      '<tbody><tr><td class="align-left"><strong>H100</strong></td><td class="align-center">2.10</td><td class="align-right"><code>us-east</code></td></tr>' +
      '<tr><td class="align-left">A100</td><td class="align-center">1.20</td><td class="align-right">eu</td></tr></tbody></table>',
  );
  // No outer pipes, an escaped pipe, missing cells padded, extra cells dropped.
  assert.equal(
    html('a | b\n--- | ---\nx \\| y | z | extra\nonly'),
    '<table><thead><tr><th>a</th><th>b</th></tr></thead><tbody><tr><td>x | y</td><td>z</td></tr></tbody></table><p>only</p>',
  );
  assert.equal(html('Prices:\n| a |\n|---|\n| 1 |'), '<p>Prices:</p><table><thead><tr><th>a</th></tr></thead><tbody><tr><td>1</td></tr></tbody></table>');
  assert.equal(html('| a | b |\n|---|---|\n\nafter'), '<table><thead><tr><th>a</th><th>b</th></tr></thead></table><p>after</p>');
  assert.equal(html('not | a table\n---'), '<p>not | a table</p><hr>');
  assert.equal(html('| a |\n|---|\n- x | y'), '<table><thead><tr><th>a</th></tr></thead></table><ul><li>x | y</li></ul>');
});

test('tables while streaming', () => {
  const head = '| GPU | Price |\n';
  assert.equal(html(head), '<p>| GPU | Price |</p>');
  assert.equal(html(`${head}|`), '<p>| GPU | Price |<br>|</p>');
  assert.match(html(`${head}|-`), /^<table><thead><tr><th>GPU<\/th><th>Price<\/th><\/tr><\/thead><\/table>$/);
  assert.match(html(`${head}|---|:`), /^<table>/);
  assert.equal(
    html(`${head}|---|---:|\n| H100 | 2.`),
    '<table><thead><tr><th>GPU</th><th class="align-right">Price</th></tr></thead><tbody><tr><td>H100</td><td class="align-right">2.</td></tr></tbody></table>',
  );
  assert.equal(
    html(`${head}|---|---|\n| H10`),
    '<table><thead><tr><th>GPU</th><th>Price</th></tr></thead><tbody><tr><td>H10</td><td></td></tr></tbody></table>',
  );
});

test('blockquotes and rules', () => {
  assert.equal(html('> quoted **text**\n> more\nlazy'), '<blockquote><p>quoted <strong>text</strong><br>more<br>lazy</p></blockquote>');
  assert.equal(html('> a\n>\n> > nested\n\nout'), '<blockquote><p>a</p><blockquote><p>nested</p></blockquote></blockquote><p>out</p>');
  assert.equal(html('> - item\n> - item2'), '<blockquote><ul><li>item</li><li>item2</li></ul></blockquote>');
  assert.equal(html('---\n***\n___\n- - -\n * * *'), '<hr><hr><hr><hr><hr>');
  assert.equal(html('text\n---\nmore'), '<p>text</p><hr><p>more</p>');
  assert.equal(html('--'), '<p>--</p>');
});

// ---- links ------------------------------------------------------------------------------------

test('links', () => {
  assert.equal(html('[Vast.ai](https://vast.ai)'), `<p>${A('https://vast.ai')}Vast.ai</a></p>`);
  assert.equal(
    html('[docs](https://x.io/a_(b) "The title")'),
    '<p><a href="https://x.io/a_(b)" target="_blank" rel="noopener noreferrer" title="The title">docs</a></p>',
  );
  assert.equal(html('[**bold** `code`](http://x.io)'), `<p>${A('http://x.io')}<strong>bold</strong> <code>code</code></a></p>`);
  assert.equal(html('[mail](mailto:ops@example.com)'), `<p>${A('mailto:ops@example.com')}mail</a></p>`);
  assert.equal(html('[x](<https://x.io/a b>)'), `<p>${A('https://x.io/a b')}x</a></p>`);
  assert.equal(html('[](https://x.io)'), `<p>${A('https://x.io')}https://x.io</a></p>`);
  assert.equal(html('![chart](https://x.io/c.png)'), `<p>${A('https://x.io/c.png')}chart</a></p>`);
  // A URL as the text is not a link inside the link.
  assert.equal(html('[https://vast.ai](https://vast.ai)'), `<p>${A('https://vast.ai')}https://vast.ai</a></p>`);
  // No link in a link: the inner one wins, the outer brackets stay text.
  assert.equal(html('[a [b](https://b.io) c](https://a.io)'), `<p>[a ${A('https://b.io')}b</a> c](${A('https://a.io')}https://a.io</a>)</p>`);
  assert.equal(html('[not a link] (https://x.io)'), `<p>[not a link] (${A('https://x.io')}https://x.io</a>)</p>`);
  // Relative and protocol-relative targets are not links.
  assert.equal(html('[a](/admin) [b](//evil.example) [c](#top) [d](x.io)'), '<p>[a](/admin) [b](//evil.example) [c](#top) [d](x.io)</p>');
});

test('bare and angle-bracket URLs', () => {
  assert.equal(html('See https://vast.ai/pricing.'), `<p>See ${A('https://vast.ai/pricing')}https://vast.ai/pricing</a>.</p>`);
  assert.equal(html('(https://x.io/a?b=1&c=2), ok'), `<p>(${A('https://x.io/a?b=1&amp;c=2')}https://x.io/a?b=1&amp;c=2</a>), ok</p>`);
  assert.equal(html('**https://x.io**'), `<p><strong>${A('https://x.io')}https://x.io</a></strong></p>`);
  assert.equal(html('HTTP://X.IO/A_B_C'), `<p>${A('HTTP://X.IO/A_B_C')}HTTP://X.IO/A_B_C</a></p>`);
  assert.equal(html('<https://x.io> <ops@example.com>'), `<p>${A('https://x.io')}https://x.io</a> ${A('mailto:ops@example.com')}ops@example.com</a></p>`);
  assert.equal(html('xhttps://x.io https:// http://'), '<p>xhttps://x.io https:// http://</p>');
  assert.equal(html('`https://x.io`'), '<p><code>https://x.io</code></p>');
});

// ---- what must never become markup ------------------------------------------------------------

test('raw HTML is text', () => {
  const cases = [
    '<script>alert(1)</script>',
    '<img src=x onerror=alert(1)>',
    '<a href="javascript:alert(1)">x</a>',
    '<iframe srcdoc="<script>alert(1)</script>"></iframe>',
    '<style>body{display:none}</style>',
    '<svg onload=alert(1)>',
    '<div style="position:fixed" onmouseover="alert(1)">hover</div>',
    '<!-- comment --><![CDATA[x]]>',
  ];
  for (const c of cases) {
    const frag = render(c);
    assert.equal(frag.textContent, c, c);
    assert.deepEqual([...elements(frag)].map((e) => e.localName), ['p'], c);
  }
  const frag = render('# <script>alert(1)</script>\n- <img onerror=x>\n\n| <b>x</b> |\n|---|\n| <i>y</i> |\n\n> <u>z</u>');
  assert.deepEqual(
    [...new Set([...elements(frag)].map((e) => e.localName))].sort(),
    ['blockquote', 'h1', 'li', 'p', 'table', 'tbody', 'td', 'th', 'thead', 'tr', 'ul'],
  );
  assert.match(frag.textContent, /<script>alert\(1\)<\/script><img onerror=x><b>x<\/b><i>y<\/i><u>z<\/u>/);
});

test('HTML entities are decoded into text, never into markup', () => {
  const frag = render('&lt;script&gt;alert(1)&lt;/script&gt; &amp;lt;b&amp;gt; &#60;img onerror=x&#62; &#x3C;i&#x3e; &copy; &bogus; &#0;');
  assert.equal(frag.textContent, '<script>alert(1)</script> &lt;b&gt; <img onerror=x> <i> \u00a9 &bogus; \uFFFD');
  assert.deepEqual([...elements(frag)].map((e) => e.localName), ['p']);
  assert.equal(html('AT&T, R&D, a && b'), '<p>AT&amp;T, R&amp;D, a &amp;&amp; b</p>');
});

test('only http, https and mailto links: every other scheme is text', () => {
  const targets = [
    'javascript:alert(1)',
    'JaVaScRiPt:alert(1)',
    'JAVASCRIPT:alert(1)',
    'javascript:alert(document.cookie)//https://x.io',
    '<javascript:alert(1)>',
    '< javascript:alert(1)>',
    '<java\tscript:alert(1)>',
    '<java\nscript:alert(1)>',
    '<\x01javascript:alert(1)>',
    'javascript\\:alert(1)',
    '&#106;avascript:alert(1)',
    '&#x6A;avascript:alert(1)',
    'javascript&#58;alert(1)',
    'javascript&#x3a;alert(1)',
    'javascript&colon;alert(1)',
    'java&Tab;script:alert(1)',
    '\\javascript:alert(1)',
    'vbscript:msgbox(1)',
    'VBScript:msgbox(1)',
    'data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==',
    'DATA:text/html,<script>alert(1)</script>',
    'file:///etc/passwd',
    'blob:https://x.io/1',
    'ftp://x.io',
    'https:alert(1)',
    'mailto:',
    '\u00a0javascript:alert(1)',
    'ja\u200bvascript:alert(1)',
    'ｊａｖａｓｃｒｉｐｔ:alert(1)',
  ];
  for (const t of targets) {
    for (const md of [`[click](${t})`, `[click](${t} "title")`, `![img](${t})`]) {
      const frag = render(md);
      assert.deepEqual([...elements(frag)].filter((e) => e.localName === 'a'), [], md);
    }
  }
  for (const md of ['<javascript:alert(1)>', '<JAVASCRIPT:alert(1)>', '<vbscript:x>', '<data:text/html,x>', 'javascript:alert(1)', ' data:text/html,x']) {
    const frag = render(md);
    assert.deepEqual([...elements(frag)].map((e) => e.localName), ['p'], md);
    assert.equal(frag.textContent, md.trim(), md);
  }
  // The link's source shows as text: the reader sees what was written.
  assert.equal(render('[click](javascript:alert(1))').textContent, '[click](javascript:alert(1))');
});

test('allowed links keep their target as written, without hidden characters', () => {
  assert.equal(html('[a](<https://x.io/\tpath>)'), `<p>${A('https://x.io/path')}a</a></p>`);
  assert.equal(html('[a](HTTPS://X.IO)'), `<p>${A('HTTPS://X.IO')}a</a></p>`);
  assert.equal(html('[a](https://x.io/?q=&quot;x&quot;)'), `<p>${A('https://x.io/?q=&quot;x&quot;')}a</a></p>`);
  const frag = render('[a](https://x.io/"onmouseover="alert(1) "t\\" onclick=\\"x")');
  const a = [...elements(frag)].find((e) => e.localName === 'a');
  assert.ok(a);
  assert.deepEqual([...a.attributes.keys()], ['href', 'target', 'rel', 'title']);
  assert.equal(a.getAttribute('href'), 'https://x.io/"onmouseover="alert(1)');
  assert.equal(a.getAttribute('title'), 't" onclick="x');
});

test('never throws, on any input', () => {
  for (const v of [null, undefined, 0, 42, NaN, true, {}, [], ['# a'], Symbol('s'), 10n, { toString: () => '**x**' }]) {
    render(v);
  }
  assert.equal(render({ toString: () => '**x**' }).innerHTML, '<p><strong>x</strong></p>');
  assert.equal(render({ toString() { throw new Error('no'); } }).innerHTML, '');
  assert.equal(render(null).innerHTML, '');
  // Random text over markdown's own characters (a fixed seed, so a failure repeats).
  let seed = 0x2545f491;
  const rand = (n) => {
    seed ^= seed << 13;
    seed ^= seed >>> 17;
    seed ^= seed << 5;
    return (seed >>> 0) % n;
  };
  const alphabet = ['*', '_', '~', '`', '[', ']', '(', ')', '<', '>', '!', '#', '-', '+', '|', ':', '\\', '&', ';', '"', "'",
    '1.', ' ', '  ', '    ', '\t', '\n', '\n\n', 'a', 'x', 'https://', 'javascript:', 'mailto:', '```', '> ', '- ', '&#x', '\0', '\ud800'];
  for (let k = 0; k < 3000; k++) {
    let s = '';
    const len = 1 + rand(60);
    for (let j = 0; j < len; j++) s += alphabet[rand(alphabet.length)];
    render(s);
  }
});

test('pathological input stays fast and bounded', () => {
  const cases = {
    'nested emphasis': '*a '.repeat(5000) + 'a*'.repeat(5000),
    'unmatched emphasis': '*a _b '.repeat(4000),
    'open brackets': '['.repeat(20000),
    'brackets and parens': '[a]('.repeat(5000),
    'link parens': '[a](https://x.io/' + '('.repeat(10000),
    'backtick runs': Array.from({ length: 200 }, (_, k) => '`'.repeat(k + 1)).join(' x '),
    'deep quotes': '>'.repeat(20000) + ' deep',
    'deep lists': Array.from({ length: 150 }, (_, k) => `${' '.repeat(k * 2)}- item ${k}`).join('\n'),
    'many entities': '&amp;&lt;&#1234;&bogus;'.repeat(2000),
    'long table': '| a | b |\n|---|---|\n' + '| 1 | 2 |\n'.repeat(2000),
    'pipes': '|'.repeat(20000) + '\n' + '|-'.repeat(10000),
    'urls': 'https://x.io/(('.repeat(3000),
  };
  for (const [name, text] of Object.entries(cases)) {
    const t0 = performance.now();
    render(text);
    const ms = performance.now() - t0;
    assert.ok(ms < 1000, `${name}: ${ms.toFixed(1)} ms`);
  }
  const deep = render(cases['deep quotes']);
  assert.match(deep.textContent, /deep$/);
});

// ---- streaming --------------------------------------------------------------------------------

const ANSWER = `## Cheapest H100 options right now

Based on the **last 24 hours** of offers, the *cheapest* on-demand H100 SXM is on Vast.ai at
about $1.89/h — see [the market](https://gpuscout.example/market?gpu=h100) or https://vast.ai/pricing.

| Provider | GPU | $/GPU-hour | Reliability |
|:---------|:---:|-----------:|:-----------:|
| Vast.ai | H100 SXM | 1.89 | 99.2% |
| RunPod | H100 PCIe | 2.39 | 99.9% |
| Lambda | H100 SXM | 2.49 | — |

1. **Vast.ai** is cheapest, but:
   - hosts vary in _uptime_;
   - pick \`verified\` machines.
2. **RunPod** costs more and is steadier.

> Prices move hourly: set an alert with \`threshold_usd = 1.80\`.

\`\`\`python
from gpuscout import Client
print(Client().market("h100"))
\`\`\`

---
Ask me again tomorrow! <script>alert("x")</script>
`;

/** Letters and digits shown: a measure of visible text that markdown markers do not count in. */
function shown(frag) {
  return (frag.textContent.match(/[\p{L}\p{N}]/gu) ?? []).length;
}

test('every prefix of a streamed answer renders, and what shows keeps growing', () => {
  const full = render(ANSWER);
  const tags = [...elements(full)].map((e) => e.localName);
  for (const t of ['h2', 'strong', 'em', 'a', 'table', 'ol', 'ul', 'blockquote', 'pre', 'hr', 'code', 'td', 'th']) {
    assert.ok(tags.includes(t), `the full answer has <${t}>`);
  }
  assert.ok(!tags.includes('script'));

  // A character at a time, as deltas could cut anywhere. Text can shrink within a line (an
  // unclosed ** is literal until it closes; a link's URL leaves the text once its ) arrives), so
  // the growth checked is: the letters and digits shown never drop below what the last complete
  // line showed, and complete lines show ever more.
  let atLine = 0;
  for (let k = 0; k <= ANSWER.length; k++) {
    const prefix = ANSWER.slice(0, k);
    const n = shown(render(prefix));
    assert.ok(n >= atLine, `prefix ${k} (${JSON.stringify(prefix.slice(-30))}) shows ${n} < ${atLine}`);
    if (k === ANSWER.length || ANSWER[k] === '\n') atLine = n;
  }
  assert.equal(atLine, shown(full));
});

test('partial constructs while streaming', () => {
  assert.equal(html('Use **H1'), '<p>Use **H1</p>');
  assert.equal(html('Use **H100**'), '<p>Use <strong>H100</strong></p>');
  assert.equal(html('see [docs](https://x.io/pa'), `<p>see [docs](${A('https://x.io/pa')}https://x.io/pa</a></p>`);
  assert.equal(html('see [docs'), '<p>see [docs</p>');
  assert.equal(html('cost `thresh'), '<p>cost `thresh</p>');
  assert.equal(html('&am'), '<p>&amp;am</p>');
  assert.equal(html('```py\nprint(1)\n``'), '<pre><code class="language-py">print(1)\n``</code></pre>');
  assert.equal(html('1. a\n2'), '<ol><li>a<br>2</li></ol>');
  assert.equal(html('> quote\n>'), '<blockquote><p>quote</p></blockquote>');
  assert.equal(html('- a\n  -'), '<ul><li>a<br>-</li></ul>');
  assert.equal(html('- a\n  - b'), '<ul><li>a<ul><li>b</li></ul></li></ul>');
});

// ---- documents --------------------------------------------------------------------------------

test('uses the global document by default and needs one', () => {
  assert.throws(() => renderMarkdown('x'), TypeError);
  const doc = new FakeDocument();
  globalThis.document = doc;
  try {
    const frag = renderMarkdown('**x**');
    assert.equal(frag.ownerDocument, doc);
    assert.equal(frag.innerHTML, '<p><strong>x</strong></p>');
  } finally {
    delete globalThis.document;
  }
});

test('timing: a 20 KB answer renders well within a frame', () => {
  let text = '';
  while (text.length < 20_000) text += `${ANSWER}\n`;
  const doc = new FakeDocument();
  for (let k = 0; k < 5; k++) renderMarkdown(text, doc); // warm up
  const runs = [];
  for (let k = 0; k < 20; k++) {
    const t0 = performance.now();
    renderMarkdown(text, doc);
    runs.push(performance.now() - t0);
  }
  runs.sort((a, b) => a - b);
  const median = runs[runs.length >> 1];
  console.log(`markdown: ${text.length} chars in ${median.toFixed(2)} ms (median of ${runs.length})`);
  assert.ok(median < 200, `${median} ms`);
});
