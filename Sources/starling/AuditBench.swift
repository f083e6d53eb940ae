import ArgumentParser
import Foundation
import GRDB
import StarlingCrypto
import StarlingStore

/// `starling audit bench` (hidden; `Scripts/bench-audit` runs it): what the audit log costs on a
/// task's path, against baselines measured in the same run on the same disk.
///
/// - baseline: the same rows inserted without hashing or signing, one durable transaction each
///   (the floor a durable append cannot go under on this disk), and the same rows read back;
/// - seal: chaining, hashing and signing only (no I/O);
/// - append: `AuditLog.append` from one thread (each waits for its own fsync), and from
///   `--threads` threads at once (group commit);
/// - verify: `AuditReader.verify` over the whole log (BLAKE2b and an Ed25519 verify per entry).
struct AuditBench: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "bench", abstract: "Measure the audit log (prints JSON).",
                                                    shouldDisplay: false)

    @Option(help: "Entries per measurement.")
    var count: Int = 2_000

    @Option(help: "Threads appending at once in the concurrent measurement.")
    var threads: Int = 8

    @OptionGroup var scratch: BenchScratch

    func validate() throws {
        guard (10...1_000_000).contains(count) else { throw ValidationError("--count must be 10 to 1000000") }
        guard (1...256).contains(threads) else { throw ValidationError("--threads must be 1 to 256") }
    }

    func run() throws {
        try scratch.with(prefix: "starling-audit-bench") { try measure(in: $0) }
    }

    func measure(in root: String) throws {
        let body: JSONValue = ["swarm": "0123456789abcdef", "index": 7, "task": "t7", "attempt": 1, "reason": "exited",
                               "exitCode": 0, "signal": .null, "durationMs": 12, "cpuMs": 3, "peakMemoryKB": 2048,
                               "secrets": ["OPENAI_API_KEY"]]
        let bytes = body.canonicalBytes

        // Baseline: the same table shape, no chain, no signature, one durable transaction a row.
        let baseDir = root + "/baseline", logDir = root + "/log"
        for dir in [baseDir, logDir] { try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true) }
        let baseStore = try SwarmStore(directory: baseDir)
        _ = baseStore
        var configuration = Configuration()
        configuration.prepareDatabase { db in try db.execute(sql: "PRAGMA synchronous = FULL") }
        let pool = try DatabasePool(path: baseDir + "/" + SwarmStore.fileName, configuration: configuration)
        try pool.write { db in
            try db.execute(sql: "CREATE TABLE plain (seq INTEGER PRIMARY KEY, timeMs INTEGER, kind TEXT, body TEXT, a BLOB, b BLOB, c BLOB) STRICT")
        }
        let filler = Data(repeating: 7, count: 32), sig = Data(repeating: 9, count: 64)
        let plainInsert = try seconds {
            for i in 1...count {
                try pool.write { db in
                    try db.execute(sql: "INSERT INTO plain VALUES (?, ?, ?, ?, ?, ?, ?)",
                                   arguments: [i, 0, "task.finish", String(decoding: bytes, as: UTF8.self), filler, filler, sig])
                }
            }
        }
        let plainRead = try seconds {
            try pool.read { db in
                let rows = try Row.fetchCursor(db, sql: "SELECT * FROM plain ORDER BY seq")
                var n = 0
                while let row = try rows.next() { n += (row["body"] as String).utf8.count > 0 ? 1 : 0 }
                precondition(n == count)
            }
        }

        // Sealing only.
        let identity = try NodeIdentity.loadOrCreate(dataDir: root + "/identity")
        var head: AuditHead? = nil
        let seal = try seconds {
            for _ in 1...count {
                head = try AuditEntry.make(after: head, timeMs: 0, kind: "task.finish", body: body, identity: identity).head
            }
        }

        // Appends, one thread.
        let log = try AuditLog(store: try SwarmStore(directory: logDir), identity: identity, nodeName: "bench")
        let single = try seconds { for _ in 1...count { try log.append("task.finish", body) } }

        // Appends, many threads at once.
        let perThread = max(1, count / threads)
        let concurrent = try seconds {
            let group = DispatchGroup()
            let failures = FailureCount()
            for _ in 0..<threads {
                group.enter()
                Thread {
                    for _ in 0..<perThread { if (try? log.append("task.finish", body)) == nil { failures.add() } }
                    group.leave()
                }.start()
            }
            group.wait()
            guard failures.value == 0 else { throw ValidationError("\(failures.value) appends failed") }
        }

        // Verifying the whole log.
        let total = UInt64(count + perThread * threads)
        var verification: AuditVerification? = nil
        let verify = try seconds { verification = try AuditReader(directory: logDir).verify(publicKey: identity.publicKey) }
        guard let verification, verification.fault == nil, verification.entries == total else {
            throw ValidationError("the benchmark's own log does not verify: \(String(describing: verification))")
        }

        func rate(_ n: Int, _ s: Double) -> Double { (Double(n) / s).rounded() }
        let result: [String: Any] = [
            "entries": count,
            "threads": threads,
            "bodyBytes": bytes.count,
            "baselinePlainInsertsPerSecond": rate(count, plainInsert),
            "baselinePlainReadsPerSecond": rate(count, plainRead),
            "sealsPerSecond": rate(count, seal),
            "appendsPerSecondOneThread": rate(count, single),
            "appendsPerSecondConcurrent": rate(perThread * threads, concurrent),
            "appendMsOneThread": (single / Double(count) * 1000 * 1000).rounded() / 1000,
            "verifiesPerSecond": rate(Int(total), verify),
            // The database and its WAL together: an upper bound on what an entry costs on disk.
            "diskBytesPerEntry": ["", "-wal"].compactMap {
                (try? FileManager.default.attributesOfItem(atPath: logDir + "/" + SwarmStore.fileName + $0))?[.size] as? Int
            }.reduce(0, +) / Int(total),
        ]
        let json = try JSONSerialization.data(withJSONObject: result, options: [.sortedKeys])
        print(String(decoding: json, as: UTF8.self))
    }

    private func seconds(_ body: () throws -> Void) throws -> Double {
        let start = DispatchTime.now().uptimeNanoseconds
        try body()
        return Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
    }
}

/// Failed appends counted across the benchmark's threads.
final class FailureCount: @unchecked Sendable {
    // @unchecked: `count` is only touched under `lock`.
    private let lock = NSLock()
    private var count = 0
    func add() { lock.lock(); count += 1; lock.unlock() }
    var value: Int { lock.lock(); defer { lock.unlock() }; return count }
}
