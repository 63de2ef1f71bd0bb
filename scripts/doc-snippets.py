#!/usr/bin/env python3
"""Every code block of the documentation, run as a reader would paste it, against a real hub.

    GPUSCOUT_BIN=target/debug/gpuscout python3 scripts/doc-snippets.py [--list] [-v] [FILE.md ...]

Without FILE arguments: README.md, client-sdk/README.md and docs/*.md. `--list` classifies the
blocks without running anything; `-v` shows the output of the blocks that pass too (a failing
block's output is always shown). Exits 1 when a block fails or is neither run nor marked.
tests/conformance/run.sh runs it after the conformance scripts.

The convention. A fenced block's info string is its language, then optional words:

  text     ``` with no language, or ```text: output, wire transcripts, diagrams. Not code.
  data     ```json must parse. An ellipsis (…) outside a string elides: {…} reads as {},
           [a, …] as [a], "k": … as "k": null. ```toml must parse.
  run      ```sh or ```bash, ```js, ```python: run as described below.
  marked   a block whose words include
             no-run   it cannot run here (a server started for good, the internet, a release
                      build, minutes of load, a browser, a fragment): the text before it says why;
             covered  another CI step runs it (.ci/run; the text before it says which);
             example  one of the three examples of docs/developers.md that
                      tests/conformance/run.sh extracts and runs.
Any other block (an unmarked ```html or ```rust, an unknown language) fails the run.

How blocks run: each document on its own, its blocks in order.

  * The hub. Before the first block it runs the runner starts GPUSCOUT_BIN (default target/debug/gpuscout)
    with `serve` on the embedded defaults (no config/ directory, none of the caller's GPUSCOUT_*
    variables) on a random loopback port, in a fresh directory that stands for the repository's
    root (links to its top-level entries except config/, data/ and target/): the hub a reader
    started with `cargo run --release` in another terminal.
  * ```sh / ```bash blocks run in one bash session per document, in that directory, with
    `set -euo pipefail` (a failing command or an unset variable fails the block), each block's
    variables, functions and directory carried on to the next as a terminal carries them. The
    session has
      HUB=http://127.0.0.1:<port> and GPUSCOUT__SERVER__LISTEN=127.0.0.1:<port> exported: the
        documents write the hub's address as ${HUB:-http://127.0.0.1:8080} or set HUB that way;
      `gpuscout` on PATH (the hub binary), and `cargo run --release [-q] [-- ARGS]` mapped to
        `gpuscout ARGS`; any other cargo command fails (mark such a block covered or no-run);
      curl with --fail-with-body (--fail before curl 7.76), so a refused request fails its block.
  * ```sh server: a block that starts the hub and serves until stopped (`cargo run --release`
    with some settings). The runner stops the hub serving until then, runs the block in the
    background (a subshell of the session: it sees its variables), and the block passes
    once $HUB/readyz answers 200 within 60 s; that hub then serves the blocks after it.
  * ```js blocks are programs, run with `node FILE` and the session's exported environment, in an
    npm project made with `npm init -y` (CommonJS, as a new project is), with `@gpuscout/client`
    installed from client-sdk/js and `centrifuge` and `ws` as tests/conformance/js/package-lock.json
    pins them. FILE is the name the info string gives (```js ticker.mjs), else snippet.js; a later
    block of the same document naming the same file is added to its end (the reader appends it)
    and the whole file runs again.
  * ```python blocks likewise, with tests/conformance/.venv's python (centrifuge-python, cent;
    created from tests/conformance/python/requirements.txt when missing); default snippet.py.
  * A program passes when it exits 0 within 15 s, or is still running at 15 s (a ticker that
    runs until stopped) having printed at least one line, and in both cases wrote nothing to
    stderr. A shell block has 180 s.

Needs bash, curl, jq, node and npm (≥ 18), python3 ≥ 3.11; a missing one fails the run, never
skips it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

if sys.version_info < (3, 11):
    raise SystemExit("doc-snippets: Python 3.11 or later is required")

import tomllib  # noqa: E402 (3.11 and later)
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFORMANCE = ROOT / "tests" / "conformance"
RUN_LANGS = {"sh": "sh", "bash": "sh", "js": "js", "javascript": "js", "python": "python", "py": "python"}
DATA_LANGS = {"json", "toml"}
TEXT_LANGS = {"", "text"}
MARKERS = {"no-run", "covered", "example"}
PROGRAM_LIMIT_S = 15
SHELL_LIMIT_S = 180
SERVER_READY_S = 60
# Top-level entries of the repository the stand-in root does not link: the reader's hub there runs
# on the embedded defaults and its own data/.
NOT_LINKED = {"config", "data", "target", ".git"}

SESSION_PRELUDE = r"""
set -euo pipefail
cargo() {
  if [[ "${1-}" == run && "${2-}" == --release ]]; then
    shift 2
    if [[ "${1-}" == -q ]]; then shift; fi
    if [[ "${1-}" == -- ]]; then shift; fi
    gpuscout "$@"
  else
    echo "doc-snippets: only 'cargo run --release [-q] [-- ARGS]' runs here (as gpuscout ARGS): cargo $*" >&2
    return 127
  fi
}
curl() { command curl CURL_FAIL "$@"; }
export -f cargo curl
"""


def log(message: str) -> None:
    print(f"[doc-snippets] {message}", flush=True)


# ---- blocks -------------------------------------------------------------------------------------


@dataclass
class Block:
    doc: str  # path relative to the repository root
    line: int  # of the opening fence
    lang: str
    words: list[str]
    text: str

    @property
    def where(self) -> str:
        return f"{self.doc}:{self.line}"

    @property
    def info(self) -> str:
        return " ".join([self.lang, *self.words]).strip() or "(none)"

    @property
    def marker(self) -> str | None:
        found = [w for w in self.words if w in MARKERS]
        return found[0] if found else None

    @property
    def filename(self) -> str | None:
        names = [w for w in self.words if re.fullmatch(r"[\w.-]+\.(m?js|cjs|py)", w)]
        return names[0] if names else None


FENCE = re.compile(r"^(?P<indent> *)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")


def extract(path: Path) -> list[Block]:
    """The fenced code blocks of a Markdown file (CommonMark fences, at any indentation)."""
    doc = shown(path)
    lines = path.read_text(encoding="utf-8").split("\n")
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m or (m["fence"][0] == "`" and "`" in m["info"]):
            i += 1
            continue
        indent, fence, info = len(m["indent"]), m["fence"], m["info"].strip()
        close = re.compile(rf"^ *{re.escape(fence[0])}{{{len(fence)},}}\s*$")
        body: list[str] = []
        j = i + 1
        while j < len(lines) and not close.match(lines[j]):
            line = lines[j]
            strip = len(line) - len(line.lstrip(" "))
            body.append(line[min(indent, strip):])
            j += 1
        if j == len(lines):
            raise SystemExit(f"{doc}:{i + 1}: a code block that is never closed")
        words = info.split()
        lang = words[0].lower() if words else ""
        blocks.append(Block(doc, i + 1, lang, words[1:], "\n".join(body) + "\n"))
        i = j + 1
    return blocks


def classify(block: Block) -> tuple[str, str]:
    """(kind, problem): kind is text, data, run, server, no-run, covered, example or bad."""
    unknown = [w for w in block.words if w not in MARKERS and w != "server" and w != block.filename]
    if unknown:
        return "bad", f"unknown word(s) {' '.join(unknown)} in the info string"
    marker = block.marker
    if marker == "example" and block.doc != "docs/developers.md":
        return "bad", "`example` marks only the examples of docs/developers.md that tests/conformance/run.sh runs"
    if marker:
        return marker, ""
    if block.lang in TEXT_LANGS:
        return "text", ""
    if block.lang in DATA_LANGS:
        return "data", ""
    kind = RUN_LANGS.get(block.lang)
    if kind is None:
        return "bad", f"```{block.lang} is neither run nor marked (no-run or covered, with the reason before it)"
    if "server" in block.words:
        if kind != "sh":
            return "bad", "`server` is for sh blocks"
        return "server", ""
    if block.filename and kind == "sh":
        return "bad", "a file name is for js and python blocks"
    return "run", ""


# ---- data blocks --------------------------------------------------------------------------------

ELIDED = "\x00"


def check_json(text: str) -> str | None:
    """None when `text` is JSON once its elisions (… outside strings) are read as described above."""
    out, in_string, escaped = [], False, False
    for ch in text:
        if in_string:
            escaped = ch == "\\" and not escaped
            if ch == '"' and not escaped:
                in_string = False
            out.append(ch)
        elif ch == '"':
            in_string = True
            escaped = False
            out.append(ch)
        else:
            out.append(ELIDED if ch == "…" else ch)
    s = "".join(out)
    s = re.sub(rf",\s*{ELIDED}", "", s)
    s = re.sub(rf"{ELIDED}\s*,", "", s)
    s = re.sub(rf":\s*{ELIDED}", ":null", s)
    s = re.sub(rf"([\[{{])\s*{ELIDED}\s*([\]}}])", r"\1\2", s)
    try:
        json.loads(s)
    except json.JSONDecodeError as e:
        return f"not JSON: {e}"
    return None


def check_data(block: Block) -> str | None:
    if block.lang == "json":
        return check_json(block.text)
    try:
        tomllib.loads(block.text)
    except tomllib.TOMLDecodeError as e:
        return f"not TOML: {e}"
    return None


# ---- processes ----------------------------------------------------------------------------------


def descendants(pid: int) -> list[int]:
    """The processes below `pid` (children first found, then theirs), from /proc."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def stop_tree(pid: int, grace_s: float = 10) -> None:
    """SIGTERM to `pid` and everything it started, SIGKILL to what is left after `grace_s`."""
    pids = descendants(pid) + [pid]
    for p in pids:
        try:
            os.kill(p, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.05)
    for p in pids:
        if alive(p):
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass


