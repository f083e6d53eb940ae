import GRDB
import StarlingCore

/// The releases a node remembers (`SessionRelease`): a session this node held and released to a
/// newer replica set, with the epoch and owner it went to. The protocol answers a prepare for
/// one with that owner instead of an empty promise; forgetting them at a restart would reopen
/// the split brain they close, so they are stored with the forget itself.
///
/// Bounded like the protocol's memory (`SessionLimits.maxReleasesRemembered`, oldest out). Once
/// a row was dropped, `session_release_state.forgotten` is 1 for good: the node then refuses
/// empty promises altogether (fail closed).
enum SessionReleaseSchema {
    static func create(_ db: Database) throws {
        // `rowid` orders the releases (INSERT OR REPLACE gives a released-again session a new one).
        try db.execute(sql: """
            CREATE TABLE session_release (
                session TEXT PRIMARY KEY NOT NULL,
                epoch INTEGER NOT NULL,
                owner TEXT NOT NULL
            ) STRICT
            """)
        try db.execute(sql: "CREATE TABLE session_release_state (id INTEGER PRIMARY KEY CHECK (id = 1), forgotten INTEGER NOT NULL) STRICT")
        // A store from before this table may have released sessions it cannot name (a replica's
        // releases leave no row anywhere): one that was ever used starts as having forgotten
        // releases (fail closed: no empty promises). Only a fresh store starts clean.
        let used = try Bool.fetchOne(db, sql: """
            SELECT EXISTS (SELECT 1 FROM session) OR EXISTS (SELECT 1 FROM swarm) OR EXISTS (SELECT 1 FROM audit)
            """) ?? true
        try db.execute(sql: "INSERT INTO session_release_state (id, forgotten) VALUES (1, ?)", arguments: [used ? 1 : 0])
    }

    /// Migration `v10-session-release-count`: the number of rows kept beside them, so that a
    /// release does not count the table (a `COUNT(*)` per release read all 65,536 rows: review4
    /// F9).
    static func addCount(_ db: Database) throws {
        try db.execute(sql: "ALTER TABLE session_release_state ADD COLUMN count INTEGER NOT NULL DEFAULT 0")
        try db.execute(sql: "UPDATE session_release_state SET count = (SELECT COUNT(*) FROM session_release) WHERE id = 1")
    }

    /// Remembers `release` (in the forget's transaction), dropping the oldest past the bound.
    static func remember(_ release: SessionRelease, in db: Database, bound: Int = SessionLimits.maxReleasesRemembered) throws {
        let known = try Bool.fetchOne(db.cachedStatement(sql: "SELECT EXISTS (SELECT 1 FROM session_release WHERE session = ?)"),
                                      arguments: [release.session]) ?? false
        try db.cachedStatement(sql: "INSERT OR REPLACE INTO session_release (session, epoch, owner) VALUES (?, ?, ?)")
            .execute(arguments: [release.session, Int64(bitPattern: release.epoch), release.owner])
        if known { return }
        let count = try (Int.fetchOne(db.cachedStatement(sql: "SELECT count FROM session_release_state WHERE id = 1")) ?? 0) + 1
        let over = count - bound
        if over > 0 {
            try db.execute(sql: "DELETE FROM session_release WHERE rowid IN (SELECT rowid FROM session_release ORDER BY rowid LIMIT ?)",
                           arguments: [over])
            try db.execute(sql: "UPDATE session_release_state SET forgotten = 1 WHERE id = 1")
        }
        try db.cachedStatement(sql: "UPDATE session_release_state SET count = ? WHERE id = 1").execute(arguments: [min(count, bound)])
    }

    /// Ends the release of `session` (stored here again), if one is remembered.
    static func end(_ session: String, in db: Database) throws {
        try db.cachedStatement(sql: "DELETE FROM session_release WHERE session = ?").execute(arguments: [session])
        if db.changesCount > 0 {
            try db.cachedStatement(sql: "UPDATE session_release_state SET count = count - 1 WHERE id = 1").execute()
        }
    }

    /// The releases remembered, oldest first, and whether any was forgotten.
    static func load(_ db: Database) throws -> (releases: [SessionRelease], forgotten: Bool) {
        let rows = try Row.fetchAll(db, sql: "SELECT session, epoch, owner FROM session_release ORDER BY rowid")
        let releases = rows.map { row in
            SessionRelease(session: row["session"], epoch: UInt64(bitPattern: row["epoch"] as Int64), owner: row["owner"])
        }
        let forgotten = (try Int.fetchOne(db, sql: "SELECT forgotten FROM session_release_state WHERE id = 1") ?? 1) != 0
        return (releases, forgotten)
    }
}
