import Foundation
import GRDB
import StarlingCore
import StarlingCrypto
import Testing
@testable import StarlingStore

@Suite struct SessionStoreTests {
    static func crypto(_ dir: String) throws -> SessionCrypto {
        let identity = try NodeIdentity.loadOrCreate(dataDir: dir + "/key")
        return SessionCrypto(publicKey: identity.publicKey, hash: { blake2b($0) }, sign: { identity.sign($0) },
                             verify: { s, m, k in NodeIdentity.verify(signature: s, message: m, publicKey: k) })
    }

    /// A chain: create, then `checkpoints` checkpoints of `stateBytes` each.
    static func chain(_ c: SessionCrypto, checkpoints: Int, stateBytes: Int = 16) -> [SessionRecord] {
        var records = [c.seal(session: "s1", seq: 1, previousHash: SessionRecord.zeroHash, epoch: 1, kind: .create, key: "", content: [], signer: "n1")]
        for i in 0..<checkpoints {
            let content = [UInt8](repeating: UInt8(0x30 + i % 10), count: stateBytes)
            records.append(c.seal(session: "s1", seq: UInt64(records.count + 1), previousHash: c.hash(of: records.last!), epoch: 1,
                                  kind: .checkpoint, key: "", content: content, signer: "n1"))
        }
        return records
    }

    /// A copy's configuration (the epoch that installed its set, and the set it replaced while
    /// joint: review6 F1) is stored with it: an image writes both, a record keeps the epoch and
    /// writes the joint set (empty once established), and a restart reads them back.
    @Test func theConfigurationIsStoredWithTheCopy() throws {
        let dir = TemporaryDirectory("session-config")
        let c = try Self.crypto(dir.path)
        let store = SessionStore(store: try SwarmStore(directory: dir.path))
        let records = Self.chain(c, checkpoints: 1)
        try store.apply([.image(SessionImage(id: "s1", epoch: 3, owner: "n1", replicas: ["n1", "n2", "n4"], configEpoch: 3,
                                             jointOld: ["n1", "n2", "n3"], records: [records[0]]))])
        var image = try #require(try SessionStore(store: try SwarmStore(directory: dir.path)).image("s1"))
        #expect(image.configEpoch == 3 && image.jointOld == ["n1", "n2", "n3"] && image.quorums.count == 2)
        try store.apply([.promise(session: "s1", epoch: 4, owner: "n2")])
        image = try #require(try store.image("s1"))
        #expect(image.configEpoch == 3 && image.jointOld == ["n1", "n2", "n3"], "a promise changes no configuration")
        try store.apply([.record(records[1], epoch: 4, owner: "n2", replicas: ["n1", "n2", "n4"], dropContentOf: nil, jointOld: [])])
        image = try #require(try SessionStore(store: try SwarmStore(directory: dir.path)).loadAll().first)
        #expect(image.configEpoch == 3 && image.jointOld.isEmpty && image.quorums == [["n1", "n2", "n4"]])
    }

    /// Rows from before `v12-session-configuration` read back as the creation's configuration,
    /// established.
    @Test func theConfigurationMigrationKeepsOlderRows() throws {
        let dir = TemporaryDirectory("session-config-migration")
        let pool = try DatabasePool(path: dir.path + "/starling.sqlite")
        try StoreSchema.migrator.migrate(pool, upTo: "v11-session-fence-promise")
        try pool.write { db in try db.execute(sql: "INSERT INTO session (id, epoch, owner, replicas) VALUES ('s1', 7, 'n1', x'6E3100')") }
        try StoreSchema.migrator.migrate(pool)
        let row = try #require(try pool.read { db in try Row.fetchOne(db, sql: "SELECT config_epoch, joint_old FROM session WHERE id = 's1'") })
        #expect(row["config_epoch"] as Int64 == 0 && (row["joint_old"] as Data).isEmpty)
    }

