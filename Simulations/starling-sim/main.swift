import ArgumentParser
import Foundation
import StarlingCore
import StarlingSimulation

struct StarlingSim: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "starling-sim",
        abstract: "Run Starling's membership protocol under a deterministic fault scenario.",
        discussion: "The same --seed always gives the same run and the same traceHash. Exit status is non-zero when an invariant is violated.")

    @Option(help: "Scenario name (see --list).")
    var scenario: String = "steady"

    @Option(help: "Number of nodes.")
    var nodes: Int = 20

    @Option(help: "A number, or 'random' (the chosen seed is printed).")
    var seed: String = "1"

    @Option(help: "Run length in protocol periods (default: the last fault plus the convergence bound).")
    var periods: Int?

    @Option(help: "Lifeguard extensions: on or off.")
    var lifeguard: String = "on"

    @Option(help: "Timing preset: lan (1 s periods), loopback (100 ms) or memberlist (lan before the failure-detection sweep).")
    var preset: String = "lan"

    @Option(help: "Override: direct probe timeout in milliseconds.")
    var probeTimeoutMs: Int?

    @Option(help: "Override: indirect probe timeout in milliseconds, or 'interval' (until the end of the probe interval).")
    var indirectTimeoutMs: String?

    @Option(help: "Override: indirect-probe fan-out (SWIM's k).")
    var indirectChecks: Int?

    @Option(help: "Override: suspicion multiplier (minimum timeout = multiplier x max(1, log10 N) x interval).")
    var suspicionMult: Double?

    @Option(help: "Override: Lifeguard's K, the confirmations that bring a suspicion to its minimum.")
    var confirmations: Int?

    @Option(help: "Override: how K shrinks at small N: memberlist, or a fraction of N-2 (for example 0.5).")
    var confirmationScaling: String?

    @Option(help: "Override: probe order, round-robin or suspects-first.")
    var probeOrder: String?

    @Option(help: "Override: tell a dead or suspect member of its accusation when we hear from it: on or off.")
    var tellAccused: String?

    @Option(help: "Swarm scenarios: tasks over all swarms (default 100 per node: 10,000 at --nodes 100).")
    var tasks: Int?

    @Option(help: "Swarm scenarios: each task's virtual duration, drawn uniformly from MIN-MAX milliseconds (default 1000-5000).")
    var taskMs: String?

    @Option(help: "Swarm scenarios: how many swarms the tasks are split into (default 4).")
    var swarms: Int?

    @Option(help: "Session scenarios: how many sessions the workload checkpoints and acts on, 1-10000 (default max(2, min(10, nodes / 2))); a node owns at most 1,024.")
    var sessions: Int?

    @Option(help: "Swarm scenarios: task slots per node (default 4).")
    var slots: Int?

    @Option(help: "Swarm scenarios: bytes added to each task's result (default 0; large results make syncs page and transfers chunk).")
    var resultBytes: Int?

    @Flag(help: "Print one JSON object.")
    var json = false

    @Option(help: "Write an SVG picture of the run to this file.")
    var svg: String?

    @Flag(help: "List the scenarios.")
    var list = false

    func validate() throws {
        guard nodes >= 1 && nodes <= 20_000 else { throw ValidationError("--nodes must be 1-20000") }
        guard ["on", "off"].contains(lifeguard) else { throw ValidationError("--lifeguard must be on or off") }
        guard MembershipSettings.preset(named: preset) != nil else {
            throw ValidationError("--preset must be one of \(MembershipSettings.presets.map(\.name).joined(separator: ", "))")
        }
        _ = try overriddenSettings()
        if let periods, periods < 1 || periods > 1_000_000 { throw ValidationError("--periods must be 1-1000000") }
        _ = try swarmOptions()
        if let sessions, !(1...10_000).contains(sessions) { throw ValidationError("--sessions must be 1-10000") }
    }

    /// The swarm scenarios' workload from the command line, checked.
    func swarmOptions() throws -> SwarmOptions {
        var o = SwarmOptions()
        if let tasks {
            guard (1...1_000_000).contains(tasks) else { throw ValidationError("--tasks must be 1-1000000") }
            o.tasks = tasks
        }
        if let taskMs {
            let parts = taskMs.split(separator: "-").map { Int($0) }
            guard parts.count == 2, let lo = parts[0], let hi = parts[1], lo >= 0, lo <= hi, hi <= 3_600_000 else {
                throw ValidationError("--task-ms must be MIN-MAX milliseconds, 0 <= MIN <= MAX <= 3600000")
            }
            o.taskMilliseconds = lo...hi
        }
        if let swarms {
            guard (1...1_000).contains(swarms) else { throw ValidationError("--swarms must be 1-1000") }
            o.swarms = swarms
        }
        if let slots {
            guard (1...1_024).contains(slots) else { throw ValidationError("--slots must be 1-1024") }
            o.slots = UInt32(slots)
        }
        if let resultBytes {
            guard (0...1_048_576).contains(resultBytes) else { throw ValidationError("--result-bytes must be 0-1048576") }
            o.resultPaddingBytes = resultBytes
        }
        return o
    }

    /// The preset with the command line's overrides, checked.
    func overriddenSettings() throws -> MembershipSettings {
        var s = MembershipSettings.preset(named: preset) ?? .lan
        s.lifeguard = lifeguard == "on"
        if let v = probeTimeoutMs {
            guard v >= 1, v < 60_000 else { throw ValidationError("--probe-timeout-ms must be 1-59999") }
            s.probeTimeout = .milliseconds(v)
        }
        if let v = indirectTimeoutMs {
            if v == "interval" {
                s.indirectProbeTimeout = nil
            } else {
                guard let ms = Int(v), ms >= 1, ms < 60_000 else { throw ValidationError("--indirect-timeout-ms must be 1-59999 or 'interval'") }
                s.indirectProbeTimeout = .milliseconds(ms)
            }
        }
        if let v = indirectChecks {
            guard (0...16).contains(v) else { throw ValidationError("--indirect-checks must be 0-16") }
            s.indirectChecks = v
        }
        if let v = suspicionMult {
            guard v >= 0.5, v <= 100 else { throw ValidationError("--suspicion-mult must be 0.5-100") }
            s.suspicionMultiplier = v
        }
        if let v = confirmations {
            guard (0...16).contains(v) else { throw ValidationError("--confirmations must be 0-16") }
            s.suspicionConfirmations = v
        }
        if let v = confirmationScaling {
            if v == "memberlist" {
                s.confirmationScaling = .memberlist
            } else {
                guard let f = Double(v), f > 0, f <= 1 else { throw ValidationError("--confirmation-scaling must be memberlist or a fraction in (0, 1]") }
                s.confirmationScaling = .fraction(f)
            }
        }
        if let v = probeOrder {
            guard let o = MembershipSettings.ProbeOrder(rawValue: v) else { throw ValidationError("--probe-order must be round-robin or suspects-first") }
            s.probeOrder = o
        }
        if let v = tellAccused {
            guard ["on", "off"].contains(v) else { throw ValidationError("--tell-accused must be on or off") }
            s.tellAccused = v == "on"
        }
        guard s.probeTimeout < s.probeInterval else { throw ValidationError("the probe timeout must be shorter than the probe interval") }
        return s
    }

    /// The command line that repeats this run exactly: the chosen seed, and every override given.
    func reproduceCommand(seed: UInt64) -> String {
        var words = ["starling-sim", "--scenario", scenario, "--nodes", "\(nodes)", "--seed", "\(seed)",
                     "--lifeguard", lifeguard, "--preset", preset]
        if let periods { words += ["--periods", "\(periods)"] }
        if let probeTimeoutMs { words += ["--probe-timeout-ms", "\(probeTimeoutMs)"] }
        if let indirectTimeoutMs { words += ["--indirect-timeout-ms", indirectTimeoutMs] }
        if let indirectChecks { words += ["--indirect-checks", "\(indirectChecks)"] }
        if let suspicionMult { words += ["--suspicion-mult", "\(suspicionMult)"] }
        if let confirmations { words += ["--confirmations", "\(confirmations)"] }
        if let confirmationScaling { words += ["--confirmation-scaling", confirmationScaling] }
        if let probeOrder { words += ["--probe-order", probeOrder] }
        if let tellAccused { words += ["--tell-accused", tellAccused] }
        if let tasks { words += ["--tasks", "\(tasks)"] }
        if let taskMs { words += ["--task-ms", taskMs] }
        if let swarms { words += ["--swarms", "\(swarms)"] }
        if let slots { words += ["--slots", "\(slots)"] }
        if let sessions { words += ["--sessions", "\(sessions)"] }
        return words.joined(separator: " ")
    }

    func run() throws {
        if list {
            // Names in full (a fixed column cut the longer ones), then the summaries aligned.
            let width = (Scenario.all.map(\.name.count).max() ?? 0) + 2
            for s in Scenario.all { print("\(s.name.padding(toLength: width, withPad: " ", startingAt: 0))\(s.summary)") }
            return
        }
        guard let chosen = Scenario.named(scenario) else {
            throw ValidationError("unknown scenario \(scenario); try --list")
        }
        let seedValue: UInt64
        if seed == "random" {
            seedValue = UInt64.random(in: 0...UInt64(UInt32.max))
            FileHandle.standardError.write(Data("seed: \(seedValue)\n".utf8))
        } else {
            guard let s = UInt64(seed) else { throw ValidationError("--seed must be a number or 'random'") }
            seedValue = s
        }
        let settings = try overriddenSettings()
        var config = SimulationConfig(nodes: nodes, seed: seedValue, periods: periods, settings: settings, recordTimeline: svg != nil)
        config.swarm = try swarmOptions()
        config.sessions = sessions
        let setupStart = Date()
        let sim = Simulator(scenario: chosen, config: config)
        let setupSeconds = Date().timeIntervalSince(setupStart)
        var report = sim.run(wallClock: { Date().timeIntervalSince1970 })
        report.setupSeconds = setupSeconds
        var usage = rusage()
        if getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &usage) == 0 { report.peakMemoryMB = Double(usage.ru_maxrss) / 1024 }  // ru_maxrss is in KiB
        if let svg {
            try TimelineSVG.render(sim, report: report).write(toFile: svg, atomically: true, encoding: .utf8)
        }
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            print(String(decoding: try encoder.encode(report), as: UTF8.self))
        } else {
            print("""
            scenario \(report.scenario), \(report.nodes) nodes, seed \(report.seed), \(report.periods) periods, lifeguard \(lifeguard)
            trace \(report.traceHash)  events \(report.events)  (\(Int(report.eventsPerSecond)) /s, \(String(format: "%.2f", report.wallSeconds)) s)
            converged \(report.converged) after \(report.periodsToConverge) periods (bound \(report.convergenceBound))
            detection p50 \(report.detectionPeriods.p50) max \(report.detectionPeriods.max) periods (bound \(report.detectionBound)); dissemination p50 \(report.disseminationPeriods.p50)
            false positives \(report.falsePositives); \(String(format: "%.2f", report.messagesPerMemberPerPeriod)) messages and \(Int(report.bytesPerMemberPerPeriod)) bytes per member per period
            """)
            if let s = report.swarm {
                print("""
                swarm: \(s.swarmsDone)/\(s.swarms) swarms done; tasks \(s.tasks): \(s.succeeded) succeeded, \(s.failed) failed, \(s.unfinished) unfinished; \(s.retries) retries
                recorded twice \(s.recordedTwice), run twice \(s.runTwice) (on both sides of a partition: \(s.tasksRecordedOnBothSides) recorded, \(s.tasksRunOnBothSides) run)
                max running \(s.maxRunning) of \(s.slots) slots; makespan \(String(format: "%.1f", s.makespanSeconds)) s (ideal \(String(format: "%.1f", s.idealMakespanSeconds)) s), utilisation \(String(format: "%.2f", s.utilisation))
                """)
            }
        }
        if !report.violations.isEmpty {
            FileHandle.standardError.write(Data(("violations:\n" + report.violations.map { "  - \($0)" }.joined(separator: "\n")
                + "\nreproduce: \(reproduceCommand(seed: seedValue))\n").utf8))
            throw ExitCode(1)
        }
    }
}

StarlingSim.main()
