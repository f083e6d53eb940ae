import Foundation
import StarlingCore
import Testing
@testable import StarlingSimulation

/// A member holding nothing promised a takeover and counted toward the old set's majority: two
/// stale members (one that had dropped its copy) outvoted the live owner's replica set, and
/// both sides recorded. `session-churn` at 20 nodes, seed 9 (20 violations on the code before
/// the fix, main's release binary included) and seed 24 with compaction every 16 records.
@Suite("Session churn: empty promises")
struct SessionEmptyPromiseRegressionTests {
    @Test(arguments: [(UInt64(9), Int?.none), (UInt64(24), Int?.some(16))])
    func noTwoEpochsRecordAtOnce(seed: UInt64, compactAfter: Int?) throws {
        let r = SessionEnvironment.$compactAfterInTest.withValue(compactAfter) {
            Simulator(scenario: Scenario.named("session-churn")!, config: SimulationConfig(nodes: 20, seed: seed)).run()
        }
        #expect(r.violations.isEmpty, "\(r.violations.prefix(3)) — reproduce: starling-sim --scenario session-churn --nodes 20 --seed \(seed) --json")
        let s = try #require(r.sessions)
        #expect(s["effectsExecuted"] == s["effectKeys"])
    }
}
