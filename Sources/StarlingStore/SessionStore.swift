import Foundation
import GRDB
import StarlingCore

/// The sessions a node owns or replicates, in the node's `starling.sqlite` (the swarm store's
/// `DatabasePool`: WAL, and `synchronous` as the rest of the store, FULL by default).
///
/// A checkpoint writes its own record and the chunks of its state the session's previous state
/// did not have (`SessionChunkStore`); the previous checkpoint's manifest is set to NULL and
/// chunks no longer named are deleted in the same transaction (the digest stays, so the chain
/// still verifies). So the bytes written per checkpoint are its changed chunks plus a row,
/// whatever the session's history.
/// An image (a takeover, or a replica brought up to date) rewrites the session's rows whole.
public final class SessionStore: Sendable {
    let pool: DatabasePool

    public init(store: SwarmStore) {
        pool = store.pool
    }

    /// Writes every change in one transaction: all of them or none.
    public func apply(_ changes: [SessionChange]) throws {
        guard !changes.isEmpty else { return }
        do {
            try pool.write { db in
                for change in changes { try Self.apply(change, in: db) }
            }
        } catch let error as StoreError {
            throw error
        } catch {
            throw StoreError("session store write failed: \(error)")
        }
    }

    private static func apply(_ change: SessionChange, in db: Database) throws {
        switch change {
        case .record(let record, let epoch, let owner, let replicas, let dropped, let jointOld):
            try upsert(record.session, epoch: epoch, owner: owner, replicas: replicas, jointOld: jointOld, in: db)
            try insert(record, in: db)
            if record.kind == .create, let options = record.content { try setOptions(options, of: record.session, in: db) }
            if record.kind == .base, let content = record.content {
                // Compaction: every record before the base's cut (the checkpoint right before it)
                // goes in the same transaction. That checkpoint is the latest, so its chunks are
                // the session's only chunks: none to collect.
                let base = try SessionBase.decode(content)
                guard base.cutSeq == record.seq &- 1 else { throw StoreError("session \(record.session): a base that does not follow its cut") }
                try db.cachedStatement(sql: "DELETE FROM session_record WHERE session = ? AND seq < ?")
                    .execute(arguments: [record.session, Int64(bitPattern: base.cutSeq)])
                try setOptions(base.options, of: record.session, in: db)
            }
            if let dropped {
                try db.cachedStatement(sql: "UPDATE session_record SET content = NULL WHERE session = ? AND seq = ?")
                    .execute(arguments: [record.session, Int64(bitPattern: dropped)])
            }
            if record.kind == .delete {
                try db.execute(sql: "UPDATE session_record SET content = NULL WHERE session = ? AND kind = ?",
                               arguments: [record.session, Int(SessionRecord.Kind.checkpoint.rawValue)])
                try SessionChunkStore.keepOnly([], of: record.session, in: db)
            }
        case .image(let image):
            // Stored again here: a release remembered of it is over (`Sessions.dropRelease`).
            try SessionReleaseSchema.end(image.id, in: db)
            try upsert(image.id, epoch: image.epoch, owner: image.owner, replicas: image.replicas, jointOld: image.jointOld,
                       configEpoch: image.configEpoch, in: db)
            try db.execute(sql: "DELETE FROM session_record WHERE session = ?", arguments: [image.id])
            // Only the latest state is kept (its chunks are the session's only chunks).
            let latest = image.records.lastIndex { $0.kind == .checkpoint && $0.content != nil }
            var keptState = false
            for (i, var record) in image.records.enumerated() {
                if record.kind == .checkpoint, i != latest { record.content = nil }
                keptState = try insert(record, in: db) || keptState
            }
            if !keptState { try SessionChunkStore.keepOnly([], of: image.id, in: db) }
            if let options = image.creationOptions { try setOptions(options, of: image.id, in: db) }
        case .promise(let id, let epoch, let owner):
            try db.cachedStatement(sql: "UPDATE session SET epoch = ?, owner = ? WHERE id = ?")
                .execute(arguments: [Int64(bitPattern: epoch), owner, id])
        case .established(let id):
            try db.cachedStatement(sql: "UPDATE session SET joint_old = x'' WHERE id = ?").execute(arguments: [id])
        case .fencePromise(let p):
            // The promise itself, and beside it the fence's (kept until the row goes).
            try db.cachedStatement(sql: "UPDATE session SET epoch = ?, owner = ?, fence_epoch = ?, fence_owner = ? WHERE id = ?")
                .execute(arguments: [Int64(bitPattern: p.epoch), p.owner, Int64(bitPattern: p.epoch), p.owner, p.session])
        case .forget(let release):
            // Its chunks too: a copy left behind by a handoff would otherwise keep up to 1 MiB
            // of chunks on disk for ever. The release is remembered in the same transaction.
            let id = release.session
            try SessionChunkStore.keepOnly([], of: id, in: db)
            try db.execute(sql: "DELETE FROM session_record WHERE session = ?", arguments: [id])
            try db.execute(sql: "DELETE FROM session WHERE id = ?", arguments: [id])
            try SessionReleaseSchema.remember(release, in: db)
        }
    }

