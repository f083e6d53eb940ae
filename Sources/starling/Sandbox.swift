import ArgumentParser
import CSandbox
import Foundation
import Glibc
import StarlingSandbox
import Synchronization

struct SandboxCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sandbox", abstract: "Run tasks in throw-away sandboxes on this machine (no mesh needed).",
        subcommands: [SandboxRun.self, SandboxBench.self])
}

/// Flags shared by the sandbox commands that start a runner.
struct SandboxOptions: ParsableArguments {
    @Option(help: "Policy file (JSON Policy). Default here: everything allowed, network included when asked for.")
    var policy: String?

    @Flag(name: .customLong("unsafe-no-sandbox"), help: "Development only: run WITHOUT any isolation. Says so on every run.")
    var unsafeNoSandbox = false

    func loadPolicy() throws -> Policy {
        guard let policy else { return Policy(net: .host) }
        do {
            let loaded = try JSONDecoder().decode(Policy.self, from: Data(contentsOf: URL(fileURLWithPath: policy)))
            try loaded.validate()
            return loaded
        } catch {
            throw ValidationError("--policy \(policy): \(error)")
        }
    }

    func runner(warm: Int) throws -> SandboxRunner {
        do {
            return try SandboxRunner(configuration: SandboxConfiguration(
                nodeName: ProcessInfo.processInfo.hostName, initPath: SandboxConfiguration.initBesideExecutable(),
                warmPoolSize: warm, policy: try loadPolicy(), unsafeNoSandbox: unsafeNoSandbox))
        } catch let e as SandboxUnavailable {
            throw ValidationError("cannot sandbox: \(e.description)")
        }
    }
}

struct SandboxRun: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Run one command in a fresh sandbox. Plain: its output passes through and its exit status is ours; --json: print its TaskResult and exit 0.")

    @Option(help: "Memory limit in MB.") var memory: Int?
    @Option(help: "CPU quota in cores.") var cpus: Double?
    @Option(help: "Most processes at once.") var pids: Int?
    @Option(help: "Wall-clock limit in seconds.") var timeout: Double?
    @Option(help: "Network: none or host.") var net: NetworkMode?
    @Option(name: .customLong("file"), help: "NAME=PATH: copy the local file PATH to /task/NAME.") var files: [String] = []
    @Flag(help: "Print the TaskResult as JSON.") var json = false
    @Flag(name: [.customShort("i"), .customLong("stdin")], help: "Give the task this command's standard input (read to its end first).")
    var forwardStdin = false
    @OptionGroup var options: SandboxOptions
    @Argument(parsing: .captureForPassthrough, help: "The command and its arguments, after --.") var argv: [String] = []

    func validate() throws {
        // Passthrough capture takes `--help` as the command's first word; before `--` it is ours.
        if let first = argv.first, ["--help", "-h", "-help"].contains(first) { throw CleanExit.helpRequest(self) }
    }

    func run() throws {
        let command = argv.first == "--" ? Array(argv.dropFirst()) : argv
        guard !command.isEmpty else { throw ValidationError("give the command after --") }
        var inputs: [String: String] = [:]
        for f in files {
            guard let eq = f.firstIndex(of: "=") else { throw ValidationError("--file takes NAME=PATH") }
            let name = String(f[..<eq]), path = String(f[f.index(after: eq)...])
            guard let data = FileManager.default.contents(atPath: path) else { throw ValidationError("--file: cannot read \(path)") }
            inputs[name] = String(decoding: data, as: UTF8.self)
        }
        // Only when asked (as `docker run -i`): a script whose stdin stays open must not hang here.
        var stdinText: String?
        if forwardStdin, let data = try? FileHandle.standardInput.readToEnd(), !data.isEmpty {
            stdinText = String(decoding: data, as: UTF8.self)
        }
        let task = TaskSpec(argv: command, stdin: stdinText, files: inputs.isEmpty ? nil : inputs, timeoutSeconds: timeout,
                            memoryMB: memory, cpus: cpus, net: net, pids: pids)
        // SIGINT, SIGTERM or SIGHUP ends the task, and the runner reaps its bwrap and removes its
        // work directory and cgroup before this process exits with 128 + the signal. A second
        // signal, or cleanup longer than the grace period, exits at once (the sweep gets the rest).
        let interrupt = InterruptWatch()
        let runner = try options.runner(warm: 0)
        if options.unsafeNoSandbox {
            FileHandle.standardError.write(Data("WARNING: --unsafe-no-sandbox: running WITHOUT isolation (development only)\n".utf8))
        }
        let result: TaskResult
        // Plain mode: the task writes straight to our stdout and stderr, live and unbounded.
        do {
            result = try runner.run(task, output: json ? .capture : .inherit, onStart: { interrupt.watch($0) })
        } catch let e as InvalidTask {
            runner.shutdown()
            throw ValidationError(e.description)
        }
        runner.shutdown(within: interrupt.received == nil ? 60 : InterruptWatch.gracePeriod)
        if let sig = interrupt.received {
            FileHandle.standardError.write(Data("starling: interrupted by signal \(sig): the task was ended\n".utf8))
            throw ExitCode(128 + sig)
        }
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            print(String(decoding: try encoder.encode(result), as: UTF8.self))
            return
        }
        // Only a refusal or an unsandboxed run's warning is in the result; the task's own output
        // has already gone straight through.
        FileHandle.standardError.write(Data(result.stderr.utf8))
        if result.reason != .exited {
            FileHandle.standardError.write(Data("starling: task ended: \(result.reason.rawValue)\n".utf8))
        }
        if let code = result.exitCode, code != 0 { throw ExitCode(code) }
        if let sig = result.signal { throw ExitCode(128 + sig) }
        if result.reason == .denied { throw ExitCode(126) }
    }
}

