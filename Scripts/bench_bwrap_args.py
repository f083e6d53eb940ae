#!/usr/bin/env python3
"""What bwrap's own isolation options cost, before any Starling code runs.

Usage: bench_bwrap_args.py [--rounds N] [--tasks N] [--workers N]

Runs `/bin/true` under bwrap with the baseline arguments of Scripts/bench-swarm (the namespaces,
/usr, /proc, /dev, /tmp) and again with each group of options a Starling sandbox adds on top
(`Sources/StarlingSandbox/Bubblewrap.swift`): the unprivileged ids and hostname, the three /etc
files, the task's work directory, the init stub and run directory mounts, `--clearenv` (which
changes nothing here, since bwrap's environment is PATH alone: its distance from 1 shows the
noise); and all of them at once ("all"). Seccomp and the init stub's own exec are not in it (they need Starling's
filter and stub; `starling sandbox bench --throughput` measures the whole sandbox). Variants are
interleaved, round by round, in a new order each round (seeded: `--seed`), so the machine's
drift falls on all of them.

Per variant: the median over rounds of tasks/s and of the machine's busy CPU per task
(/proc/stat, so the kernel's namespace and mount teardown in its own threads counts), and the
rate as a fraction of "base" measured in the same rounds. Prints one JSON object.
"""
import argparse, concurrent.futures, json, os, random, shutil, statistics, subprocess, tempfile, time

BASE = ["--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent", "--new-session",
        "--cap-drop", "ALL", "--ro-bind", "/usr", "/usr", "--symlink", "usr/bin", "/bin", "--symlink", "usr/lib", "/lib",
        "--symlink", "usr/lib64", "/lib64", "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
ENV = {"PATH": "/usr/bin:/bin"}


def busy_jiffies():
    # user, nice, system, irq, softirq: not idle, iowait, steal (another guest's), nor guest
    # time (already inside user).
    with open("/proc/stat") as f:
        v = list(map(int, f.readline().split()[1:]))
    return v[0] + v[1] + v[2] + v[5] + v[6]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--tasks", type=int, default=300)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    if not (1 <= a.rounds <= 100 and 1 <= a.tasks <= 100_000 and 1 <= a.workers <= 64):
        ap.error("rounds 1-100, tasks 1-100000, workers 1-64")
    bwrap = shutil.which("bwrap")
    if not bwrap:
        raise SystemExit("bwrap not found (Scripts/bootstrap installs it)")
    work, run = tempfile.mkdtemp(prefix="bwrap-args-"), tempfile.mkdtemp(prefix="bwrap-args-")
    etc = [e for e in ["/etc/alternatives", "/etc/ld.so.cache", "/etc/localtime"] if os.path.exists(e)]
    variants = {
        "base": [],
        "ids": ["--uid", "65534", "--gid", "65534", "--hostname", "sandbox"],
        "etc": sum([["--ro-bind", e, e] for e in etc], []),
        "workdir": ["--bind", work, "/task", "--chdir", "/task"],
        "initAndRunDir": ["--ro-bind", "/usr/bin/true", "/run/starling-init", "--ro-bind", run, "/run/starling"],
        "clearenv": ["--clearenv"],
    }
    variants["all"] = sum(variants.values(), [])
    tick = os.sysconf("SC_CLK_TCK")
    results = {v: [] for v in variants}
    try:
        order = random.Random(a.seed)
        for _ in range(a.rounds):
            names = list(variants)
            order.shuffle(names)
            for name in names:
                extra = variants[name]
                argv = [bwrap] + BASE + extra + ["--", "/bin/true"]
                def one(_):
                    return subprocess.run(argv, env=ENV, stdin=subprocess.DEVNULL).returncode
                b0, t0 = busy_jiffies(), time.perf_counter()
                with concurrent.futures.ThreadPoolExecutor(a.workers) as ex:
                    codes = list(ex.map(one, range(a.tasks)))
                t1, b1 = time.perf_counter(), busy_jiffies()
                if any(codes):
                    raise SystemExit(f"{name}: {sum(1 for c in codes if c)} of {a.tasks} runs failed")
                results[name].append((a.tasks / (t1 - t0), (b1 - b0) * 1000 / tick / a.tasks))
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(run, ignore_errors=True)
    base_rates = [r for r, _ in results["base"]]
    out = {"benchmark": "bwrap-args", "command": "/bin/true", "rounds": a.rounds, "tasksPerRound": a.tasks,
           "workers": a.workers, "seed": a.seed, "variants": {}}
    for name, rs in results.items():
        rate = statistics.median(r for r, _ in rs)
        out["variants"][name] = {
            "tasksPerSecond": round(rate, 1),
            "machineCpuMsPerTask": round(statistics.median(c for _, c in rs), 3),
            # Per round against that round's base, then the median: the drift between rounds cancels.
            "rateToBase": round(statistics.median(r / b for (r, _), b in zip(rs, base_rates)), 3),
        }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
