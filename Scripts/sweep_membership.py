#!/usr/bin/env python3
"""Failure-detector sweep over the simulator (see Scripts/sweep-membership).

Runs `starling-sim --scenario detector` (10% loss all run, a 600 ms-slow node, a stalled node,
crashes: 1 at N < 100, 5 at N >= 100) for every setting x size x seed, and pools the runs per
setting and size: detection time, first suspicion, false positives and false suspicions per
10^4 member-periods, heal times, violations, message cost. Every setting runs the same seeds at
a given size, so the settings are compared on the same fault schedules. Prints one JSON object
on stdout; progress goes to stderr.
"""
import argparse, concurrent.futures, json, os, random, shlex, subprocess, sys, time

# (id, label, flags). The lan candidate's own values (probe timeout 300 ms, indirect 300 ms,
# suspects-first, 3 indirect checks, suspicion x3, K = 2 with memberlist scaling, tell-accused
# on) are the `lan` row; every other row moves one lever away from it.
LAN = ["--preset", "lan"]
SETTINGS = [
    ("memberlist", "memberlist preset (the old lan)", ["--preset", "memberlist"]),
    ("lan", "lan candidate", LAN),
    ("probe-timeout-200", "lan, probe timeout 200 ms", LAN + ["--probe-timeout-ms", "200"]),
    ("probe-timeout-500", "lan, probe timeout 500 ms", LAN + ["--probe-timeout-ms", "500"]),
    ("indirect-200", "lan, indirect timeout 200 ms", LAN + ["--indirect-timeout-ms", "200"]),
    ("indirect-interval", "lan, indirect timeout to the interval's end", LAN + ["--indirect-timeout-ms", "interval"]),
    ("round-robin", "lan, probe order round-robin", LAN + ["--probe-order", "round-robin"]),
    ("indirect-checks-1", "lan, indirect checks 1", LAN + ["--indirect-checks", "1"]),
    ("indirect-checks-2", "lan, indirect checks 2", LAN + ["--indirect-checks", "2"]),
    ("indirect-checks-5", "lan, indirect checks 5", LAN + ["--indirect-checks", "5"]),
    ("suspicion-mult-2", "lan, suspicion mult 2", LAN + ["--suspicion-mult", "2"]),
    ("suspicion-mult-4", "lan, suspicion mult 4", LAN + ["--suspicion-mult", "4"]),
    ("k1", "lan, K 1 (memberlist scaling)", LAN + ["--confirmations", "1"]),
    ("k3", "lan, K 3 (memberlist scaling)", LAN + ["--confirmations", "3"]),
    ("k1-half", "lan, K 1, scaling 0.5", LAN + ["--confirmations", "1", "--confirmation-scaling", "0.5"]),
    ("k2-half", "lan, K 2, scaling 0.5", LAN + ["--confirmations", "2", "--confirmation-scaling", "0.5"]),
    ("k3-half", "lan, K 3, scaling 0.5", LAN + ["--confirmations", "3", "--confirmation-scaling", "0.5"]),
    ("tell-accused-off", "lan, tell-accused off", LAN + ["--tell-accused", "off"]),
]
QUICK = ["memberlist", "lan", "probe-timeout-200"]

# Rough cost of one run on one core, in seconds, for the estimate printed up front.
def run_cost(n):
    return 25.0 * (n / 1000) ** 2 + 0.05 if n >= 100 else 0.05


def default_seeds(n, quick):
    if quick:
        return 3 if n < 50 else (2 if n < 500 else 1)
    return 40 if n < 50 else (8 if n < 500 else 2)


