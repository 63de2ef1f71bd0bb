"""Channel payloads against their JSON Schemas (docs/schemas/*.json, draft 2020-12), with real
publications of a running hub, received through unmodified centrifuge-python.

Environment (run.sh sets it):
  GPUSCOUT_URL                 http://127.0.0.1:PORT of a running hub with a market (the simulated
                               one, polled every few hundred ms) and, for the advisor's `error`
                               event, advisor.provider = "openai" with fake_llm.py as its base_url
  TOKEN_ENT, TOKEN_ENT_USER    an enterprise-tier connection token (every channel) and its user id
  GPUSCOUT_SUMMARY_INTERVAL_S  the hub's ingest.summary_interval_s (default 60): how long to wait
                               for a market:summary.1m publication

First the schemas themselves: each a valid draft 2020-12 schema whose example is valid, the
$defs that several files share alike in each, and every fenced `json` example of docs/protocol.md
valid JSON (and, when it is a complete channel payload, valid against its schema). Then, on one
connection, it subscribes to every kind of channel, makes each publish (alert rules that fire and
a test delivery; machines entered by hand; an advisor question answered and one that fails),
collects every subscribe snapshot and publication, and validates each against the schema that
docs/protocol.md names for it with jsonschema.Draft202012Validator. A violation fails its check
with the schema file, the JSON path of the (most relevant) first violation and the payload.

Run: python schemas.py, or python schemas.py --static for the checks that need no hub. Prints
one line per check and "N passed, N failed"; exits 1 on any failure. Bounded: every wait has a
timeout, the whole run 80 s (longer only for a market:summary.1m interval above 30 s).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import time
import traceback
import urllib.error
import urllib.request
from typing import Any, Callable, Dict, List, Optional, Tuple

import jsonschema
from checks import CheckFailed, check, env, run_capped, until
from centrifuge import Client, ClientEventHandler, SubscriptionEventHandler
from jsonschema import Draft202012Validator

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
SCHEMA_DIR = os.path.join(ROOT, "docs", "schemas")
PROTOCOL_MD = os.path.join(ROOT, "docs", "protocol.md")
# How long to wait for a publication of every kind: 40 s, or longer for a hub whose
# market:summary.1m comes less often; the whole run may take 40 s more.
COLLECT_S = 40.0


def collect_s(summary_interval_s: float) -> float:
    return max(COLLECT_S, summary_interval_s + 10)


OVERALL_CAP_S = int(collect_s(float(os.environ.get("GPUSCOUT_SUMMARY_INTERVAL_S", "60")))) + 40
# fake_llm.py answers a request containing this with an HTTP error.
FAIL_MARKER = "please fail this answer"


# ---- the schemas --------------------------------------------------------------------------------


def load_schemas() -> Dict[str, dict]:
    names = sorted(n for n in os.listdir(SCHEMA_DIR) if n.endswith(".json"))
    check(names, f"no schema in {SCHEMA_DIR}")
    schemas = {}
    for name in names:
        with open(os.path.join(SCHEMA_DIR, name), encoding="utf-8") as f:
            schemas[name] = json.load(f)
    return schemas


SCHEMAS = load_schemas()
VALIDATORS = {name: Draft202012Validator(schema) for name, schema in SCHEMAS.items()}


def schema_for(channel: str, payload: Any) -> str:
    """The schema file that describes `payload` on `channel` (the table of docs/protocol.md,
    "Channel payloads")."""
    kind = payload.get("type") if isinstance(payload, dict) else None
    namespace = channel.split(":", 1)[0]
    if channel in ("market:summary", "market:summary.1m"):
        return "market-delta.json" if kind == "delta" and channel == "market:summary" else "market-snapshot.json"
    if namespace in ("gpu", "offers", "portfolio"):
        return f"{namespace}-{'delta' if kind == 'delta' else 'snapshot'}.json"
    if channel == "sources:status":
        return f"sources-{'delta' if kind == 'delta' else 'snapshot'}.json"
    if namespace == "alerts":
        return "alert.json"
    if namespace == "advisor":
        return f"advisor-{kind if kind in ('start', 'delta', 'done', 'error') else 'start'}.json"
    raise CheckFailed(f"no schema for channel {channel!r}")


def violation(schema_name: str, payload: Any) -> Optional[str]:
    """The first violation of `payload` against the schema, in words, or None."""
    error = jsonschema.exceptions.best_match(VALIDATORS[schema_name].iter_errors(payload))
    if error is None:
        return None
    text = json.dumps(payload, ensure_ascii=False)
    if len(text) > 600:
        text = text[:600] + "…"
    return f"{schema_name}: at {error.json_path}: {error.message}\n    payload: {text}"


def check_valid(channel: str, payload: Any, what: str) -> str:
    """Validate one payload received on `channel`; returns the schema file used."""
    name = schema_for(channel, payload)
    problem = violation(name, payload)
    if problem:
        raise CheckFailed(f"{what} on {channel}: {problem}")
    if isinstance(payload, dict) and "channel" in payload:
        check(payload["channel"] == channel, f"{what} on {channel} names channel {payload['channel']!r}")
    return name


def static_schemas_are_valid() -> None:
    for name, schema in SCHEMAS.items():
        try:
            Draft202012Validator.check_schema(schema)
        except jsonschema.exceptions.SchemaError as e:
            raise CheckFailed(f"{name}: not a valid draft 2020-12 schema: at {e.json_path}: {e.message}")
        draft = "https://json-schema.org/draft/2020-12/schema"
        check(schema.get("$schema") == draft, f"{name}: $schema is not draft 2020-12")
        for key in ("title", "description"):
            check(isinstance(schema.get(key), str) and schema[key], f"{name}: no {key}")


def static_shared_defs_agree() -> None:
    seen: Dict[str, Tuple[str, Any]] = {}
    for name, schema in SCHEMAS.items():
        for key, value in schema.get("$defs", {}).items():
            if key in seen:
                first, want = seen[key]
                check(value == want, f"$defs/{key} differs between {first} and {name}")
            else:
                seen[key] = (name, value)


def static_examples_are_valid() -> None:
    for name, schema in SCHEMAS.items():
        examples = schema.get("examples")
        check(isinstance(examples, list) and len(examples) >= 1, f"{name}: no example")
        for example in examples:
            problem = violation(name, example)
            check(problem is None, f"{name}'s own example: {problem}")


def doc_payload(value: Any) -> Optional[Tuple[str, Any]]:
    """(channel, payload) of a documentation example that is a channel payload: a push envelope,
    a payload naming its channel, an alert or an advisor event; None for other JSON."""
    if not isinstance(value, dict):
        return None
    push = value.get("push")
    if isinstance(push, dict) and isinstance(push.get("pub"), dict):
        return push.get("channel", ""), push["pub"].get("data")
    if isinstance(value.get("channel"), str) and value.get("type") in ("snapshot", "delta"):
        return value["channel"], value
    if value.get("type") == "alert":
        return "alerts:#0", value
    if value.get("type") in ("start", "delta", "done", "error") and "message_id" in value:
        return "advisor:#0", value
    return None


def static_doc_examples() -> str:
    with open(PROTOCOL_MD, encoding="utf-8") as f:
        text = f.read()
    blocks = re.findall(r"^```json[ \t]*\n(.*?)^```", text, re.S | re.M)
    check(blocks, "docs/protocol.md has no fenced json example")
    payloads = 0
    for i, block in enumerate(blocks, 1):
        try:
            value = json.loads(block)
        except json.JSONDecodeError as e:
            # An ellipsis outside a string elides (`{…}`): an outline, which scripts/doc-snippets.py
            # parses by its convention; only complete examples are validated here.
            check("…" in block, f"docs/protocol.md json example {i} is not JSON: {e}\n    {block[:200]}")
            continue
        found = doc_payload(value)
        if found:
            channel, payload = found
            payloads += 1
            check_valid(channel, payload, f"docs/protocol.md json example {i}")
    check(payloads, "docs/protocol.md has no payload example")
    unnamed = [name for name in SCHEMAS if f"schemas/{name}" not in text]
    check(not unnamed, f"docs/protocol.md does not name {', '.join(unnamed)}")
    return f"{payloads} payloads among {len(blocks)} json blocks"


# ---- the hub ------------------------------------------------------------------------------------


OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def rest(method: str, path: str, token: str, body: Any = None) -> Any:
    """A REST call to the hub; the decoded JSON answer (None for an empty one)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        os.environ["GPUSCOUT_URL"].rstrip("/") + path,
        data=data,
        method=method,
        headers={"Authorization": f"Bearer {token}", "content-type": "application/json"},
    )
    try:
        with OPENER.open(request, timeout=10) as response:
            raw = response.read()
    except urllib.error.HTTPError as e:
        raise CheckFailed(f"{method} {path}: HTTP {e.code}: {e.read()[:300]!r}")
    return json.loads(raw) if raw else None


