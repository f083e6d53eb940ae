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
    }
}
