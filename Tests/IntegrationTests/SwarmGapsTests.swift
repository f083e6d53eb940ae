import Foundation
import Glibc
import Synchronization
import Testing

/// The gaps issue #10 left open, each on real nodes: the spawn budget across nodes, child links
/// across a restart of every node, a 10,000-task create, the mesh-wide list, and the progress
/// bar on a real terminal.
@Suite("Swarm gaps on real nodes", .serialized)
struct SwarmGapsTests {
    /// A mesh of `names`, each node with `extra` arguments (the first is the seed).
    static func mesh(_ cluster: LocalCluster, _ names: [String], extra: [String] = []) throws -> [NodeProcess] {
        var nodes = [try cluster.start(names[0], extraArguments: extra)]
        for name in names.dropFirst() { nodes.append(try cluster.start(name, join: [nodes[0]], extraArguments: extra)) }
        try waitUntil("\(names.count) alive", seconds: 20) {
            nodes.allSatisfy { ($0.members() ?? []).filter { $0.status == "alive" }.count == names.count }
        }
        return nodes
    }

    static func wallClockMs() -> Int { Int(Date().timeIntervalSince1970 * 1000) }

    @Test func twoTasksOnTwoNodesSpawningAtOnceCannotOverspendTheBudget() throws {
        let cluster = try LocalCluster()
        defer { cluster.shutdown() }
        // One slot a node: the parent's two tasks run on two different nodes. Five nodes, three
        // replicas a swarm: a node's store holds only some of the other node's children, so its
        // socket's own check cannot see them all, even a while later.
        let nodes = try Self.mesh(cluster, ["n1", "n2", "n3", "n4", "n5"], extra: ["--slots", "1"])
        let client = SwarmClient(port: nodes[1].apiPort)
        // Both tasks wait for the same instant, then each asks for 10 children of one task, as
        // fast as it can, out of a budget of 10 for the whole swarm. A node's own requests are
        // serialised, but neither node's store holds the other's latest children yet.
        let at = Self.wallClockMs() + 8_000
        let script = """
            while [ "$(date +%s%3N)" -lt \(at) ]; do sleep 0.005; done
            for i in 1 2 3 4 5 6 7 8 9 10; do
              curl -s -w ' code=%{http_code}\\n' --unix-socket "$STARLING_SOCKET" -X POST -H 'content-type: application/json' \
                -d '{"tasks": [{"argv": ["true"]}]}' http://starling/v1/swarms
            done
            """
        let tasks: [[String: Any]] = ["a", "b"].map { ["id": $0, "argv": ["sh", "-c", script], "timeoutSeconds": 60] }
        let (id, _) = try client.submit(["spawn": ["maxTasks": 10, "maxDepth": 1], "tasks": tasks])
        _ = try client.waitUntilFinished(id, seconds: 90)
        let results = try client.tasks(id, total: 2).compactMap { $0["result"] as? [String: Any] }
        try #require(results.count == 2)
        let outputs = results.map { $0["stdout"] as? String ?? "" }
        let ranOn = Set(results.compactMap { $0["node"] as? String })
        #expect(ranOn.count == 2, "the two spawning tasks ran on two nodes: \(ranOn)")
        let lines = outputs.flatMap { $0.split(separator: "\n") }
        let admitted = lines.filter { $0.hasSuffix("code=202") }.count
        let refused = lines.filter { $0.hasSuffix("code=403") }
        #expect(admitted == 10, "exactly the budget of 10 children is admitted across both nodes: \(outputs)")
        #expect(refused.count == 10 && refused.allSatisfy { $0.contains("spawn budget exceeded") }, "the rest are refused with the reason: \(outputs)")
    }

