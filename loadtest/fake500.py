"""A stand-in for 500.farm's /machines at scale, for loadtest/market-poll.sh and loadtest/market-age.sh.

Serves N machines over the 88 models of the captured /gpu-stats fixture, as /machines bodies of
20 fields a record. No validators: every poll is a full body.

    python3 loadtest/fake500.py PORT N          requests alternate between two versions of the
                                                body; the second changes 1% of machines (rentals
                                                and prices)
    python3 loadtest/fake500.py PORT N age      every request gets the market one step on: 1% of
                                                the machines, others each time, change (rentals
                                                toggle, prices move a few percent), and the body's
                                                `timestamp` is the time it is sent, to the ms
"""

import http.server
import json
import pathlib
import random
import sys
import threading
import time

FIXTURE = pathlib.Path(__file__).resolve().parent.parent / "tests/fixtures/500farm/gpu-stats.json"
PLACES = ["Texas, US", "Ontario, CA", "Bavaria, DE", "Tokyo, JP", "Quebec, CA", "Oregon, US", "Hesse, DE", "Sweden, SE"]
# The record fields before the two that move (num_gpus_rented, dph_base) in age mode.
HEAD_FIELDS = ("machine_id", "host_id", "gpu_name", "num_gpus")
# `YYYY-MM-DDTHH:MM:SS.mmmZ`
STAMP_LEN = 24


def machines(n: int, names: list) -> list:
    """The machines' records as the first body has them: the same on every run."""
    rnd = random.Random(7)
    records = []
    for i in range(n):
        gpus = rnd.choice([1, 1, 2, 4, 8])
        rented = rnd.randint(0, gpus)
        price = round(rnd.uniform(0.1, 3.0) * gpus, 4)
        records.append({
            "machine_id": 200000 + i, "host_id": i % 7000, "gpu_name": names[i % len(names)], "num_gpus": gpus,
            "num_gpus_rented": rented, "dph_base": price, "verification": "verified" if i % 3 else "unverified",
            "verified": i % 3 != 0, "hosting_type": 1 if i % 5 == 4 else 0, "geolocation": PLACES[i % len(PLACES)],
            "reliability2": 0.98, "gpu_ram": 24576, "cpu_name": "AMD EPYC 7B13", "disk_space": 1000.5,
            "inet_up": 800.1, "inet_down": 900.2, "chunks": [], "min_chunk": 1,
        })
    return records


def body(n: int, version: int, names: list) -> bytes:
    records = machines(n, names)
    if version == 1:
        for i, record in enumerate(records):
            if i % 100 == 37:
                record["num_gpus_rented"] = (record["num_gpus_rented"] + 1) % (record["num_gpus"] + 1)
                record["dph_base"] = round(record["dph_base"] * 1.05, 4)
    return json.dumps({"url": "/machines", "timestamp": "2026-12-01T00:00:00Z", "count": n, "note": "x",
                       "offers": records}).encode()


def stamp() -> bytes:
    """Now, UTC, to the millisecond: `YYYY-MM-DDTHH:MM:SS.mmmZ`."""
    now = time.time()
    return (time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z").encode()


class ChangingMarket:
    """Age mode: each body is the market one step on. Each record's text is kept around its two
    moving fields, so a body of 20,000 machines is written in tens of milliseconds."""

    def __init__(self, n: int, names: list) -> None:
        records = machines(n, names)
        self.gpus = [r["num_gpus"] for r in records]
        self.rented = [r["num_gpus_rented"] for r in records]
        self.price = [r["dph_base"] for r in records]
        self.heads, self.tails = [], []
        for r in records:
            head = {k: r[k] for k in HEAD_FIELDS}
            tail = {k: v for k, v in r.items() if k not in HEAD_FIELDS + ("num_gpus_rented", "dph_base")}
            self.heads.append(json.dumps(head)[:-1] + ', "num_gpus_rented": ')
            self.tails.append(", " + json.dumps(tail)[1:])
        self.rnd = random.Random(11)
        # The machines in a random order, taken 1% at a time: each step changes other machines.
        self.order = list(range(n))
        self.rnd.shuffle(self.order)
        self.taken = 0
        self.lock = threading.Lock()
        self.n = n

    def step(self) -> None:
        count = max(1, self.n // 100)
        for _ in range(count):
            i = self.order[self.taken % self.n]
            self.taken += 1
            self.rented[i] = self.gpus[i] - self.rented[i]
            move = self.rnd.uniform(0.01, 0.05) * self.rnd.choice((-1, 1))
            self.price[i] = max(0.01, round(self.price[i] * (1 + move), 4))

    def next_body(self) -> tuple:
        """The market one step on, as the body's text before and after its `timestamp`."""
        with self.lock:
            self.step()
            records = ",".join(
                f'{head}{rented}, "dph_base": {price!r}{tail}'
                for head, rented, price, tail in zip(self.heads, self.rented, self.price, self.tails)
            )
        before = b'{"url": "/machines", "timestamp": "'
        after = f'", "count": {self.n}, "note": "x", "offers": [{records}]}}'.encode()
        return before, after


def main() -> None:
    port, n = int(sys.argv[1]), int(sys.argv[2])
    mode = sys.argv[3] if len(sys.argv) > 3 else "alternate"
    if mode not in ("alternate", "age"):
        sys.exit(f"unknown mode {mode!r}: `age`, or none")
    names = [m["name"] for m in json.loads(FIXTURE.read_text())["models"]]
    market = ChangingMarket(n, names) if mode == "age" else None
    bodies = [] if market else [body(n, v, names) for v in (0, 1)]
    served = [0]

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if not self.path.endswith("/machines"):
                self.send_response(404)
                self.end_headers()
                return
            if market:
                before, after = market.next_body()
            else:
                before, after = bodies[served[0] % 2], b""
                served[0] += 1
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(before) + len(after) + (STAMP_LEN if market else 0)))
            self.end_headers()
            # The time the data is taken: just before it goes.
            self.wfile.write(before + stamp() + after if market else before)

        def log_message(self, *args):
            pass

    size = len(b"".join(market.next_body())) + STAMP_LEN if market else len(bodies[0])
    print(f"serving {n} machines ({size} bytes a body, {mode}) on {port}", flush=True)
    http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


if __name__ == "__main__":
    main()
