import Foundation
import StarlingCore
import Testing
@testable import StarlingSimulation

func simulate(_ scenario: String, nodes: Int, seed: UInt64, lifeguard: Bool = true, periods: Int? = nil) -> SimulationReport {
    var settings = MembershipSettings.lan
    settings.lifeguard = lifeguard
    let sim = Simulator(scenario: Scenario.named(scenario)!, config: SimulationConfig(nodes: nodes, seed: seed, periods: periods, settings: settings))
    return sim.run()
}

func reproduce(_ r: SimulationReport) -> String {
    "starling-sim --scenario \(r.scenario) --nodes \(r.nodes) --seed \(r.seed) --lifeguard \(r.lifeguard ? "on" : "off")"
}

@Suite("Deterministic simulator")
struct SimulationTests {
    static let scenarios = ["steady", "crash", "mass-crash", "churn", "partition-heal", "flapping", "loss", "slow-node"]

    @Test("every scenario holds its invariants", arguments: scenarios, [UInt64(1), 2])
    func everyScenarioHoldsItsInvariants(scenario: String, seed: UInt64) {
        let r = simulate(scenario, nodes: 12, seed: seed)
        #expect(r.violations.isEmpty, "\(r.violations) — reproduce: \(reproduce(r))")
        #expect(r.converged, "did not converge — reproduce: \(reproduce(r))")
        #expect(r.periodsToConverge <= r.convergenceBound, "reproduce: \(reproduce(r))")
    }

    @Test func crashesAreDetectedWithinTheBoundWithLifeguardOnAndOff() {
        for lifeguard in [true, false] {
            let r = simulate("mass-crash", nodes: 20, seed: 5, lifeguard: lifeguard)
            #expect(r.detectionPeriods.count == 4, "reproduce: \(reproduce(r))")
            #expect(r.detectionPeriods.max <= Double(r.detectionBound), "reproduce: \(reproduce(r))")
            #expect(r.detectionPeriods.p50 >= 1, "a death needs at least a probe and a suspicion timeout")
            #expect(r.falsePositives == 0, "reproduce: \(reproduce(r))")
        }
    }

    @Test func restartedNodesAreKnownAliveAgainEverywhere() {
        let r = simulate("churn", nodes: 15, seed: 3)
        #expect(r.disseminationPeriods.count >= 1, "reproduce: \(reproduce(r))")
        #expect(r.violations.isEmpty, "reproduce: \(reproduce(r))")
    }

    @Test func theSameSeedGivesTheSameTraceAndAnotherSeedAnotherTrace() {
        let a = simulate("partition-heal", nodes: 16, seed: 42)
        let b = simulate("partition-heal", nodes: 16, seed: 42)
        let c = simulate("partition-heal", nodes: 16, seed: 43)
        #expect(a.traceHash == b.traceHash)
        #expect(a.events == b.events)
        #expect(a.traceHash != c.traceHash)
    }

    /// The convergence deadline lets through a member whose false death is younger than the
    /// heal bound; the run must go on long enough after it for the heal check to judge that
    /// member (it ended 5 periods after the deadline, inside every heal bound).
    @Test("a default run lasts the heal bound past the convergence deadline", arguments: [5, 20, 100])
    func aDefaultRunOutlastsTheDeadlineByTheHealBound(nodes: Int) {
        let r = simulate("steady", nodes: nodes, seed: 1)
        let deadline = r.convergenceBound  // steady: no fault, the deadline is the bound itself
        #expect(r.periods > deadline + r.healBound, "ends at \(r.periods), deadline \(deadline), heal bound \(r.healBound)")
    }

    @Test func theCheckerReportsANodeCutOffForGood() {
        let r = simulate("negative-control", nodes: 8, seed: 1)
        #expect(!r.converged)
        #expect(r.violations.contains { $0.contains("not converged") })
    }

    @Test func aTooShortRunIsReportedAsNotConverged() {
        // Ends while the crashed node is still suspected: the checker must say so, not pass.
        let r = simulate("crash", nodes: 10, seed: 1, periods: 12)
        #expect(!r.converged)
        #expect(r.detectionPeriods.count == 0)
    }