    @Test func aCancelOfTheParentReachesItsChildAfterEveryNodeRestarted() throws {
        let cluster = try LocalCluster()
        defer { cluster.shutdown() }
        var nodes = try Self.mesh(cluster, ["n1", "n2", "n3"])
        let client = SwarmClient(port: nodes[0].apiPort)
        let script = """
            curl -s --unix-socket "$STARLING_SOCKET" -X POST -H 'content-type: application/json' \
              -d '{"maxAttempts": 3, "tasks": [{"argv": ["sleep", "300"]}, {"argv": ["sleep", "300"]}]}' http://starling/v1/swarms
            sleep 300
            """
        let (id, _) = try client.submit(["spawn": ["maxTasks": 8, "maxDepth": 1], "maxAttempts": 3,
                                         "tasks": [["id": "parent", "argv": ["sh", "-c", script], "timeoutSeconds": 600]]])
        let childID = try client.waitForChild(of: id, seconds: 30)
        try waitUntil("the child's tasks run", seconds: 30) { (client.counts(childID)?["running"] as? Int ?? 0) == 2 }
        // Every holder of the parent (R = 3 of 3 nodes) dies and comes back from its store.
        for node in nodes { node.signal(SIGKILL) }
        for node in nodes { _ = node.waitForExit(seconds: 10) }
        let seed = try cluster.start("n1")
        nodes = [seed, try cluster.start("n2", join: [seed]), try cluster.start("n3", join: [seed])]
        try waitUntil("3 alive again", seconds: 30) {
            nodes.allSatisfy { ($0.members() ?? []).filter { $0.status == "alive" }.count == 3 }
        }
        let after = SwarmClient(port: nodes[2].apiPort)
        try waitUntil("the parent is readable and running", seconds: 60) { after.counts(id)?["state"] as? String == "running" }
        try waitUntil("the cancel is taken", seconds: 60) {
            httpCall(port: nodes[2].apiPort, method: "DELETE", path: "/v1/swarms/\(id)").0 == 202
        }
        let parentFinal = try after.waitUntilFinished(id, seconds: 60)
        #expect(parentFinal["state"] as? String == "cancelled")
        let childFinal = try after.waitUntilFinished(childID, seconds: 60)
        #expect(childFinal["state"] as? String == "cancelled", "the child link survived the restart: \(childFinal)")
    }

    /// The machine here is too fast to miss a 5 s deadline when idle, so the nodes get a base
    /// request timeout of 250 ms: what a 10,000-task create meets on a machine twenty times
    /// busier. The create's own deadline grows with its size.
    @Test func aTenThousandTaskSwarmCreatedThroughANonOwnerIsAccepted() throws {
        let cluster = try LocalCluster()
        defer { cluster.shutdown() }
        // The lan preset: with loopback's 50 ms probes, a node whose loop is busy storing 10,000
        // rows on this loaded machine can be declared dead for a moment (NOTES), which is the
        // failure detector's story, not the create's.
        let nodes = try Self.mesh(cluster, ["n1", "n2", "n3"], extra: ["--swarm-request-timeout-ms", "250", "--preset", "lan"])
        let spec: [String: Any] = ["tasks": (0..<10_000).map { _ in ["argv": ["true"], "memoryMB": 64] }]
        var created = 0
        var throughNonOwner = 0
        // The owner is the first of the id's replica set: through 1 node of 3 in the usual case.
        // Before the fix each create timed out at its owner and fell back to the entry itself
        // (a second copy, owned by a node that is not the first of the ring).
        while throughNonOwner == 0 && created < 8 {
            let entry = nodes[created % 3]
            let (status, body) = httpCall(port: entry.apiPort, method: "POST", path: "/v1/swarms", json: spec, timeout: 120)
            #expect(status == 202, "a 10,000-task swarm through \(entry.name): \(status) \(String(decoding: body.prefix(300), as: UTF8.self))")
            guard status == 202, let id = jsonObject(body)["id"] as? String else { return }
            created += 1
            if jsonObject(body)["owner"] as? String != entry.name { throughNonOwner += 1 }
            // A 503 says "retry" (Retry-After: 1), as a client would. Under this machine's load the
            // loopback preset's 50 ms probes can declare a node dead for a moment while its loop
            // stores 10,000 rows (NOTES), and a cancel that finds no owner then is a 503.
            var cancel = (0, Data())
            for _ in 0..<10 {
                cancel = httpCall(port: entry.apiPort, method: "DELETE", path: "/v1/swarms/\(id)", timeout: 150)
                if cancel.0 != 503 { break }
                Thread.sleep(forTimeInterval: 1)
            }
            #expect(cancel.0 == 202, "cancel through \(entry.name): \(cancel.0) \(String(decoding: cancel.1.prefix(300), as: UTF8.self))")
        }
        #expect(throughNonOwner == 1, "one create went through a node that is not the owner")
    }