def percentile50(values):
    """The simulator's own convention: the sorted list's element at count / 2."""
    s = sorted(values)
    return s[len(s) // 2] if s else None


def pooled(values):
    return {"p50": percentile50(values), "max": max(values) if values else None, "count": len(values)}


def parse_args():
    p = argparse.ArgumentParser(description="Sweep the failure detector's levers in the simulator.")
    p.add_argument("--sim", default=None, help="the starling-sim binary (default: the release build)")
    p.add_argument("--built-sim", default=None, help=argparse.SUPPRESS)  # the wrapper's release build
    p.add_argument("--sizes", default=None, help="comma-separated N (default 5,100,1000; --quick: 5,100)")
    p.add_argument("--seeds-5", type=int, default=None, dest="seeds5")
    p.add_argument("--seeds-100", type=int, default=None, dest="seeds100")
    p.add_argument("--seeds-1000", type=int, default=None, dest="seeds1000")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    p.add_argument("--quick", action="store_true", help="three settings and few seeds: a smoke run")
    p.add_argument("--markdown", default=None, help="also write the tables to this markdown file")
    p.add_argument("--seed-base", type=int, default=None, help="seeds base, base+1, ... instead of random ones")
    p.add_argument("--only", default=None, help="comma-separated setting ids (see --list), --add's included")
    p.add_argument("--add", action="append", default=[], metavar="ID=FLAGS",
                   help="an extra setting: its id, '=', then starling-sim flags (repeatable)")
    p.add_argument("--scenario", default="detector",
                   help="the simulator scenario (default detector; for example crash: one crash, no loss)")
    p.add_argument("--runs-file", default=None,
                   help="append every run's report here, and take the runs already in it (resume a sweep)")
    p.add_argument("--aggregate-only", action="store_true",
                   help="run nothing: pool the runs already in --runs-file (a sweep still running or cut short)")
    p.add_argument("--run-timeout", type=float, default=3600, help="seconds before one run is abandoned")
    p.add_argument("--list", action="store_true", help="list the settings and exit")
    a = p.parse_args()
    a.sim = a.sim or a.built_sim
    if not a.sim and not a.list:
        p.error("--sim is required (Scripts/sweep-membership passes its release build)")
    if a.aggregate_only and not a.runs_file:
        p.error("--aggregate-only needs --runs-file")
    if a.jobs < 1 or a.jobs > 256:
        p.error("--jobs must be 1-256")
    return a


def main():
    a = parse_args()
    settings = [(i, label, flags) for (i, label, flags) in SETTINGS]
    for extra in a.add:
        sid, _, flags = extra.partition("=")
        if not sid or not flags:
            sys.exit(f"--add wants ID=FLAGS, got {extra!r}")
        settings.append((sid, f"{sid}: {flags}", shlex.split(flags)))
    if a.list:
        for sid, label, flags in settings:
            print(f"{sid:20} {label:45} {' '.join(flags)}")
        return
    if a.only:
        wanted = a.only.split(",")
        unknown = [w for w in wanted if w not in {s[0] for s in settings}]
        if unknown:
            sys.exit(f"unknown setting ids: {', '.join(unknown)} (see --list)")
        settings = [s for s in settings if s[0] in wanted]
    elif a.quick:
        settings = [s for s in settings if s[0] in QUICK] + settings[len(SETTINGS):]
    if len({s[0] for s in settings}) != len(settings):
        sys.exit("setting ids must be unique")

    sizes = [int(x) for x in (a.sizes or ("5,100" if a.quick else "5,100,1000")).split(",")]
    if any(n < 1 or n > 20000 for n in sizes):
        sys.exit("--sizes: each N must be 1-20000")
    explicit = {5: a.seeds5, 100: a.seeds100, 1000: a.seeds1000}
    rng = random.Random()
    seeds = {}
    for n in sizes:
        count = explicit.get(n) if explicit.get(n) is not None else default_seeds(n, a.quick)
        if a.seed_base is not None:
            seeds[n] = [a.seed_base + i for i in range(count)]
        else:
            seeds[n] = [rng.randrange(0, 2**32) for _ in range(count)]

    flags_of = {sid: flags for (sid, _, flags) in settings}
    # The runs file keeps every finished run, so that a sweep cut short resumes where it stopped:
    # its first line holds the seeds, which a resumed sweep takes over for the sizes it shares.
    done_before = {}
    if a.runs_file:
        lines = []
        if os.path.exists(a.runs_file) and os.path.getsize(a.runs_file) > 0:
            with open(a.runs_file) as f:
                lines = f.read().splitlines()
            kept = json.loads(lines[0]).get("seeds", {})
            for key, value in kept.items():
                n = int(key)
                if n in seeds:
                    seeds[n] = (value + seeds[n][len(value):])[:len(seeds[n])]
            for line in lines[1:]:
                try:
                    run_record = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut short by an interrupted sweep
                if run_record.get("report") is not None and run_record.get("scenario", "detector") == a.scenario:
                    done_before[(tuple(run_record["flags"]), run_record["nodes"], run_record["seed"])] = run_record["report"]
            merged = dict(kept, **{str(n): seeds[n] for n in sizes})
        else:
            merged = {str(n): seeds[n] for n in sizes}
        if not a.aggregate_only:  # a sweep may still be appending to it
            with open(a.runs_file, "w") as f:
                f.write("\n".join([json.dumps({"seeds": merged})] + lines[1:]) + "\n")

    # Smallest N first, and at each N one seed of every setting before the next seed: a sweep
    # stopped early still has every setting at the sizes it reached.
    tasks = [(sid, n, seeds[n][i]) for n in sorted(sizes) for i in range(len(seeds[n])) for (sid, _, _) in settings]
    results = {}
    for task in tasks:
        previous = done_before.get((tuple(flags_of[task[0]]), task[1], task[2]))
        if previous is not None:
            results[task] = (previous, None)
    if results:
        print(f"sweep: {len(results)} runs taken from {a.runs_file}", file=sys.stderr)
    tasks = [t for t in tasks if t not in results]
    missing = []
    if a.aggregate_only:
        missing, tasks = tasks, []
    estimate = sum(run_cost(n) for (_, n, _) in tasks) / a.jobs
    print(f"sweep: {len(settings)} settings, sizes {sizes}, {len(tasks)} runs on {a.jobs} jobs; "
          f"about {estimate / 60:.1f} min on an idle machine", file=sys.stderr)

    def command(sid, n, seed):
        return [a.sim, "--scenario", a.scenario, "--nodes", str(n), "--seed", str(seed), "--json"] + flags_of[sid]

    def run(task):
        sid, n, seed = task
        cmd = command(sid, n, seed)
        started = time.time()
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=a.run_timeout)
        except subprocess.TimeoutExpired:
            return task, None, f"timed out after {a.run_timeout:.0f} s", time.time() - started
        try:
            report = json.loads(p.stdout)
        except json.JSONDecodeError:
            return task, None, f"exit {p.returncode}, no JSON: {p.stderr.strip()[-500:]}", time.time() - started
        return task, report, None, time.time() - started

    started = time.time()
    done = 0
    with concurrent.futures.ThreadPoolExecutor(max_workers=a.jobs) as pool:
        for future in concurrent.futures.as_completed([pool.submit(run, t) for t in tasks]):
            task, report, error, took = future.result()
            done += 1
            results[task] = (report, error)
            if a.runs_file:
                with open(a.runs_file, "a") as f:
                    f.write(json.dumps({"scenario": a.scenario, "setting": task[0], "flags": flags_of[task[0]], "nodes": task[1], "seed": task[2],
                                        "report": report, "error": error}) + "\n")
            sid, n, seed = task
            status = error or f"{len(report['violations'])} violations"
            print(f"[{done}/{len(tasks)}] {sid} N={n} seed={seed}: {took:.1f} s, {status}", file=sys.stderr)

    rows = []
    for n in sorted(sizes):
        for sid, label, flags in settings:
            reports, errors = [], []
            for seed in seeds[n]:
                if (sid, n, seed) not in results:
                    continue  # --aggregate-only: a run the runs file does not have yet
                report, error = results[(sid, n, seed)]
                if report is None:
                    errors.append({"seed": seed, "error": error, "reproduce": shlex.join(command(sid, n, seed))})
                else:
                    reports.append(report)
            member_periods = sum(r["nodes"] * r["periods"] for r in reports)
            per10k = lambda key: (sum(r[key] for r in reports) * 1e4 / member_periods) if member_periods else None
            samples = lambda key: [v for r in reports for v in r[key]["values"]]
            violating = [r for r in reports if r["violations"]]
            # Crashes per run, as the scenarios schedule them (None: a scenario this script does not know).
            crashes_per_run = {"detector": 5 if n >= 100 else 1, "crash": 1}.get(a.scenario)
            row = {
                "setting": sid, "label": label, "flags": flags, "nodes": n,
                "runs": len(reports), "errors": errors,
                "crashes": crashes_per_run * len(reports) if crashes_per_run is not None else None,
                "detectionPeriods": pooled(samples("detectionPeriods")),
                "firstSuspicionPeriods": pooled(samples("firstSuspicionPeriods")),
                "falsePositives": sum(r["falsePositives"] for r in reports),
                "falseSuspicions": sum(r["falseSuspicions"] for r in reports),
                "memberPeriods": member_periods,
                "falsePositivesPer10kMemberPeriods": per10k("falsePositives"),
                "falseSuspicionsPer10kMemberPeriods": per10k("falseSuspicions"),
                "healPeriods": pooled(samples("healPeriods")),
                "healToAlivePeriods": pooled(samples("healToAlivePeriods")),
                "unhealed": sum(r["unhealed"] for r in reports),
                "violationRuns": len(violating),
                "messagesPerMemberPerPeriod": (sum(r["messagesPerMemberPerPeriod"] * r["nodes"] * r["periods"] for r in reports)
                                               / member_periods) if member_periods else None,
            }
            counters = {}
            for r in reports:
                for key, value in (r.get("protocolCounters") or {}).items():
                    counters[key] = counters.get(key, 0) + value
            if counters:
                row["protocolCounters"] = counters
            if violating:
                first = violating[0]
                row["firstViolation"] = first["violations"][0]
                row["reproduce"] = shlex.join(command(sid, n, first["seed"]))
            rows.append(row)

    out = {
        "benchmark": "membership-sweep", "scenario": a.scenario,
        "note": "periods are protocol periods (1 s in the lan and memberlist presets); every setting runs the same seeds at a size",
        "command": shlex.join(["Scripts/sweep-membership"] + user_arguments()),
        "sizes": sizes, "seeds": {str(n): seeds[n] for n in sizes}, "jobs": a.jobs,
        "settings": [{"id": sid, "label": label, "flags": flags} for (sid, label, flags) in settings],
        "results": rows, "wallSeconds": round(time.time() - started, 1),
        "missingRuns": [{"setting": sid, "nodes": n, "seed": seed} for (sid, n, seed) in missing],
    }
    if a.markdown:
        with open(a.markdown, "w") as f:
            f.write(markdown(out))
    print(json.dumps(out))
    return 0


