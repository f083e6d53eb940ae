import Foundation
import GRDB
import StarlingCore

/// A store write or read that failed. Writes fail closed: the caller refuses the work the
/// change belonged to (a swarm not stored is not accepted; a result not stored is not
/// acknowledged) instead of going on as if it were durable.
public struct StoreError: Error, CustomStringConvertible, Equatable {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// The swarms a node owns or replicates, in `DIR/starling.sqlite` (SQLite in WAL mode through a
/// GRDB `DatabasePool`).
///
/// Thread safety: a `DatabasePool` serializes writes on one writer connection and serves reads
/// from a pool of reader connections that see the last committed transaction (WAL snapshot
/// isolation), so `apply` may run on the swarm's writer thread while HTTP handlers read from NIO
/// threads at the same time; a read never sees half of an `apply`.
public final class SwarmStore: Sendable {
    /// Most tasks one `status` page holds (and the default page when tasks are asked for):
    /// a 10,000-task swarm is read in pages, never as one body.
    public static let maxPageSize = 1_000
    /// Most swarms one `list` returns.
    public static let maxListSize = 1_000
    /// Most finished tasks one `events` call returns.
    public static let maxEventBatch = 1_000
    /// Result bytes after which a page or an event batch stops early (32 MiB).
    public static let maxPageResultBytes = 32 << 20

    /// The file inside a node's data dir.
    public static let fileName = "starling.sqlite"

    /// Shared with `AuditLog`, so that both write through one writer connection.
    let pool: DatabasePool
    /// Bumped after every committed write, per swarm touched: what event streams wait on.
    public let written = StoreSignal()
    public let path: String

    /// Opens (creating if needed) `directory/starling.sqlite` and brings its schema up to date.
    public convenience init(directory: String, durability: StoreDurability = .full) throws {
        try self.init(path: (directory as NSString).appendingPathComponent(Self.fileName), durability: durability)
    }

    public init(path: String, durability: StoreDurability = .full) throws {
        var configuration = Configuration()
        // A reader waits for a checkpoint or a writer for a while instead of failing at once.
        configuration.busyMode = .timeout(5)
        configuration.foreignKeysEnabled = true
        configuration.maximumReaderCount = 4
        let synchronous = "PRAGMA synchronous = \(durability.pragma)"
        configuration.prepareDatabase { db in
            try db.execute(sql: synchronous)
        }
        do {
            pool = try DatabasePool(path: path, configuration: configuration)
            // Again on the writer, where it matters: opening a pool in WAL mode sets the
            // writer's `synchronous` to NORMAL after `prepareDatabase` ran (GRDB's
            // `setUpWALMode`), so the pragma above never held for writes.
            try pool.writeWithoutTransaction { db in try db.execute(sql: synchronous) }
            try StoreSchema.migrator.migrate(pool)
        } catch {
            throw StoreError("cannot open the store at \(path): \(error)")
        }
        self.path = path
    }

    /// The writer connection's `PRAGMA synchronous` (2 is FULL): what a commit waits for.
    public func writerSynchronous() throws -> Int {
        do { return try pool.writeWithoutTransaction { db in try Int.fetchOne(db, sql: "PRAGMA synchronous") ?? -1 } } catch {
            throw StoreError("store read failed: \(error)")
        }
    }

    // MARK: Writes

    /// Writes every change in one transaction: all of them or none. Throws on any failure,
    /// a change that names an unknown swarm or task included.
    public func apply(_ changes: [StoreChange]) throws {
        guard !changes.isEmpty else { return }
        do {
            try pool.write { db in
                for change in changes { try Self.apply(change, in: db) }
            }
            written.bump(swarms: Set(changes.map(Self.swarm(of:))))
        } catch let error as StoreError {
            throw error
        } catch {
            throw StoreError("store write failed: \(error)")
        }
    }

    /// The swarm whose readers a change concerns (a child link: its parent's).
    private static func swarm(of change: StoreChange) -> SwarmID {
        switch change {
        case .swarm(let definition, _, _): definition.id
        case .task(let swarm, _, _), .swarmState(let swarm, _, _), .child(let swarm, _), .visible(let swarm, _),
             .lineage(let swarm, _), .hideAll(let swarm): swarm
        }
    }