def stop_group(pgid: int, grace_s: float = 10) -> None:
    """SIGTERM to the process group `pgid` (one this script made), SIGKILL after `grace_s`."""
    def members() -> list[int]:
        return [int(p) for p in os.listdir("/proc") if p.isdigit() and pgid_of(int(p)) == pgid and alive(int(p))]

    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and members():
            time.sleep(0.05)
        if not members():
            return


def pgid_of(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ready(port: int) -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


ANSI = re.compile(r"\x1b\[[0-9;]*m")


def tail(path: Path, lines: int = 40) -> str:
    try:
        text = ANSI.sub("", path.read_text(errors="replace"))
    except OSError:
        return ""
    return "\n".join(text.rstrip("\n").split("\n")[-lines:])


def indent(text: str) -> str:
    return "\n".join("    " + line for line in text.rstrip("\n").split("\n")) if text.strip() else "    (no output)"


# ---- the tools: node project and Python venv ----------------------------------------------------


def need(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        raise SystemExit(f"doc-snippets: {', '.join(missing)} required (the documents' blocks use them)")


def node_project(work: Path) -> Path:
    """`npm init -y`, then @gpuscout/client from client-sdk/js and centrifuge, ws from the lock."""
    project, lock = work / "node", work / "node-lock"
    project.mkdir()
    lock.mkdir()
    npm = ["npm", "--no-audit", "--no-fund", "--loglevel=error"]
    subprocess.run([*npm, "init", "-y"], cwd=project, check=True, stdout=subprocess.DEVNULL)
    for name in ("package.json", "package-lock.json"):
        shutil.copy(CONFORMANCE / "js" / name, lock / name)
    log("npm ci (centrifuge, ws as tests/conformance/js/package-lock.json pins them)")
    subprocess.run([*npm, "ci", "--ignore-scripts"], cwd=lock, check=True)
    (lock / "node_modules").rename(project / "node_modules")
    # What `npm install <folder>` makes: a link to the package's directory.
    (project / "node_modules" / "@gpuscout").mkdir(exist_ok=True)
    (project / "node_modules" / "@gpuscout" / "client").symlink_to(ROOT / "client-sdk" / "js")
    return project


def python_venv() -> Path:
    venv = CONFORMANCE / ".venv"
    python = venv / "bin" / "python"
    check = [str(python), "-c", "import centrifuge, cent"]
    if python.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return python
    log("pip install --require-hashes (tests/conformance/python/requirements.txt into tests/conformance/.venv)")
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-input",
                    "--require-hashes", "-r", str(CONFORMANCE / "python" / "requirements.txt")], check=True)
    return python


