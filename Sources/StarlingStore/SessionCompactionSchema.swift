import GRDB

/// Migration `v7-session-compaction`: a session's creation options in its own row.
///
/// Once a session is compacted (`SessionBase`, kind 6), its create record (seq 1) is gone and
/// its options live inside the base record. The options are what the node reads to find the
/// agents it holds (`creationOptions(containing:)`), so they are kept in `session.options`,
/// set from the create, from a base, or from an image, and filled here for the sessions stored
/// before.
enum SessionCompactionSchema {
    static func create(_ db: Database) throws {
        try db.execute(sql: "ALTER TABLE session ADD COLUMN options BLOB")
        try db.execute(sql: """
            UPDATE session SET options = (
                SELECT r.content FROM session_record r WHERE r.session = session.id AND r.seq = 1 AND r.kind = 1)
            """)
    }
}
