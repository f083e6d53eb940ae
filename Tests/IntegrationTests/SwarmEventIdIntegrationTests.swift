import Foundation
import Glibc
import Synchronization
import Testing

/// `GET /v1/swarms/ID/events` followed with curl (a real client of server-sent events), from a
/// swarm's owner that is killed -9 mid-stream, then resumed with `Last-Event-ID` on a survivor.
@Suite("Swarm event ids across real nodes", .serialized)
struct SwarmEventIdIntegrationTests {
    /// One `curl -N` reading an event stream; its output is collected as it comes.
    final class EventFollower: Sendable {
        /// What curl printed so far (a class: the pipe's handler holds it too).
        final class Output: Sendable {
            let data = Mutex(Data())
            let killed = Atomic<Bool>(false)
        }

        let process: Process
        private let output = Output()

        /// With `kill`, the node of that PID gets SIGKILL the moment the stream has shown that
        /// many task events: within a replication round trip of the owner recording the last
        /// one, where a replica may not store it yet.
        init(port: UInt16, swarm: String, lastEventId: String?, kill victim: (events: Int, pid: pid_t)? = nil) throws {
            process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/curl")
            var arguments = ["-sN", "--max-time", "180"]
            if let lastEventId { arguments += ["-H", "Last-Event-ID: \(lastEventId)"] }
            arguments.append("http://127.0.0.1:\(port)/v1/swarms/\(swarm)/events")
            process.arguments = arguments
            let pipe = Pipe()
            process.standardOutput = pipe
            process.standardError = FileHandle.nullDevice
            pipe.fileHandleForReading.readabilityHandler = { [output] handle in
                let data = handle.availableData
                guard !data.isEmpty else { return }
                let shown = output.data.withLock { all in
                    all.append(data)
                    return String(decoding: all, as: UTF8.self).components(separatedBy: "\nevent: task\n").count - 1
                }
                if let victim, shown >= victim.events, !output.killed.exchange(true, ordering: .relaxed) {
                    Glibc.kill(victim.pid, SIGKILL)
                }
            }
            try process.run()
        }

        /// Ends curl (by its own PID) if it still runs.
        func stop() {
            if process.isRunning { process.terminate() }
            process.waitUntilExit()
        }

        /// The complete events so far: (id, task id) of each `task` event, and whether `done` came.
        func events() -> (tasks: [(id: String, task: String)], done: Bool) {
            let text = output.data.withLock { String(decoding: $0, as: UTF8.self) }
            var tasks: [(String, String)] = []
            var done = false
            // Only blocks ended by a blank line are complete.
            let blocks = text.components(separatedBy: "\n\n").dropLast()
            for block in blocks {
                var id: String?
                var event = ""
                var data = ""
                for line in block.split(separator: "\n") {
                    if line.hasPrefix("id:") { id = line.dropFirst(3).trimmingCharacters(in: .whitespaces) }
                    if line.hasPrefix("event:") { event = line.dropFirst(6).trimmingCharacters(in: .whitespaces) }
                    if line.hasPrefix("data:") { data = line.dropFirst(5).trimmingCharacters(in: .whitespaces) }
                }
                if event == "done" { done = true }
                if event == "task", let id, let task = jsonObject(Data(data.utf8))["id"] as? String { tasks.append((id, task)) }
            }
            return (tasks, done)
        }
    }

    /// Every task's event arrives exactly once, in increasing id order, across the owner's death.
    @Test func aClientFollowingTheOwnerResumesOnASurvivorAndSeesEveryTaskOnce() throws {
        let cluster = try LocalCluster()
        defer { cluster.shutdown() }
        let nodes = try cluster.startMesh(["ev1", "ev2", "ev3"])
        let count = 60
        // Short tasks finishing all the time: at the kill, the owner has results in flight to
        // its replicas.
        let tasks: [[String: Any]] = (0..<count).map { i in
            ["id": "e\(i)", "argv": ["sh", "-c", "sleep 0.\(i % 4); echo e\(i)"], "memoryMB": 32]
        }
        let (swarm, ownerName) = try SwarmClient(port: nodes[1].apiPort).submit(["tasks": tasks, "maxAttempts": 3])
        let owner = try #require(nodes.first { $0.name == ownerName }, "POST /v1/swarms names the owner")
        let first = try EventFollower(port: owner.apiPort, swarm: swarm, lastEventId: nil, kill: (10, owner.pid))
        defer { first.stop() }
        try waitUntil("the owner is killed after its stream showed 10 tasks", seconds: 90) { !owner.isRunning }
        #expect(owner.waitForExit(seconds: 10) != nil)
        // curl ends when the connection breaks; if not, it is ended here.
        _ = try? waitUntil("the stream of the killed node ends", seconds: 10) { !first.process.isRunning }
        first.stop()
        let before = first.events()
        #expect(!before.done)
        let last = try #require(before.tasks.last?.id)

        let survivor = try #require(nodes.first { $0.name != owner.name && $0.isRunning })
        let resumed = try EventFollower(port: survivor.apiPort, swarm: swarm, lastEventId: last)
        defer { resumed.stop() }
        try waitUntil("the resumed stream ends with done", seconds: 150) { resumed.events().done }
        let all = before.tasks + resumed.events().tasks
        // Ids are EPOCH.OWNER.SEQ (the reign that numbered the finish, then its number): the
        // numbers go up across the owner's death, whatever the reign.
        let ids = all.map(\.id)
        let numbers = ids.map { UInt32($0.split(separator: ".").last.map(String.init) ?? "") ?? 0 }
        #expect(ids.allSatisfy { $0.split(separator: ".").count == 3 }, "ids: \(ids)")
        #expect(numbers == numbers.sorted() && Set(numbers).count == numbers.count, "numbers go up: \(ids)")
        var seen: [String: Int] = [:]
        for event in all { seen[event.task, default: 0] += 1 }
        #expect(seen.filter { $0.value > 1 }.isEmpty, "seen twice: \(seen.filter { $0.value > 1 }) in \(all)")
        #expect(Set(seen.keys) == Set((0..<count).map { "e\($0)" }), "missing: \(Set((0..<count).map { "e\($0)" }).subtracting(seen.keys).sorted())")
    }
}
