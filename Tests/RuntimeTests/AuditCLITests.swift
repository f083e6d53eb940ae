import Foundation
import GRDB
import Logging
import StarlingCore
import StarlingCrypto
import StarlingSandbox
import StarlingStore
import Testing
@testable import StarlingRuntime

/// A data dir as a node leaves it: node.key, and starling.sqlite with `entries` audit entries.
struct AuditDataDir {
    let path: String
    let identity: NodeIdentity
    let store: SwarmStore
    let log: AuditLog

    init(_ label: String, entries: Int) throws {
        path = NSTemporaryDirectory() + "starling-audit-cli-\(label)-\(UUID().uuidString)"
        identity = try NodeIdentity.loadOrCreate(dataDir: path)
        store = try SwarmStore(directory: path)
        log = try AuditLog(store: store, identity: identity, nodeName: label)
        for i in 0..<entries { try log.append("task.finish", ["index": .integer(Int64(i)), "secrets": ["API_TOKEN"]]) }
    }

    /// Edits the file behind the node's back, as root could (the append-only triggers go first).
    func tamper(_ sql: String) throws {
        try DatabaseQueue(path: store.path).write { db in
            try db.execute(sql: "DROP TRIGGER IF EXISTS audit_no_update")
            try db.execute(sql: "DROP TRIGGER IF EXISTS audit_no_delete")
            try db.execute(sql: sql)
        }
    }

    func remove() { try? FileManager.default.removeItem(atPath: path) }
}

@Suite("starling audit (the real CLI on real SQLite files)")
struct AuditCLITests {
    @Test func verifySaysOkWithTheCountOnAnIntactLog() throws {
        let d = try AuditDataDir("ok", entries: 9)
        defer { d.remove() }
        let run = try runCLI(["audit", "verify", "--data", d.path])
        #expect(run.status == 0, "\(run.stderr)")
        #expect(run.stdout.contains("ok 9 entries"))
    }