    private static func apply(_ change: StoreChange, in db: Database) throws {
        switch change {
        case .swarm(let definition, let epoch, let state):
            try insertOrUpdate(definition, epoch: epoch, state: state, in: db)
        case .task(let swarm, let index, let record):
            // Cached: prepared once per connection, not parsed and authorised on every write.
            try db.cachedStatement(sql: """
                UPDATE task SET state = ?, attempt = ?, node = ?, result = ?, finishSeq = ?
                WHERE swarm = ? AND idx = ?
                """).execute(arguments: [Int(record.state.rawValue), Int(record.attempt), record.node,
                                         record.result.map { Data($0) }, Int64(record.finishSeq), swarm, Int64(index)])
            guard db.changesCount == 1 else { throw StoreError("no task \(index) of swarm \(swarm) to update") }
        case .swarmState(let swarm, let state, let epoch):
            let values: StatementArguments = [Int(state.rawValue), Int64(epoch)]
            let id: StatementArguments = [swarm]
            try db.cachedStatement(sql: "UPDATE swarm SET state = ?, epoch = ?, \(SwarmRetention.finishedAtUpdate) WHERE id = ?")
                .execute(arguments: values + SwarmRetention.finishedAtArguments(state) + id)
            guard db.changesCount == 1 else { throw StoreError("no swarm \(swarm) to update") }
        case .child(let parent, let link):
            // The first record of a link stands (a link's child and replicas never change).
            try db.execute(sql: """
                INSERT INTO swarm_child (parent, child, replicas, cost) VALUES (?, ?, ?, ?)
                ON CONFLICT(parent, child) DO NOTHING
                """, arguments: [parent, link.child, Data(encodeNames(link.replicas)), Int64(clamping: link.cost)])
        case .visible(let swarm, let upTo):
            // The highest value written stands (until `hideAll`): a stream never takes back an
            // event it showed.
            try db.cachedStatement(sql: "UPDATE swarm SET visibleSeq = MAX(visibleSeq, ?) WHERE id = ?")
                .execute(arguments: [Int64(upTo), swarm])
            guard db.changesCount == 1 else { throw StoreError("no swarm \(swarm) to update") }
        case .hideAll(let swarm):
            try db.cachedStatement(sql: "UPDATE swarm SET visibleSeq = 0 WHERE id = ?").execute(arguments: [swarm])
            guard db.changesCount == 1 else { throw StoreError("no swarm \(swarm) to update") }
        case .lineage(let swarm, let lineage):
            try db.cachedStatement(sql: "UPDATE swarm SET lineage = ? WHERE id = ?")
                .execute(arguments: [Data(encodeLineage(lineage)), swarm])
            guard db.changesCount == 1 else { throw StoreError("no swarm \(swarm) to update") }
        }
    }

    /// A swarm seen for the first time is stored with every task pending; a swarm already held
    /// (a replica taking over, a repeated replication) keeps its task records and takes the
    /// new epoch and state.
    private static func insertOrUpdate(_ definition: SwarmDefinition, epoch: UInt32, state: SwarmState, in db: Database) throws {
        let draft = definition.draft
        try db.execute(sql: """
            INSERT INTO swarm (id, replicas, maxAttempts, options, parentSwarm, parentTask, createdAtMs, taskCount, epoch, state, finishedAtMs)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            ON CONFLICT(id) DO UPDATE SET epoch = excluded.epoch, state = excluded.state, replicas = excluded.replicas,
                finishedAtMs = CASE WHEN excluded.finishedAtMs IS NULL THEN NULL ELSE COALESCE(swarm.finishedAtMs, excluded.finishedAtMs) END
            """, arguments: [definition.id, Data(encodeNames(definition.replicas)), Int(draft.maxAttempts), Data(draft.options),
                             draft.parent?.swarm, draft.parent.map { Int64($0.task) },
                             Int64(clamping: draft.createdAtMs), Int64(draft.tasks.count), Int64(epoch), Int(state.rawValue),
                             state == .running ? nil : SwarmRetention.nowMs()])
        let insert = try db.cachedStatement(sql: """
            INSERT INTO task (swarm, idx, taskId, memoryMB, milliCPUs, payload, state, attempt, node, result, finishSeq)
            VALUES (?, ?, ?, ?, ?, ?, 0, 0, NULL, NULL, 0)
            ON CONFLICT(swarm, idx) DO NOTHING
            """)
        for (index, task) in draft.tasks.enumerated() {
            try insert.execute(arguments: [definition.id, Int64(index), task.id, Int64(task.needs.memoryMB),
                                           Int64(task.needs.milliCPUs), Data(task.payload)])
        }
    }

