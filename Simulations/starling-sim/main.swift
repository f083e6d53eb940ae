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

    @Option(help: "Timing preset: lan (1 s periods) or loopback (100 ms).")
    var preset: String = "lan"

    @Flag(help: "Print one JSON object.")
    var json = false

    @Option(help: "Write an SVG picture of the run to this file.")
    var svg: String?

    @Flag(help: "List the scenarios.")
    var list = false

    func validate() throws {
        guard nodes >= 1 && nodes <= 20_000 else { throw ValidationError("--nodes must be 1-20000") }
        guard ["on", "off"].contains(lifeguard) else { throw ValidationError("--lifeguard must be on or off") }
        guard ["lan", "loopback"].contains(preset) else { throw ValidationError("--preset must be lan or loopback") }
        if let periods, periods < 1 || periods > 1_000_000 { throw ValidationError("--periods must be 1-1000000") }
    }

    func run() throws {
        if list {
            for s in Scenario.all { print("\(s.name.padding(toLength: 16, withPad: " ", startingAt: 0))\(s.summary)") }
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
        var settings: MembershipSettings = preset == "loopback" ? .loopback : .lan
        settings.lifeguard = lifeguard == "on"
        let config = SimulationConfig(nodes: nodes, seed: seedValue, periods: periods, settings: settings, recordTimeline: svg != nil)
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
        }
        if !report.violations.isEmpty {
            var reproduce = "starling-sim --scenario \(scenario) --nodes \(nodes) --seed \(seedValue) --lifeguard \(lifeguard) --preset \(preset)"
            if let periods { reproduce += " --periods \(periods)" }
            FileHandle.standardError.write(Data(("violations:\n" + report.violations.map { "  - \($0)" }.joined(separator: "\n")
                + "\nreproduce: \(reproduce)\n").utf8))
            throw ExitCode(1)
        }
    }
}

StarlingSim.main()
