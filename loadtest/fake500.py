"""A stand-in for 500.farm's /machines at scale, for loadtest/market-poll.sh.

Serves N machines over the 88 models of the captured /gpu-stats fixture, as /machines bodies of
20 fields a record. Requests alternate between two versions of the body; the second changes 1% of
machines (rentals and prices). No validators: every poll is a full body.

    python3 loadtest/fake500.py PORT N
"""

import http.server
import json
import pathlib
import random
import sys

FIXTURE = pathlib.Path(__file__).resolve().parent.parent / "tests/fixtures/500farm/gpu-stats.json"
PLACES = ["Texas, US", "Ontario, CA", "Bavaria, DE", "Tokyo, JP", "Quebec, CA", "Oregon, US", "Hesse, DE", "Sweden, SE"]


def body(n: int, version: int, names: list) -> bytes:
    rnd = random.Random(7)
    records = []
    for i in range(n):
        gpus = rnd.choice([1, 1, 2, 4, 8])
        rented = rnd.randint(0, gpus)
        price = round(rnd.uniform(0.1, 3.0) * gpus, 4)
        if version == 1 and i % 100 == 37:
            rented = (rented + 1) % (gpus + 1)
            price = round(price * 1.05, 4)
        records.append({
            "machine_id": 200000 + i, "host_id": i % 7000, "gpu_name": names[i % len(names)], "num_gpus": gpus,
            "num_gpus_rented": rented, "dph_base": price, "verification": "verified" if i % 3 else "unverified",
            "verified": i % 3 != 0, "hosting_type": 1 if i % 5 == 4 else 0, "geolocation": PLACES[i % len(PLACES)],
            "reliability2": 0.98, "gpu_ram": 24576, "cpu_name": "AMD EPYC 7B13", "disk_space": 1000.5,
            "inet_up": 800.1, "inet_down": 900.2, "chunks": [], "min_chunk": 1,
        })
    return json.dumps({"url": "/machines", "timestamp": "2026-12-01T00:00:00Z", "count": n, "note": "x",
                       "offers": records}).encode()


def main() -> None:
    port, n = int(sys.argv[1]), int(sys.argv[2])
    names = [m["name"] for m in json.loads(FIXTURE.read_text())["models"]]
    bodies = [body(n, v, names) for v in (0, 1)]
    served = [0]

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if not self.path.endswith("/machines"):
                self.send_response(404)
                self.end_headers()
                return
            data = bodies[served[0] % 2]
            served[0] += 1
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    print(f"serving {n} machines ({len(bodies[0])} bytes a body) on {port}", flush=True)
    http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


if __name__ == "__main__":
    main()
