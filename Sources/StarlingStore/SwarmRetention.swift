import Foundation
import GRDB
import StarlingCore

/// How long a finished swarm stays in the store. The protocol forgets a finished swarm after a
/// minute (`Swarm.Bounds.finishedRetention`); the store kept every swarm for ever, so its tables
/// and a restart's load grew with every swarm run. A swarm is stamped `finishedAtMs` (the
/// node's wall clock) when this node first stores it done or cancelled, and
/// `SwarmStore.pruneFinished` deletes those stamped before a cutoff, tasks and child links with
/// them (ON DELETE CASCADE). Each node prunes its own copies by the same rule.
enum SwarmRetention {
    static func create(_ db: Database) throws {
        try db.execute(sql: "ALTER TABLE swarm ADD COLUMN finishedAtMs INTEGER")
        try db.execute(sql: "CREATE INDEX swarm_by_finish ON swarm(finishedAtMs) WHERE finishedAtMs IS NOT NULL")
        // Swarms that finished before this migration count from now.
        try db.execute(sql: "UPDATE swarm SET finishedAtMs = ? WHERE state != ?",
                       arguments: [nowMs(), Int(SwarmState.running.rawValue)])
    }

    /// The SET clause that keeps the first finish time of a finished swarm and clears it for a
    /// running one (a swarm a partition's other side still runs, replicated here again).
    /// Arguments: `finishedAtArguments(state)`.
    static let finishedAtUpdate = "finishedAtMs = CASE WHEN ? THEN COALESCE(finishedAtMs, ?) ELSE NULL END"

    static func finishedAtArguments(_ state: SwarmState) -> StatementArguments {
        [state != .running, nowMs()]
    }

    static func nowMs() -> Int64 { Int64(Date().timeIntervalSince1970 * 1000) }
}

extension SwarmStore {
    /// Deletes at most `limit` swarms that finished before `cutoffMs` (Unix milliseconds), oldest
    /// first, one transaction each (a swarm's tasks go with it), and returns how many went.
    public func pruneFinished(before cutoffMs: Int64, limit: Int = 1_000) throws -> Int {
        do {
            let ids = try pool.read { db in
                try String.fetchAll(db, sql: """
                    SELECT id FROM swarm WHERE finishedAtMs IS NOT NULL AND finishedAtMs < ? AND state != ?
                    ORDER BY finishedAtMs LIMIT ?
                    """, arguments: [cutoffMs, Int(SwarmState.running.rawValue), max(1, limit)])
            }
            var pruned = 0
            for id in ids {
                try pool.write { db in
                    // Checked again inside the write: a swarm replicated as running meanwhile stays.
                    try db.execute(sql: "DELETE FROM swarm WHERE id = ? AND finishedAtMs < ? AND state != ?",
                                   arguments: [id, cutoffMs, Int(SwarmState.running.rawValue)])
                    pruned += db.changesCount
                }
            }
            return pruned
        } catch {
            throw StoreError("pruning finished swarms failed: \(error)")
        }
    }

    /// When this node first stored swarm `id` finished (Unix milliseconds); nil while it runs or
    /// when the store does not hold it.
    public func finishedAtMs(of id: SwarmID) throws -> Int64? {
        do {
            return try pool.read { db in try Int64.fetchOne(db, sql: "SELECT finishedAtMs FROM swarm WHERE id = ?", arguments: [id]) }
        } catch {
            throw StoreError("store read failed: \(error)")
        }
    }
}