    // MARK: Reads

    /// The sub-swarms of `parent` this node holds (at most `limit`), with what a spawn budget
    /// needs of each: its parent task, task count and options.
    public func children(of parent: SwarmID, limit: Int = 100_000) throws -> [ChildSwarmRecord] {
        try read { db in
            try Row.fetchAll(db, sql: "SELECT id, parentTask, taskCount, options FROM swarm WHERE parentSwarm = ? LIMIT ?",
                             arguments: [parent, max(1, limit)]).map { row in
                ChildSwarmRecord(id: row["id"], parent: TaskRef(swarm: parent, task: UInt32(clamping: row["parentTask"] as Int64? ?? 0)),
                                 taskCount: Int(clamping: row["taskCount"] as Int64), options: [UInt8](row["options"] as Data))
            }
        }
    }

    /// Whether this node holds the swarm.
    public func has(_ id: SwarmID) throws -> Bool {
        try read { db in try Bool.fetchOne(db, sql: "SELECT EXISTS(SELECT 1 FROM swarm WHERE id = ?)", arguments: [id]) ?? false }
    }

    /// A swarm's counts and, when `includeTasks`, the tasks from `offset` (at most `limit`,
    /// clamped to 1...maxPageSize). Nil when this node does not hold the swarm.
    ///
    /// A page also stops once the results it holds pass `maxResultBytes` (it always holds at
    /// least one task): a thousand results of several MiB each must not become one answer.
    public func status(_ id: SwarmID, includeTasks: Bool, offset: Int = 0, limit: Int = maxPageSize,
                       maxResultBytes: Int = maxPageResultBytes) throws -> SwarmStatusRecord? {
        try read { db in
            guard let row = try Row.fetchOne(db, sql: "SELECT state, taskCount, createdAtMs, parentSwarm, parentTask FROM swarm WHERE id = ?",
                                             arguments: [id]) else { return nil }
            var counts = TaskCounts()
            for count in try Row.fetchAll(db, sql: "SELECT state, COUNT(*) AS n FROM task WHERE swarm = ? GROUP BY state", arguments: [id]) {
                let n: Int = count["n"]
                switch TaskState(rawValue: UInt8(clamping: count["state"] as Int64)) {
                case .pending: counts.pending += n
                case .running: counts.running += n
                case .succeeded: counts.succeeded += n
                case .failed: counts.failed += n
                case .cancelled: counts.cancelled += n
                case nil: throw StoreError("swarm \(id) has a task in an unknown state")
                }
            }
            counts.total = row["taskCount"]
            var tasks: [StoredTask]? = nil
            if includeTasks {
                let page = Self.clampedPage(offset: offset, limit: limit)
                tasks = try Self.boundedTasks(db, sql: """
                    SELECT idx, taskId, state, attempt, node, result, finishSeq FROM task
                    WHERE swarm = ? AND idx >= ? ORDER BY idx LIMIT ?
                    """, arguments: [id, Int64(page.offset), Int64(page.limit)], maxResultBytes: maxResultBytes)
            }
            return SwarmStatusRecord(id: id, state: try Self.swarmState(row["state"]), counts: counts,
                                     createdAtMs: UInt64(clamping: row["createdAtMs"] as Int64),
                                     parent: Self.parent(row), tasks: tasks)
        }
    }

    /// Swarms this node holds, newest first (at most `limit`, clamped to 1...maxListSize).
    public func list(limit: Int = maxListSize) throws -> [SwarmSummary] {
        let limit = min(max(limit, 1), Self.maxListSize)
        return try read { db in
            try Row.fetchAll(db, sql: """
                SELECT s.id, s.state, s.taskCount, s.createdAtMs,
                       (SELECT COUNT(*) FROM task t WHERE t.swarm = s.id AND t.state = ?) AS succeeded,
                       (SELECT COUNT(*) FROM task t WHERE t.swarm = s.id AND t.state = ?) AS failed
                FROM swarm s ORDER BY s.createdAtMs DESC, s.id LIMIT ?
                """, arguments: [Int(TaskState.succeeded.rawValue), Int(TaskState.failed.rawValue), Int64(limit)]).map { row in
                SwarmSummary(id: row["id"], state: try Self.swarmState(row["state"]), total: row["taskCount"],
                             succeeded: row["succeeded"], failed: row["failed"],
                             createdAtMs: UInt64(clamping: row["createdAtMs"] as Int64))
            }
        }
    }

