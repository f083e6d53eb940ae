import Foundation
import GRDB

/// Reads a node's audit log from its data dir, read-only, for `starling audit verify` and
/// `export`. It never creates or migrates a database, and it works while the node runs (WAL: it
/// reads the last committed state). Entries are streamed, so memory does not grow with the log.
public struct AuditReader: Sendable {
    let queue: DatabaseQueue

    /// Opens `directory/starling.sqlite` read-only; throws when there is no such file.
    public init(directory: String) throws {
        let path = (directory as NSString).appendingPathComponent(SwarmStore.fileName)
        guard FileManager.default.fileExists(atPath: path) else { throw AuditError("no database at \(path)") }
        var configuration = Configuration()
        configuration.readonly = true
        configuration.busyMode = .timeout(5)
        do {
            queue = try DatabaseQueue(path: path, configuration: configuration)
        } catch {
            throw AuditError("cannot open \(path): \(error)")
        }
    }

    /// Calls `body` with every entry in seq order. An empty log (or a database from before the
    /// audit log existed) has none.
    public func forEachEntry(_ body: (AuditEntry) throws -> Void) throws {
        do {
            try queue.read { db in
                guard try db.tableExists("audit") else { return }
                let rows = try Row.fetchCursor(db, sql: "SELECT * FROM audit ORDER BY seq")
                while let row = try rows.next() { try body(try Self.entry(row)) }
            }
        } catch let error as AuditError {
            throw error
        } catch {
            throw AuditError("cannot read the audit log: \(error)")
        }
    }

    /// Checks the whole chain under `publicKey` and, when given, against a witnessed head. A row
    /// that cannot be read as an entry (a column of the wrong type, after the table was remade
    /// without its STRICT types) is the first bad entry, named like any other.
    public func verify(publicKey: [UInt8], witness: AuditHead? = nil) throws -> AuditVerification {
        var check = AuditChainCheck(publicKey: publicKey, witness: witness)
        var unreadable: AuditFault? = nil
        do {
            try queue.read { db in
                guard try db.tableExists("audit") else { return }
                let rows = try Row.fetchCursor(db, sql: "SELECT * FROM audit ORDER BY seq")
                while check.fault == nil, let row = try rows.next() {
                    do {
                        check.check(try Self.entry(row))
                    } catch {
                        unreadable = AuditFault(seq: check.count + 1, reason: "unreadable: \(error)")
                        return
                    }
                }
            }
        } catch {
            throw AuditError("cannot read the audit log: \(error)")
        }
        var result = check.finish()
        if result.fault == nil, let unreadable { result.fault = unreadable }
        return result
    }

    /// The head this node witnessed of `publicKey`'s log, if it holds one (`audit_witness`): the
    /// furthest, when rows under several names carry the key (a peer can send another node's old
    /// genuine head under its own name; the stale row must not be the one checked).
    public func witnessedHead(of publicKey: [UInt8]) throws -> (node: String, head: AuditHead)? {
        do {
            return try queue.read { db in
                guard try db.tableExists("audit_witness") else { return nil }
                guard let row = try Row.fetchOne(db, sql: "SELECT * FROM audit_witness WHERE publicKey = ? ORDER BY seq DESC LIMIT 1", arguments: [Data(publicKey)])
                else { return nil }
                return (try row.decode(String.self, forColumn: "node"),
                        AuditHead(seq: UInt64(bitPattern: try row.decode(Int64.self, forColumn: "seq")),
                                  hash: [UInt8](try row.decode(Data.self, forColumn: "hash")),
                                  signature: [UInt8](try row.decode(Data.self, forColumn: "signature"))))
            }
        } catch {
            throw AuditError("cannot read witnessed heads: \(error)")
        }
    }

    /// A stored row as an entry. Column types are checked, never trusted: GRDB's subscripts trap
    /// on a value they cannot convert, so every column goes through a throwing decode, and a row
    /// edited to hold the wrong type is reported, not a crash.
    static func entry(_ row: Row) throws -> AuditEntry {
        do {
            let seq = try row.decode(Int64.self, forColumn: "seq")
            let timeMs = try row.decode(Int64.self, forColumn: "timeMs")
            let kind = try row.decode(String.self, forColumn: "kind")
            let body = try row.decode(String.self, forColumn: "body")
            let previous = try row.decode(Data.self, forColumn: "previousHash")
            let hash = try row.decode(Data.self, forColumn: "hash")
            let signature = try row.decode(Data.self, forColumn: "signature")
            return AuditEntry(seq: UInt64(bitPattern: seq), timeMs: UInt64(bitPattern: timeMs), kind: kind, body: Array(body.utf8),
                              previousHash: [UInt8](previous), hash: [UInt8](hash), signature: [UInt8](signature))
        } catch {
            throw AuditError("a row has a missing or mistyped column")
        }
    }
}

/// The outcome of a verification: how many entries were read, the last good head, and the first
/// bad entry if any.
public struct AuditVerification: Sendable, Equatable {
    public var entries: UInt64
    public var head: AuditHead?
    public var fault: AuditFault?
}

