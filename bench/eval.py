#!/usr/bin/env python3
"""Detection accuracy on the labelled scenarios (`make eval`). Standard library only.

    python3 bench/eval.py [--check] [--slack SECONDS] DIR...

Each DIR holds `labels.json` (written by `gen-logs scenarios`) and `alerts.jsonl` (written by
`exfilwatch replay -q DIR/logs -o DIR/alerts.jsonl`). Only alerts of severity medium or higher
count. Matching:

- an alert **matches a theft** when its account is the theft's account, its credential is one
  of the theft's credentials and its `trigger_event_time` lies in [theft start, theft end +
  slack] (slack default 900 s: the reorder tolerance of 10 min plus margin);
- an unmatched alert is **expected** when it lies in the span (+ slack) of a benign event of
  the same account and credential labelled `expect_alert` (a migration whose new origin read
  >= 1 GiB in its first day, the first month-end batch in the data);
- an unmatched alert before the labels' `warmup_end` is counted apart (warm-up);
- every other one is a **false alert**; the benign events of the same key around its trigger
  are listed with it so a developer can see why.

Figures, per seed and overall: recall per theft kind; false alerts per 1000 key-days (key-days:
days after the warm-up on which a key read, from the labels); the delay from the theft's
crossing of 1 GiB (its own bytes) to the first matching alert, in event-time seconds (negative:
the alert came before the theft alone reached 1 GiB). With --check the exit code is 1 when a
goal is missed: recall 1.0 for every kind in every seed, <= 0.1 false alerts per 1000 key-days,
median delay < 60 s.
"""

import argparse
import json
import os
import statistics
import sys
from datetime import datetime, timezone

SEVERITY = {"info": 0, "low": 1, "medium": 2, "high": 3, "critical": 4}
GOAL_FA_PER_1000 = 0.1
GOAL_MEDIAN_DELAY_S = 60.0


def ts(s):
    """RFC 3339 UTC with 0-9 fractional digits -> epoch seconds (float)."""
    s = s.rstrip("Z")
    frac = 0.0
    if "." in s:
        s, f = s.split(".", 1)
        frac = float("0." + f)
    return datetime.strptime(s, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc).timestamp() + frac


def load(d):
    with open(os.path.join(d, "labels.json")) as f:
        labels = json.load(f)
    alerts = []
    path = os.path.join(d, "alerts.jsonl")
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if line:
                try:
                    alerts.append(json.loads(line))
                except json.JSONDecodeError as e:
                    sys.exit(f"{path}:{n}: not JSON: {e}")
    return labels, alerts


def evaluate(d, slack):
    labels, alerts = load(d)
    warmup_end = ts(labels["generator"]["warmup_end"])
    thefts = labels["thefts"]
    for t in thefts:
        t["_s"], t["_e"] = ts(t["start"]), ts(t["end"])
        t["_x"] = ts(t["crosses_1gib"]) if t.get("crosses_1gib") else None
        t["_hits"] = []
    benign = labels["benign"]
    for b in benign:
        b["_s"], b["_e"] = ts(b["start"]), ts(b["end"])
    key_days = sum(k["active_key_days_after_warmup"] for a in labels["accounts"] for k in a["keys"])
    res = {"seed": labels["generator"]["seed"], "dir": d, "key_days": key_days, "alerts": len(alerts),
           "below_medium": 0, "false": [], "expected": [], "warmup": 0, "thefts": thefts}
    for al in alerts:
        if SEVERITY.get(al.get("severity"), 0) < SEVERITY["medium"]:
            res["below_medium"] += 1
            continue
        at = ts(al["trigger_event_time"])
        acct, cred = al.get("account"), al.get("credential")
        hit = [t for t in thefts if t["account"] == acct and cred in t["credentials"] and t["_s"] <= at <= t["_e"] + slack]
        for t in hit:
            t["_hits"].append((at, al))
        if hit:
            continue
        same_key = [b for b in benign if b["account"] == acct and b["credential"] == cred]
        if any(b["expect_alert"] and b["_s"] <= at <= b["_e"] + slack for b in same_key):
            res["expected"].append(al)
            continue
        if at < warmup_end:
            res["warmup"] += 1
            continue
        near = [b for b in same_key if b["_s"] - 3600 <= at <= b["_e"] + slack and b["kind"] != "autoscaling"]
        al["_near"] = sorted({f'{b["kind"]} ({b["start"][:16]}, {b["bytes"] / 2**30:.2f} GiB)' for b in near})
        res["false"].append(al)
    for t in thefts:
        t["_hits"].sort(key=lambda h: h[0])
        t["_delay"] = (t["_hits"][0][0] - t["_x"]) if t["_hits"] and t["_x"] is not None else None
    return res