    /// Finished tasks of a swarm whose `finishSeq` is above `afterSeq` and visible (at most the
    /// swarm's `visibleSeq`: stored on a majority of its replica set, see `StoreChange.visible`),
    /// in completion order (at most `limit`, clamped to 1...maxEventBatch). Nil when this node
    /// does not hold the swarm. Bounded by `maxResultBytes` as `status` pages are.
    /// (The same after a plain number: `events(_:after:)` with a cursor of no reign.)
    public func events(_ id: SwarmID, afterSeq: UInt32, limit: Int = maxEventBatch,
                       maxResultBytes: Int = maxPageResultBytes) throws -> SwarmEvents? {
        try events(id, after: EventCursor(reign: nil, seq: afterSeq), limit: limit, maxResultBytes: maxResultBytes)
    }

    /// Finished tasks after a client's cursor, as above, with the cursor rebased first onto the
    /// swarm's stored lineage (read in the same snapshot), so a cursor of another reign resumes
    /// where this numbering agrees with it. `SwarmEvents.cursor` is the rebased cursor, the
    /// place the tasks follow; `behind` says the cursor's reign is newer than this copy knows.
    public func events(_ id: SwarmID, after cursor: EventCursor, limit: Int = maxEventBatch,
                       maxResultBytes: Int = maxPageResultBytes) throws -> SwarmEvents? {
        let limit = min(max(limit, 1), Self.maxEventBatch)
        return try read { db in
            guard let row = try Row.fetchOne(db, sql: "SELECT state, visibleSeq, lineage FROM swarm WHERE id = ?", arguments: [id]) else {
                return nil
            }
            let lineage = Self.decodeLineage([UInt8](row["lineage"] as Data))
            guard let rebased = cursor.rebased(onto: lineage) else {
                // This copy is behind the client's: nothing to show until it catches up.
                return SwarmEvents(state: try Self.swarmState(row["state"]), tasks: [], allVisible: false,
                                   lineage: lineage, cursor: cursor, behind: true)
            }
            let afterSeq = rebased.seq
            let visible: Int64 = row["visibleSeq"]
            let tasks = try Self.boundedTasks(db, sql: """
                SELECT idx, taskId, state, attempt, node, result, finishSeq FROM task
                WHERE swarm = ? AND finishSeq > 0 AND finishSeq > ? AND finishSeq <= ? ORDER BY finishSeq LIMIT ?
                """, arguments: [id, Int64(afterSeq), visible, Int64(limit)], maxResultBytes: maxResultBytes)
            let hidden = try Bool.fetchOne(db, sql: "SELECT EXISTS(SELECT 1 FROM task WHERE swarm = ? AND finishSeq > 0 AND finishSeq > ?)",
                                           arguments: [id, visible]) ?? false
            // Read in the same snapshot as the tasks: a swarm seen as finished, with nothing
            // hidden, has every finished task at or below what this call (or an earlier one)
            // returned.
            return SwarmEvents(state: try Self.swarmState(row["state"]), tasks: tasks, allVisible: !hidden,
                               lineage: lineage, cursor: rebased)
        }
    }

    /// Everything held, for `Swarm.restore` after a restart.
    public func loadAll() throws -> [(SwarmDefinition, epoch: UInt32, state: SwarmState, tasks: [TaskRecord])] {
        try read { db in
            let swarms = try Row.fetchAll(db, sql: "SELECT * FROM swarm ORDER BY createdAtMs, id")
            return try swarms.map { row in
                let (definition, records) = try Self.definition(row, in: db)
                return (definition, epoch: UInt32(clamping: row["epoch"] as Int64), state: try Self.swarmState(row["state"]), tasks: records)
            }
        }
    }

    /// The lineage stored for every held swarm that has one, for `Swarm.restore`.
    public func lineages() throws -> [SwarmID: FinishLineage] {
        try read { db in
            var lineages: [SwarmID: FinishLineage] = [:]
            for row in try Row.fetchAll(db, sql: "SELECT id, lineage FROM swarm WHERE length(lineage) > 0") {
                lineages[row["id"]] = Self.decodeLineage([UInt8](row["lineage"] as Data))
            }
            return lineages
        }
    }