# ---- one document -------------------------------------------------------------------------------


@dataclass
class Result:
    block: Block
    kind: str
    ok: bool
    note: str = ""
    detail: str = ""


@dataclass
class Tools:
    bin: Path
    work: Path
    curl_fail: str = "--fail-with-body"
    node: Path | None = None
    python: Path | None = None

    def node_dir(self) -> Path:
        if self.node is None:
            self.node = node_project(self.work)
        return self.node

    def python_bin(self) -> Path:
        if self.python is None:
            self.python = python_venv()
        return self.python


@dataclass
class Document:
    """The reader's terminal for one document: a hub, a bash session, the files they saved."""

    name: str
    tools: Tools
    root: Path = field(init=False)
    port: int = 0
    env: dict[str, str] = field(default_factory=dict)
    hub: subprocess.Popen | None = None
    server_pid: int | None = None
    shell: subprocess.Popen | None = None
    files: dict[str, str] = field(default_factory=dict)
    count: int = 0

    def __post_init__(self) -> None:
        slug = re.sub(r"[^\w]+", "-", self.name).strip("-")
        self.dir = self.tools.work / slug
        self.dir.mkdir()
        self.root = self.dir / "repo"
        self.root.mkdir()
        for entry in ROOT.iterdir():
            if entry.name not in NOT_LINKED:
                (self.root / entry.name).symlink_to(entry)
        self.blocks = self.dir / "blocks"
        self.blocks.mkdir()

    # -- the hub and the session --

    def base_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("GPUSCOUT") and k not in {"HUB", "TOKEN", "GSK", "KEY", "H"}}
        no_proxy = ",".join(x for x in (env.get("NO_PROXY", ""), "127.0.0.1,localhost") if x)
        env.update(NO_PROXY=no_proxy, no_proxy=no_proxy, PATH=f"{self.tools.bin.parent}:{env.get('PATH', '')}",
                   HUB=f"http://127.0.0.1:{self.port}", GPUSCOUT__SERVER__LISTEN=f"127.0.0.1:{self.port}")
        return env

    def start(self) -> str | None:
        """Start the hub on a free port (three tries) and the bash session. An error, or None."""
        for _ in range(3):
            self.port = free_port()
            self.env = self.base_env()
            hub_log = self.dir / "hub.log"
            with open(hub_log, "wb") as out:
                self.hub = subprocess.Popen([str(self.tools.bin), "serve"], cwd=self.root, env=self.env,
                                            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            start_new_session=True)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and self.hub.poll() is None and not ready(self.port):
                time.sleep(0.1)
            if self.hub.poll() is None and ready(self.port):
                break
            self.stop_hub()
        else:
            return f"the hub did not start:\n{indent(tail(self.dir / 'hub.log'))}"
        self.shell = subprocess.Popen(["bash", "--noprofile", "--norc"], cwd=self.root, env=self.env,
                                      stdin=subprocess.PIPE, stdout=open(self.dir / "shell.log", "wb"),
                                      stderr=subprocess.STDOUT, start_new_session=True, text=True)
        self.send(SESSION_PRELUDE.replace("CURL_FAIL", self.tools.curl_fail))
        return None

    def send(self, command: str) -> None:
        assert self.shell and self.shell.stdin
        self.shell.stdin.write(command + "\n")
        self.shell.stdin.flush()

    def stop_hub(self) -> None:
        if self.hub is not None:
            stop_tree(self.hub.pid)
            self.hub.wait()
            self.hub = None
        if self.server_pid is not None:
            stop_tree(self.server_pid)
            self.server_pid = None

    def close(self) -> None:
        self.stop_hub()
        if self.shell is not None:
            # Everything the session started (background commands too) is in its process group.
            if self.shell.stdin:
                self.shell.stdin.close()
            stop_group(self.shell.pid)
            self.shell.wait()
            self.shell = None

    def logs(self) -> str:
        parts = []
        for name in ("hub.log", "server.log"):
            if (self.dir / name).exists() and tail(self.dir / name, 10):
                parts.append(f"  last lines of the {name.split('.')[0]}'s log:\n{indent(tail(self.dir / name, 10))}")
        return "\n".join(parts)

    def read_env(self, path: Path) -> None:
        if path.exists():
            pairs = path.read_bytes().split(b"\0")
            self.env = dict(p.decode(errors="replace").split("=", 1) for p in pairs if b"=" in p)

    # -- blocks --

    def next_files(self) -> tuple[Path, Path, Path, Path]:
        self.count += 1
        stem = self.blocks / f"{self.count:03d}"
        return stem.with_suffix(".sh"), stem.with_suffix(".out"), stem.with_suffix(".rc"), stem.with_suffix(".env")

    def run_shell(self, block: Block) -> Result:
        if self.shell is None or self.shell.poll() is not None:
            return Result(block, "run", False, "not run: the shell session ended at an earlier block")
        script, out, rc, env = self.next_files()
        script.write_text(block.text)
        self.send(f"{{ source '{script}'; }} >'{out}' 2>&1 </dev/null; env -0 >'{env}'; echo $? >'{rc}'")
        started = time.monotonic()
        while not rc.exists():
            if self.shell.poll() is not None:
                return Result(block, "run", False, f"failed (exit {self.shell.returncode})",
                              f"{indent(tail(out))}\n{self.logs()}")
            if time.monotonic() - started > SHELL_LIMIT_S:
                stop_tree(self.shell.pid)
                return Result(block, "run", False, f"still running after {SHELL_LIMIT_S} s", indent(tail(out)))
            time.sleep(0.05)
        while not rc.read_text().endswith("\n"):
            time.sleep(0.01)
        self.read_env(env)
        return Result(block, "run", True, f"ok in {time.monotonic() - started:.1f} s", indent(tail(out, 200)))

    def run_server(self, block: Block) -> Result:
        if self.shell is None or self.shell.poll() is not None:
            return Result(block, "server", False, "not run: the shell session ended at an earlier block")
        self.stop_hub()
        script, out, _, _ = self.next_files()
        pid_file = script.with_suffix(".pid")
        script.write_text(block.text)
        server_log = self.dir / "server.log"
        if server_log.exists():
            server_log.unlink()
        server_log.symlink_to(out)
        self.send(f"( source '{script}' ) >'{out}' 2>&1 </dev/null & echo $! >'{pid_file}'")
        started = time.monotonic()
        while not pid_file.exists() or not pid_file.read_text().endswith("\n"):
            if time.monotonic() - started > 10:
                return Result(block, "server", False, "the session did not start the block")
            time.sleep(0.05)
        self.server_pid = int(pid_file.read_text())
        while time.monotonic() - started < SERVER_READY_S:
            if ready(self.port):
                return Result(block, "server", True, f"serving, /readyz 200 after {time.monotonic() - started:.1f} s")
            if not alive(self.server_pid):
                self.server_pid = None
                return Result(block, "server", False, "the block ended instead of serving", indent(tail(out)))
            time.sleep(0.1)
        return Result(block, "server", False, f"no /readyz 200 within {SERVER_READY_S} s", indent(tail(out)))

    def run_program(self, block: Block, kind: str) -> Result:
        default = "snippet.js" if kind == "js" else "snippet.py"
        name = block.filename or default
        self.files[name] = self.files.get(name, "") + block.text
        if kind == "js":
            where = self.tools.node_dir() / self.dir.name
            command = ["node", name]
        else:
            where = self.dir / "python"
            command = [str(self.tools.python_bin()), name]
        where.mkdir(exist_ok=True)
        (where / name).write_text(self.files[name])
        _, out, _, _ = self.next_files()
        err = out.with_suffix(".err")
        env = dict(self.env, PYTHONUNBUFFERED="1")
        started = time.monotonic()
        with open(out, "wb") as o, open(err, "wb") as e:
            proc = subprocess.Popen(command, cwd=where, env=env, stdout=o, stderr=e, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
            try:
                code: int | None = proc.wait(timeout=PROGRAM_LIMIT_S)
            except subprocess.TimeoutExpired:
                code = None
                stop_tree(proc.pid)
                proc.wait()
        took = time.monotonic() - started
        stdout, stderr = out.read_text(errors="replace"), err.read_text(errors="replace")
        shown = indent(stdout[-4000:]) + (f"\n  stderr:\n{indent(stderr[-4000:])}" if stderr.strip() else "")
        label = f"node {name}" if kind == "js" else f"python {name}"
        if stderr.strip():
            return Result(block, "run", False, f"{label}: wrote to stderr", f"{shown}\n{self.logs()}")
        if code is None:
            if not stdout.strip():
                return Result(block, "run", False, f"{label}: printed nothing in {PROGRAM_LIMIT_S} s", self.logs())
            return Result(block, "run", True, f"{label}: running after {PROGRAM_LIMIT_S} s, printing", shown)
        if code != 0:
            return Result(block, "run", False, f"{label}: exit {code}", f"{shown}\n{self.logs()}")
        return Result(block, "run", True, f"{label}: exit 0 in {took:.1f} s", shown)


def run_document(doc: str, blocks: list[Block], tools: Tools | None, verbose: bool) -> list[Result]:
    results: list[Result] = []
    document: Document | None = None
    try:
        for block in blocks:
            kind, problem = classify(block)
            if kind == "bad":
                results.append(Result(block, kind, False, problem))
            elif kind == "data":
                error = check_data(block)
                results.append(Result(block, kind, error is None, error or f"{block.lang} parses"))
            elif kind in ("text", "no-run", "covered", "example"):
                results.append(Result(block, kind, True, {"example": "covered by tests/conformance/run.sh"}.get(kind, "")))
            elif tools is None:
                results.append(Result(block, kind, True, "would run"))
            else:
                if document is None:
                    document = Document(doc, tools)
                    error = document.start()
                    if error:
                        results.append(Result(block, kind, False, error))
                        document.close()
                        document = None
                        continue
                if kind == "server":
                    result = document.run_server(block)
                elif RUN_LANGS[block.lang] == "sh":
                    result = document.run_shell(block)
                else:
                    result = document.run_program(block, RUN_LANGS[block.lang])
                results.append(result)
            report(results[-1], verbose)
    finally:
        if document is not None:
            document.close()
    return results


def report(result: Result, verbose: bool) -> None:
    status = "ok  " if result.ok else "FAIL"
    print(f"  {status} {result.block.where:<28} {result.block.info:<22} {result.kind:<8} {result.note}", flush=True)
    if result.detail and (not result.ok or verbose):
        print(result.detail, flush=True)


# ---- main ---------------------------------------------------------------------------------------


def shown(path: Path) -> str:
    """A document's name: relative to the repository when it is in it."""
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def documents(args: list[str]) -> list[Path]:
    if args:
        return [Path(a).resolve() for a in args]
    return [ROOT / "README.md", ROOT / "client-sdk" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def main() -> int:
    # A TERM (run.sh's timeout, CI cancelling) unwinds like Ctrl-C, so the hubs started are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="*", help="Markdown files (default: README.md, client-sdk/README.md, docs/*.md)")
    parser.add_argument("--list", action="store_true", help="classify the blocks, run nothing")
    parser.add_argument("-v", "--verbose", action="store_true", help="show the output of the blocks that pass too")
    options = parser.parse_args()

    tools = None
    work = None
    if not options.list:
        need("bash", "curl", "jq", "node", "npm")
        binary = Path(os.environ.get("GPUSCOUT_BIN", "target/debug/gpuscout"))
        binary = binary if binary.is_absolute() else ROOT / binary
        if not os.access(binary, os.X_OK):
            print(f"doc-snippets: hub binary not found at {binary} (build it with: cargo build --bin gpuscout)",
                  file=sys.stderr)
            return 1
        work = Path(tempfile.mkdtemp(prefix="gpuscout-doc-snippets."))
        # A link named gpuscout, so that `gpuscout` on PATH is GPUSCOUT_BIN whatever its file name.
        (work / "bin").mkdir()
        (work / "bin" / "gpuscout").symlink_to(binary)
        tools = Tools(bin=work / "bin" / "gpuscout", work=work)
        known = subprocess.run(["curl", "--fail-with-body", "--version"], capture_output=True).returncode == 0
        tools.curl_fail = "--fail-with-body" if known else "--fail"

    totals: dict[str, int] = {}
    failed: list[Result] = []
    try:
        for path in documents(options.files):
            blocks = extract(path)
            doc = shown(path)
            log(f"{doc}: {len(blocks)} blocks")
            results = run_document(doc, blocks, tools, options.verbose)
            counts: dict[str, int] = {}
            for r in results:
                kind = f"{RUN_LANGS[r.block.lang]} run" if r.kind == "run" else r.kind
                for key in (kind, "failed") if not r.ok else (kind,):
                    counts[key] = counts.get(key, 0) + 1
                    totals[key] = totals.get(key, 0) + 1
            failed += [r for r in results if not r.ok]
            log(f"{doc}: {summary(counts)}")
    except subprocess.CalledProcessError as e:
        log(f"FAILED: {' '.join(map(str, e.cmd))} exited {e.returncode}")
        return 1
    finally:
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)
    log(f"all: {summary(totals)}")
    if failed:
        log(f"FAILED: {len(failed)} block(s): {', '.join(r.block.where for r in failed)}")
        return 1
    return 0


def summary(counts: dict[str, int]) -> str:
    names = {"sh run": "sh run", "server": "sh server run", "js run": "js run", "python run": "python run", "data": "data", "covered": "covered",
             "example": "covered by run.sh", "no-run": "no-run", "text": "text", "bad": "unmarked",
             "failed": "FAILED"}
    return ", ".join(f"{counts[k]} {v}" for k, v in names.items() if counts.get(k)) or "no blocks"


if __name__ == "__main__":
    sys.exit(main())
