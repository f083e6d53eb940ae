import Foundation
import Glibc
import Synchronization

/// A write lock on a node's store, held by a `sqlite3` process of the test's (`BEGIN IMMEDIATE`
/// in WAL mode): the node's writes wait on it, its reads and everything else it does go on. A
/// node that must store something before it answers (a replica's fence promise, a new owner's
/// install) so stays alive in the mesh but silent at exactly that step, until `release()`.
///
/// This stops one step of a real node from outside, where SIGSTOP would stop the whole process
/// (and membership would declare it dead within a second on the `loopback` preset).
/// A node's write waits at most its store's busy timeout (5 s, `SwarmStore`), then fails and the
/// node leaves the mesh: a lock must be released well within that once a write waits on it.
/// Nothing else may write there meanwhile either: the nodes of these tests send their audit heads
/// once at start only (`--audit-head-interval 3600`), as a witness stores a head on its loop.
final class StoreWriteLock {
    private let process = Process()
    private let input = Pipe()
    private let output = Pipe()
    let dataDir: String

    init(dataDir: String) throws {
        self.dataDir = dataDir
        process.executableURL = URL(fileURLWithPath: "/usr/bin/sqlite3")
        // -bail: a BEGIN that cannot get the lock ends the tool, so "held" is never printed.
        process.arguments = ["-batch", "-bail", dataDir + "/starling.sqlite"]
        process.standardInput = input
        process.standardOutput = output
        process.standardError = output
        try process.run()
        send(".timeout 3000\nBEGIN IMMEDIATE;\nSELECT 'held';\n")
        var seen = ""
        let fd = output.fileHandleForReading.fileDescriptor
        let deadline = Date().addingTimeInterval(10)
        while !seen.contains("held"), Date() < deadline, process.isRunning {
            var ready = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&ready, 1, 100) > 0 else { continue }
            var buffer = [UInt8](repeating: 0, count: 512)
            let n = read(fd, &buffer, buffer.count)
            if n <= 0 { break }
            seen += String(decoding: buffer[0..<n], as: UTF8.self)
        }
        guard seen.contains("held") else {
            release()
            throw StartFailed(description: "cannot lock the store of \(dataDir): \(seen)")
        }
    }

    private func send(_ text: String) {
        // SIGPIPE is ignored in this process (the runtime linked into the tests ignores it), and
        // a tool that exited is not written to anyway.
        guard process.isRunning else { return }
        try? input.fileHandleForWriting.write(contentsOf: Data(text.utf8))
    }

    /// Ends the transaction (the node's waiting write goes on) and the tool, by its own PID if it
    /// does not quit. Safe to call more than once.
    func release() {
        if process.isRunning {
            send("ROLLBACK;\n.quit\n")
            try? input.fileHandleForWriting.close()
            let deadline = Date().addingTimeInterval(5)
            while process.isRunning, Date() < deadline { usleep(10_000) }
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        }
        process.waitUntilExit()
    }
}

/// A node's row for a session in its store (`session`): the highest epoch promised there, that
/// epoch's owner and the replica set. nil when the node holds no such session (or has no store yet).
struct StoredSessionRow: Equatable, CustomStringConvertible {
    var epoch: Int
    var owner: String
    var replicas: [String]

    var description: String { "e\(epoch) owner \(owner) set \(replicas)" }
}

func storedSessionRow(dataDir: String, session: String) -> StoredSessionRow? {
    precondition(session.allSatisfy { $0.isLetter || $0.isNumber || "._-".contains($0) }, "a session id goes into SQL as it is")
    let sql = "SELECT epoch, owner, hex(replicas) FROM session WHERE id = '\(session)'"
    guard let out = try? runTool("/usr/bin/sqlite3", ["-readonly", "-separator", "\t", dataDir + "/starling.sqlite", sql]) else { return nil }
    let fields = out.trimmingCharacters(in: .newlines).split(separator: "\t", omittingEmptySubsequences: false).map(String.init)
    guard fields.count == 3, let epoch = Int(fields[0]) else { return nil }
    // Names, each followed by a NUL byte (`SwarmStore.encodeNames`), as hex.
    var bytes: [UInt8] = []
    var hex = Substring(fields[2])
    while hex.count >= 2, let byte = UInt8(hex.prefix(2), radix: 16) {
        bytes.append(byte)
        hex = hex.dropFirst(2)
    }
    let replicas = bytes.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
    return StoredSessionRow(epoch: epoch, owner: fields[1], replicas: replicas)
}

/// A client request sent on a thread of its own and retried while the mesh says "try again"
/// (503, no connection), so the test can crash nodes while it waits. Records how long it took.
final class RetriedCall: Sendable {
    private let result = Mutex<(status: Int, body: Data, seconds: Double, tries: Int)?>(nil)

    init(port: UInt16, method: String, path: String, json: [String: Any], seconds: Double = 60) {
        let body = try? JSONSerialization.data(withJSONObject: json)
        let thread = Thread { [self] in
            let started = Date()
            let deadline = started.addingTimeInterval(seconds)
            let object = body.flatMap { try? JSONSerialization.jsonObject(with: $0) } ?? [:]
            var last = (0, Data())
            var tries = 0
            repeat {
                tries += 1
                last = httpCall(port: port, method: method, path: path, json: object, timeout: 20)
                if last.0 != 503 && last.0 != 0 { break }
                usleep(200_000)
            } while Date() < deadline
            let answer = (last.0, last.1, Date().timeIntervalSince(started), tries)
            result.withLock { $0 = answer }
        }
        thread.start()
    }

    /// The last answer once the retries ended: status, JSON body, seconds in all, requests sent.
    func wait(seconds: Double) throws -> (status: Int, body: [String: Any], seconds: Double, tries: Int) {
        var answer: (status: Int, body: Data, seconds: Double, tries: Int)?
        try waitUntil("the client's request ends", seconds: seconds) {
            answer = result.withLock { $0 }
            return answer != nil
        }
        return (answer!.status, jsonObject(answer!.body), answer!.seconds, answer!.tries)
    }
}
