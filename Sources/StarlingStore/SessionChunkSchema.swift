import GRDB

/// Migration `v6-session-chunks`: a checkpoint's state stored as content-addressed chunks.
///
/// A chunked checkpoint row (`chunked` = 1) keeps its state's manifest in `content` (NULL once
/// superseded, as a state was); the chunks of the session's latest state are rows of
/// `session_chunk`, keyed by (session, BLAKE2b-256 of the chunk). A checkpoint writes only the
/// chunks its session does not have yet, and deletes those its manifest no longer names: only
/// the latest state of a session is kept, so no other record refers to them.
enum SessionChunkSchema {
    static func create(_ db: Database) throws {
        try db.execute(sql: """
            CREATE TABLE session_chunk (
                session TEXT NOT NULL REFERENCES session(id) ON DELETE CASCADE,
                digest BLOB NOT NULL,
                bytes BLOB NOT NULL,
                PRIMARY KEY (session, digest)
            ) STRICT
            """)
        try db.execute(sql: "ALTER TABLE session_record ADD COLUMN chunked INTEGER NOT NULL DEFAULT 0")
    }
}