    @Test func theSwarmListOfAnyNodeIsTheMeshs() throws {
        let cluster = try LocalCluster()
        defer { cluster.shutdown() }
        // Four nodes, three replicas a swarm: no node holds every swarm.
        let nodes = try Self.mesh(cluster, ["n1", "n2", "n3", "n4"])
        var ids: [String] = []
        for k in 0..<10 {
            let (id, _) = try SwarmClient(port: nodes[k % 4].apiPort).submit(["tasks": [["argv": ["true"]]]])
            ids.append(id)
            Thread.sleep(forTimeInterval: 0.01)  // distinct creation times, so "newest first" is one order
        }
        for node in nodes {
            let (status, body) = httpCall(port: node.apiPort, method: "GET", path: "/v1/swarms")
            #expect(status == 200)
            let listed = (jsonObject(body)["swarms"] as? [[String: Any]] ?? []).compactMap { $0["id"] as? String }
            #expect(listed == ids.reversed(), "\(node.name) lists every swarm of the mesh, newest first, once: \(listed)")
            #expect(jsonObject(body)["partial"] == nil)
        }
        let limited = httpCall(port: nodes[0].apiPort, method: "GET", path: "/v1/swarms?limit=3")
        #expect((jsonObject(limited.1)["swarms"] as? [[String: Any]] ?? []).compactMap { $0["id"] as? String } == Array(ids.reversed().prefix(3)))
    }

    /// `starling swarm run` on a pseudo-terminal (script(1) gives it one, 70 columns wide): the
    /// bar is redrawn in place, never wider than the terminal (a wrapped line leaves a copy of
    /// itself at every redraw), and ends on the final counts.
    @Test func swarmRunDrawsALiveProgressBarOnATerminal() throws {
        let cluster = try LocalCluster()
        defer { cluster.shutdown() }
        let node = try cluster.start("n1")
        let specPath = cluster.dir + "/spec.json"
        let tasks: [[String: Any]] = (0..<16).map { ["id": "t\($0)", "argv": ["sh", "-c", "sleep 0.4; echo $0", "\($0)"]] }
        try JSONSerialization.data(withJSONObject: ["tasks": tasks]).write(to: URL(fileURLWithPath: specPath))
        let command = "stty cols 70 rows 24; \(starlingBinary()) swarm run --api 127.0.0.1:\(node.apiPort) \(specPath)"
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/script")
        process.arguments = ["-qefc", command, "/dev/null"]
        let output = Pipe()
        process.standardOutput = output
        process.standardError = output
        process.standardInput = FileHandle(forReadingAtPath: "/dev/null")
        try process.run()
        let done = DispatchSemaphore(value: 0)
        final class Box: Sendable { let data = Mutex(Data()) }
        let box = Box()
        DispatchQueue.global().async {
            let data = output.fileHandleForReading.readDataToEndOfFile()
            box.data.withLock { $0 = data }
            done.signal()
        }
        if done.wait(timeout: .now() + 120) == .timedOut {
            kill(process.processIdentifier, SIGKILL)
            Issue.record("swarm run did not finish in 120 s")
            return
        }
        process.waitUntilExit()
        let text = String(decoding: box.data.withLock { $0 }, as: UTF8.self)
        #expect(process.terminationStatus == 0, "\(text)")
        // Each redraw: carriage return, erase the line, then the bar and the counts.
        let redraws = text.components(separatedBy: "\r\u{1B}[2K").dropFirst()
        #expect(redraws.count >= 3, "the bar was redrawn in place: \(text.debugDescription)")
        let lines = redraws.map { $0.components(separatedBy: CharacterSet(charactersIn: "\r\n")).first ?? "" }
        for line in lines {
            #expect(line.count < 70, "a redraw fits a 70-column terminal: \(line.debugDescription)")
            #expect(line.contains("done,") && line.contains("failed,") && line.contains("running,") && line.contains("/s") && line.contains("ETA"),
                    "every field is shown: \(line.debugDescription)")
        }
        let last = try #require(lines.last)
        #expect(last.contains("16/16 done, 0 failed, 0 running"), "the final bar: \(last.debugDescription)")
        let bar = last.prefix { $0 != "]" }
        #expect(bar.hasPrefix("[#") && !bar.contains("."), "a full bar: \(last.debugDescription)")
        #expect(text.contains("16 succeeded, 0 failed of 16"), "then the results: \(text.debugDescription)")
    }
}