def fmt_delay(v):
    return "-" if v is None else f"{v:+.0f} s"


def report(results, slack):
    kinds = []
    for r in results:
        for t in r["thefts"]:
            if t["kind"] not in kinds:
                kinds.append(t["kind"])
    ok = True
    all_delays, all_false, all_kd = [], 0, 0
    per_kind = {k: [0, 0] for k in kinds}
    for r in results:
        print(f'== seed {r["seed"]} ({r["dir"]}): {r["alerts"]} alerts ({r["below_medium"]} below medium, '
              f'{r["warmup"]} unmatched during warm-up, {len(r["expected"])} expected on labelled benign events), '
              f'{r["key_days"]} key-days after warm-up')
        print(f'   {"kind":<30} {"found":>5}  {"delay":>8}  first alert (rule, severity) / why missed')
        delays = []
        for t in r["thefts"]:
            found = bool(t["_hits"])
            per_kind[t["kind"]][0] += found
            per_kind[t["kind"]][1] += 1
            if found:
                at, al = t["_hits"][0]
                if t["_delay"] is not None:
                    delays.append(t["_delay"])
                what = f'{al["rule"]} ({al["severity"]}) on {al["credential"]}'
            else:
                ok = False
                what = (f'MISSED: {t["account"]} {"+".join(t["credentials"])}, {t["bytes"] / 2**30:.2f} GiB '
                        f'{t["start"][:16]}..{t["end"][:16]}; {t["note"]}')
            print(f'   {t["kind"]:<30} {"yes" if found else "NO":>5}  {fmt_delay(t["_delay"]):>8}  {what}')
        fa = len(r["false"])
        rate = 1000.0 * fa / r["key_days"] if r["key_days"] else float("inf")
        print(f'   false alerts (medium+): {fa} = {rate:.2f} per 1000 key-days')
        for al in r["false"]:
            near = "; during: " + ", ".join(al["_near"]) if al["_near"] else ""
            print(f'     - {al["trigger_event_time"][:19]} {al["rule"]} ({al["severity"]}) '
                  f'{al["account"]} {al["credential"]}: {al.get("summary", "")}{near}')
        for al in r["expected"]:
            print(f'     (expected) {al["trigger_event_time"][:19]} {al["rule"]} ({al["severity"]}) '
                  f'{al["account"]} {al["credential"]}: {al.get("summary", "")}')
        if delays:
            print(f'   delay from 1 GiB to first alert: median {statistics.median(delays):+.0f} s, max {max(delays):+.0f} s')
        all_delays += delays
        all_false += fa
        all_kd += r["key_days"]
    print(f"== overall ({len(results)} seeds, slack {slack:.0f} s)")
    for k in kinds:
        f, n = per_kind[k]
        print(f"   recall {k:<30} {f}/{n} = {f / n:.2f}")
    rate = 1000.0 * all_false / all_kd if all_kd else float("inf")
    print(f"   false alerts (medium+): {all_false} in {all_kd} key-days = {rate:.2f} per 1000 key-days "
          f"(goal <= {GOAL_FA_PER_1000})")
    med = statistics.median(all_delays) if all_delays else None
    if all_delays:
        print(f"   delay from 1 GiB to first alert: median {med:+.0f} s, max {max(all_delays):+.0f} s "
              f"over {len(all_delays)} detected thefts (goal: median < {GOAL_MEDIAN_DELAY_S:.0f} s)")
    if rate > GOAL_FA_PER_1000 or med is None or med >= GOAL_MEDIAN_DELAY_S:
        ok = False
    print(f'   goals: {"met" if ok else "MISSED"}')
    return ok


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dirs", nargs="+", help="scenario directories (labels.json, alerts.jsonl)")
    ap.add_argument("--slack", type=float, default=900.0, help="seconds after a theft's end an alert may still match")
    ap.add_argument("--check", action="store_true", help="exit 1 when a goal is missed")
    args = ap.parse_args()
    results = [evaluate(d, args.slack) for d in args.dirs]
    ok = report(results, args.slack)
    if args.check and not ok:
        sys.exit(1)


if __name__ == "__main__":
    main()