    /// The child links stored for every held swarm, for `Swarm.restore` after a restart.
    public func childLinks() throws -> [SwarmID: [ChildLink]] {
        try read { db in
            var links: [SwarmID: [ChildLink]] = [:]
            for row in try Row.fetchAll(db, sql: "SELECT parent, child, replicas, cost FROM swarm_child ORDER BY parent, child") {
                let cost: Int64 = row["cost"]
                links[row["parent"], default: []].append(ChildLink(child: row["child"], replicas: Self.decodeNames([UInt8](row["replicas"] as Data)),
                                                                    cost: UInt64(max(0, cost))))
            }
            return links
        }
    }

    /// One held swarm's definition; nil when this node holds nothing of it.
    public func definition(_ id: SwarmID) throws -> SwarmDefinition? {
        try read { db in
            try Row.fetchOne(db, sql: "SELECT * FROM swarm WHERE id = ?", arguments: [id]).map { try Self.definition($0, in: db).0 }
        }
    }

    /// A swarm row and its task rows as the protocol holds them.
    private static func definition(_ row: Row, in db: Database) throws -> (SwarmDefinition, [TaskRecord]) {
        let id: String = row["id"]
        var tasks: [SwarmTask] = []
        var records: [TaskRecord] = []
        let taskRows = try Row.fetchAll(db, sql: "SELECT * FROM task WHERE swarm = ? ORDER BY idx", arguments: [id])
        guard taskRows.count == row["taskCount"] as Int else { throw StoreError("swarm \(id) has \(taskRows.count) of its tasks stored") }
        tasks.reserveCapacity(taskRows.count)
        records.reserveCapacity(taskRows.count)
        for (expected, t) in taskRows.enumerated() {
            guard t["idx"] as Int == expected else { throw StoreError("swarm \(id) is missing task \(expected)") }
            tasks.append(SwarmTask(id: t["taskId"],
                                   needs: TaskNeeds(memoryMB: UInt32(clamping: t["memoryMB"] as Int64),
                                                    milliCPUs: UInt32(clamping: t["milliCPUs"] as Int64)),
                                   payload: [UInt8](t["payload"] as Data)))
            records.append(try Self.record(t))
        }
        let draft = SwarmDraft(tasks: tasks, maxAttempts: UInt8(clamping: row["maxAttempts"] as Int64),
                               options: [UInt8](row["options"] as Data), parent: Self.parent(row),
                               createdAtMs: UInt64(clamping: row["createdAtMs"] as Int64))
        return (SwarmDefinition(id: id, draft: draft, replicas: Self.decodeNames([UInt8](row["replicas"] as Data))), records)
    }

    // MARK: Helpers

    /// Rows of `sql` as tasks, stopping after the row whose result takes the total past
    /// `maxResultBytes`.
    private static func boundedTasks(_ db: Database, sql: String, arguments: StatementArguments, maxResultBytes: Int) throws -> [StoredTask] {
        var tasks: [StoredTask] = []
        var bytes = 0
        let rows = try Row.fetchCursor(db, sql: sql, arguments: arguments)
        while bytes < maxResultBytes, let row = try rows.next() {
            let task = try storedTask(row)
            bytes += task.record.result?.count ?? 0
            tasks.append(task)
        }
        return tasks
    }

    private func read<T>(_ body: (Database) throws -> T) throws -> T {
        do {
            return try pool.read(body)
        } catch let error as StoreError {
            throw error
        } catch {
            throw StoreError("store read failed: \(error)")
        }
    }

    /// A page within bounds: offset at least 0, limit 1...maxPageSize.
    public static func clampedPage(offset: Int, limit: Int) -> (offset: Int, limit: Int) {
        (max(offset, 0), min(max(limit, 1), maxPageSize))
    }

    private static func swarmState(_ raw: Int64) throws -> SwarmState {
        guard let state = SwarmState(rawValue: UInt8(clamping: raw)), raw >= 0, raw <= 255 else {
            throw StoreError("unknown swarm state \(raw)")
        }
        return state
    }

    private static func record(_ row: Row) throws -> TaskRecord {
        let raw: Int64 = row["state"]
        guard raw >= 0, raw <= 255, let state = TaskState(rawValue: UInt8(raw)) else { throw StoreError("unknown task state \(raw)") }
        return TaskRecord(state: state, attempt: UInt16(clamping: row["attempt"] as Int64), node: row["node"],
                          result: (row["result"] as Data?).map { [UInt8]($0) },
                          finishSeq: UInt32(clamping: row["finishSeq"] as Int64))
    }

    private static func storedTask(_ row: Row) throws -> StoredTask {
        StoredTask(index: UInt32(clamping: row["idx"] as Int64), id: row["taskId"], record: try record(row))
    }