/// Turns SIGINT, SIGTERM and SIGHUP into ending the running task, so that the command can still reap
/// its sandbox and clean up before it exits (the default action would exit at once and leave
/// the work directory and cgroup to a later sweep).
final class InterruptWatch: Sendable {
    private struct State {
        var task: RunningTask?
        var signal: Int32?
    }
    private let state = Mutex(State())
    /// Kept alive here and never touched again once set up in `init`, so never shared mutably.
    private nonisolated(unsafe) var sources: [DispatchSourceSignal] = []

    init() {
        for sig in [SIGINT, SIGTERM, SIGHUP] {
            signal(sig, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            source.setEventHandler { [self] in interrupted(by: sig) }
            source.resume()
            sources.append(source)
        }
    }

    /// How long cleanup may take after the first signal before this process exits anyway.
    static let gracePeriod: Double = 10

    private func interrupted(by sig: Int32) {
        let (task, first) = state.withLock { s -> (RunningTask?, Bool) in
            let first = s.signal == nil
            if first { s.signal = sig }
            return (s.task, first)
        }
        guard first else { Self.exitNow(sig, because: "a second signal") }
        task?.cancel()
        DispatchQueue.global().asyncAfter(deadline: .now() + .seconds(Int(Self.gracePeriod))) {
            Self.exitNow(sig, because: "cleanup took longer than \(Int(Self.gracePeriod)) s")
        }
    }

    /// Exits at once with 128 + `sig`, leaving whatever cleanup is left to the next start's
    /// sweep: a person pressing Ctrl-C twice, or a supervisor's second SIGTERM, must not need
    /// SIGKILL. The task itself was already killed by the first signal.
    private static func exitNow(_ sig: Int32, because why: String) -> Never {
        FileHandle.standardError.write(Data("starling: exiting on \(why) (signal \(sig)); unfinished cleanup is left to the next start's sweep\n".utf8))
        _exit(128 + sig)
    }

    /// The task now running; one that starts after a signal is ended at once.
    func watch(_ task: RunningTask) {
        let already = state.withLock { s -> Bool in
            s.task = task
            return s.signal != nil
        }
        if already { task.cancel() }
    }

    var received: Int32? { state.withLock { $0.signal } }
}

/// `Scripts/bench-sandbox` runs this: raw bwrap against Starling's cold and warm paths.
struct SandboxBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench", abstract: "Measure sandbox start-up: raw bwrap, cold and warm. Prints JSON.")

    @Option(help: "Runs of each kind.") var runs: Int = 200
    @Option(help: "Warm pool size.") var pool: Int = 4
    @Option(help: "Instead of start-up: run this many /bin/true tasks, --workers at a time, under raw bwrap and then through Starling's sandbox runner (warm pool of --pool), and print both rates and the CPU each task cost the machine.")
    var throughput: Int?
    @Option(help: "Tasks at once for --throughput.") var workers: Int = 6
    @OptionGroup var options: SandboxOptions

    func validate() throws {
        guard (1...100_000).contains(runs) else { throw ValidationError("--runs must be in 1...100000") }
        guard (0...64).contains(pool) else { throw ValidationError("--pool must be in 0...64") }
        guard (1...64).contains(workers) else { throw ValidationError("--workers must be in 1...64") }
        if let throughput, !(1...100_000).contains(throughput) { throw ValidationError("--throughput must be in 1...100000") }
    }