    @Test func verifyNamesAnEditedRow() throws {
        let d = try AuditDataDir("edited", entries: 10)
        defer { d.remove() }
        try d.tamper(#"UPDATE audit SET body = '{"index":3,"secrets":[]}' WHERE seq = 4"#)
        let run = try runCLI(["audit", "verify", "--data", d.path])
        #expect(run.status == 1)
        #expect(run.stderr.contains("entry 4: altered"), "\(run.stderr)")
    }

    @Test func verifyNamesADeletedRow() throws {
        let d = try AuditDataDir("deleted", entries: 10)
        defer { d.remove() }
        try d.tamper("DELETE FROM audit WHERE seq = 6")
        let run = try runCLI(["audit", "verify", "--data", d.path])
        #expect(run.status == 1)
        #expect(run.stderr.contains("entry 6: missing"), "\(run.stderr)")
    }

    @Test func verifyNamesReorderedRows() throws {
        let d = try AuditDataDir("reordered", entries: 10)
        defer { d.remove() }
        try d.tamper("UPDATE audit SET seq = -2 WHERE seq = 2")
        try d.tamper("UPDATE audit SET seq = 2 WHERE seq = 3")
        try d.tamper("UPDATE audit SET seq = 3 WHERE seq = -2")
        let run = try runCLI(["audit", "verify", "--data", d.path])
        #expect(run.status == 1)
        #expect(run.stderr.contains("entry 2: out of place"), "\(run.stderr)")
    }

    @Test func verifyNamesAForgedSignature() throws {
        let d = try AuditDataDir("forged", entries: 5)
        defer { d.remove() }
        try d.tamper("UPDATE audit SET signature = zeroblob(64) WHERE seq = 5")
        let run = try runCLI(["audit", "verify", "--data", d.path])
        #expect(run.status == 1)
        #expect(run.stderr.contains("entry 5: forged"), "\(run.stderr)")
    }

    /// The issue's truncation case: the last rows deleted. The witness is another node's data dir
    /// holding the head it witnessed, and a head file saved by `audit head`.
    @Test func verifyCatchesACutTailThroughAWitness() throws {
        let d = try AuditDataDir("cut", entries: 10)
        let peer = try AuditDataDir("peer", entries: 1)
        defer { d.remove(); peer.remove() }
        try peer.log.witness(node: "cut", publicKey: d.identity.publicKey, head: try #require(d.log.currentHead), receivedAtMs: 1)
        let headRun = try runCLI(["audit", "head", "--data", d.path, "--name", "cut"])
        #expect(headRun.status == 0, "\(headRun.stderr)")
        let headFile = d.path + ".head.json"
        try Data(headRun.stdout.utf8).write(to: URL(fileURLWithPath: headFile))
        defer { try? FileManager.default.removeItem(atPath: headFile) }
        #expect(try runCLI(["audit", "verify", "--data", d.path, "--witness", peer.path]).status == 0)

        try d.tamper("DELETE FROM audit WHERE seq > 7")
        // Without a witness the cut is invisible: that is the limit NOTES states.
        #expect(try runCLI(["audit", "verify", "--data", d.path]).stdout.contains("ok 7 entries"))
        for witness in [peer.path, headFile] {
            let run = try runCLI(["audit", "verify", "--data", d.path, "--witness", witness])
            #expect(run.status == 1)
            #expect(run.stderr.contains("entry 8: truncated"), "\(run.stderr)")
        }
    }

    @Test func aWitnessOfAnotherNodeIsRefused() throws {
        let d = try AuditDataDir("mine", entries: 3)
        let other = try AuditDataDir("theirs", entries: 3)
        defer { d.remove(); other.remove() }
        let headRun = try runCLI(["audit", "head", "--data", other.path])
        let headFile = d.path + ".other-head.json"
        try Data(headRun.stdout.utf8).write(to: URL(fileURLWithPath: headFile))
        defer { try? FileManager.default.removeItem(atPath: headFile) }
        let run = try runCLI(["audit", "verify", "--data", d.path, "--witness", headFile])
        #expect(run.status != 0)
        #expect(run.stderr.contains("another node"), "\(run.stderr)")
    }

    @Test func exportPrintsJSONLinesThatVerifyOnTheirOwn() throws {
        let d = try AuditDataDir("export", entries: 6)
        defer { d.remove() }
        let run = try runCLI(["audit", "export", "--data", d.path])
        #expect(run.status == 0, "\(run.stderr)")
        let lines = run.stdout.split(separator: "\n").map(String.init)
        #expect(lines.count == 6)
        var check = AuditChainCheck(publicKey: d.identity.publicKey)
        for line in lines {
            let exported = try JSONDecoder().decode(ExportedAuditEntry.self, from: Data(line.utf8))
            check.check(try #require(exported.entry))
            #expect(exported.kind == "task.finish")
            #expect(exported.body == ["index": .integer(Int64(exported.seq - 1)), "secrets": ["API_TOKEN"]])
        }
        #expect(check.finish().fault == nil)
        #expect(check.finish().head == d.log.currentHead)
    }

    @Test func verifyFailsOnAMissingDataDir() throws {
        let run = try runCLI(["audit", "verify", "--data", "/nonexistent-\(UUID().uuidString)", "--public-key", String(repeating: "00", count: 32)])
        #expect(run.status != 0)
        #expect(run.stderr.contains("no database"), "\(run.stderr)")
    }
}

/// Every swarm task run through the node's executor is in the audit log: start, then finish or
/// denial, with secret names and never their values. Real sandboxes.
@Suite("Task runs in the audit log (real sandboxes, real SQLite)")
struct TaskAuditTests {
    static let secret = "s3cret-value-not-for-logs"

    func executor(_ d: AuditDataDir, policy: Policy) throws -> SwarmTaskExecutor {
        let runner = try SandboxRunner(configuration: SandboxConfiguration(
            nodeName: "audited", workRoot: "/dev/shm/starling-audit-tests", initPath: initBinary(), policy: policy,
            secrets: SecretStore(values: ["API_TOKEN": Self.secret])))
        let executor = SwarmTaskExecutor(runner: runner, nodeName: "audited", slots: 2, audit: d.log)
        executor.sockets.withLock { $0 = TaskSockets(swarms: StoreOnlyGateway(store: d.store, name: "audited"), logger: Logger(label: "test")) }
        return executor
    }

    func run(_ executor: SwarmTaskExecutor, _ task: TaskSpec, index: UInt32) async throws -> SwarmActionOutcome {
        let payload = Array(try JSONEncoder().encode(task))
        let run = TaskRun(swarm: "00000000000000a1", index: index, attempt: 1,
                          task: SwarmTask(id: "t\(index)", needs: TaskNeeds(memoryMB: 64, milliCPUs: 100), payload: payload),
                          options: [], maxAttempts: 1)
        return try await withCheckedThrowingContinuation { c in executor.start(run) { c.resume(returning: $0) } }
    }

    func exported(_ d: AuditDataDir) throws -> [ExportedAuditEntry] {
        var out: [ExportedAuditEntry] = []
        try AuditReader(directory: d.path).forEachEntry { out.append(ExportedAuditEntry($0)) }
        return out
    }

    @Test func aRunIsRecordedBeforeAndAfterWithSecretNamesOnly() async throws {
        let d = try AuditDataDir("runs", entries: 0)
        defer { d.remove() }
        let e = try executor(d, policy: Policy(secrets: ["API_TOKEN"]))
        let ok = try await run(e, TaskSpec(argv: ["/bin/sh", "-c", "echo $API_TOKEN"], secrets: ["API_TOKEN"], timeoutSeconds: 30), index: 0)
        guard case .finished(_, _, _, let outcome, _) = ok else { Issue.record("\(ok)"); return }
        #expect(outcome == .succeeded)
        let denied = try await run(e, TaskSpec(argv: ["/bin/true"], net: .host), index: 1)
        guard case .finished(_, _, _, let deniedOutcome, _) = denied else { Issue.record("\(denied)"); return }
        #expect(deniedOutcome == .denied)

        let entries = try exported(d)
        #expect(entries.map(\.kind) == ["task.start", "task.finish", "task.start", "task.denied"])
        #expect(entries[0].body.object?["secrets"] == ["API_TOKEN"])
        #expect(entries[0].body.object?["program"] == "/bin/sh")
        #expect(entries[1].body.object?["secrets"] == ["API_TOKEN"])
        #expect(entries[1].body.object?["exitCode"] == 0)
        #expect(entries[3].body.object?["denial"].map { "\($0)".contains("network") } == true)
        #expect(entries[3].body.object?["secrets"] == [])
        // The value never reaches the log, in any column.
        for file in [d.store.path, d.store.path + "-wal"] {
            let raw = (try? Data(contentsOf: URL(fileURLWithPath: file))) ?? Data()
            #expect(raw.range(of: Data(Self.secret.utf8)) == nil)
        }
        #expect(try AuditReader(directory: d.path).verify(publicKey: d.identity.publicKey).fault == nil)
    }

    @Test func aTaskWhoseStartCannotBeRecordedNeverRuns() async throws {
        let d = try AuditDataDir("failclosed", entries: 1)
        defer { d.remove() }
        let e = try executor(d, policy: Policy())
        try d.tamper("DROP TABLE audit")
        let outcome = try await run(e, TaskSpec(argv: ["/bin/true"], timeoutSeconds: 30), index: 0)
        guard case .finished(_, _, _, let result, let bytes) = outcome else { Issue.record("\(outcome)"); return }
        #expect(result == .denied)
        let decoded = try JSONDecoder().decode(TaskResult.self, from: Data(bytes))
        #expect(decoded.stderr.contains("audit log refused the task's start"))
        #expect(decoded.durationMs == 0)
        #expect(d.log.failed != nil)
    }
}

extension JSONValue {
    var object: [String: JSONValue]? { if case .object(let o) = self { o } else { nil } }
}