    @Test func recordsImagesAndPromisesRoundTripAndOnlyTheLatestStateIsKept() throws {
        let dir = TemporaryDirectory("sessions")
        let c = try Self.crypto(dir.path)
        let swarmStore = try SwarmStore(directory: dir.path)
        let store = SessionStore(store: swarmStore)
        let records = Self.chain(c, checkpoints: 3)
        try store.apply([.record(records[0], epoch: 1, owner: "n1", replicas: ["n1", "n2", "n3"], dropContentOf: nil)])
        try store.apply([.record(records[1], epoch: 1, owner: "n1", replicas: ["n1", "n2", "n3"], dropContentOf: nil)])
        try store.apply([.record(records[2], epoch: 1, owner: "n1", replicas: ["n1", "n2", "n3"], dropContentOf: 2)])
        try store.apply([.record(records[3], epoch: 1, owner: "n1", replicas: ["n1", "n2", "n3"], dropContentOf: 3)])
        try store.apply([.promise(session: "s1", epoch: 4, owner: "n2")])
        let image = try #require(try store.image("s1"))
        #expect(image.epoch == 4 && image.owner == "n2" && image.replicas == ["n1", "n2", "n3"])
        #expect(image.records.map(\.seq) == [1, 2, 3, 4])
        #expect(image.records.map { $0.content != nil } == [true, false, false, true])
        #expect(image.records.map(\.signature) == records.map(\.signature))
        #expect(image.records.allSatisfy { c.check($0, expectedKey: c.publicKey) == nil })
        // An image replaces what was held, whole.
        var replaced = SessionImage(id: "s1", epoch: 5, owner: "n3", replicas: ["n3", "n2", "n4"], records: Array(records.prefix(2)))
        replaced.records[1].content = records[1].content
        try store.apply([.image(replaced)])
        #expect(try store.loadAll() == [replaced])
        #expect(store.owner(of: "s1") == "n3")
        // The same record twice is a failed write (the protocol never asks for it), all or none.
        #expect(throws: StoreError.self) {
            try store.apply([.promise(session: "s1", epoch: 9, owner: "n9"),
                             .record(records[1], epoch: 5, owner: "n3", replicas: ["n3"], dropContentOf: nil)])
        }
        #expect(try store.image("s1")?.epoch == 5)
    }

    @Test func aCheckpointWritesItsOwnStateOnceWhateverTheHistory() throws {
        // The bytes a checkpoint adds to the database do not grow with the number before it:
        // the previous state is dropped in the same transaction.
        let dir = TemporaryDirectory("sessions-growth")
        let c = try Self.crypto(dir.path)
        let swarmStore = try SwarmStore(directory: dir.path)
        let store = SessionStore(store: swarmStore)
        let records = Self.chain(c, checkpoints: 40, stateBytes: 64 << 10)
        for (i, r) in records.enumerated() {
            try store.apply([.record(r, epoch: 1, owner: "n1", replicas: ["n1"], dropContentOf: i >= 2 ? UInt64(i) : nil)])
        }
        let stored = try swarmStore.pool.read { db in
            try Int.fetchOne(db, sql: "SELECT SUM(LENGTH(bytes)) FROM session_chunk WHERE session = 's1'") ?? -1
        }
        #expect(stored == 64 << 10)
        #expect(try store.image("s1")?.records.last?.content == records.last?.content)
    }

    @Test func theMigrationIsRecorded() throws {
        let dir = TemporaryDirectory("sessions-migration")
        let swarmStore = try SwarmStore(directory: dir.path)
        let applied = try swarmStore.pool.read { db in try String.fetchAll(db, sql: "SELECT identifier FROM grdb_migrations") }
        for migration in ["v5-sessions", "v6-session-chunks", "v7-swarm-visible-finishes", "v7-session-compaction", "v8-swarm-finished-at"] {
            #expect(applied.contains(migration), "\(migration) not in \(applied)")
        }
        #expect(try swarmStore.writerSynchronous() == 2)
        let mode = try swarmStore.pool.read { db in try String.fetchOne(db, sql: "PRAGMA journal_mode") }
        #expect(mode == "wal")
    }
}