async def arest(method: str, path: str, token: str, body: Any = None) -> Any:
    return await asyncio.to_thread(rest, method, path, token, body)


class ClientEvents(ClientEventHandler):
    """Server-side subscriptions (alerts, advisor, portfolio) of a [`Live`] connection."""

    def __init__(self, live: "Live") -> None:
        self.live = live

    async def on_subscribed(self, ctx) -> None:
        self.live.record(ctx.channel, "snapshot", ctx.data)

    async def on_publication(self, ctx) -> None:
        self.live.record(ctx.channel, "pub", ctx.pub.data)

    async def on_error(self, ctx) -> None:
        self.live.errors.append(repr(ctx))


class SubEvents(SubscriptionEventHandler):
    """One client-side subscription of a [`Live`] connection."""

    def __init__(self, live: "Live", channel: str) -> None:
        self.live, self.channel = live, channel

    async def on_subscribed(self, ctx) -> None:
        self.live.record(self.channel, "snapshot", ctx.data)

    async def on_publication(self, ctx) -> None:
        self.live.record(self.channel, "pub", ctx.pub.data)

    async def on_unsubscribed(self, ctx) -> None:
        self.live.errors.append(f"{self.channel} unsubscribed: {ctx.code} {ctx.reason}")

    async def on_error(self, ctx) -> None:
        self.live.errors.append(f"{self.channel}: {ctx!r}")


