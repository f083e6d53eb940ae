import GRDB

/// The session tables (migration `v5-sessions`): one row per session held (its promised epoch,
/// that epoch's owner and the replica set) and one row per journal record.
enum SessionSchema {
    static func create(_ db: Database) throws {
        try db.execute(sql: """
            CREATE TABLE session (
                id TEXT PRIMARY KEY NOT NULL,
                epoch INTEGER NOT NULL,          -- the highest epoch promised here (UInt64 bit pattern)
                owner TEXT NOT NULL,             -- who it was promised to
                replicas BLOB NOT NULL           -- peer names, each followed by a NUL byte
            ) STRICT
            """)
        // A rowid table, not WITHOUT ROWID: a record may carry a 1 MiB state, and SQLite keeps
        // large rows out of a WITHOUT ROWID table's b-tree poorly.
        try db.execute(sql: """
            CREATE TABLE session_record (
                session TEXT NOT NULL REFERENCES session(id) ON DELETE CASCADE,
                seq INTEGER NOT NULL,
                previousHash BLOB NOT NULL,
                epoch INTEGER NOT NULL,
                kind INTEGER NOT NULL,
                key TEXT NOT NULL,
                contentDigest BLOB NOT NULL,
                content BLOB,                    -- NULL once a later checkpoint superseded it
                signer TEXT NOT NULL,
                signerKey BLOB NOT NULL,
                signature BLOB NOT NULL,
                PRIMARY KEY (session, seq)
            ) STRICT
            """)
    }
}
