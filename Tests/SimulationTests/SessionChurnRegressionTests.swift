import Foundation
import StarlingCore
import Testing
@testable import StarlingSimulation

/// Seeds of `session-churn` at 20 nodes that found a lost-acknowledgement defect (helper
/// sessrig's notes): a deposed owner restarted on its store prepared a takeover with the replica
/// set of two takeovers before, a stale holder promised it, and that majority of an old set
/// installed a 7-record image over the live owner's 53 records (acknowledged records lost, two
/// records acknowledged at one seq, effects run twice). A replica now promises only a preparer
/// in the replica set it holds.
@Suite("Session churn regressions")
struct SessionChurnRegressionTests {
    @Test("session-churn at 20 nodes holds its invariants", arguments: [UInt64(13), 17])
    func churnAtTwentyNodes(seed: UInt64) throws {
        let r = Simulator(scenario: Scenario.named("session-churn")!, config: SimulationConfig(nodes: 20, seed: seed)).run()
        #expect(r.violations.isEmpty, "\(r.violations.prefix(5)) — reproduce: starling-sim --scenario session-churn --nodes 20 --seed \(seed) --json")
        let s = try #require(r.sessions)
        #expect(s["effectsExecuted"] == s["effectKeys"])
        #expect(s["servedAtEnd"] == s["sessions"], "\(s)")
        #expect(s["copiesUnavailableAtEnd"] == 0 && s["copiesStoredAsOwnAtEnd"] == 0, "\(s)")
    }
}