class Live:
    """One connection and what it received: per channel, ("snapshot", data) for a subscribe
    reply's data and ("pub", data) for each publication, in order of arrival."""

    def __init__(self, token: str) -> None:
        self.received: Dict[str, List[Tuple[str, Any]]] = {}
        self.errors: List[str] = []
        url = os.environ["GPUSCOUT_URL"].replace("http://", "ws://", 1).rstrip("/") + "/connection/websocket"
        self.client = Client(url, events=ClientEvents(self), token=token, timeout=10.0, proxy=None)

    def record(self, channel: str, kind: str, data: Any) -> None:
        if kind == "snapshot" and data is None:
            return  # alerts and advisor have no snapshot
        self.received.setdefault(channel, []).append((kind, data))

    def pubs(self, channel: str) -> List[Any]:
        return [d for k, d in self.received.get(channel, []) if k == "pub"]

    def snapshots(self, channel: str) -> List[Any]:
        return [d for k, d in self.received.get(channel, []) if k == "snapshot"]

    async def subscribe(self, channel: str) -> None:
        await self.client.new_subscription(channel, events=SubEvents(self, channel)).subscribe()


class Run:
    """What one run did to the hub (machines, rules, questions) and what it received."""

    def __init__(self) -> None:
        self.token = env("TOKEN_ENT")
        self.user = env("TOKEN_ENT_USER")
        self.interval_s = float(os.environ.get("GPUSCOUT_SUMMARY_INTERVAL_S", "60"))
        self.live: Optional[Live] = None
        self.model = ""
        self.channels: List[str] = []
        self.asked: Dict[str, str] = {}  # message id → "answer" or "error"
        self.machines: Dict[str, str] = {}  # machine id → "idle" or "rented"
        self.rest_snapshot: Any = None
        self.used: Dict[str, int] = {}  # schema file → payloads validated against it

    @property
    def alerts(self) -> str:
        return f"alerts:#{self.user}"

    @property
    def advisor(self) -> str:
        return f"advisor:#{self.user}"

    @property
    def portfolio(self) -> str:
        return f"portfolio:#{self.user}"

    async def market(self) -> List[dict]:
        """The models of the market once it has some (GET /api/v1/market/snapshot)."""
        deadline = time.monotonic() + 20
        while True:
            snapshot = await arest("GET", "/api/v1/market/snapshot", self.token)
            if snapshot.get("models"):
                return snapshot["models"]
            check(time.monotonic() < deadline, "the market has no model after 20 s")
            await asyncio.sleep(0.5)

    async def make_alerts(self, models: List[dict], idle_machine: str) -> None:
        """A rule on an idle machine (it fires once the machine has been idle 7 s), rules on either
        side of where utilisation and the median price of the busiest models stand now (a market
        move crosses one of them), and a test delivery."""
        rules: List[dict] = [{"kind": "machine_idle", "machine": idle_machine, "hours": 0.002}]
        for m in models[:6]:
            median = m["price_available"].get("median")
            for direction in ("above", "below"):
                if 0 < m["utilisation"] < 1:  # else a condition that can never hold, refused
                    rules.append({"kind": "utilisation", "model": m["model"], "direction": direction,
                                  "threshold": m["utilisation"]})
                if median:
                    rules.append({"kind": "price", "model": m["model"], "stat": "median", "direction": direction,
                                  "threshold_usd": median})
        created = []
        for i, rule in enumerate(rules):
            body = {"name": f"schema check {i}", "cooldown_s": 60, **rule}
            created.append((await arest("POST", "/api/v1/alerts/rules", self.token, body))["id"])
        await arest("POST", f"/api/v1/alerts/rules/{created[-1]}/test", self.token)

    async def collect(self) -> None:
        models = sorted(await self.market(), key=lambda m: -m["offers"])
        self.model = models[0]["model"]
        live = self.live = Live(self.token)
        await live.client.connect()
        self.channels = [
            "market:summary",
            "market:summary.1m",
            f"gpu:{self.model}",
            f"offers:{self.model}",
            "offers:all",
            "sources:status",
        ]
        for channel in self.channels:
            await live.subscribe(channel)
        await until(lambda: live.snapshots(self.portfolio), "the portfolio snapshot of the connect reply", 10)

        # Machines entered by hand, of the busiest model at its median available price: one idle,
        # one partly rented.
        median = models[0]["price_available"].get("median") or 0.5
        for state, rented in (("idle", 0), ("rented", 1)):
            body = {"platform": "vast", "gpu_model": models[0]["name"], "num_gpus": 2,
                    "price_per_gpu_hour_usd": median, "verified": True, "country": "US", "rented_gpus": rented}
            machine = await arest("POST", "/api/v1/portfolio/machines", self.token, body)
            self.machines[machine["id"]] = state
        await self.make_alerts(models, next(k for k, v in self.machines.items() if v == "idle"))

        questions = (("Is $0.45/h right for my RTX 4090?", "answer"), (f"RTX 4090: {FAIL_MARKER}", "error"))
        for text, outcome in questions:
            result = await live.client.rpc("advisor.ask", {"text": text})
            self.asked[result.data["message_id"]] = outcome

        try:
            await until(self.collected, "a publication of every kind", collect_s(self.interval_s))
        except CheckFailed as e:
            errors = f"; client errors: {'; '.join(live.errors)}" if live.errors else ""
            raise CheckFailed(f"{e}; still missing: {', '.join(self.missing())}{errors}")
        # GET /api/v1/portfolio answers the channel's snapshot: the same schema.
        self.rest_snapshot = await arest("GET", "/api/v1/portfolio", self.token)

    def missing(self) -> List[str]:
        live = self.live
        if live is None:
            return ["a connection"]
        want = []
        for channel in self.channels:
            if not live.snapshots(channel):
                want.append(f"{channel} snapshot")
            if not live.pubs(channel):
                want.append(f"{channel} publication")
        if len(live.pubs("market:summary")) < 2:
            want.append("2 market:summary deltas")
        port = live.pubs(self.portfolio)
        if not any(p.get("changes", {}).get("changed") for p in port if isinstance(p, dict)):
            want.append("a portfolio delta with a changed machine")
        alerts = [a for a in live.pubs(self.alerts) if isinstance(a, dict)]
        if not any(a.get("test") for a in alerts):
            want.append("a test alert")
        if not any(a.get("kind") in ("price", "utilisation") and not a.get("test") for a in alerts):
            want.append("a fired market alert")
        if not any(a.get("kind") == "machine_idle" and not a.get("test") for a in alerts):
            want.append("a fired machine alert")
        events = [(e.get("message_id"), e.get("type")) for e in live.pubs(self.advisor) if isinstance(e, dict)]
        for message_id, outcome in self.asked.items():
            ending = "done" if outcome == "answer" else "error"
            if (message_id, ending) not in events:
                want.append(f"the advisor's {ending}")
        if not any(t == "delta" for _, t in events):
            want.append("an advisor delta")
        return want

    def collected(self) -> bool:
        return not self.missing()

    def validate_channel(self, channel: str, want: Tuple[str, ...]) -> str:
        """Validate everything received on `channel`; `want` names the payload kinds it must
        have had ("snapshot", "pub")."""
        check(self.live is not None, "no connection")
        received = self.live.received.get(channel, [])
        counts: Dict[str, int] = {}
        for i, (kind, data) in enumerate(received):
            name = schema_for(channel, data)
            self.used[name] = self.used.get(name, 0) + 1
            counts[name] = counts.get(name, 0) + 1
            what = "subscribe data" if kind == "snapshot" else "publication"
            check_valid(channel, data, f"payload #{i + 1} ({what})")
        for kind in want:
            what = "snapshot" if kind == "snapshot" else "publication"
            check(any(k == kind for k, _ in received), f"no {what} on {channel}")
        return ", ".join(f"{n} × {c}" for n, c in sorted(counts.items()))


