import Foundation
import GRDB
import StarlingCrypto

/// The node's audit log: a hash-chained, signed, append-only table (`audit`) in
/// `DATA/starling.sqlite`, written through the swarm store's own writer connection.
///
/// **Durability and order.** `append` returns only once its entry is committed with
/// `synchronous = FULL`, so a caller that appends before it acts, or before it acknowledges, has
/// the record on disk first. Entries are numbered in the order their appends were called.
///
/// **Group commit.** Concurrent appends share one transaction: the first caller to find no write
/// in progress becomes the writer, chains and signs everything queued (at most `maxBatch`), writes
/// it in one transaction, and wakes the others. One task start or finish therefore costs one
/// fsync when alone and a fraction of one under load.
///
/// **Fail closed.** A write that fails latches the log as unavailable: that append and every
/// later one throw, so the caller refuses the action with the reason, and `onFailure` (set once by
/// the node) is told once, so that the node can stop taking work. The in-memory head never moves
/// past what was committed.
///
/// Appends block the calling thread: never call `append` on the mesh's loop thread.
public final class AuditLog: @unchecked Sendable {
    // @unchecked: every mutable field below is read and written only while `condition` is locked
    // (the writer's signing and SQLite write happen unlocked, but only by the one caller that set
    // `writing`, and they touch only local values and the pool, which is thread-safe).
    public let publicKey: [UInt8]
    public let nodeName: String
    private let pool: DatabasePool
    /// The data directory, where a contradiction is recorded (`AuditContradiction`).
    private let directory: String
    private let identity: NodeIdentity
    private let clock: @Sendable () -> UInt64

    private let condition = NSCondition()
    private var head: AuditHead?
    private var queue: [Pending] = []
    private var nextTicket: UInt64 = 0
    private var done: [UInt64: Result<AuditEntry, AuditError>] = [:]
    private var writing = false
    private var failure: AuditError?
    private var failureHandler: (@Sendable (AuditError) -> Void)?

    /// Most entries one transaction writes.
    public static let maxBatch = 256
    /// Most appends waiting at once; past it `append` refuses (a bound, never a silent drop).
    public static let maxQueued = 65_536

    struct Pending {
        var ticket: UInt64
        var timeMs: UInt64
        var kind: String
        var body: [UInt8]
    }

    /// The log in `store`'s database, signed by `identity`. Refuses (throws) when the last stored
    /// entry does not verify under this identity: a node must not extend a log it cannot vouch
    /// for (a replaced `node.key`, or a tail edited at rest).
    public init(store: SwarmStore, identity: NodeIdentity, nodeName: String,
                clock: @escaping @Sendable () -> UInt64 = { UInt64(Date().timeIntervalSince1970 * 1000) }) throws {
        pool = store.pool
        directory = (store.path as NSString).deletingLastPathComponent
        // A log a peer's witness contradicted stays stopped across restarts (fail closed: a record
        // that cannot be read stops it too).
        if let contradiction = try AuditContradiction.read(fromDirectory: directory) {
            throw AuditError(contradiction.refusal(directory: directory))
        }
        self.identity = identity
        self.nodeName = nodeName
        self.clock = clock
        publicKey = identity.publicKey
        let last: AuditEntry?
        do {
            last = try pool.read { db in
                try Row.fetchOne(db, sql: "SELECT * FROM audit ORDER BY seq DESC LIMIT 1").map(AuditReader.entry)
            }
        } catch {
            throw AuditError("cannot read the audit log: \(error)")
        }
        if let last {
            guard last.computedHash == last.hash, last.signatureVerifies(publicKey: publicKey) else {
                throw AuditError("the audit log's last entry (\(last.seq)) does not verify under this node's key; run `starling audit verify`")
            }
            head = last.head
        }
    }

    /// The last committed entry's head; nil for an empty log.
    public var currentHead: AuditHead? {
        condition.lock()
        defer { condition.unlock() }
        return head
    }

    /// Why the log refuses appends, once a write has failed.
    public var failed: AuditError? {
        condition.lock()
        defer { condition.unlock() }
        return failure
    }

    /// Called once, on the first failed write (from the appending thread).
    public func onFailure(_ handler: @escaping @Sendable (AuditError) -> Void) {
        condition.lock()
        defer { condition.unlock() }
        failureHandler = handler
    }