/// The first thing wrong with a log: the seq of the entry it concerns and what is wrong with it.
public struct AuditFault: Sendable, Equatable, CustomStringConvertible {
    public var seq: UInt64
    public var reason: String
    public var description: String { "entry \(seq): \(reason)" }
}

/// The chain's rules, applied entry by entry in seq order (the store's rows or an export's lines).
///
/// For entry n (seq 1, 2, ... with no gap):
/// - its seq must be n (a gap is a deleted entry);
/// - BLAKE2b of its message must equal its stored hash (else it was altered or moved);
/// - its signature over that hash must verify under the node's key (else forged);
/// - its previous hash must be entry n−1's hash (zeros for n = 1).
/// At the end, a witnessed head (seq W, hash H) must be in the log: fewer than W entries is a
/// truncated tail; entry W with another hash is a rewritten log.
public struct AuditChainCheck: Sendable {
    public let publicKey: [UInt8]
    public let witness: AuditHead?
    public private(set) var count: UInt64 = 0
    public private(set) var fault: AuditFault?
    private var last: AuditEntry?

    public init(publicKey: [UInt8], witness: AuditHead? = nil) {
        self.publicKey = publicKey
        self.witness = witness
    }

    public mutating func check(_ entry: AuditEntry) {
        guard fault == nil else { return }
        let expected = count + 1
        let expectedPrevious = last?.hash ?? AuditEntry.genesisHash
        if entry.seq != expected {
            fault = entry.seq > expected
                ? AuditFault(seq: expected, reason: "missing: the log goes from entry \(count) to entry \(entry.seq) (entries deleted)")
                : AuditFault(seq: entry.seq, reason: "out of order: entry \(entry.seq) comes after entry \(count)")
            return
        }
        if entry.computedHash != entry.hash {
            fault = AuditFault(seq: expected, reason: entry.previousHash == expectedPrevious
                ? "altered: its content does not match its hash"
                : "out of place: it does not follow entry \(count) and does not match its hash (entries reordered, removed or replaced)")
            return
        }
        if !entry.signatureVerifies(publicKey: publicKey) {
            fault = AuditFault(seq: expected, reason: "forged: its signature does not verify under the node's key")
            return
        }
        if entry.previousHash != expectedPrevious {
            fault = AuditFault(seq: expected, reason: "broken chain: its previous hash is not entry \(count)'s hash")
            return
        }
        if let witness, witness.seq == entry.seq, witness.hash != entry.hash {
            fault = AuditFault(seq: expected, reason: "rewritten: a witness holds another entry \(witness.seq) (hash \(Hex.encode(witness.hash)))")
            return
        }
        count = expected
        last = entry
    }

    public func finish() -> AuditVerification {
        var fault = fault
        if fault == nil, let witness, count < witness.seq {
            fault = AuditFault(seq: count + 1, reason: "truncated: the log ends at entry \(count), but a witness holds entry \(witness.seq) (hash \(Hex.encode(witness.hash)))")
        }
        return AuditVerification(entries: count, head: last?.head, fault: fault)
    }
}

/// An entry as one line of `starling audit export`: the body as JSON (canonical, so it parses
/// back to the hashed bytes), the binary fields as hex.
public struct ExportedAuditEntry: Codable, Sendable, Equatable {
    public var seq: UInt64
    public var timeMs: UInt64
    public var kind: String
    public var body: JSONValue
    public var previousHash: String
    public var hash: String
    public var signature: String

    /// A body that is not canonical-subset JSON (a row edited at rest) is exported as a string of
    /// its bytes: the export still prints, and re-verifying it fails at that entry, as it should.
    public init(_ e: AuditEntry) {
        seq = e.seq
        timeMs = e.timeMs
        kind = e.kind
        body = (try? JSONValue.parse(e.body)) ?? .string(String(decoding: e.body, as: UTF8.self))
        previousHash = Hex.encode(e.previousHash)
        hash = Hex.encode(e.hash)
        signature = Hex.encode(e.signature)
    }

    /// The entry as it was hashed: the body re-encoded canonically.
    public var entry: AuditEntry? {
        guard let p = Hex.decode(previousHash), let h = Hex.decode(hash), let s = Hex.decode(signature) else { return nil }
        return AuditEntry(seq: seq, timeMs: timeMs, kind: kind, body: body.canonicalBytes, previousHash: p, hash: h, signature: s)
    }

    /// One line: the fixed fields, then the body's canonical bytes as they are.
    public var line: String {
        let fields = #"{"seq":\#(seq),"timeMs":\#(timeMs),"kind":\#(String(decoding: JSONValue.string(kind).canonicalBytes, as: UTF8.self)),"#
            + #""previousHash":"\#(previousHash)","hash":"\#(hash)","signature":"\#(signature)","body":"#
        return fields + String(decoding: body.canonicalBytes, as: UTF8.self) + "}"
    }
}