def user_arguments():
    """The command line as the user gave it, without the build the wrapper added."""
    args = sys.argv[1:]
    if "--built-sim" in args:
        i = args.index("--built-sim")
        del args[i:i + 2]
    return args


def fmt(x, digits=1):
    if x is None:
        return "–"
    return f"{x:.{digits}f}"


def markdown(out):
    about = {"detector": " (10% loss, a 600 ms-slow node, a stalled node, crashes)", "crash": " (one crash, no loss)"}
    lines = [f"Failure-detector sweep, scenario `{out['scenario']}`{about.get(out['scenario'], '')}, "
             f"`{out['command']}`. Times in protocol periods (1 s). FP and false suspicions per 10⁴ member-periods.", ""]
    for n in out["sizes"]:
        rows = [r for r in out["results"] if r["nodes"] == n]
        lines += [f"### N = {n}", "",
                  "| setting | runs | detection p50 | detection max | detected/crashes | first suspicion p50 | FP /10⁴ | false suspicions /10⁴ | heal p50 / max | unhealed | msgs/member/period | runs with violations |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for r in rows:
            d, s, h = r["detectionPeriods"], r["firstSuspicionPeriods"], r["healPeriods"]
            heal = f"{fmt(h['p50'])} / {fmt(h['max'])}" if h["count"] else "–"
            violations = str(r["violationRuns"]) + (f" ({len(r['errors'])} errors)" if r["errors"] else "")
            lines.append(f"| {r['label']} | {r['runs']} | {fmt(d['p50'], 2)} | {fmt(d['max'], 2)} | {d['count']}/{r['crashes'] if r['crashes'] is not None else '?'} | {fmt(s['p50'], 2)} | "
                         f"{fmt(r['falsePositivesPer10kMemberPeriods'], 2)} | {fmt(r['falseSuspicionsPer10kMemberPeriods'], 1)} | "
                         f"{heal} | {r['unhealed']} | {fmt(r['messagesPerMemberPerPeriod'], 2)} | {violations} |")
        lines.append("")
    violating = [r for r in out["results"] if r.get("firstViolation")]
    if violating:
        lines += ["Violations (first per setting and size):", ""]
        for r in violating:
            lines.append(f"- {r['label']}, N = {r['nodes']}: {r['firstViolation']} — `{r['reproduce']}`")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