    @Test("fresh random seeds", arguments: 0..<3)
    func freshRandomSeeds(_ k: Int) {
        let seed = UInt64.random(in: 0...UInt64(UInt32.max))
        let scenario = Self.scenarios[Int(seed % UInt64(Self.scenarios.count))]
        let r = simulate(scenario, nodes: 10 + k * 4, seed: seed)
        #expect(r.violations.isEmpty, "\(r.violations) — reproduce: \(reproduce(r))")
    }
}

@Suite("starling-sim command")
struct SimulatorCommandTests {
    func simBinary() -> String {
        ProcessInfo.processInfo.environment["STARLING_SIM_BIN"]
            ?? URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
                .appendingPathComponent(".build/debug/starling-sim").path
    }

    func run(_ args: [String]) throws -> (status: Int32, out: String, err: String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: simBinary())
        p.arguments = args
        // Files, not pipes: a child spawned by another test at the same moment can inherit a
        // pipe's write end, and reading to the end then waits for that child (SweepScriptTests).
        let base = NSTemporaryDirectory() + "sim-test-\(UUID().uuidString)"
        let paths = [base + ".out", base + ".err"]
        defer { for path in paths { try? FileManager.default.removeItem(atPath: path) } }
        let files = try paths.map { path in
            _ = FileManager.default.createFile(atPath: path, contents: nil)
            return try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        }
        p.standardOutput = files[0]
        p.standardError = files[1]
        try p.run()
        for file in files { try file.close() }
        p.waitUntilExit()
        let read = { (path: String) in (try? String(contentsOfFile: path, encoding: .utf8)) ?? "" }
        return (p.terminationStatus, read(paths[0]), read(paths[1]))
    }

    @Test func jsonCarriesTheInterfaceFieldsAndRepeatsForOneSeed() throws {
        let a = try run(["--scenario", "crash", "--nodes", "10", "--seed", "9", "--json"])
        let b = try run(["--scenario", "crash", "--nodes", "10", "--seed", "9", "--json"])
        #expect(a.status == 0)
        let object = try JSONSerialization.jsonObject(with: Data(a.out.utf8)) as! [String: Any]
        for key in ["scenario", "nodes", "seed", "periods", "traceHash", "violations", "converged", "periodsToConverge",
                    "falsePositives", "detectionPeriods", "messagesPerMemberPerPeriod", "events", "eventsPerSecond", "wallSeconds"] {
            #expect(object[key] != nil, "missing \(key)")
        }
        #expect((object["detectionPeriods"] as? [String: Any])?["p50"] != nil)
        #expect(object["traceHash"] as? String == (try JSONSerialization.jsonObject(with: Data(b.out.utf8)) as! [String: Any])["traceHash"] as? String)
    }

    @Test func listNamesEveryScenarioAndRandomSeedsArePrinted() throws {
        let list = try run(["--list"])
        for s in SimulationTests.scenarios { #expect(list.out.contains(s)) }
        // Every scenario's whole name starts a line, followed by its summary, so that a name
        // copied from the list runs (the longer ones were cut to 16 characters).
        let firstWords = Set(list.out.split(separator: "\n").compactMap { $0.split(separator: " ").first.map(String.init) })
        for s in Scenario.all { #expect(firstWords.contains(s.name), "\(s.name) not listed whole") }
        let r = try run(["--scenario", "steady", "--nodes", "5", "--seed", "random", "--periods", "20"])
        #expect(r.status == 0)
        #expect(r.err.contains("seed: "))
    }

    @Test func aViolationExitsNonZeroWithTheCommandThatReproducesIt() throws {
        let r = try run(["--scenario", "negative-control", "--nodes", "8", "--seed", "4"])
        #expect(r.status == 1)
        #expect(r.err.contains("not converged"))
        #expect(r.err.contains("reproduce: starling-sim --scenario negative-control --nodes 8 --seed 4"))
        let svg = NSTemporaryDirectory() + "sim-\(UUID().uuidString).svg"
        let drawn = try run(["--scenario", "partition-heal", "--nodes", "8", "--seed", "4", "--svg", svg])
        #expect(drawn.status == 0)
        #expect(try String(contentsOfFile: svg, encoding: .utf8).hasPrefix("<svg"))
        try? FileManager.default.removeItem(atPath: svg)
    }
}
