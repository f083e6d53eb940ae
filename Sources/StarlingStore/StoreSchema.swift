import GRDB

/// The tables of `starling.sqlite`, as versioned migrations. A migration, once shipped, is never
/// edited: a later change is a new migration, so a node restarted on an older data dir upgrades
/// it in place (GRDB records the applied ones in `grdb_migrations`).
enum StoreSchema {
    static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1-swarms") { db in
            // One row per swarm this node owns or replicates. The definition columns never
            // change after the first write; epoch and state do.
            try db.execute(sql: """
                CREATE TABLE swarm (
                    id TEXT PRIMARY KEY NOT NULL,
                    replicas BLOB NOT NULL,        -- peer names, each followed by a NUL byte
                    maxAttempts INTEGER NOT NULL,
                    options BLOB NOT NULL,         -- host-opaque (the runtime's JSON)
                    parentSwarm TEXT,              -- set with parentTask for a sub-swarm
                    parentTask INTEGER,
                    createdAtMs INTEGER NOT NULL,
                    taskCount INTEGER NOT NULL,
                    epoch INTEGER NOT NULL,
                    state INTEGER NOT NULL         -- SwarmState's raw value
                ) STRICT
                """)
            // Listing newest first without a sort of the whole table.
            try db.execute(sql: "CREATE INDEX swarm_by_creation ON swarm(createdAtMs DESC, id)")
            try db.execute(sql: """
                CREATE TABLE task (
                    swarm TEXT NOT NULL REFERENCES swarm(id) ON DELETE CASCADE,
                    idx INTEGER NOT NULL,
                    taskId TEXT NOT NULL,
                    memoryMB INTEGER NOT NULL,
                    milliCPUs INTEGER NOT NULL,
                    payload BLOB NOT NULL,         -- host-opaque (the TaskSpec's JSON)
                    state INTEGER NOT NULL,        -- TaskState's raw value
                    attempt INTEGER NOT NULL,
                    node TEXT,
                    result BLOB,                   -- host-opaque (the TaskResult's JSON)
                    finishSeq INTEGER NOT NULL,    -- 0 until final, then 1, 2, ... per swarm
                    PRIMARY KEY (swarm, idx)
                ) STRICT, WITHOUT ROWID
                """)
            // The events stream reads finished tasks in completion order after a sequence number.
            try db.execute(sql: "CREATE INDEX task_by_finish ON task(swarm, finishSeq) WHERE finishSeq > 0")
        }
        migrator.registerMigration("v2-swarm-children") { db in
            // A task's socket sums its swarm's children's costs (its spawn budget) on every
            // child it creates: without this, a scan of every swarm held.
            try db.execute(sql: "CREATE INDEX swarm_by_parent ON swarm(parentSwarm, parentTask) WHERE parentSwarm IS NOT NULL")
        }
        migrator.registerMigration("v3-swarm-child-links") { db in
            // The children a parent swarm's owner recorded (where to send their cancels, and
            // what each costs the parent's spawn budget). Before this they lived in memory only:
            // a parent whose every holder restarted forgot its children.
            try db.execute(sql: """
                CREATE TABLE swarm_child (
                    parent TEXT NOT NULL REFERENCES swarm(id) ON DELETE CASCADE,
                    child TEXT NOT NULL,
                    replicas BLOB NOT NULL,        -- peer names, each followed by a NUL byte
                    cost INTEGER NOT NULL,         -- tasks + spawn budget handed down
                    PRIMARY KEY (parent, child)
                ) STRICT, WITHOUT ROWID
                """)
        }
        migrator.registerMigration("v4-audit") { db in try AuditSchema.create(db) }
        migrator.registerMigration("v5-sessions") { db in try SessionSchema.create(db) }
        migrator.registerMigration("v6-session-chunks") { db in try SessionChunkSchema.create(db) }
        migrator.registerMigration("v7-swarm-visible-finishes") { db in
            // The events stream shows finished tasks numbered up to `visibleSeq` only: those a
            // majority of the replica set stores (`StoreChange.visible`). Swarms stored before
            // keep showing what they hold, as they did.
            try db.execute(sql: "ALTER TABLE swarm ADD COLUMN visibleSeq INTEGER NOT NULL DEFAULT 0")
            try db.execute(sql: "UPDATE swarm SET visibleSeq = (SELECT IFNULL(MAX(finishSeq), 0) FROM task WHERE task.swarm = swarm.id)")
        }
        migrator.registerMigration("v7-session-compaction") { db in try SessionCompactionSchema.create(db) }
        migrator.registerMigration("v8-swarm-finished-at") { db in try SwarmRetention.create(db) }
        migrator.registerMigration("v9-session-releases") { db in try SessionReleaseSchema.create(db) }
        migrator.registerMigration("v10-session-release-count") { db in try SessionReleaseSchema.addCount(db) }
        migrator.registerMigration("v11-session-fence-promise") { db in
            // A member's promise at a handoff's fence (`SessionChange.fencePromise`).
            try db.execute(sql: "ALTER TABLE session ADD COLUMN fence_epoch INTEGER")
            try db.execute(sql: "ALTER TABLE session ADD COLUMN fence_owner TEXT")
        }
        migrator.registerMigration("v12-session-configuration") { db in
            // The epoch that installed a session's replica set, and the set it replaced while the
            // change is joint (`SessionImage.configEpoch`, `jointOld`). Rows from before count as
            // the creation's configuration, established.
            try db.execute(sql: "ALTER TABLE session ADD COLUMN config_epoch INTEGER NOT NULL DEFAULT 0")
            try db.execute(sql: "ALTER TABLE session ADD COLUMN joint_old BLOB NOT NULL DEFAULT x''")
        }
        migrator.registerMigration("v13-swarm-finish-lineage") { db in
            // The reigns that numbered a swarm's finishes (`StoreChange.lineage`): the events
            // stream's ids name them. Swarms stored before have none, and their streams take
            // `Last-Event-ID` as a plain number, as they did.
            try db.execute(sql: "ALTER TABLE swarm ADD COLUMN lineage BLOB NOT NULL DEFAULT x''")
        }
        return migrator
    }
}
