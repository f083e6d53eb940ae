import Foundation
import StarlingCore
import Testing
@testable import StarlingSimulation

/// The session scenarios with sessions compacting every 16 records (their workloads write ~60
/// records a session, far below the default 1,024): no acknowledged checkpoint lost, no effect
/// key executed twice, never two acknowledged records at one seq, while bases are written and
/// prefixes dropped under crashes, restarts, partitions and handoffs.
@Suite("Session scenarios with compaction")
struct SessionCompactionScenarioTests {
    @Test("each scenario holds its invariants while sessions compact",
          arguments: ["session-crash", "session-churn", "session-partition", "session-join"])
    func eachScenarioWhileCompacting(scenario: String) throws {
        let r = SessionEnvironment.$compactAfterInTest.withValue(16) {
            Simulator(scenario: Scenario.named(scenario)!, config: SimulationConfig(nodes: 9, seed: 0x5E_0001)).run()
        }
        #expect(r.violations.isEmpty, "\(r.violations) — reproduce: STARLING_SIM_SESSION_COMPACT_AFTER=16 starling-sim --scenario \(scenario) --nodes 9 --seed \(0x5E_0001) --json")
        let s = try #require(r.sessions)
        #expect(s["compactions", default: 0] > 0, "\(s)")
        #expect(s["effectsExecuted"] == s["effectKeys"])
        #expect(s["effectsReplayed", default: 0] > 0)
        #expect(s["servedAtEnd", default: 0] + s["withoutMajorityAtEnd", default: 0] == s["sessions"], "\(s)")
        #expect(s["copiesUnavailableAtEnd"] == 0 && s["copiesStoredAsOwnAtEnd"] == 0, "\(s)")
    }
}
