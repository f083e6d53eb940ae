import Foundation
import GRDB
import StarlingCore
import StarlingCrypto
import Testing
@testable import StarlingStore

/// Compaction in the store (migration `v7-session-compaction`): a base record drops the rows
/// before its cut in its own transaction, and the session's options outlive its create record.
@Suite struct SessionCompactionStoreTests {
    /// create (options), an effect (start, result), a checkpoint C, then a base naming C.
    static func compactedChain(_ c: SessionCrypto, options: [UInt8]) -> (records: [SessionRecord], base: SessionRecord) {
        var records: [SessionRecord] = []
        func add(_ kind: SessionRecord.Kind, key: String = "", _ content: [UInt8]) {
            records.append(c.seal(session: "s1", seq: UInt64(records.count + 1), previousHash: records.last.map { c.hash(of: $0) } ?? SessionRecord.zeroHash,
                                  epoch: 1, kind: kind, key: key, content: content, signer: "n1"))
        }
        add(.create, options)
        add(.effectStarted, key: "pay", Array("{}".utf8))
        add(.effectResult, key: "pay", Array("{\"ok\":1}".utf8))
        add(.checkpoint, Array("{\"step\":1}".utf8))
        let table = SessionBase(cutSeq: 4, options: options,
                                effects: [SessionBase.Effect(key: "pay", startedSeq: 2, resultSeq: 3, result: Array("{\"ok\":1}".utf8))])
        let base = c.seal(session: "s1", seq: 5, previousHash: c.hash(of: records[3]), epoch: 1, kind: .base, key: "",
                          content: table.encoded, signer: "n1")
        return (records, base)
    }

    @Test func aBaseDropsTheRowsBeforeItsCutAndKeepsTheOptions() throws {
        let dir = TemporaryDirectory("sessions-compaction")
        let c = try SessionStoreTests.crypto(dir.path)
        let swarmStore = try SwarmStore(directory: dir.path)
        let store = SessionStore(store: swarmStore)
        let options = Array("{\"agent\":{\"brain\":{}}}".utf8)
        let (records, base) = Self.compactedChain(c, options: options)
        for r in records { try store.apply([.record(r, epoch: 1, owner: "n1", replicas: ["n1", "n2"], dropContentOf: nil)]) }
        #expect(try store.creationOptions(containing: "\"agent\":").map(\.id) == ["s1"])
        try store.apply([.record(base, epoch: 1, owner: "n1", replicas: ["n1", "n2"], dropContentOf: nil)])
        let image = try #require(try store.image("s1"))
        #expect(image.records.map(\.seq) == [4, 5])
        #expect(image.records[0].content == Array("{\"step\":1}".utf8))  // the cut's state, from its chunks
        #expect(image.creationOptions == options)
        let rows = try swarmStore.pool.read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM session_record WHERE session = 's1'") }
        #expect(rows == 2)
        // The agent is still found by its options, though its create record is gone.
        #expect(try store.creationOptions(containing: "\"agent\":").map(\.options) == [options])
        // An image written whole (a takeover) keeps them too.
        try store.apply([.image(SessionImage(id: "s1", epoch: 2, owner: "n2", replicas: ["n2", "n1"], records: image.records))])
        #expect(try store.creationOptions(containing: "\"agent\":").map(\.id) == ["s1"])
        #expect(try store.loadAll().first?.records.map(\.seq) == [4, 5])
    }

    @Test func aBaseThatDoesNotFollowItsCutIsAFailedWriteAndChangesNothing() throws {
        let dir = TemporaryDirectory("sessions-compaction-bad")
        let c = try SessionStoreTests.crypto(dir.path)
        let swarmStore = try SwarmStore(directory: dir.path)
        let store = SessionStore(store: swarmStore)
        let (records, _) = Self.compactedChain(c, options: [])
        for r in records { try store.apply([.record(r, epoch: 1, owner: "n1", replicas: ["n1"], dropContentOf: nil)]) }
        let wrong = SessionBase(cutSeq: 2, options: [], effects: [])
        let base = c.seal(session: "s1", seq: 5, previousHash: c.hash(of: records[3]), epoch: 1, kind: .base, key: "",
                          content: wrong.encoded, signer: "n1")
        #expect(throws: StoreError.self) { try store.apply([.record(base, epoch: 1, owner: "n1", replicas: ["n1"], dropContentOf: nil)]) }
        #expect(try store.image("s1")?.records.map(\.seq) == [1, 2, 3, 4])
    }
}
