import Foundation
import GRDB
import StarlingCore
import Testing
@testable import StarlingStore

/// Finished swarms leave the store after the retention; running ones never do.
@Suite("Swarm store retention (real SQLite files)")
struct SwarmRetentionTests {
    @Test func aFinishedSwarmIsStampedOnceAndPrunedAfterTheCutoffWithItsTasksAndLinks() throws {
        let dir = TemporaryDirectory("retention")
        let store = try SwarmStore(directory: dir.path)
        let link = ChildLink(child: "cccccccccccccccc", replicas: ["n1"], cost: 3)
        try store.apply([.swarm(definition("aaaaaaaaaaaaaaaa", tasks: 3), epoch: 1, state: .running),
                         .swarm(definition("bbbbbbbbbbbbbbbb", tasks: 2), epoch: 1, state: .running),
                         .child("aaaaaaaaaaaaaaaa", link)])
        #expect(try store.finishedAtMs(of: "aaaaaaaaaaaaaaaa") == nil)
        let before = SwarmRetention.nowMs()
        try store.apply([.task("aaaaaaaaaaaaaaaa", index: 0, finished(1)), .swarmState("aaaaaaaaaaaaaaaa", .done, epoch: 1)])
        let stamped = try #require(try store.finishedAtMs(of: "aaaaaaaaaaaaaaaa"))
        #expect(stamped >= before)
        // Stored finished again (a repeated replication, a new epoch): the first stamp stands.
        try store.apply([.swarmState("aaaaaaaaaaaaaaaa", .done, epoch: 2),
                         .swarm(definition("aaaaaaaaaaaaaaaa", tasks: 3), epoch: 2, state: .done)])
        #expect(try store.finishedAtMs(of: "aaaaaaaaaaaaaaaa") == stamped)

        // Before its cutoff it stays; after, it goes with its tasks and child links; the running one stays.
        #expect(try store.pruneFinished(before: stamped) == 0)
        #expect(try store.pruneFinished(before: stamped + 1) == 1)
        #expect(try store.has("aaaaaaaaaaaaaaaa") == false)
        #expect(try store.has("bbbbbbbbbbbbbbbb"))
        #expect(try store.childLinks().isEmpty)
        let orphans = try store.pool.read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM task WHERE swarm = ?", arguments: ["aaaaaaaaaaaaaaaa"]) }
        #expect(orphans == 0)
        #expect(try store.pruneFinished(before: Int64.max) == 0, "a running swarm is never pruned")
    }

    @Test func aSwarmFirstStoredFinishedIsStampedAndOneRunningAgainIsNot() throws {
        let dir = TemporaryDirectory("retention-replica")
        let store = try SwarmStore(directory: dir.path)
        // A replica that first hears of a swarm when it is already done (a whole-swarm transfer).
        try store.apply([.swarm(definition("dddddddddddddddd", tasks: 1), epoch: 3, state: .done)])
        #expect(try store.finishedAtMs(of: "dddddddddddddddd") != nil)
        // The other side of a partition still runs it: stored running again, it is not finished.
        try store.apply([.swarm(definition("dddddddddddddddd", tasks: 1), epoch: 4, state: .running)])
        #expect(try store.finishedAtMs(of: "dddddddddddddddd") == nil)
        #expect(try store.pruneFinished(before: Int64.max) == 0)
        try store.apply([.swarmState("dddddddddddddddd", .cancelled, epoch: 4)])
        #expect(try store.pruneFinished(before: Int64.max) == 1)
    }

    @Test func pruningIsBoundedPerCallOldestFirst() throws {
        let dir = TemporaryDirectory("retention-bound")
        let store = try SwarmStore(directory: dir.path)
        let ids = (0..<5).map { String(repeating: "\($0)", count: 16) }
        for id in ids {
            try store.apply([.swarm(definition(id, tasks: 1), epoch: 1, state: .done)])
        }
        #expect(try store.pruneFinished(before: Int64.max, limit: 2) == 2)
        #expect(try store.list().count == 3)
        #expect(try store.pruneFinished(before: Int64.max, limit: 10) == 3)
    }
}
