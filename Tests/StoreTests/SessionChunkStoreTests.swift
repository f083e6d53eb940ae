import Foundation
import GRDB
import StarlingCore
import StarlingCrypto
import Testing
@testable import StarlingStore

/// A checkpoint's state in the store as chunks (migration `v6-session-chunks`).
@Suite struct SessionChunkStoreTests {
    /// A 1 MiB JSON-like state: a counter, then pseudo-random words.
    static func state(counter: Int) -> [UInt8] {
        var out = Array("{\"counter\":\(counter),\"notes\":\"".utf8)
        var x: UInt64 = 11
        while out.count < SessionLimits.maxStateBytes - 66 {
            x = x &* 6364136223846793005 &+ 1442695040888963407
            for k in 0..<(Int(x >> 60) + 2) { out.append(UInt8(0x61 + Int((x >> UInt64(8 + k * 3)) & 0x0F))) }
            out.append(0x20)
        }
        return out + Array("\"}".utf8)
    }

    static func chunkDigests(_ pool: DatabasePool) throws -> [Data: Int] {
        try pool.read { db in
            var out: [Data: Int] = [:]
            for row in try Row.fetchAll(db, sql: "SELECT digest, LENGTH(bytes) AS n FROM session_chunk WHERE session = 's1'") {
                out[row["digest"]] = row["n"]
            }
            return out
        }
    }

    @Test func aCheckpointWritesOnlyTheChunksItChangesAndOldChunksAreCollected() throws {
        let dir = TemporaryDirectory("session-chunks")
        let c = try SessionStoreTests.crypto(dir.path)
        let swarmStore = try SwarmStore(directory: dir.path)
        let store = SessionStore(store: swarmStore)
        var records = [c.seal(session: "s1", seq: 1, previousHash: SessionRecord.zeroHash, epoch: 1, kind: .create, key: "", content: [], signer: "n1")]
        try store.apply([.record(records[0], epoch: 1, owner: "n1", replicas: ["n1"], dropContentOf: nil)])
        var previous: [Data: Int] = [:]
        for counter in 1...12 {
            let record = c.seal(session: "s1", seq: UInt64(records.count + 1), previousHash: c.hash(of: records.last!), epoch: 1,
                                kind: .checkpoint, key: "", content: Self.state(counter: counter), signer: "n1")
            try store.apply([.record(record, epoch: 1, owner: "n1", replicas: ["n1"], dropContentOf: counter > 1 ? records.last!.seq : nil)])
            records.append(record)
            let now = try Self.chunkDigests(swarmStore.pool)
            // Only the latest state's chunks are kept: their bytes add up to one state.
            #expect(now.values.reduce(0, +) == Self.state(counter: counter).count)
            if counter > 1 {
                let written = now.filter { previous[$0.key] == nil }.values.reduce(0, +)
                #expect(written <= 2 * StateChunks.maxChunkBytes && written < SessionLimits.maxStateBytes / 2, "written \(written)")
            }
            previous = now
        }
        // The row keeps the manifest, not the state; the state reads back whole.
        let rowBytes = try swarmStore.pool.read { db in
            try Int.fetchOne(db, sql: "SELECT SUM(LENGTH(content)) FROM session_record WHERE session = 's1' AND kind = 2") ?? -1
        }
        #expect(rowBytes < 4_096)
        let image = try #require(try store.image("s1"))
        #expect(image.records.last?.content == Self.state(counter: 12))
        #expect(image.records.allSatisfy { c.check($0, expectedKey: c.publicKey) == nil })
        // An image rewrites the session: chunks it does not name go; a delete drops them all.
        try store.apply([.image(SessionImage(id: "s1", epoch: 2, owner: "n1", replicas: ["n1"], records: Array(records.prefix(1))))])
        #expect(try Self.chunkDigests(swarmStore.pool).isEmpty)
        try store.apply([.image(SessionImage(id: "s1", epoch: 2, owner: "n1", replicas: ["n1"], records: records))])
        #expect(try store.image("s1")?.records.last?.content == Self.state(counter: 12))
        let delete = c.seal(session: "s1", seq: UInt64(records.count + 1), previousHash: c.hash(of: records.last!), epoch: 2,
                            kind: .delete, key: "", content: [], signer: "n1")
        try store.apply([.record(delete, epoch: 2, owner: "n1", replicas: ["n1"], dropContentOf: nil)])
        #expect(try Self.chunkDigests(swarmStore.pool).isEmpty)
        // A copy forgotten (handed off elsewhere) leaves no chunk behind either.
        try store.apply([.image(SessionImage(id: "s1", epoch: 2, owner: "n1", replicas: ["n1"], records: records))])
        #expect(!(try Self.chunkDigests(swarmStore.pool).isEmpty))
        try store.apply([.forget(SessionRelease(session: "s1", epoch: 2, owner: "n9"))])
        #expect(try Self.chunkDigests(swarmStore.pool).isEmpty, "a forgotten session's chunks stay on disk")
        #expect(try store.image("s1") == nil)
    }

    @Test func aMissingChunkRefusesTheLoad() throws {
        let dir = TemporaryDirectory("session-chunks-missing")
        let c = try SessionStoreTests.crypto(dir.path)
        let swarmStore = try SwarmStore(directory: dir.path)
        let store = SessionStore(store: swarmStore)
        let create = c.seal(session: "s1", seq: 1, previousHash: SessionRecord.zeroHash, epoch: 1, kind: .create, key: "", content: [], signer: "n1")
        let checkpoint = c.seal(session: "s1", seq: 2, previousHash: c.hash(of: create), epoch: 1, kind: .checkpoint, key: "",
                                content: Self.state(counter: 1), signer: "n1")
        try store.apply([.image(SessionImage(id: "s1", epoch: 1, owner: "n1", replicas: ["n1"], records: [create, checkpoint]))])
        #expect(try store.loadAll().first?.records.last?.content == Self.state(counter: 1))
        try swarmStore.pool.write { db in try db.execute(sql: "DELETE FROM session_chunk WHERE rowid = (SELECT MIN(rowid) FROM session_chunk)") }
        #expect(throws: StoreError.self) { try store.loadAll() }
    }

    @Test func aStateWrittenBeforeChunkingIsKeptWhole() throws {
        // A checkpoint whose digest is its state's own (written by a node before v6) is stored
        // and read back whole, and still verifies.
        let dir = TemporaryDirectory("session-chunks-legacy")
        let c = try SessionStoreTests.crypto(dir.path)
        let swarmStore = try SwarmStore(directory: dir.path)
        let store = SessionStore(store: swarmStore)
        let create = c.seal(session: "s1", seq: 1, previousHash: SessionRecord.zeroHash, epoch: 1, kind: .create, key: "", content: [], signer: "n1")
        let state = Self.state(counter: 3)
        let legacy = c.seal(session: "s1", seq: 2, previousHash: c.hash(of: create), epoch: 1, kind: .checkpoint, key: "", content: state,
                            contentDigest: blake2b(state), signer: "n1")
        #expect(c.check(legacy, expectedKey: c.publicKey) == nil)
        try store.apply([.image(SessionImage(id: "s1", epoch: 1, owner: "n1", replicas: ["n1"], records: [create, legacy]))])
        #expect(try store.image("s1")?.records.last == legacy)
        #expect(try Self.chunkDigests(swarmStore.pool).isEmpty)
    }
}
