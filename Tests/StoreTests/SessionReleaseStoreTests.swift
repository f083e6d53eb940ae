import Foundation
import GRDB
import StarlingCore
import Testing
@testable import StarlingStore

/// The releases a node remembers (migration `v9-session-releases`): stored with the forget,
/// read back at start oldest first, bounded, and "forgotten" for good once one was dropped.
@Suite struct SessionReleaseStoreTests {
    @Test func releasesSurviveARestartAndTheBoundForgetsTheOldestForGood() throws {
        let dir = TemporaryDirectory("session-releases")
        do {
            let store = SessionStore(store: try SwarmStore(directory: dir.path))
            #expect(try store.loadReleases().releases.isEmpty)
            #expect(try store.loadReleases().forgotten == false)
            try store.apply([.forget(SessionRelease(session: "s1", epoch: 2, owner: "n2"))])
            try store.apply([.forget(SessionRelease(session: "s2", epoch: 5, owner: "n3"))])
            // Released again later: the newer release, now the most recent.
            try store.apply([.forget(SessionRelease(session: "s1", epoch: 7, owner: "n4"))])
        }
        let reopened = SessionStore(store: try SwarmStore(directory: dir.path))
        let loaded = try reopened.loadReleases()
        #expect(loaded.releases == [SessionRelease(session: "s2", epoch: 5, owner: "n3"), SessionRelease(session: "s1", epoch: 7, owner: "n4")])
        #expect(loaded.forgotten == false)
        // Past the bound the oldest goes, and the store says so from then on.
        try reopened.pool.write { db in
            try SessionReleaseSchema.remember(SessionRelease(session: "s3", epoch: 1, owner: "n1"), in: db, bound: 2)
        }
        let bounded = try reopened.loadReleases()
        #expect(bounded.releases.map(\.session) == ["s1", "s3"])
        #expect(bounded.forgotten)
        try reopened.apply([.forget(SessionRelease(session: "s4", epoch: 1, owner: "n1"))])
        #expect(try reopened.loadReleases().forgotten)
        // Stored here again: its release is over.
        try reopened.apply([.image(SessionImage(id: "s3", epoch: 4, owner: "n2", replicas: ["n2"], records: []))])
        #expect(try reopened.loadReleases().releases.map(\.session) == ["s1", "s4"])
        #expect(try Self.count(reopened.pool) == (2, 2))
    }

    static func count(_ pool: DatabasePool) throws -> (kept: Int, rows: Int) {
        try pool.read { db in
            (try Int.fetchOne(db, sql: "SELECT count FROM session_release_state") ?? -1, try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM session_release") ?? -1)
        }
    }

    /// The bound is kept by a count beside the rows (no `COUNT(*)` per release): released again,
    /// stored again, and past the bound, the count stays the number of rows.
    @Test func theCountOfReleasesFollowsTheRows() throws {
        let dir = TemporaryDirectory("session-release-count")
        let store = SessionStore(store: try SwarmStore(directory: dir.path))
        let bound = 5
        func remember(_ sid: String, _ epoch: UInt64) throws {
            try store.pool.write { db in try SessionReleaseSchema.remember(SessionRelease(session: sid, epoch: epoch, owner: "n2"), in: db, bound: bound) }
        }
        for i in 0..<4 { try remember("s\(i)", 2) }
        try remember("s1", 3)
        #expect(try Self.count(store.pool) == (4, 4))
        try store.apply([.image(SessionImage(id: "s2", epoch: 4, owner: "n2", replicas: ["n2"], records: []))])
        try store.apply([.image(SessionImage(id: "never-released", epoch: 4, owner: "n2", replicas: ["n2"], records: []))])
        #expect(try Self.count(store.pool) == (3, 3))
        #expect(try store.loadReleases().forgotten == false)
        for i in 10..<14 { try remember("s\(i)", 2) }
        #expect(try Self.count(store.pool) == (5, 5))
        let loaded = try store.loadReleases()
        #expect(loaded.forgotten)
        #expect(loaded.releases.map(\.session) == ["s1", "s10", "s11", "s12", "s13"])
    }

    /// A store that had releases before the count column starts with their number.
    @Test func theMigrationCountsTheRowsThere() throws {
        let dir = TemporaryDirectory("session-release-count-migration")
        let pool = try DatabasePool(path: dir.path + "/starling.sqlite")
        try StoreSchema.migrator.migrate(pool, upTo: "v9-session-releases")
        try pool.write { db in
            for i in 0..<3 { try db.execute(sql: "INSERT INTO session_release (session, epoch, owner) VALUES (?, 2, 'n2')", arguments: ["s\(i)"]) }
        }
        try StoreSchema.migrator.migrate(pool)
        #expect(try Self.count(pool) == (3, 3))
    }

    /// A store from before the table may have released sessions it cannot name: once used, it
    /// starts as having forgotten (no empty promises); a fresh one starts clean.
    @Test(arguments: [false, true])
    func aStoreUsedBeforeTheMigrationStartsAsHavingForgotten(used: Bool) throws {
        let dir = TemporaryDirectory("session-releases-migration")
        let pool = try DatabasePool(path: dir.path + "/starling.sqlite")
        try StoreSchema.migrator.migrate(pool, upTo: "v8-swarm-finished-at")
        if used {
            try pool.write { db in try db.execute(sql: "INSERT INTO session (id, epoch, owner, replicas) VALUES ('s1', 1, 'n1', x'6E3100')") }
        }
        try StoreSchema.migrator.migrate(pool)
        #expect(try pool.read { db in try SessionReleaseSchema.load(db) }.forgotten == used)
    }

    /// A member's promise at a handoff's fence (migration `v11-session-fence-promise`) is read
    /// back at start, survives later promises, and goes with the session's row.
    @Test func fencePromisesAreStoredUntilTheSessionGoes() throws {
        let dir = TemporaryDirectory("session-fence-promise")
        let store = SessionStore(store: try SwarmStore(directory: dir.path))
        for id in ["s1", "s2"] {
            try store.apply([.image(SessionImage(id: id, epoch: 2, owner: "n1", replicas: ["n1", "n2", "n3"], records: []))])
        }
        try store.apply([.fencePromise(SessionFencePromise(session: "s1", epoch: 3, owner: "n5"))])
        #expect(try store.loadFencePromises() == [SessionFencePromise(session: "s1", epoch: 3, owner: "n5")])
        // The promise itself is the session's (its epoch and owner), as `.promise` writes it.
        #expect(try store.pool.read { db in try Row.fetchOne(db, sql: "SELECT epoch, owner FROM session WHERE id = 's1'") }.map { [$0["epoch"] as Int64 == 3, $0["owner"] as String == "n5"] } == [true, true])
        try store.apply([.promise(session: "s1", epoch: 4, owner: "n5")])
        let reopened = SessionStore(store: try SwarmStore(directory: dir.path))
        #expect(try reopened.loadFencePromises().map(\.session) == ["s1"])
        try reopened.apply([.forget(SessionRelease(session: "s1", epoch: 5, owner: "n5"))])
        #expect(try reopened.loadFencePromises().isEmpty)
    }
}
