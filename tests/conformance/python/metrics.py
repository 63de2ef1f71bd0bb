"""`/metrics` of a running hub read by the Prometheus client library's own text-format parser
(prometheus_client.parser): every family parses, has a HELP text and the type its name promises
(counters end in `_total`, durations and ages are in seconds, sizes in bytes, histograms have
cumulative buckets ending in `+Inf` equal to their count), and the series an operator relies on
are there with their labels and plausible values.

Environment (run.sh sets it):
  GPUSCOUT_URL   http://127.0.0.1:PORT of the hub schemas.py just drove: the simulated market
                 polled, an advisor question answered by the OpenAI-compatible fake and one
                 refused by it, alert rules fired

Prints one line per check and "N passed, N failed"; exits 1 on any failure. Bounded: every
request has a timeout, the whole run 30 s.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
import urllib.error
import urllib.request
import uuid
from typing import Dict, List

from checks import CheckFailed, check, env, run_capped
from prometheus_client.parser import text_string_to_metric_families

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def get(url: str, method: str = "GET") -> tuple[int, str]:
    try:
        with OPENER.open(urllib.request.Request(url, method=method), timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def scrape(hub: str) -> Dict[str, object]:
    status, text = get(f"{hub}/metrics")
    check(status == 200, f"/metrics answered {status}")
    # The parser raises on anything outside the text format. It names a counter's family without
    # `_total`, so `gpuscout_connections_total` (counter) and `gpuscout_connections` (gauge) would
    # share a name: families are keyed here by the name they are exposed under.
    families = {}
    for f in text_string_to_metric_families(text):
        name = f.name + "_total" if f.type == "counter" else f.name
        check(name not in families, f"{name} is declared twice")
        families[name] = f
    check(families, "no metric family parsed")
    return families


def samples(families: Dict[str, object], family: str, suffix: str = "") -> List[object]:
    """The samples of `family` (its exposed name) named `family + suffix`."""
    check(family in families, f"{family} is missing")
    return [s for s in families[family].samples if s.name == family + suffix]


def one(families, family: str, suffix: str = "", **labels) -> float:
    found = [s for s in samples(families, family, suffix) if all(s.labels.get(k) == v for k, v in labels.items())]
    check(len(found) == 1, f"{family}{suffix} {labels}: {len(found)} samples")
    return found[0].value


def version_of_cargo_toml() -> str:
    with open(os.path.join(ROOT, "Cargo.toml"), encoding="utf-8") as f:
        in_package = False
        for line in f:
            if line.strip().startswith("["):
                in_package = line.strip() == "[package]"
            m = re.match(r'version\s*=\s*"([^"]+)"', line.strip())
            if in_package and m:
                return m.group(1)
    raise CheckFailed("no [package] version in Cargo.toml")


def check_every_family(families) -> None:
    """Names, HELP, types and units by the conventions Prometheus documents."""
    for name, f in families.items():
        check(re.fullmatch(r"[a-zA-Z_:][a-zA-Z0-9_:]*", name), f"{name}: not a valid metric name")
        check(f.documentation.strip(), f"{name}: no HELP text")
        check(f.type in ("counter", "gauge", "histogram"), f"{name}: type {f.type}")
        check(not re.search(r"_(ms|milliseconds|kb|mb|percent)$", name), f"{name}: not a base unit")
        if re.search(r"(duration|latency|age|first_token|time)", name) and f.type != "counter":
            check(name.endswith("_seconds"), f"{name}: a time not in seconds")
        for s in f.samples:
            if f.type == "counter":
                check(name.endswith("_total") and s.name == name, f"{s.name}: a counter sample without _total")
                check(s.value >= 0, f"{s.name}{s.labels}: a negative counter")
            if f.type == "histogram":
                check(s.name.endswith(("_bucket", "_sum", "_count", "_created")), f"{s.name}: not a histogram series")


def check_histograms(families) -> None:
    for name, f in families.items():
        if f.type != "histogram":
            continue
        series: Dict[tuple, list] = {}
        counts: Dict[tuple, float] = {}
        for s in f.samples:
            key = tuple(sorted((k, v) for k, v in s.labels.items() if k != "le"))
            if s.name == name + "_bucket":
                series.setdefault(key, []).append((float(s.labels["le"]), s.value))
            elif s.name == name + "_count":
                counts[key] = s.value
        for key, buckets in series.items():
            values = [v for _, v in sorted(buckets)]
            check(values == sorted(values), f"{name}{dict(key)}: buckets not cumulative")
            check(sorted(buckets)[-1][0] == float("inf"), f"{name}{dict(key)}: no +Inf bucket")
            check(values[-1] == counts.get(key), f"{name}{dict(key)}: +Inf {values[-1]} != count {counts.get(key)}")


def check_operator_series(hub: str, families) -> None:
    types = {
        "gpuscout_build_info": "gauge",
        "gpuscout_connections": "gauge",
        "gpuscout_leader": "gauge",
        "gpuscout_connections_total": "counter",
        "gpuscout_publications_total": "counter",
        "gpuscout_deliveries_total": "counter",
        "gpuscout_command_duration_seconds": "histogram",
        "gpuscout_http_requests_total": "counter",
        "gpuscout_http_request_duration_seconds": "histogram",
        "gpuscout_source_polls_total": "counter",
        "gpuscout_source_data_age_seconds": "gauge",
        "gpuscout_alert_deliveries_total": "counter",
        "gpuscout_advisor_first_token_seconds": "histogram",
        "gpuscout_advisor_errors_total": "counter",
        "process_cpu_seconds_total": "counter",
        "process_resident_memory_bytes": "gauge",
        "process_virtual_memory_bytes": "gauge",
        "process_open_fds": "gauge",
        "process_max_fds": "gauge",
        "process_start_time_seconds": "gauge",
    }
    for name, kind in types.items():
        check(name in families, f"{name} is missing")
        check(families[name].type == kind, f"{name}: {families[name].type}, not {kind}")

    info = samples(families, "gpuscout_build_info")
    check(len(info) == 1 and info[0].value == 1, f"gpuscout_build_info: {info}")
    check(info[0].labels.get("version") == version_of_cargo_toml(), f"build version {info[0].labels}")
    check(re.fullmatch(r"[0-9a-f]{7,40}", info[0].labels.get("commit", "")), f"build commit {info[0].labels}")

    rss = one(families, "process_resident_memory_bytes")
    check(1e6 < rss < 8e9, f"resident memory {rss} bytes")
    fds, max_fds = one(families, "process_open_fds"), one(families, "process_max_fds")
    check(3 <= fds <= max_fds, f"open fds {fds}, max {max_fds}")
    started = one(families, "process_start_time_seconds")
    check(time.time() - 3600 < started <= time.time() + 1, f"start time {started}")
    check(one(families, "process_cpu_seconds_total") > 0, "no CPU time")

    ok_polls = [s for s in samples(families, "gpuscout_source_polls_total") if s.labels == {"source": "simulated", "result": "ok"}]
    check(ok_polls and ok_polls[0].value >= 1, f"no successful poll of the simulated source: {ok_polls}")
    for s in samples(families, "gpuscout_source_polls_total"):
        check(s.labels.get("result") in ("ok", "error"), f"poll result {s.labels}")
    ages = samples(families, "gpuscout_source_data_age_seconds")
    check(any(s.labels.get("source") == "simulated" for s in ages), f"no data age for the polled source: {ages}")
    check(all(s.value >= 0 for s in ages), f"a data age below 0 (a sentinel): {ages}")

    for s in samples(families, "gpuscout_alert_deliveries_total"):
        check(s.labels.get("channel") in ("webhook", "push", "email"), f"alert delivery channel {s.labels}")
        check(s.labels.get("result") in ("delivered", "retried", "failed"), f"alert delivery result {s.labels}")

    answered = one(families, "gpuscout_advisor_first_token_seconds", "_count", provider="openai")
    check(answered >= 1, "no first token timed for the openai provider")
    check(one(families, "gpuscout_advisor_errors_total", provider="openai") >= 1, "the refused answer was not counted")


def check_http_series(hub: str) -> None:
    """Requests counted by route pattern and status; an unknown path is `fallback`, never its own
    series."""
    stray = f"/no-such-page-{uuid.uuid4().hex}"
    check(get(f"{hub}/healthz")[0] == 200, "/healthz")
    check(get(f"{hub}{stray}")[0] == 404, f"{stray} was not 404")
    status, _ = get(f"{hub}/api/v1/keys/{uuid.uuid4().hex}", "DELETE")
    check(status == 401, f"an unauthenticated key request answered {status}")
    families = scrape(hub)
    requests = samples(families, "gpuscout_http_requests_total")
    routes = {s.labels["route"] for s in requests}
    check(not any("no-such-page" in r for r in routes), f"a raw path became a series: {routes}")
    check(all(set(s.labels) == {"route", "status"} for s in requests), f"labels {[s.labels for s in requests]}")
    check(one(families, "gpuscout_http_requests_total", route="/healthz", status="200") >= 1, "/healthz not counted")
    check(one(families, "gpuscout_http_requests_total", route="fallback", status="404") >= 1, "the 404 not counted")
    check(
        one(families, "gpuscout_http_requests_total", route="/api/v1/keys/{id}", status="401") >= 1,
        f"the key route not counted by its pattern: {sorted(routes)}",
    )
    timed = one(families, "gpuscout_http_request_duration_seconds", "_count", route="/healthz", status="200")
    check(timed >= 1, "/healthz not timed")


async def main() -> int:
    hub = env("GPUSCOUT_URL").rstrip("/")
    passed = failed = 0
    families = scrape(hub)
    for name, run in [
        ("every family: name, HELP, type and unit", lambda: check_every_family(families)),
        ("histograms: cumulative buckets, +Inf equals the count", lambda: check_histograms(families)),
        ("the series operators watch", lambda: check_operator_series(hub, families)),
        ("HTTP requests by route pattern and status", lambda: check_http_series(hub)),
    ]:
        try:
            run()
            print(f"ok   {name}")
            passed += 1
        except CheckFailed as e:
            print(f"FAIL {name}: {e}")
            failed += 1
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(run_capped(main, 30))
