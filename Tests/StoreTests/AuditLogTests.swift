import Foundation
import GRDB
import StarlingCrypto
import Synchronization
import Testing
@testable import StarlingStore

/// A node's data dir with an identity and an audit log of `entries` entries (kinds e1, e2, ...).
struct AuditFixture {
    let dir: TemporaryDirectory
    let identity: NodeIdentity
    let store: SwarmStore
    let log: AuditLog

    init(_ label: String, entries: Int = 10) throws {
        dir = TemporaryDirectory(label)
        identity = try NodeIdentity.loadOrCreate(dataDir: dir.path)
        store = try SwarmStore(directory: dir.path)
        log = try AuditLog(store: store, identity: identity, nodeName: "n1")
        for i in 1...max(1, entries) where entries > 0 {
            try log.append("test.e\(i)", ["n": .integer(Int64(i)), "secrets": ["API_TOKEN"]])
        }
    }

    /// Another connection to the file, as an attacker with the file would have: the append-only
    /// triggers dropped first (root can do that too).
    func tamper(_ sql: String, _ arguments: StatementArguments = []) throws {
        let queue = try DatabaseQueue(path: store.path)
        try queue.write { db in
            try db.execute(sql: "DROP TRIGGER IF EXISTS audit_no_update")
            try db.execute(sql: "DROP TRIGGER IF EXISTS audit_no_delete")
            try db.execute(sql: sql, arguments: arguments)
        }
    }

    func verify(witness: AuditHead? = nil) throws -> AuditVerification {
        try AuditReader(directory: dir.path).verify(publicKey: identity.publicKey, witness: witness)
    }
}

@Suite("Audit log (real SQLite files)")
struct AuditLogTests {
    @Test func anIntactLogVerifiesEntryByEntry() throws {
        let f = try AuditFixture("intact", entries: 12)
        let result = try f.verify()
        #expect(result.fault == nil)
        #expect(result.entries == 12)
        #expect(result.head == f.log.currentHead)
        var seqs: [UInt64] = []
        try AuditReader(directory: f.dir.path).forEachEntry { seqs.append($0.seq) }
        #expect(seqs == Array(1...12))
    }