    /// Appends one entry and returns it once it is durable. Throws, and appends nothing, for a bad
    /// kind, a body over `AuditEntry.maxBodyBytes`, a full queue, or a log that failed to write.
    @discardableResult
    public func append(_ kind: String, _ body: JSONValue) throws(AuditError) -> AuditEntry {
        try AuditEntry.validate(kind: kind)
        let bytes = try AuditEntry.checkedBody(body)
        condition.lock()
        defer { condition.unlock() }
        if let failure { throw failure }
        guard queue.count < Self.maxQueued else { throw AuditError("the audit log has \(Self.maxQueued) appends waiting") }
        let ticket = nextTicket
        nextTicket += 1
        queue.append(Pending(ticket: ticket, timeMs: clock(), kind: kind, body: bytes))
        while true {
            if let result = done.removeValue(forKey: ticket) { return try result.get() }
            if !writing {
                writeBatch()
                continue
            }
            condition.wait()
        }
    }

    /// Called with `condition` locked and no write in progress: writes the oldest queued entries
    /// in one transaction (unlocked while it signs and writes), records each one's outcome, and
    /// wakes every waiter.
    private func writeBatch() {
        writing = true
        let batch = Array(queue.prefix(Self.maxBatch))
        queue.removeFirst(batch.count)
        var previous = head
        condition.unlock()

        var entries: [AuditEntry] = []
        entries.reserveCapacity(batch.count)
        for p in batch {
            let entry = AuditEntry.sealed(after: previous, timeMs: p.timeMs, kind: p.kind, body: p.body, identity: identity)
            entries.append(entry)
            previous = entry.head
        }
        var writeError: AuditError? = nil
        do {
            try pool.write { db in
                let insert = try db.cachedStatement(sql: """
                    INSERT INTO audit (seq, timeMs, kind, body, previousHash, hash, signature) VALUES (?, ?, ?, ?, ?, ?, ?)
                    """)
                for e in entries {
                    try insert.execute(arguments: [Int64(bitPattern: e.seq), Int64(bitPattern: e.timeMs), e.kind,
                                                   String(decoding: e.body, as: UTF8.self),
                                                   Data(e.previousHash), Data(e.hash), Data(e.signature)])
                }
            }
        } catch {
            writeError = AuditError("the audit log could not be written: \(error)")
        }

        condition.lock()
        writing = false
        var handler: (@Sendable (AuditError) -> Void)? = nil
        if let writeError {
            // Latch: nothing after a failed write is appended, and whatever was queued behind it
            // fails with the same reason.
            if failure == nil { handler = failureHandler }
            failure = writeError
            for p in batch + queue { done[p.ticket] = .failure(writeError) }
            queue.removeAll()
        } else {
            if let last = entries.last { head = last.head }
            for (p, e) in zip(batch, entries) { done[p.ticket] = .success(e) }
        }
        condition.broadcast()
        if let handler, let writeError {
            condition.unlock()
            handler(writeError)
            condition.lock()
        }
    }

    /// Stops the log for good with `error`: every later append throws it, and the node is told
    /// once. For what the log's owner finds wrong with its own log (a witness holds an entry it
    /// lacks).
    public func fail(_ error: AuditError) {
        condition.lock()
        let handler = failure == nil ? failureHandler : nil
        if failure == nil { failure = error }
        condition.unlock()
        handler?(error)
    }

