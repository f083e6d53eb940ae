import Foundation
import Glibc
import Testing

/// Runs `starling ARGS` to its end; its status and stderr.
private func starling(_ args: [String]) throws -> (status: Int32, stdout: String, stderr: String) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: starlingBinary())
    p.arguments = args
    let errPath = NSTemporaryDirectory() + "starling-audit-it-\(UUID().uuidString)"
    let outPath = errPath + ".out"
    FileManager.default.createFile(atPath: errPath, contents: nil)
    FileManager.default.createFile(atPath: outPath, contents: nil)
    defer {
        try? FileManager.default.removeItem(atPath: errPath)
        try? FileManager.default.removeItem(atPath: outPath)
    }
    p.standardError = FileHandle(forWritingAtPath: errPath)
    p.standardOutput = FileHandle(forWritingAtPath: outPath)
    try p.run()
    p.waitUntilExit()
    return (p.terminationStatus, (try? String(contentsOfFile: outPath, encoding: .utf8)) ?? "",
            (try? String(contentsOfFile: errPath, encoding: .utf8)) ?? "")
}

/// Cuts a node's audit log behind its back, with Python's sqlite3 (as root on the host could).
private func cutAuditLog(dataDir: String, keepThrough seq: Int) throws {
    let script = """
        import sqlite3, sys
        db = sqlite3.connect(sys.argv[1])
        db.execute("DROP TRIGGER IF EXISTS audit_no_delete")
        db.execute("DELETE FROM audit WHERE seq > ?", (int(sys.argv[2]),))
        db.commit()
        """
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
    p.arguments = ["-c", script, dataDir + "/starling.sqlite", String(seq)]
    try p.run()
    p.waitUntilExit()
    #expect(p.terminationStatus == 0)
}

@Suite("Audit heads witnessed by peers (real nodes on 127.0.0.1)", .serialized)
struct AuditWitnessIntegrationTests {
    /// n1's peers keep its signed head. Its tail is cut while it is down: `audit verify` against a
    /// peer's data dir names the cut, and n1, restarted on the cut log, finds that its peers
    /// witnessed an entry it no longer holds, stops its log and leaves rather than extend it.
    @Test func aCutTailIsCaughtByVerifyAndByTheNodeOnRestart() throws {
        let cluster = try LocalCluster()
        defer { cluster.shutdown() }
        let fast = ["--audit-head-interval", "0.2"]
        let n1 = try cluster.start("n1", extraArguments: fast)
        let n2 = try cluster.start("n2", join: [n1], extraArguments: fast)
        let n3 = try cluster.start("n3", join: [n1], extraArguments: fast)
        _ = n3
        // Each node's log holds at least its node.start entry; n2 witnesses n1's head.
        try waitUntil("n2 witnesses n1's head", seconds: 20) {
            (try? starling(["audit", "verify", "--data", n1.dataDir, "--witness", n2.dataDir]))?.status == 0
        }
        n1.signal(SIGTERM)
        #expect(n1.waitForExit(seconds: 15) != nil)
        // Restarting once more appends a second node.start, so a cut to 1 loses a witnessed entry
        // only if the witness saw it: make sure it did.
        let again = try cluster.start("n1", join: [n2], extraArguments: fast)
        try waitUntil("n2 witnesses n1's head after a restart", seconds: 20) {
            guard let run = try? starling(["audit", "verify", "--data", again.dataDir, "--witness", n2.dataDir]), run.status == 0
            else { return false }
            return run.stdout.contains("witnessed entry 2")
        }
        again.signal(SIGTERM)
        #expect(again.waitForExit(seconds: 15) != nil)

        try cutAuditLog(dataDir: n1.dataDir, keepThrough: 1)
        #expect(try starling(["audit", "verify", "--data", n1.dataDir]).stdout.contains("ok 1 entries"))
        let caught = try starling(["audit", "verify", "--data", n1.dataDir, "--witness", n2.dataDir])
        #expect(caught.status == 1)
        #expect(caught.stderr.contains("entry 2: truncated"), "\(caught.stderr)")

        // Restarted on the cut log: its new node.start takes seq 2 with another hash, and the
        // peers hold the old entry 2 (or a later one). It must stop, not carry on.
        let restarted = try cluster.start("n1", join: [n2], extraArguments: fast)
        try waitUntil("n1 leaves on the contradiction", seconds: 30) { !restarted.isRunning }
        #expect(cluster.log(of: restarted).contains("the audit log contradicts a peer's witness"))

        // The stop is recorded: started once more, n1 refuses at once, before it joins or runs
        // anything, and says what to do. The record is itself a witness for `audit verify`.
        #expect(throws: StartFailed.self) { _ = try cluster.start("n1", join: [n2], extraArguments: fast) }
        let log = (try? String(contentsOfFile: "\(cluster.dir)/n1.log", encoding: .utf8)) ?? ""
        #expect(log.contains("contradicted this node's audit log"), "\(log.suffix(1_000))")
        let record = n1.dataDir + "/audit-contradicted.json"
        let checked = try starling(["audit", "verify", "--data", n1.dataDir, "--witness", record])
        #expect(checked.status == 1)
        #expect(checked.stderr.contains("truncated") || checked.stderr.contains("rewritten"), "\(checked.stderr)")
    }
}
