#!/usr/bin/env python3
"""Fails when `src/` has an import cycle, or a module imports one above it in `src/lib.rs`'s map.

Reads every `crate::` path in `src/**/*.rs` (use lines and inline paths, tests included) and builds
two graphs: between files (`src/ingest/vast.rs` -> `src/market/mod.rs`) and between top-level
modules (`ingest` -> `market`). Either graph having a cycle fails the check, naming it. A module's
`mod.rs` and its children are separate files, so `bus/redis.rs` using `bus/mod.rs`'s trait is fine,
while `bus/mod.rs` also using `bus/redis.rs` is a cycle unless it only declares and re-exports it
(only paths that start with `crate::`, `super::` or `self::` are counted, so a `mod.rs` that declares and re-exports its children, `pub mod redis; pub use redis::RedisBus;`, is a facade, not a cycle).

Usage: scripts/check-deps.py [--graph]   (--graph prints the module graph, lowest first)
"""
import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
# `use crate::a::{b, c::D};`, `use super::x;`, and inline paths such as `crate::clock::unix_now_ms()`.
USE = re.compile(r"\buse\s+((?:crate|super|self)::[^;]*);", re.S)
INLINE = re.compile(r"\b((?:crate|super)(?:::[A-Za-z_][A-Za-z0-9_]*)+)")
TEST_MOD = re.compile(r"#\[cfg\(test\)\]\s*mod\s+\w+\s*\{")


def files():
    for dirpath, _, names in os.walk(ROOT):
        for n in names:
            if n.endswith(".rs"):
                yield os.path.relpath(os.path.join(dirpath, n), ROOT)


def module_of(f):
    """`ingest/vast.rs` -> ["ingest", "vast"]; `ingest/mod.rs` -> ["ingest"]."""
    parts = f.removesuffix(".rs").split("/")
    return parts[:-1] if parts[-1] == "mod" else parts


def file_for(parts):
    """The file a `crate::a::b::C` path lands in: the deepest existing module file."""
    best = "lib.rs"
    for i in range(1, len(parts) + 1):
        p = "/".join(parts[:i])
        if os.path.exists(os.path.join(ROOT, p + ".rs")):
            best = p + ".rs"
        elif os.path.exists(os.path.join(ROOT, p, "mod.rs")):
            best = p + "/mod.rs"
        else:
            break
    return best


def strip_comments(text):
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    text = re.sub(r'"(?:\\.|[^"\\])*"', '""', text)
    return "\n".join(line.split("//", 1)[0] for line in text.splitlines())


def expand(tree):
    """`a::{b, c::{d, e}}` -> [[a, b], [a, c, d], [a, c, e]]."""
    tree = tree.strip()
    if not tree:
        return []
    if "{" not in tree:
        head = tree.split(" as ")[0].strip()
        return [[p for p in head.split("::") if p and p != "*"]]
    i = tree.index("{")
    base = [p for p in tree[:i].split("::") if p]
    inner, depth, items, cur = tree[i + 1 : tree.rindex("}")], 0, [], ""
    for ch in inner:
        if ch == "," and depth == 0:
            items.append(cur)
            cur = ""
            continue
        depth += ch == "{"
        depth -= ch == "}"
        cur += ch
    items.append(cur)
    out = []
    for item in items:
        if item.strip() == "self":
            out.append(base)
        else:
            out += [base + sub for sub in expand(item)]
    return out


def resolve(path, module):
    """A path as written in a file of `module` -> absolute module path parts."""
    if path[0] == "crate":
        return path[1:]
    here = list(module)
    while path and path[0] in ("super", "self"):
        if path[0] == "super":
            here = here[:-1]
        path = path[1:]
    return here + path


def paths_in(text, module):
    """Absolute paths used by a file; inside its `#[cfg(test)] mod tests`, `super` is the file itself."""
    out = []
    m = TEST_MOD.search(text)
    parts = [(text, module)] if not m else [(text[: m.start()], module), (text[m.end() :], module + ["tests"])]
    for chunk, mod in parts:
        for u in USE.finditer(chunk):
            out += [resolve(p, mod) for p in expand(u.group(1)) if p]
        chunk = USE.sub("", chunk)
        for i in INLINE.finditer(chunk):
            out.append(resolve(i.group(1).split("::"), mod))
    return out


def top(f):
    return f.split("/")[0].removesuffix(".rs")


def cycles(graph):
    """Every strongly connected component of more than one node (Tarjan), each as a sorted list."""
    index, low, on_stack, stack, out = {}, {}, set(), [], []
    nodes = sorted(set(graph) | {m for ms in graph.values() for m in ms})

    def visit(n):
        index[n] = low[n] = len(index)
        stack.append(n)
        on_stack.add(n)
        for m in sorted(graph.get(n, ())):
            if m not in index:
                visit(m)
                low[n] = min(low[n], low[m])
            elif m in on_stack:
                low[n] = min(low[n], index[m])
        if low[n] == index[n]:
            component = []
            while True:
                m = stack.pop()
                on_stack.discard(m)
                component.append(m)
                if m == n:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    sys.setrecursionlimit(10000)
    for n in nodes:
        if n not in index:
            visit(n)
    return out


def edges_within(graph, component):
    return [f"{a} -> {b}" for a in component for b in sorted(graph.get(a, ())) if b in component]


def layer_order():
    """Modules as `src/lib.rs` lists them (`//! - [`name`]: ...`), top first."""
    text = open(os.path.join(ROOT, "lib.rs"), encoding="utf-8").read()
    return re.findall(r"^//! - \[`(\w+)`\]", text, re.M)


def main():
    file_graph, mod_graph = {}, {}
    for f in files():
        if f in ("lib.rs", "main.rs"):
            continue
        text = strip_comments(open(os.path.join(ROOT, f), encoding="utf-8").read())
        for parts in paths_in(text, module_of(f)):
            target = file_for(parts)
            if target in ("lib.rs", f):
                continue
            file_graph.setdefault(f, set()).add(target)
            a, b = top(f), top(target)
            if a != b:
                mod_graph.setdefault(a, set()).add(b)
    if "--graph" in sys.argv:
        for m in sorted(mod_graph, key=lambda m: len(mod_graph[m])):
            print(f"{m:10} -> {', '.join(sorted(mod_graph[m]))}")
    failed = False
    for name, graph in (("modules", mod_graph), ("files", file_graph)):
        for component in cycles(graph):
            failed = True
            print(f"import cycle between {name}: {', '.join(component)}", file=sys.stderr)
            for edge in edges_within(graph, component):
                print(f"    {edge}", file=sys.stderr)
    order = layer_order()
    for a in sorted(mod_graph):
        for b in sorted(mod_graph[a]):
            if a not in order or b not in order:
                failed = True
                print(f"module `{a if a not in order else b}` is missing from src/lib.rs's map", file=sys.stderr)
            elif order.index(b) < order.index(a):
                failed = True
                print(f"`{a}` imports `{b}`, which is above it in src/lib.rs's map", file=sys.stderr)
    if failed:
        return 1
    print(f"no import cycles ({len(file_graph)} files, {len(mod_graph)} modules)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
