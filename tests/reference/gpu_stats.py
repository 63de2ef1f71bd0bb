#!/usr/bin/env python3
"""An independent reference for per-model market aggregates, written from the 500.farm exporter's
`/gpu-stats` algorithm (prometheus-vastai, machine_stats.go and the montanaflynn/stats median and
percentile it uses), to check the hub's aggregates against.

Reads a 500.farm `/machines` response (JSON) on stdin and prints, per GPU model name:
  {"rented": leaf, "available": leaf, "all": leaf}, leaf = {"count", "price_median",
  "price_10th_percentile", "price_90th_percentile"} with the exporter's omission rules.
"""
import json
import math
import sys


def median(c):
    n = len(c)
    if n == 0:
        return math.nan
    if n % 2 == 0:
        return (c[n // 2 - 1] + c[n // 2]) / 2
    return c[n // 2]


def percentile(c, percent):
    n = len(c)
    if n == 0:
        return math.nan
    if n == 1:
        return c[0]
    index = (percent / 100) * n
    if index == float(int(index)):
        return c[int(index) - 1]
    if index > 1:
        i = int(index)
        return (c[i - 1] + c[i]) / 2
    return math.nan


def leaf(machines):
    prices = []
    for m in machines:
        prices.extend([m["cents"]] * m["gpus"])
    prices.sort()
    out = {"count": len(prices)}
    med = median(prices)
    if not math.isnan(med):
        out["price_median"] = med / 100
    lo, hi = percentile(prices, 10), percentile(prices, 90)
    if not math.isnan(lo) and not math.isnan(hi):
        out["price_10th_percentile"] = lo / 100
        out["price_90th_percentile"] = hi / 100
    return out


def main():
    body = json.load(sys.stdin)
    by_model = {}
    for r in body["offers"]:
        n = int(r["num_gpus"])
        rented = int(r["num_gpus_rented"])
        # Go: int(DphBase / float64(totalGpus) * 100), truncation toward zero.
        cents = int(r["dph_base"] / n * 100)
        by_model.setdefault(r["gpu_name"], []).append({"n": n, "rented": rented, "cents": cents})
    result = {}
    for name, ms in by_model.items():
        rented = [{"gpus": m["rented"], "cents": m["cents"]} for m in ms if m["rented"] > 0]
        available = [{"gpus": m["n"] - m["rented"], "cents": m["cents"]} for m in ms if m["rented"] < m["n"]]
        everything = [{"gpus": m["n"], "cents": m["cents"]} for m in ms]
        result[name] = {"rented": leaf(rented), "available": leaf(available), "all": leaf(everything)}
    json.dump(result, sys.stdout, sort_keys=True)


if __name__ == "__main__":
    main()