    func run() throws {
        let runner = try options.runner(warm: pool)
        defer { runner.shutdown() }
        let candidates: [String] = ["/usr/bin/bwrap", "/usr/local/bin/bwrap"]
        guard let bwrap = candidates.first(where: { (path: String) in access(path, X_OK) == 0 }) else {
            throw ValidationError("bwrap not found")
        }
        // Baseline: bwrap itself with the same namespaces and mounts, no cgroup, seccomp or work dir.
        let rawArgs = ["bwrap", "--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent", "--new-session", "--cap-drop", "ALL", "--ro-bind", "/usr", "/usr",
                       "--symlink", "usr/bin", "/bin", "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64",
                       "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--"]
        // The same environment Starling gives a task, so that neither side pays for a locale.
        let taskEnv = ["PATH=/usr/local/bin:/usr/bin:/bin", "HOME=/task", "TMPDIR=/tmp"]
        func rawRun(_ cmd: [String], sandboxed: Bool = true) -> (total: Double, first: Double) {
            let r = Self.spawnAndDrain(sandboxed ? bwrap : cmd[0], (sandboxed ? rawArgs : []) + cmd, env: taskEnv)
            return (r.total, r.first)
        }
        if let throughput {
            return try SandboxThroughput(tasks: throughput, workers: workers, runner: runner,
                                         raw: { Self.spawnAndDrain(bwrap, rawArgs + ["/bin/true"], env: taskEnv).ok }).measure()
        }
        var handovers: [Double] = []
        func starlingRun(warm: Bool, _ cmd: [String]) throws -> (total: Double, first: Double) {
            if warm {
                // Give the pool time to refill so that every run is a warm one.
                for _ in 0..<2000 where runner.warmReady == 0 { usleep(500) }
            }
            var timing = SandboxRunner.Timing()
            let t0 = clockNanos()
            _ = try runner.run(TaskSpec(argv: cmd), preferWarm: warm, timing: { timing = $0 })
            let total = Double(clockNanos() - t0) / 1e6
            if warm, timing.handedOver > 0 { handovers.append(Double(timing.handedOver - timing.started) / 1e6) }
            return (total, timing.firstByte > 0 ? Double(timing.firstByte - timing.started) / 1e6 : 0)
        }
        var raw: [(Double, Double)] = [], cold: [(Double, Double)] = [], warm: [(Double, Double)] = []
        var plain: [(Double, Double)] = []
        for _ in 0..<5 { _ = rawRun(["/bin/true"]); _ = try starlingRun(warm: false, ["/bin/true"]) }
        for _ in 0..<runs {
            // Interleaved, so that load on the shared machine hits all three alike.
            raw.append(rawRun(["/bin/echo", "x"]))
            plain.append(rawRun(["/bin/echo", "x"], sandboxed: false))
            cold.append(try starlingRun(warm: false, ["/bin/echo", "x"]))
            warm.append(try starlingRun(warm: true, ["/bin/echo", "x"]))
        }
        func stats(_ xs: [Double]) -> [String: Double] {
            let s = xs.sorted()
            return ["p50": s[s.count / 2], "p99": s[min(s.count - 1, Int(Double(s.count) * 0.99))]]
        }
        let r = stats(raw.map(\.0)), c = stats(cold.map(\.0)), w = stats(warm.map(\.0))
        let rf = stats(raw.map(\.1)), cf = stats(cold.map(\.1)), wf = stats(warm.map(\.1))
        let p = stats(plain.map(\.0)), pf = stats(plain.map(\.1))
        let out: [String: Any] = [
            "benchmark": "sandbox", "runs": runs, "command": "/bin/echo x",
            "unit": "milliseconds",
            "warmDispatchToExec": stats(handovers.isEmpty ? [0] : handovers),
            "note": "warmDispatchToExec: from run() until the warm sandbox begins to exec the task. plainSpawn is posix_spawn of the command with no sandbox at all: the floor under any dispatch on this machine",
            "endToEnd": ["plainSpawn": p, "rawBwrap": r, "starlingCold": c, "starlingWarm": w,
                         "ratioColdToRaw": ["p50": c["p50"]! / r["p50"]!, "p99": c["p99"]! / r["p99"]!],
                         "ratioWarmToRaw": ["p50": w["p50"]! / r["p50"]!, "p99": w["p99"]! / r["p99"]!]],
            "dispatchToFirstOutput": ["plainSpawn": pf, "rawBwrap": rf,
                                      "warmOverPlainSpawn": ["p50": wf["p50"]! - pf["p50"]!], "starlingCold": cf, "starlingWarm": wf,
                                      "ratioColdToRaw": ["p50": cf["p50"]! / rf["p50"]!],
                                      "ratioWarmToRaw": ["p50": wf["p50"]! / rf["p50"]!]],
        ]
        let data = try JSONSerialization.data(withJSONObject: out, options: [.sortedKeys, .prettyPrinted])
        print(String(decoding: data, as: UTF8.self))
    }
    /// Spawns `args` (argv[0] included) from `path` with `env`, reads its stdout to the end and
    /// reaps it: (milliseconds to the end, milliseconds to the first byte or 0, whether it
    /// exited 0). The pipe is close-on-exec, so that a spawn on another thread does not inherit
    /// this one's write end (its read would then wait for that child too).
    static func spawnAndDrain(_ path: String, _ args: [String], env: [String]) -> (total: Double, first: Double, ok: Bool) {
        var fds: [Int32] = [0, 0]
        guard starling_pipe_cloexec(&fds) == 0 else { return (0, 0, false) }
        let t0 = clockNanos()
        var actions: posix_spawn_file_actions_t = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        posix_spawn_file_actions_adddup2(&actions, fds[1], 1)
        posix_spawn_file_actions_addclose(&actions, fds[0])
        var pid: pid_t = 0
        var cargs = args.map { strdup($0) } + [nil]
        var cenv = env.map { strdup($0) } + [nil]
        let spawned = posix_spawn(&pid, path, &actions, nil, &cargs, &cenv)
        for p in cargs + cenv { free(p) }
        posix_spawn_file_actions_destroy(&actions)
        close(fds[1])
        guard spawned == 0, pid > 0 else {
            close(fds[0])
            return (0, 0, false)  // no child: never wait (waitpid(0) would reap any child)
        }
        var byte: UInt8 = 0
        var first = 0.0
        if read(fds[0], &byte, 1) > 0 { first = Double(clockNanos() - t0) / 1e6 }
        while read(fds[0], &byte, 1) > 0 {}
        close(fds[0])
        var status: Int32 = 0
        var reaped: pid_t
        repeat { reaped = waitpid(pid, &status, 0) } while reaped < 0 && errno == EINTR
        return (Double(clockNanos() - t0) / 1e6, first, reaped == pid && status == 0)
    }
}