    /// `configEpoch`: nil keeps the row's (a record does not change the configuration).
    private static func upsert(_ id: String, epoch: UInt64, owner: PeerName, replicas: [PeerName], jointOld: [PeerName],
                               configEpoch: UInt64? = nil, in db: Database) throws {
        try db.cachedStatement(sql: """
            INSERT INTO session (id, epoch, owner, replicas, joint_old, config_epoch) VALUES (?, ?, ?, ?, ?, ?)
            ON CONFLICT(id) DO UPDATE SET epoch = excluded.epoch, owner = excluded.owner, replicas = excluded.replicas,
                joint_old = excluded.joint_old, config_epoch = CASE WHEN ? THEN excluded.config_epoch ELSE config_epoch END
            """).execute(arguments: [id, Int64(bitPattern: epoch), owner, Data(SwarmStore.encodeNames(replicas)),
                                     Data(SwarmStore.encodeNames(jointOld)), Int64(bitPattern: configEpoch ?? 0), configEpoch != nil])
    }

    private static func setOptions(_ options: [UInt8], of id: String, in db: Database) throws {
        try db.cachedStatement(sql: "UPDATE session SET options = ? WHERE id = ?").execute(arguments: [Data(options), id])
    }

    /// Inserts a record; a checkpoint's state goes in as chunks (`SessionChunkStore`). Returns
    /// whether the record's state was stored as chunks (it is then the session's latest state).
    @discardableResult
    private static func insert(_ r: SessionRecord, in db: Database) throws -> Bool {
        let manifest = try SessionChunkStore.storeState(of: r, in: db)
        try db.cachedStatement(sql: """
            INSERT INTO session_record (session, seq, previousHash, epoch, kind, key, contentDigest, content, signer, signerKey, signature, chunked)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            """).execute(arguments: [r.session, Int64(bitPattern: r.seq), Data(r.previousHash), Int64(bitPattern: r.epoch), Int(r.kind.rawValue),
                                     r.key, Data(r.contentDigest), (manifest ?? r.content).map { Data($0) }, r.signer, Data(r.signerKey),
                                     Data(r.signature), manifest == nil ? 0 : 1])
        return manifest != nil
    }

    // MARK: Reads

    /// Every session held, for the protocol's restore at start. A row that does not read back
    /// as it was written throws: the node refuses to start rather than serve a damaged journal.
    public func loadAll() throws -> [SessionImage] {
        do {
            return try pool.read { db in
                let ids = try String.fetchAll(db, sql: "SELECT id FROM session ORDER BY id")
                return try ids.compactMap { try Self.image($0, in: db) }
            }
        } catch let error as StoreError {
            throw error
        } catch {
            throw StoreError("session store read failed: \(error)")
        }
    }