async def live_checks(run: Run, report: Callable[[str, Callable[[], Any]], Any]) -> None:
    async def collect() -> str:
        try:
            await run.collect()
        except Exception as e:  # noqa: BLE001 - reported, and what was received still validated
            if not isinstance(e, CheckFailed):
                traceback.print_exc()
            detail = str(e) if isinstance(e, CheckFailed) else f"{type(e).__name__}: {e}"
            raise CheckFailed(f"collecting: {detail}")
        received = sum(len(v) for v in run.live.received.values()) if run.live else 0
        return f"{received} payloads on {len(run.live.received) if run.live else 0} channels"

    await report("collect a publication of every kind from the hub", collect)
    if run.live is None:
        return
    for channel in list(run.channels):
        await report(f"{channel}: subscribe data and publications",
                     lambda c=channel: run.validate_channel(c, ("snapshot", "pub")))

    def portfolio() -> str:
        used = run.validate_channel(run.portfolio, ("snapshot", "pub"))
        check(run.rest_snapshot is not None, "no GET /api/v1/portfolio answer")
        problem = violation("portfolio-snapshot.json", run.rest_snapshot)
        check(problem is None, f"GET /api/v1/portfolio: {problem}")
        return used + ", GET /api/v1/portfolio"

    await report(f"{run.portfolio}: connect data, machines added by hand, market moves", portfolio)
    await report(f"{run.alerts}: fired alerts (market and machine kinds) and a test delivery",
                 lambda: run.validate_channel(run.alerts, ("pub",)))

    def advisor() -> str:
        used = run.validate_channel(run.advisor, ("pub",))
        types = {e.get("type") for e in run.live.pubs(run.advisor) if isinstance(e, dict)}
        check(types >= {"start", "delta", "done", "error"}, f"advisor events seen: {sorted(types)}")
        return used

    await report(f"{run.advisor}: start, delta, done and error", advisor)

    def coverage() -> str:
        unused = sorted(set(SCHEMAS) - set(run.used))
        check(not unused, f"no real publication was validated against {', '.join(unused)}")
        return f"{sum(run.used.values())} payloads against {len(run.used)} schemas"

    await report("every schema matched real publications", coverage)