/// `starling sandbox bench --throughput N`: the same N `/bin/true` tasks under raw bwrap and then
/// through the sandbox runner, `workers` at a time; the rates, and the CPU time the whole machine
/// spent per task (from /proc/stat, so the kernel's own work for namespaces and cgroups, done in
/// kernel threads that no process is charged for, counts too). What bounds a mesh of sandboxes
/// on this machine before any of the mesh's own work.
struct SandboxThroughput {
    let tasks: Int
    let workers: Int
    let runner: SandboxRunner
    /// One raw-bwrap run; whether it succeeded.
    let raw: @Sendable () -> Bool

    /// Busy CPU seconds of the whole machine so far (user, nice, system, irq, softirq, steal).
    static func machineBusySeconds() -> Double {
        guard let line = (try? String(contentsOfFile: "/proc/stat", encoding: .utf8))?.split(separator: "\n").first else { return 0 }
        let f = line.split(separator: " ").dropFirst().compactMap { Double($0) }
        guard f.count >= 8 else { return 0 }
        return (f[0] + f[1] + f[2] + f[5] + f[6] + f[7]) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }

    /// Runs `one` `tasks` times on `workers` threads: (tasks/s, machine CPU ms per task, runs
    /// that failed).
    func timed(_ one: @escaping @Sendable () -> Bool) -> (rate: Double, cpuMs: Double, failed: Int) {
        let next = Atomic<Int>(0)
        let failed = Atomic<Int>(0)
        let group = DispatchGroup()
        let busy0 = Self.machineBusySeconds()
        let t0 = clockNanos()
        for _ in 0..<workers {
            group.enter()
            Thread.detachNewThread { [tasks] in
                while next.add(1, ordering: .relaxed).oldValue < tasks {
                    if !one() { failed.add(1, ordering: .relaxed) }
                }
                group.leave()
            }
        }
        group.wait()
        let wall = Double(clockNanos() - t0) / 1e9
        return (Double(tasks) / wall, (Self.machineBusySeconds() - busy0) * 1000 / Double(tasks), failed.load(ordering: .relaxed))
    }

    func measure() throws {
        let runner = self.runner
        let raw = timed(self.raw)
        let starling = timed { (try? runner.run(TaskSpec(argv: ["/bin/true"], memoryMB: 32)))?.exitCode == 0 }
        let out: [String: Any] = [
            "benchmark": "sandbox-throughput", "tasks": tasks, "workers": workers, "command": "/bin/true",
            "rawBwrap": ["tasksPerSecond": raw.rate, "machineCpuMsPerTask": raw.cpuMs, "failed": raw.failed],
            "starlingSandbox": ["tasksPerSecond": starling.rate, "machineCpuMsPerTask": starling.cpuMs, "failed": starling.failed],
            "ratioToRaw": starling.rate / raw.rate,
            "note": "the machine's busy CPU (/proc/stat) over each run, divided by the tasks: the kernel threads' work is in it",
        ]
        let data = try JSONSerialization.data(withJSONObject: out, options: [.sortedKeys, .prettyPrinted])
        print(String(decoding: data, as: UTF8.self))
    }
}

func clockNanos() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}

extension NetworkMode: ExpressibleByArgument {}