    /// The promises this node made at handoffs' fences (`SessionChange.fencePromise`), for the
    /// protocol's restore at start.
    public func loadFencePromises() throws -> [SessionFencePromise] {
        do {
            return try pool.read { db in
                try Row.fetchAll(db, sql: "SELECT id, fence_epoch, fence_owner FROM session WHERE fence_owner IS NOT NULL ORDER BY id").map { row in
                    SessionFencePromise(session: row["id"], epoch: UInt64(bitPattern: row["fence_epoch"] as Int64), owner: row["fence_owner"])
                }
            }
        } catch {
            throw StoreError("session store read failed: \(error)")
        }
    }

    /// The releases this node remembers, oldest first, and whether it forgot any
    /// (`SessionReleaseSchema`), for the protocol's restore at start.
    public func loadReleases() throws -> (releases: [SessionRelease], forgotten: Bool) {
        do {
            return try pool.read { db in try SessionReleaseSchema.load(db) }
        } catch {
            throw StoreError("session store read failed: \(error)")
        }
    }

    /// One session as stored here, or nil.
    public func image(_ id: String) throws -> SessionImage? {
        do {
            return try pool.read { db in try Self.image(id, in: db) }
        } catch let error as StoreError {
            throw error
        } catch {
            throw StoreError("session store read failed: \(error)")
        }
    }

    /// The owner recorded for a session held here (the epoch's owner), or nil.
    public func owner(of id: String) -> PeerName? {
        try? pool.read { db in try String.fetchOne(db, sql: "SELECT owner FROM session WHERE id = ?", arguments: [id]) }
    }

    private static func image(_ id: String, in db: Database) throws -> SessionImage? {
        guard let row = try Row.fetchOne(db, sql: "SELECT epoch, owner, replicas, config_epoch, joint_old FROM session WHERE id = ?",
                                         arguments: [id]) else { return nil }
        let epoch = UInt64(bitPattern: try column(row, "epoch", Int64.self))
        let owner = try column(row, "owner", String.self)
        let replicas = SwarmStore.decodeNames([UInt8](try column(row, "replicas", Data.self)))
        let configEpoch = UInt64(bitPattern: try column(row, "config_epoch", Int64.self))
        let jointOld = SwarmStore.decodeNames([UInt8](try column(row, "joint_old", Data.self)))
        var records: [SessionRecord] = []
        let rows = try Row.fetchCursor(db, sql: "SELECT * FROM session_record WHERE session = ? ORDER BY seq", arguments: [id])
        while let r = try rows.next() {
            let rawKind = try column(r, "kind", Int64.self)
            guard rawKind >= 0, rawKind <= 255, let kind = SessionRecord.Kind(rawValue: UInt8(rawKind)) else {
                throw StoreError("session \(id): a record of unknown kind \(rawKind)")
            }
            records.append(SessionRecord(
                session: id, seq: UInt64(bitPattern: try column(r, "seq", Int64.self)),
                previousHash: [UInt8](try column(r, "previousHash", Data.self)),
                epoch: UInt64(bitPattern: try column(r, "epoch", Int64.self)), kind: kind, key: try column(r, "key", String.self),
                contentDigest: [UInt8](try column(r, "contentDigest", Data.self)),
                content: try SessionChunkStore.content(of: r, session: id, in: db),
                signer: try column(r, "signer", String.self), signerKey: [UInt8](try column(r, "signerKey", Data.self)),
                signature: [UInt8](try column(r, "signature", Data.self))))
        }
        return SessionImage(id: id, epoch: epoch, owner: owner, replicas: replicas, configEpoch: configEpoch, jointOld: jointOld, records: records)
    }

    /// A column read that throws instead of trapping on a value of the wrong type.
    private static func column<T: DatabaseValueConvertible>(_ row: Row, _ name: String, _ type: T.Type) throws -> T {
        try row.decode(T.self, forColumn: name)
    }
}