    /// `peer` witnessed `head` of this node's log: checks that the log holds that entry with that
    /// hash. A head that is not this node's (its signature does not verify under this node's key)
    /// proves nothing: false. A head the log does not hold means its tail was cut or rewritten
    /// since the peer saw it: the log stops (`fail`), so that nothing is appended to a history
    /// that contradicts what peers hold, and the error is thrown. True when the log holds it.
    @discardableResult
    public func check(witnessed head: AuditHead, by peer: String) throws(AuditError) -> Bool {
        guard head.signatureVerifies(publicKey: publicKey) else { return false }
        let stored: [UInt8]?
        do {
            stored = try pool.read { db in
                try Row.fetchOne(db, sql: "SELECT hash FROM audit WHERE seq = ?", arguments: [Int64(bitPattern: head.seq)])
                    .map { [UInt8](try $0.decode(Data.self, forColumn: "hash")) }
            }
        } catch {
            throw AuditError("cannot read the audit log: \(error)")
        }
        guard stored != head.hash else { return true }
        var contradiction = AuditError(stored == nil
            ? "\(peer) witnessed entry \(head.seq) of this node's audit log, which no longer holds it: its tail was cut"
            : "\(peer) witnessed another entry \(head.seq) of this node's audit log: it was rewritten")
        // Latched first, so nothing more is appended (and no task runs) while the record is
        // written; then recorded, so that a restart does not silently resume. The first record
        // stays: a later contradiction does not overwrite the evidence. A record that cannot be
        // written is said in the error (the node stops either way).
        fail(contradiction)
        let record = AuditContradiction(node: nodeName, publicKey: publicKey, head: head, witness: peer,
                                        reason: contradiction.description, timeMs: clock())
        let existing = FileManager.default.fileExists(atPath: AuditContradiction.path(inDirectory: directory))
        if !existing {
            do { try record.write(toDirectory: directory) } catch {
                contradiction = AuditError("\(contradiction.description); the stop may not be recorded, so a restart might not know: \(error)")
            }
        }
        throw contradiction
    }

    // MARK: Witnessed heads of other nodes

    /// The latest head this node witnessed of `node`'s log, and the key it verified under.
    public func witnessedHead(of node: String) throws(AuditError) -> (head: AuditHead, publicKey: [UInt8])? {
        do {
            return try pool.read { db in
                try Row.fetchOne(db, sql: "SELECT seq, hash, signature, publicKey FROM audit_witness WHERE node = ?", arguments: [node]).map { row in
                    (AuditHead(seq: UInt64(bitPattern: try row.decode(Int64.self, forColumn: "seq")),
                               hash: [UInt8](try row.decode(Data.self, forColumn: "hash")),
                               signature: [UInt8](try row.decode(Data.self, forColumn: "signature"))),
                     [UInt8](try row.decode(Data.self, forColumn: "publicKey")))
                }
            }
        } catch {
            throw AuditError("cannot read witnessed heads: \(error)")
        }
    }

    /// Stores `head` as the latest this node witnessed of `node`'s log. Refuses a head whose
    /// signature does not verify under `publicKey`, and a head that goes back (a lower seq, or
    /// the same seq with another hash): those are what a truncated or rewritten log looks like,
    /// and the earlier head is kept as the evidence.
    ///
    /// The caller takes heads only under the key membership gossips for `node` (`SignerKeys`),
    /// so membership is the authority on which key a name has. A head under another key than
    /// the stored one is a new identity under that name (a machine re-keyed after the old
    /// member was reaped): a new log, which starts its own row. Keeping the first key for ever
    /// let whoever planted a name first (or an honest re-key) shut the name out of witnessing
    /// for good.
    public func witness(node: String, publicKey: [UInt8], head: AuditHead, receivedAtMs: UInt64) throws(AuditError) {
        guard head.signatureVerifies(publicKey: publicKey) else { throw AuditError("the head of \(node) does not verify under its key") }
        do {
            try pool.write { db in
                if let row = try Row.fetchOne(db, sql: "SELECT publicKey, seq, hash FROM audit_witness WHERE node = ?", arguments: [node]),
                   [UInt8](try row.decode(Data.self, forColumn: "publicKey")) == publicKey {
                    let seq = UInt64(bitPattern: try row.decode(Int64.self, forColumn: "seq"))
                    let hash = [UInt8](try row.decode(Data.self, forColumn: "hash"))
                    if head.seq < seq || (head.seq == seq && hash != head.hash) {
                        throw AuditError("\(node)'s log went back: witnessed entry \(seq), now offered \(head.seq)")
                    }
                }
                try db.execute(sql: """
                    INSERT INTO audit_witness (node, publicKey, seq, hash, signature, receivedAtMs) VALUES (?, ?, ?, ?, ?, ?)
                    ON CONFLICT(node) DO UPDATE SET publicKey = excluded.publicKey, seq = excluded.seq, hash = excluded.hash,
                        signature = excluded.signature, receivedAtMs = excluded.receivedAtMs
                    """, arguments: [node, Data(publicKey), Int64(bitPattern: head.seq), Data(head.hash), Data(head.signature),
                                     Int64(bitPattern: receivedAtMs)])
            }
        } catch let error as AuditError {
            throw error
        } catch {
            throw AuditError("cannot store a witnessed head: \(error)")
        }
    }
}
