import Foundation
import StarlingCore
import Testing
@testable import StarlingStore

/// Child links (a parent swarm's children: where their cancels go, what they cost its budget)
/// are written by the protocol's `.child` change and read back after a restart.
@Suite("Child links in the store (real SQLite files)")
struct ChildLinkStoreTests {
    @Test func childLinksAreStoredOnceAndReadBackAfterReopening() throws {
        let dir = TemporaryDirectory("child-links")
        let parent = "00000000000000aa"
        let a = ChildLink(child: "00000000000000c1", replicas: ["n2", "n3", "n1"], cost: 3)
        let b = ChildLink(child: "00000000000000c2", replicas: ["n1"], cost: .max)
        do {
            let store = try SwarmStore(directory: dir.path)
            try store.apply([.swarm(definition(parent, tasks: 2), epoch: 1, state: .running), .child(parent, a)])
            // Repeated by a replication or a takeover sync: harmless, the first record stands.
            try store.apply([.child(parent, b), .child(parent, a), .child(parent, ChildLink(child: a.child, replicas: [], cost: 0))])
            #expect(try store.childLinks() == [parent: [a, ChildLink(child: b.child, replicas: b.replicas, cost: UInt64(Int64.max))]])
        }
        let reopened = try SwarmStore(directory: dir.path)
        let links = try reopened.childLinks()
        #expect(links[parent]?.map(\.child) == [a.child, b.child])
        #expect(links[parent]?.first == a)
    }

    @Test func aLinkOfASwarmNotHeldIsRefused() throws {
        let dir = TemporaryDirectory("child-orphan")
        let store = try SwarmStore(directory: dir.path)
        #expect(throws: StoreError.self) {
            try store.apply([.child("00000000000000ab", ChildLink(child: "00000000000000c1", replicas: ["n1"], cost: 1))])
        }
    }
}