async def run_checks(static_only: bool) -> int:
    passed = failed = 0

    async def report(name: str, fn: Callable[[], Any]) -> None:
        nonlocal passed, failed
        started = time.monotonic()
        try:
            result = fn()
            if asyncio.iscoroutine(result):
                result = await result
        except Exception as e:  # noqa: BLE001 - every failure is reported
            failed += 1
            detail = f"{e}" if isinstance(e, CheckFailed) else f"{type(e).__name__}: {e}"
            print(f"FAIL {name}: {detail}", flush=True)
            if not isinstance(e, CheckFailed):
                traceback.print_exc()
        else:
            passed += 1
            note = f": {result}" if isinstance(result, str) and result else ""
            print(f"PASS {name}{note} ({time.monotonic() - started:.2f} s)", flush=True)

    await report(f"{len(SCHEMAS)} schemas in docs/schemas are draft 2020-12 schemas", static_schemas_are_valid)
    await report("$defs shared by several schemas are alike in each", static_shared_defs_agree)
    await report("each schema's example is valid against it", static_examples_are_valid)
    await report("docs/protocol.md: json examples are JSON, payload examples valid", static_doc_examples)
    run = None
    if not static_only:
        run = Run()
        try:
            await live_checks(run, report)
        finally:
            if run.live is not None:
                try:
                    await asyncio.wait_for(run.live.client.disconnect(), 5)
                except Exception:  # noqa: BLE001 - best effort
                    pass
    print(f"{passed} passed, {failed} failed", flush=True)
    return 1 if failed else 0


def main() -> int:
    static_only = "--static" in sys.argv[1:]
    return run_capped(lambda: run_checks(static_only), OVERALL_CAP_S)


if __name__ == "__main__":
    sys.exit(main())
