import GRDB

/// The audit log's tables, registered as migration `v4-audit` of `StoreSchema`.
enum AuditSchema {
    static func create(_ db: Database) throws {
        // One row per entry, in chain order: seq is the rowid, 1, 2, 3, ... without gaps.
        try db.execute(sql: """
            CREATE TABLE audit (
                seq INTEGER PRIMARY KEY NOT NULL,
                timeMs INTEGER NOT NULL,
                kind TEXT NOT NULL,
                body TEXT NOT NULL,            -- canonical JSON (CanonicalJSON.swift)
                previousHash BLOB NOT NULL,    -- 32 bytes; zeros for seq 1
                hash BLOB NOT NULL,            -- BLAKE2b-256 of the entry's message (AuditEntry.swift)
                signature BLOB NOT NULL        -- Ed25519 by node.key over (seq, hash)
            ) STRICT
            """)
        // Append-only for the node's own code: an UPDATE or DELETE by mistake fails loudly. This is
        // no defence against root (who can drop the triggers); the chain, the signatures and the
        // witnessed heads are.
        try db.execute(sql: "CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END")
        try db.execute(sql: "CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END")
        // The latest head this node witnessed of each peer's log (one row per peer).
        try db.execute(sql: """
            CREATE TABLE audit_witness (
                node TEXT PRIMARY KEY NOT NULL,
                publicKey BLOB NOT NULL,
                seq INTEGER NOT NULL,
                hash BLOB NOT NULL,
                signature BLOB NOT NULL,
                receivedAtMs INTEGER NOT NULL
            ) STRICT
            """)
    }
}
