import Foundation
import GRDB
import StarlingCore
import StarlingCrypto

/// A checkpoint's state in the store as content-addressed chunks (migration `v6-session-chunks`).
///
/// Only a session's latest state is kept, so its chunks are exactly those the latest checkpoint's
/// manifest names: a checkpoint inserts the chunks not held yet and deletes the rest. A state
/// whose record digest is not its manifest's (written before chunking) is kept whole as before.
enum SessionChunkStore {
    /// For a checkpoint carrying its state: stores the chunks the session lacks, deletes the
    /// chunks the state does not use, and returns the manifest to keep in the record's row.
    /// Nil for any other record (kept as it is).
    static func storeState(of r: SessionRecord, in db: Database) throws -> [UInt8]? {
        guard r.kind == .checkpoint, let state = r.content else { return nil }
        let (manifest, chunks) = StateManifest.of(state, hash: { blake2b($0) })
        let manifestBytes = manifest.encoded
        guard blake2b(manifestBytes) == r.contentDigest else { return nil }
        let held = Set(try Data.fetchAll(db, sql: "SELECT digest FROM session_chunk WHERE session = ?", arguments: [r.session]))
        var named = Set<Data>()
        for (ref, chunk) in zip(manifest.chunks, chunks) {
            let digest = Data(ref.digest)
            guard named.insert(digest).inserted, !held.contains(digest) else { continue }
            try db.cachedStatement(sql: "INSERT INTO session_chunk (session, digest, bytes) VALUES (?, ?, ?)")
                .execute(arguments: [r.session, digest, Data(chunk)])
        }
        for digest in held where !named.contains(digest) {
            try db.cachedStatement(sql: "DELETE FROM session_chunk WHERE session = ? AND digest = ?").execute(arguments: [r.session, digest])
        }
        return manifestBytes
    }

    /// Deletes every chunk of `session` but those named in `keep`.
    static func keepOnly(_ keep: Set<Data>, of session: String, in db: Database) throws {
        if keep.isEmpty {
            try db.cachedStatement(sql: "DELETE FROM session_chunk WHERE session = ?").execute(arguments: [session])
            return
        }
        let held = try Data.fetchAll(db, sql: "SELECT digest FROM session_chunk WHERE session = ?", arguments: [session])
        for digest in held where !keep.contains(digest) {
            try db.cachedStatement(sql: "DELETE FROM session_chunk WHERE session = ? AND digest = ?").execute(arguments: [session, digest])
        }
    }

    /// A record row's content: a chunked checkpoint's state assembled from its chunks. A chunk
    /// missing or of the wrong size throws (the node refuses to serve a damaged journal).
    static func content(of row: Row, session: String, in db: Database) throws -> [UInt8]? {
        guard let stored = try row.decode(Data?.self, forColumn: "content").map({ [UInt8]($0) }) else { return nil }
        guard try row.decode(Int64.self, forColumn: "chunked") == 1 else { return stored }
        let manifest = try StateManifest.decode(stored)
        var have: [[UInt8]: [UInt8]] = [:]
        for ref in manifest.chunks where have[ref.digest] == nil {
            guard let bytes = try Data.fetchOne(db, sql: "SELECT bytes FROM session_chunk WHERE session = ? AND digest = ?",
                                                arguments: [session, Data(ref.digest)]) else {
                throw StoreError("session \(session): a chunk of its latest state is missing")
            }
            have[ref.digest] = [UInt8](bytes)
        }
        guard let state = manifest.assemble(from: have) else { throw StoreError("session \(session): a chunk of its latest state is damaged") }
        return state
    }
}