    private static func parent(_ row: Row) -> TaskRef? {
        guard let swarm = row["parentSwarm"] as String?, let task = row["parentTask"] as Int64? else { return nil }
        return TaskRef(swarm: swarm, task: UInt32(clamping: task))
    }

    /// Peer names are printable text (the wire refuses control characters), so NUL separates them.
    /// A lineage as the swarm protocol's wire writes it.
    static func encodeLineage(_ lineage: FinishLineage) -> [UInt8] {
        var w = ByteWriter(capacity: 64)
        w.write(lineage)
        return w.bytes
    }

    /// The stored lineage; none for an empty value or one this build cannot read (a stream then
    /// takes cursors as they are, as before lineages).
    static func decodeLineage(_ bytes: [UInt8]) -> FinishLineage {
        guard !bytes.isEmpty else { return FinishLineage() }
        var r = ByteReader(bytes)
        guard let lineage = try? r.readLineage(), (try? r.expectEnd()) != nil else { return FinishLineage() }
        return lineage
    }

    static func encodeNames(_ names: [PeerName]) -> [UInt8] {
        names.flatMap { Array($0.utf8) + [0] }
    }

    static func decodeNames(_ bytes: [UInt8]) -> [PeerName] {
        bytes.split(separator: 0, omittingEmptySubsequences: true).map { String(decoding: $0, as: UTF8.self) }
    }
}

/// What a committed write survives (SQLite's `synchronous` in WAL mode). Results are
/// acknowledged, and recorded exactly once, on the strength of these writes.
public enum StoreDurability: String, Sendable, CaseIterable {
    /// Every commit is on disk before it returns (an fsync of the WAL per transaction): it
    /// survives a power loss or a kernel crash as well as a process crash.
    case full
    /// Commits reach the OS at once and the disk at the next checkpoint: they survive a crash
    /// of the node's process (kill -9), but a power loss or kernel crash of the machine may
    /// roll back the last ones (the database stays consistent).
    case normal

    var pragma: String { self == .full ? "FULL" : "NORMAL" }
}

/// How many tasks of a swarm are in each state.
public struct TaskCounts: Sendable, Equatable {
    public var total = 0
    public var pending = 0
    public var running = 0
    public var succeeded = 0
    public var failed = 0
    public var cancelled = 0

    public init() {}
}

/// One task as a status page or an event shows it.
public struct StoredTask: Sendable, Equatable {
    public var index: UInt32
    public var id: String
    public var record: TaskRecord
}

/// What `SwarmStore.status` reads: counts, and a page of tasks when asked.
/// A sub-swarm as its parent's spawn budget sees it.
public struct ChildSwarmRecord: Sendable, Equatable {
    public var id: SwarmID
    public var parent: TaskRef
    public var taskCount: Int
    /// Host-opaque: the runtime's SwarmOptions JSON.
    public var options: [UInt8]

    public init(id: SwarmID, parent: TaskRef, taskCount: Int, options: [UInt8]) {
        self.id = id
        self.parent = parent
        self.taskCount = taskCount
        self.options = options
    }
}

public struct SwarmStatusRecord: Sendable, Equatable {
    public var id: SwarmID
    public var state: SwarmState
    public var counts: TaskCounts
    public var createdAtMs: UInt64
    public var parent: TaskRef?
    /// Nil when tasks were not asked for.
    public var tasks: [StoredTask]?
}

/// One line of `SwarmStore.list`.
public struct SwarmSummary: Sendable, Equatable {
    public var id: SwarmID
    public var state: SwarmState
    public var total: Int
    public var succeeded: Int
    public var failed: Int
    public var createdAtMs: UInt64
}

/// What `SwarmStore.events` reads: the swarm's state and finished tasks in completion order.
public struct SwarmEvents: Sendable, Equatable {
    public var state: SwarmState
    public var tasks: [StoredTask]
    /// No finished task is above the swarm's visible mark: once the swarm is not running,
    /// nothing more will be shown (the stream's `done` waits for it).
    public var allVisible: Bool = true
    /// The swarm's stored lineage, and the cursor the tasks follow (rebased onto it).
    public var lineage = FinishLineage()
    public var cursor = EventCursor.start
    /// The cursor names a reign newer than this copy knows: nothing is shown (the copy is
    /// behind the one the client read; `FinishLineage.resumePoint`).
    public var behind = false
}
