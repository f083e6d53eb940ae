import Foundation
import StarlingCore
import Testing
@testable import StarlingSimulation

/// Sessions under crash, churn and partition in the simulator (issue #11): no acknowledged
/// checkpoint lost, no effect key executed twice, never two acknowledged records at one seq.
/// `SessionEnvironment` checks them; seen failing (split-brain records and double runs) with the
/// owner's majority replaced by its own ack.
@Suite("Session scenarios")
struct SessionScenarioTests {
    static func simulate(_ scenario: String, nodes: Int, seed: UInt64) -> SimulationReport {
        Simulator(scenario: Scenario.named(scenario)!, config: SimulationConfig(nodes: nodes, seed: seed)).run()
    }

    @Test("each scenario holds its invariants", arguments: ["session-crash", "session-churn", "session-partition", "session-join"], [UInt64(0x5E_0001), 0x5E_0002])
    func eachScenario(scenario: String, seed: UInt64) throws {
        let r = Self.simulate(scenario, nodes: 9, seed: seed)
        #expect(r.violations.isEmpty, "\(r.violations) — reproduce: starling-sim --scenario \(scenario) --nodes 9 --seed \(seed) --json")
        let s = try #require(r.sessions)
        #expect(s["checkpointsAcknowledged", default: 0] > 100)
        #expect(s["effectsExecuted"] == s["effectKeys"])
        #expect(s["effectsReplayed", default: 0] > 0)
        // Every session is served again at the end, unless two of its three replicas are down.
        #expect(s["servedAtEnd", default: 0] + s["withoutMajorityAtEnd", default: 0] == s["sessions"], "\(s)")
        if scenario != "session-crash" { #expect(s["withoutMajorityAtEnd"] == 0) }
        #expect(s["copiesUnavailableAtEnd"] == 0 && s["copiesStoredAsOwnAtEnd"] == 0, "\(s)")
        // Migration on join (issue #11 item 6): sessions were handed to the nodes that joined.
        if scenario == "session-join" { #expect(s["handoffsDone", default: 0] > 0, "\(s)") }
    }

    /// Liveness at 20 nodes × 40 sessions, on the seeds that found two defects. Partition, seed
    /// 2: holders each deferred to a node that led nothing, and sess-27 and sess-28 stayed unled
    /// (fixed by the lead check). Churn, seed 7: two nodes each fenced the other's takeover on the
    /// same tick, every 6 s to the end of the run, 40 s after the churn (fixed by random backoff).
    /// Every session is served at the end.
    @Test(arguments: [("session-partition", UInt64(2)), ("session-churn", 7)])
    func everySessionIsServedAfterTheFaults(scenario: String, seed: UInt64) throws {
        var config = SimulationConfig(nodes: 20, seed: seed)
        config.sessions = 40
        let r = Simulator(scenario: Scenario.named(scenario)!, config: config).run()
        #expect(r.violations.isEmpty, "\(r.violations)")
        let s = try #require(r.sessions)
        #expect(s["servedAtEnd"] == 40, "reproduce: STARLING_SIM_SESSION_DEBUG=1 starling-sim --scenario \(scenario) --nodes 20 --sessions 40 --seed \(seed) --json; \(s)")
        #expect(s["copiesUnavailableAtEnd"] == 0 && s["copiesStoredAsOwnAtEnd"] == 0, "\(s)")
        // (Seed 7 took 196 takeovers with the duel, 97 without.)
        if scenario == "session-churn" { #expect(s["takeovers", default: 0] < 150, "\(s)") }
    }

    /// No copy a takeover left behind answers reads "unavailable" at the end (its routes would
    /// answer 503 and never forward), or is stored as this node's own while another node serves
    /// it (its routes would leave their best holder out). 5 nodes × 20 sessions:
    /// - seed 2070362170: during the split n3 took four sessions over at epoch 3 with sets
    ///   without n4, while n4, on the other side and the first live member of their old sets
    ///   there, prepared epoch 3 itself; after the heal members that had promised epoch 3 to n3
    ///   answered n4 `stale` (which names no owner), and n4's copies said "owner n4, epoch 3",
    ///   unled, to the end: 4 copies answering "unavailable". The fault rig's 2|3 partition saw
    ///   the same through a real node for 90 s in CI;
    /// - seed 2035485149: old owners learned the live owner from a failed attempt's hint in
    ///   memory only, and their stores still named themselves: 3 such copies (review17 F1).
    /// (The reply rules themselves: `SessionsTests.anUnledCopyAnswersResumingOnlyOnTheSuccessor`.)
    @Test(arguments: [UInt64(2_070_362_170), 2_035_485_149])
    func noCopyLeftBehindByATakeoverKeepsReadsFromTheOwner(seed: UInt64) throws {
        var config = SimulationConfig(nodes: 5, seed: seed)
        config.sessions = 20
        let r = Simulator(scenario: Scenario.named("session-partition")!, config: config).run()
        #expect(r.violations.isEmpty, "\(r.violations)")
        let s = try #require(r.sessions)
        #expect(s["servedAtEnd"] == 20, "\(s)")
        let reproduce = "STARLING_SIM_SESSION_DEBUG=1 starling-sim --scenario session-partition --nodes 5 --sessions 20 --seed \(seed) --json"
        #expect(s["copiesUnavailableAtEnd"] == 0, "reproduce: \(reproduce); \(s)")
        #expect(s["copiesStoredAsOwnAtEnd"] == 0, "reproduce: \(reproduce); \(s)")
    }

    @Test func theSameSeedGivesTheSameTrace() {
        let a = Self.simulate("session-partition", nodes: 7, seed: 3)
        let b = Self.simulate("session-partition", nodes: 7, seed: 3)
        #expect(a.traceHash == b.traceHash)
        #expect(a.sessions == b.sessions)
    }
}

