import Foundation
import Logging
import StarlingCore
import StarlingStore
import Testing
@testable import StarlingRuntime

/// The pruning rounds a node runs over its store (`--swarm-retention-hours`).
@Suite("Swarm pruning")
struct SwarmPruningTests {
    func definition(_ id: SwarmID) -> SwarmDefinition {
        let task = SwarmTask(id: "t0", needs: TaskNeeds(memoryMB: 64, milliCPUs: 100), payload: Array("{\"argv\":[\"true\"]}".utf8))
        return SwarmDefinition(id: id, draft: SwarmDraft(tasks: [task], maxAttempts: 1, options: [], parent: nil, createdAtMs: 1),
                               replicas: ["n1"])
    }

    @Test func theRoundsDeleteFinishedSwarmsPastTheRetentionAndKeepTheRest() async throws {
        let dir = NSTemporaryDirectory() + "starling-pruning-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let store = try SwarmStore(directory: dir)
        try store.apply([.swarm(definition("aaaaaaaaaaaaaaaa"), epoch: 1, state: .done),
                         .swarm(definition("bbbbbbbbbbbbbbbb"), epoch: 1, state: .running)])
        // A retention of an hour: nothing is old enough.
        #expect(SwarmPruning.round(store: store, retention: .seconds(3_600), logger: Logger(label: "test")) == 0)
        let task = SwarmPruning.start(store: store, retention: .milliseconds(200), logger: Logger(label: "test"))
        defer { task.cancel() }
        let deadline = Date().addingTimeInterval(20)
        while try store.has("aaaaaaaaaaaaaaaa"), Date() < deadline { try await Task.sleep(for: .milliseconds(50)) }
        #expect(try store.has("aaaaaaaaaaaaaaaa") == false, "the finished swarm is still stored")
        #expect(try store.has("bbbbbbbbbbbbbbbb"), "a running swarm was pruned")
    }
}
