import Foundation
import Logging
import StarlingCore
import StarlingCrypto
import StarlingSandbox
import StarlingStore
import Testing
@testable import StarlingRuntime

/// Group commit: the swarm's store writes of one input go to SQLite in one transaction (one
/// fsync with `synchronous = FULL`), and nothing that follows them is said before it commits.
@Suite("Swarm store writes: one transaction per input", .serialized)
struct GroupCommitTests {
    /// A real node (real sandboxes, real SQLite) with one slot, on its own.
    final class LoneNode: Sendable {
        let node: MeshNode
        let store: SwarmStore
        let runner: SandboxRunner
        let service: SwarmService
        let dir: String
        let workRoot: String

        init() throws {
            dir = NSTemporaryDirectory() + "starling-group-commit-\(UUID().uuidString)"
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            let config = MeshConfiguration(name: "gc1", bind: NodeAddress(host: "127.0.0.1", port: 0), api: "127.0.0.1:1",
                                           seeds: [], slots: 1, taskMemoryMB: 1024, keyFile: "/nonexistent", settings: .loopback)
            let logger = Logger(label: "gc1", factory: { _ in SwiftLogNoOpLogHandler() })
            node = try MeshNode(configuration: config, keyring: try Keyring(keys: [ClusterKey.generate()]), logger: logger)
            store = try SwarmStore(directory: dir)
            // A work root and a cgroup parent of its own: the sandbox tests of this process count
            // what is left in theirs (work dirs under `/dev/shm/starling-tests`, cgroups under
            // `starling/`), and this node's tasks (OffLoopCommitTests submits `sleep 30`s, which
            // outlive the test) must not show there.
            workRoot = "/dev/shm/starling-lone-node-\(UUID().uuidString.prefix(8))"
            var sandbox = SandboxConfiguration(nodeName: "gc1", workRoot: workRoot)
            sandbox.cgroupParent = "starling-lone-node-tests"
            runner = try SandboxRunner(configuration: sandbox)
            service = try SwarmService(node: node, store: store, runner: runner, memoryMB: 1024, logger: logger)
            node.start(onExit: {})
        }

        func stop() {
            node.stop()
            runner.shutdown()
            try? FileManager.default.removeItem(atPath: dir)
            try? FileManager.default.removeItem(atPath: workRoot)
        }
    }

    static func waitUntil(_ what: String, seconds: Double, _ condition: () throws -> Bool) async throws {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if try condition() { return }
            try await Task.sleep(for: .milliseconds(20))
        }
        try #require(try condition(), "timed out after \(seconds) s waiting until \(what)")
    }

    /// Cancelling a swarm with 39 pending tasks changes 40 records in one input (the swarm's
    /// state and each pending task). Each was its own transaction: 40 commits, 40 fsyncs, the
    /// loop thread blocked meanwhile. Now they are one, and the cancel is answered after it.
    @Test func theWritesOfOneInputAreOneTransaction() async throws {
        let lone = try LoneNode()
        defer { lone.stop() }
        let payload = Array(try JSONEncoder().encode(TaskSpec(argv: ["/bin/sleep", "30"])))
        let tasks = (0..<40).map { SwarmTask(id: "t\($0)", needs: TaskNeeds(memoryMB: 64, milliCPUs: 100), payload: payload) }
        let draft = SwarmDraft(tasks: tasks, maxAttempts: 1, options: [], parent: nil, createdAtMs: 1)
        guard case .submitted(let id, _) = try await lone.service.submit(draft) else {
            Issue.record("the swarm was not accepted")
            return
        }
        try await Self.waitUntil("one task runs", seconds: 30) {
            try lone.store.status(id, includeTasks: false)?.counts.running == 1
        }
        let before = lone.store.written.generation
        #expect(try await lone.service.cancel(id) == .cancelled(id))
        let commits = lone.store.written.generation - before
        // Answered only once durable: the cancelled records are in the store when it answers.
        let status = try #require(try lone.store.status(id, includeTasks: false))
        #expect(status.state == .cancelled)
        // 39 were pending; the running one is recorded cancelled too once its kill ends it.
        #expect(status.counts.pending == 0)
        #expect(status.counts.cancelled >= 39)
        // One for the cancel's input; at most one more if the killed task's result came in
        // between (it is killed by the cancel, so its result may land right after).
        #expect(commits >= 1 && commits <= 2, "the cancel's 40 writes took \(commits) commits")
    }
}