    @Test func anEditedRowIsNamed() throws {
        let f = try AuditFixture("edited")
        try f.tamper("UPDATE audit SET body = ? WHERE seq = 4", [#"{"n":4,"secrets":[]}"#])
        let fault = try #require(try f.verify().fault)
        #expect(fault.seq == 4)
        #expect(fault.reason.contains("altered"))
    }

    @Test func anEditedTimeOrKindIsNamedToo() throws {
        let f = try AuditFixture("edited-time")
        try f.tamper("UPDATE audit SET timeMs = timeMs + 1 WHERE seq = 7")
        #expect(try f.verify().fault?.seq == 7)
        let g = try AuditFixture("edited-kind")
        try g.tamper("UPDATE audit SET kind = 'test.other' WHERE seq = 2")
        #expect(try g.verify().fault?.seq == 2)
    }

    @Test func aDeletedMiddleRowIsNamed() throws {
        let f = try AuditFixture("deleted")
        try f.tamper("DELETE FROM audit WHERE seq = 5")
        let fault = try #require(try f.verify().fault)
        #expect(fault.seq == 5)
        #expect(fault.reason.contains("missing"))
    }

    @Test func aDeletedRowWithTheRestRenumberedIsNamed() throws {
        let f = try AuditFixture("renumbered")
        try f.tamper("DELETE FROM audit WHERE seq = 5")
        try f.tamper("UPDATE audit SET seq = seq - 1 WHERE seq > 5")
        let fault = try #require(try f.verify().fault)
        #expect(fault.seq == 5)
    }

    @Test func aRowOfTheWrongTypeIsNamedNotACrash() throws {
        let f = try AuditFixture("mistyped")
        // Root remakes the table without its STRICT types, then puts bytes that are not UTF-8
        // where the kind's text goes. Verification names the row and does not crash.
        try f.tamper("CREATE TABLE loose AS SELECT * FROM audit")
        try f.tamper("DROP TABLE audit")
        try f.tamper("ALTER TABLE loose RENAME TO audit")
        try f.tamper("UPDATE audit SET kind = x'ff' WHERE seq = 3")
        let fault = try #require(try f.verify().fault)
        #expect(fault.seq == 3)
    }

    @Test func reorderedRowsAreNamed() throws {
        let f = try AuditFixture("reordered")
        // Swap entries 3 and 4 whole (every column but the position).
        try f.tamper("UPDATE audit SET seq = -3 WHERE seq = 3")
        try f.tamper("UPDATE audit SET seq = 3 WHERE seq = 4")
        try f.tamper("UPDATE audit SET seq = 4 WHERE seq = -3")
        let fault = try #require(try f.verify().fault)
        #expect(fault.seq == 3)
        #expect(fault.reason.contains("out of place"))
    }

    @Test func aForgedSignatureIsNamed() throws {
        let f = try AuditFixture("forged")
        try f.tamper("UPDATE audit SET signature = ? WHERE seq = 6", [Data(secureRandomBytes(64))])
        let fault = try #require(try f.verify().fault)
        #expect(fault.seq == 6)
        #expect(fault.reason.contains("forged"))
    }

    @Test func anEditReHashedAndSignedWithAnotherKeyIsNamed() throws {
        let f = try AuditFixture("resigned")
        let other = try NodeIdentity.loadOrCreate(dataDir: f.dir.path + "/other")
        let entries = try entries(f)
        var e = entries[5]
        e.body = Array(#"{"n":6,"secrets":[]}"#.utf8)
        e.hash = e.computedHash
        e.signature = other.sign(AuditEntry.signedBytes(seq: e.seq, hash: e.hash))
        try f.tamper("UPDATE audit SET body = ?, hash = ?, signature = ? WHERE seq = 6",
                     [String(decoding: e.body, as: UTF8.self), Data(e.hash), Data(e.signature)])
        let fault = try #require(try f.verify().fault)
        #expect(fault.seq == 6)
        #expect(fault.reason.contains("forged"))
    }

    @Test func aTruncatedTailIsCaughtOnlyAgainstAWitness() throws {
        let f = try AuditFixture("truncated")
        let witnessed = try #require(f.log.currentHead)
        try f.tamper("DELETE FROM audit WHERE seq > 7")
        // Alone, a cut tail looks like a shorter log: this is why heads are witnessed.
        let alone = try f.verify()
        #expect(alone.fault == nil)
        #expect(alone.entries == 7)
        let fault = try #require(try f.verify(witness: witnessed).fault)
        #expect(fault.seq == 8)
        #expect(fault.reason.contains("truncated"))
    }

    @Test func aLogRewrittenWithTheNodesOwnKeyIsCaughtAgainstAWitness() throws {
        let f = try AuditFixture("rewritten")
        let witnessed = try #require(f.log.currentHead)
        try f.tamper("DELETE FROM audit WHERE seq > 7")
        // Root holds node.key: it can append a new, valid tail of the same length.
        let again = try AuditLog(store: f.store, identity: f.identity, nodeName: "n1")
        for i in 8...10 { try again.append("test.forged\(i)", [:]) }
        #expect(try f.verify().fault == nil)
        let fault = try #require(try f.verify(witness: witnessed).fault)
        #expect(fault.seq == 10)
        #expect(fault.reason.contains("rewritten"))
    }

    @Test func exportRoundTrips() throws {
        let f = try AuditFixture("export", entries: 6)
        try f.log.append("test.text", ["s": "quote \" backslash \\ newline \n tab \t nul \u{0} é 日本 /slash", "neg": -5, "b": true, "z": .null,
                                       "nested": ["k": [1, 2, ["x": "y"]]]])
        let originals = try entries(f)
        let lines = originals.map { ExportedAuditEntry($0).line }
        var check = AuditChainCheck(publicKey: f.identity.publicKey)
        var parsed: [AuditEntry] = []
        for line in lines {
            let exported = try JSONDecoder().decode(ExportedAuditEntry.self, from: Data(line.utf8))
            let entry = try #require(exported.entry)
            parsed.append(entry)
            check.check(entry)
            // Parsing and printing again gives the same line.
            #expect(exported.line == line)
        }
        #expect(parsed == originals)
        #expect(check.finish().fault == nil)
        #expect(check.finish().entries == 7)
    }

    @Test func concurrentAppendsShareTransactionsAndKeepOneChain() throws {
        let f = try AuditFixture("concurrent", entries: 0)
        let failures = Atomic<Int>(0)
        let group = DispatchGroup()
        let log = f.log
        for t in 0..<8 {
            group.enter()
            Thread {
                for i in 0..<50 {
                    if (try? log.append("test.concurrent", ["thread": .integer(Int64(t)), "i": .integer(Int64(i))])) == nil {
                        failures.add(1, ordering: .relaxed)
                    }
                }
                group.leave()
            }.start()
        }
        #expect(group.wait(timeout: .now() + 60) == .success)
        #expect(failures.load(ordering: .relaxed) == 0)
        let result = try f.verify()
        #expect(result.fault == nil)
        #expect(result.entries == 400)
    }

    @Test func theNodesOwnCodeCannotUpdateOrDeleteAnEntry() throws {
        let f = try AuditFixture("triggers", entries: 3)
        let pool = f.store.pool
        #expect(throws: (any Error).self) { try pool.write { try $0.execute(sql: "UPDATE audit SET kind = 'x' WHERE seq = 1") } }
        #expect(throws: (any Error).self) { try pool.write { try $0.execute(sql: "DELETE FROM audit WHERE seq = 3") } }
        #expect(try f.verify().entries == 3)
    }

    @Test func aFailedWriteLatchesTheLogAndTellsTheNodeOnce() throws {
        let f = try AuditFixture("latch", entries: 2)
        let told = Atomic<Int>(0)
        f.log.onFailure { _ in told.add(1, ordering: .relaxed) }
        // The table disappears under the node (a disk fault would do as well).
        try f.tamper("DROP TABLE audit")
        #expect(throws: AuditError.self) { try f.log.append("test.after", [:]) }
        #expect(f.log.failed != nil)
        // Later appends fail at once, with the same reason, and the node was told once.
        try f.tamper(#"CREATE TABLE audit (seq INTEGER PRIMARY KEY, timeMs INTEGER, kind TEXT, body TEXT, previousHash BLOB, hash BLOB, signature BLOB)"#)
        #expect(throws: AuditError.self) { try f.log.append("test.later", [:]) }
        #expect(told.load(ordering: .relaxed) == 1)
        #expect(f.log.currentHead?.seq == 2)
    }

    @Test func aLogWhoseLastEntryDoesNotVerifyUnderThisKeyIsNotExtended() throws {
        let f = try AuditFixture("otherkey", entries: 3)
        let other = try NodeIdentity.loadOrCreate(dataDir: f.dir.path + "/other")
        #expect(throws: AuditError.self) { _ = try AuditLog(store: f.store, identity: other, nodeName: "n1") }
        try f.tamper("UPDATE audit SET body = '{}' WHERE seq = 3")
        #expect(throws: AuditError.self) { _ = try AuditLog(store: f.store, identity: f.identity, nodeName: "n1") }
    }

    @Test func appendsRefuseBadKindsAndOversizedBodies() throws {
        let f = try AuditFixture("bounds", entries: 1)
        #expect(throws: AuditError.self) { try f.log.append("Bad Kind", [:]) }
        #expect(throws: AuditError.self) { try f.log.append("", [:]) }
        #expect(throws: AuditError.self) { try f.log.append("test.big", ["s": .string(String(repeating: "x", count: AuditEntry.maxBodyBytes))]) }
        // A refused append appends nothing and does not latch the log.
        try f.log.append("test.fine", [:])
        #expect(try f.verify().entries == 2)
    }

    @Test func witnessedHeadsOnlyMoveForward() throws {
        let node = try AuditFixture("witnessed", entries: 5)
        let peer = try AuditFixture("witness", entries: 1)
        let head5 = try #require(node.log.currentHead)
        try peer.log.witness(node: "n1", publicKey: node.identity.publicKey, head: head5, receivedAtMs: 1)
        try node.log.append("test.more", [:])
        let head6 = try #require(node.log.currentHead)
        try peer.log.witness(node: "n1", publicKey: node.identity.publicKey, head: head6, receivedAtMs: 2)
        // Going back (a truncated log offering its older head) is refused; the later head stays.
        #expect(throws: AuditError.self) { try peer.log.witness(node: "n1", publicKey: node.identity.publicKey, head: head5, receivedAtMs: 3) }
        // A head under another key, or a signature that does not verify, is refused.
        #expect(throws: AuditError.self) { try peer.log.witness(node: "n1", publicKey: peer.identity.publicKey, head: head6, receivedAtMs: 4) }
        var forged = head6
        forged.seq = 99
        #expect(throws: AuditError.self) { try peer.log.witness(node: "n1", publicKey: node.identity.publicKey, head: forged, receivedAtMs: 5) }
        let stored = try #require(try AuditReader(directory: peer.dir.path).witnessedHead(of: node.identity.publicKey))
        #expect(stored.node == "n1")
        #expect(stored.head == head6)
        // A validly signed head under another key is a new identity under the name (the caller
        // took it under membership's gossiped key): its own log, which replaces the row. The
        // first key seen is not kept for ever (a planted or re-keyed name was shut out).
        let other = try AuditFixture("rekeyed", entries: 2)
        let newHead = try #require(other.log.currentHead)
        try peer.log.witness(node: "n1", publicKey: other.identity.publicKey, head: newHead, receivedAtMs: 6)
        let replaced = try #require(try AuditReader(directory: peer.dir.path).witnessedHead(of: other.identity.publicKey))
        #expect(replaced.node == "n1" && replaced.head == newHead)
    }

    /// A log a peer's witness contradicted stays stopped across a restart: the contradiction is
    /// recorded beside the database, a new `AuditLog` on that directory refuses to open (so the
    /// node refuses to start), and the record is a head file `audit verify --witness` reads.
    @Test func aContradictionIsRecordedAndStopsTheLogAcrossARestart() throws {
        let f = try AuditFixture("contradicted", entries: 5)
        let witnessed = try #require(f.log.currentHead)
        try f.tamper("DELETE FROM audit WHERE seq > 3")
        // The node restarts on the cut log (nothing tells it yet), and a peer's answer arrives.
        let restarted = try AuditLog(store: f.store, identity: f.identity, nodeName: "n1")
        try restarted.append("node.start", [:])
        #expect(throws: AuditError.self) { try restarted.check(witnessed: witnessed, by: "n2") }
        #expect(restarted.failed != nil)
        let record = try #require(try AuditContradiction.read(fromDirectory: f.dir.path))
        #expect(record.witness == "n2" && record.seq == witnessed.seq && record.reason.contains("its tail was cut"))
        // Started again: refused, naming the witness and what to do.
        #expect {
            _ = try AuditLog(store: f.store, identity: f.identity, nodeName: "n1")
        } throws: { error in
            let text = "\(error)"
            return text.contains("n2 contradicted") && text.contains(AuditContradiction.fileName)
        }
        // The record is a witnessed head for `audit verify --witness FILE`.
        let data = try Data(contentsOf: URL(fileURLWithPath: AuditContradiction.path(inDirectory: f.dir.path)))
        let head = try JSONDecoder().decode(WitnessedHead.self, from: data)
        #expect(head.verifiedHead()?.head == witnessed)
        // A record that cannot be read stops the log all the same (fail closed).
        try Data("{".utf8).write(to: URL(fileURLWithPath: AuditContradiction.path(inDirectory: f.dir.path)))
        #expect(throws: AuditError.self) { _ = try AuditLog(store: f.store, identity: f.identity, nodeName: "n1") }
        // Removed by the operator: the node starts again.
        try FileManager.default.removeItem(atPath: AuditContradiction.path(inDirectory: f.dir.path))
        _ = try AuditLog(store: f.store, identity: f.identity, nodeName: "n1")
    }

    @Test func canonicalJSONHasOneEncoding() throws {
        let value: JSONValue = ["b": 1, "a": ["z": .null, "y": [true, false, -12]], "é": "x/y\u{1}\n"]
        let bytes = value.canonicalBytes
        #expect(String(decoding: bytes, as: UTF8.self) == #"{"a":{"y":[true,false,-12],"z":null},"b":1,"é":"x/y\u0001\n"}"#)
        #expect(try JSONValue.parse(bytes) == value)
        #expect(try JSONValue.parse(Array(#"{ "b" : 1 , "a":{"z":null,"y":[true,false,-12]},"é":"x\/y\u0001\n"}"#.utf8)).canonicalBytes == bytes)
        #expect(throws: (any Error).self) { try JSONValue.parse(Array("1.5".utf8)) }
        #expect(throws: (any Error).self) { try JSONValue.parse(Array(String(repeating: "[", count: 100).utf8) + Array(String(repeating: "]", count: 100).utf8)) }
    }

    private func entries(_ f: AuditFixture) throws -> [AuditEntry] {
        var out: [AuditEntry] = []
        try AuditReader(directory: f.dir.path).forEachEntry { out.append($0) }
        return out
    }
}
