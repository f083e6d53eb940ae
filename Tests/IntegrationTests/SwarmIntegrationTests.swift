import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Glibc
import Synchronization
import Testing

/// Any HTTP request with an optional JSON body: status and body (status 0 when unreachable).
func httpCall(port: UInt16, method: String, path: String, json: Any? = nil, timeout: Double = 10) -> (Int, Data) {
    final class Box: Sendable { let result = Mutex<(Int, Data)>((0, Data())) }
    let box = Box()
    let done = DispatchSemaphore(value: 0)
    var request = URLRequest(url: URL(string: "http://127.0.0.1:\(port)\(path)")!)
    request.httpMethod = method
    request.timeoutInterval = timeout
    if let json {
        request.httpBody = try? JSONSerialization.data(withJSONObject: json)
        request.setValue("application/json", forHTTPHeaderField: "Content-Type")
    }
    URLSession.shared.dataTask(with: request) { data, response, _ in
        box.result.withLock { $0 = ((response as? HTTPURLResponse)?.statusCode ?? 0, data ?? Data()) }
        done.signal()
    }.resume()
    done.wait()
    return box.result.withLock { $0 }
}

func jsonObject(_ data: Data) -> [String: Any] { (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] ?? [:] }

/// `httpCall` again while the mesh answers "try again": 503, unreachable, or (for a read) 404
/// while a session or agent is taken over; up to a deadline. Status and JSON body of the last.
func httpCallRetrying(port: UInt16, method: String, path: String, json: Any? = nil, seconds: Double = 30,
                      pause: UInt32 = 200_000) -> (Int, [String: Any]) {
    let deadline = Date().addingTimeInterval(seconds)
    var last = (0, Data())
    repeat {
        last = httpCall(port: port, method: method, path: path, json: json, timeout: 20)
        if last.0 != 503 && last.0 != 0 && !(last.0 == 404 && method == "GET") { break }
        usleep(pause)
    } while Date() < deadline
    return (last.0, jsonObject(last.1))
}

/// A swarm driven through the public HTTP API, as an outside client would.
struct SwarmClient {
    var port: UInt16

    func submit(_ spec: [String: Any]) throws -> (id: String, owner: String?) {
        let (status, body) = httpCall(port: port, method: "POST", path: "/v1/swarms", json: spec)
        let object = jsonObject(body)
        guard status == 202, let id = object["id"] as? String else {
            throw StartFailed(description: "POST /v1/swarms: \(status) \(String(decoding: body, as: UTF8.self))")
        }
        return (id, object["owner"] as? String)
    }

    /// The swarm's counts (nil while no node answers for it).
    func counts(_ id: String) -> [String: Any]? {
        let (status, body) = httpCall(port: port, method: "GET", path: "/v1/swarms/\(id)?tasks=false")
        return status == 200 ? jsonObject(body) : nil
    }

    /// Every task of the swarm, read in pages of 100.
    func tasks(_ id: String, total: Int) throws -> [[String: Any]] {
        var all: [[String: Any]] = []
        var offset = 0
        while offset < total {
            let (status, body) = httpCall(port: port, method: "GET", path: "/v1/swarms/\(id)?offset=\(offset)&limit=100")
            guard status == 200, let page = jsonObject(body)["tasks"] as? [[String: Any]], !page.isEmpty else {
                throw StartFailed(description: "GET page at \(offset): \(status) \(String(decoding: body.prefix(500), as: UTF8.self))")
            }
            all += page
            offset += page.count
        }
        return all
    }

    func waitUntilFinished(_ id: String, seconds: Double) throws -> [String: Any] {
        var last: [String: Any]?
        try waitUntil("swarm \(id) finishes (last seen: \(String(describing: last)))", seconds: seconds) {
            last = counts(id)
            return (last?["state"] as? String).map { $0 != "running" } ?? false
        }
        return last ?? [:]
    }

    /// The task ids of the swarm's `task` events, read to the `done` event.
    func eventTaskIds(_ id: String) -> [String] {
        let (_, body) = httpCall(port: port, method: "GET", path: "/v1/swarms/\(id)/events", timeout: 30)
        return taskIdsOfEvents(body)
    }

    /// The id of a swarm other than `parent` in the mesh-wide list (the first child it spawned),
    /// once one appears.
    func waitForChild(of parent: String, seconds: Double) throws -> String {
        var child: String?
        try waitUntil("a child swarm of \(parent) exists", seconds: seconds) {
            let (_, body) = httpCall(port: port, method: "GET", path: "/v1/swarms")
            child = (jsonObject(body)["swarms"] as? [[String: Any]] ?? []).compactMap { $0["id"] as? String }.first { $0 != parent }
            return child != nil
        }
        return try #require(child)
    }
}

/// The task ids of the `task` events in a server-sent event stream's body, in order.
func taskIdsOfEvents(_ body: Data) -> [String] {
    var ids: [String] = []
    var event = ""
    for line in String(decoding: body, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false) {
        if line.hasPrefix("event:") { event = line.dropFirst(6).trimmingCharacters(in: .whitespaces) }
        if line.hasPrefix("data:"), event == "task",
           let data = line.dropFirst(5).trimmingCharacters(in: .whitespaces).data(using: .utf8),
           let task = jsonObject(data)["id"] as? String {
            ids.append(task)
        }
    }
    return ids
}

/// The issue's "Show" test: 3 real nodes, 200 tasks each echoing its own token, submitted through
/// a node that is not the seed; then the same after kill -9 of a worker, and of the owner.
@Suite("Swarms across real nodes", .serialized)
struct SwarmIntegrationTests {
    static let taskCount = 200

    static func spec(tokens: [String], sleep: Double = 0) -> [String: Any] {
        let tasks: [[String: Any]] = tokens.map { token in
            let script = sleep > 0 ? "sleep \(sleep); echo \(token)" : "echo \(token)"
            return ["id": token, "argv": ["sh", "-c", script], "timeoutSeconds": 30, "memoryMB": 64]
        }
        return ["tasks": tasks, "maxAttempts": 3]
    }

    static func tokens(_ tag: String) -> [String] { (0..<taskCount).map { "\(tag)-\($0)-\(UInt32.random(in: 0...UInt32.max))" } }

    /// Each token's task succeeded once with its own token as output; returns the nodes that ran them.
    static func expectEachTokenOnce(_ tasks: [[String: Any]], tokens: [String]) -> [String: Int] {
        #expect(tasks.count == tokens.count)
        var byNode: [String: Int] = [:]
        var seen = Set<String>()
        for task in tasks {
            let id = task["id"] as? String ?? ""
            #expect(seen.insert(id).inserted, "task \(id) listed twice")
            #expect(task["state"] as? String == "succeeded", "task \(id): \(task)")
            let result = task["result"] as? [String: Any] ?? [:]
            #expect(result["stdout"] as? String == id + "\n", "task \(id) printed \(String(describing: result["stdout"]))")
            byNode[result["node"] as? String ?? "?", default: 0] += 1
        }
        #expect(seen == Set(tokens))
        return byNode
    }

    @Test func twoHundredTasksThroughANonSeedNodeComeBackSpreadOverTheNodes() throws {
        let cluster = try LocalCluster()
        defer { cluster.shutdown() }
        let nodes = try cluster.startMesh(["n1", "n2", "n3"])
        let client = SwarmClient(port: nodes[1].apiPort)
        let tokens = Self.tokens("spread")
        let (id, _) = try client.submit(Self.spec(tokens: tokens))
        let final = try client.waitUntilFinished(id, seconds: 120)
        #expect(final["state"] as? String == "done")
        #expect(final["succeeded"] as? Int == Self.taskCount)
        let byNode = Self.expectEachTokenOnce(try client.tasks(id, total: Self.taskCount), tokens: tokens)
        #expect(Set(byNode.keys) == ["n1", "n2", "n3"], "tasks ran on \(byNode)")
        // Read through another node too, and the event stream: one event per task.
        let elsewhere = SwarmClient(port: nodes[0].apiPort)
        #expect(elsewhere.counts(id)?["succeeded"] as? Int == Self.taskCount)
        let events = client.eventTaskIds(id)
        #expect(events.count == Self.taskCount)
        #expect(Set(events) == Set(tokens))
    }

    @Test func killingAWorkerReRunsItsUnfinishedTasksElsewhereAndRecordsEachOnce() throws {
        let cluster = try LocalCluster()
        defer { cluster.shutdown() }
        let nodes = try cluster.startMesh(["n1", "n2", "n3"])
        let client = SwarmClient(port: nodes[1].apiPort)
        let tokens = Self.tokens("worker")
        let (id, owner) = try client.submit(Self.spec(tokens: tokens, sleep: 0.3))
        let victim = try #require(nodes.first { $0.name != "n2" && $0.name != owner }, "owner \(String(describing: owner))")
        // Kill it while it runs tasks: once some results are in (it has run some, and runs more).
        try waitUntil("a quarter of the tasks finished", seconds: 60) {
            (client.counts(id)?["succeeded"] as? Int ?? 0) >= Self.taskCount / 4
        }
        victim.signal(SIGKILL)
        _ = victim.waitForExit(seconds: 5)
        let final = try client.waitUntilFinished(id, seconds: 120)
        #expect(final["succeeded"] as? Int == Self.taskCount)
        let tasks = try client.tasks(id, total: Self.taskCount)
        _ = Self.expectEachTokenOnce(tasks, tokens: tokens)
        let rerun = tasks.filter { (($0["result"] as? [String: Any])?["attempts"] as? Int ?? 1) > 1 }
        #expect(!rerun.isEmpty, "no task of the killed node was run again")
        for task in rerun { #expect((task["result"] as? [String: Any])?["node"] as? String != victim.name) }
        let events = client.eventTaskIds(id)
        #expect(events.count == Self.taskCount, "each result is recorded (and announced) exactly once")
        #expect(Set(events) == Set(tokens))
    }

    @Test func killingTheOwnerTheSwarmStillFinishesAndReadsThroughASurvivor() throws {
        let cluster = try LocalCluster()
        defer { cluster.shutdown() }
        let nodes = try cluster.startMesh(["n1", "n2", "n3"])
        let entry = SwarmClient(port: nodes[1].apiPort)
        let tokens = Self.tokens("owner")
        let (id, ownerName) = try entry.submit(Self.spec(tokens: tokens, sleep: 0.3))
        let owner = try #require(nodes.first { $0.name == ownerName }, "POST /v1/swarms names the owner")
        try waitUntil("a quarter of the tasks finished", seconds: 60) {
            (entry.counts(id)?["succeeded"] as? Int ?? 0) >= Self.taskCount / 4
        }
        owner.signal(SIGKILL)
        _ = owner.waitForExit(seconds: 5)
        let survivor = SwarmClient(port: try #require(nodes.first { $0.name != owner.name }).apiPort)
        let final = try survivor.waitUntilFinished(id, seconds: 120)
        #expect(final["state"] as? String == "done")
        #expect(final["succeeded"] as? Int == Self.taskCount)
        _ = Self.expectEachTokenOnce(try survivor.tasks(id, total: Self.taskCount), tokens: tokens)
    }
}

/// `DELETE /v1/swarms/ID` and the `starling swarm` commands, against real nodes.
@Suite("Swarm cancel and CLI", .serialized)
struct SwarmCancelAndCLITests {
    @Test func cancellingKillsRunningTasksEverywhereAndPendingOnesNeverStart() throws {
        let cluster = try LocalCluster()
        defer { cluster.shutdown() }
        let nodes = try cluster.startMesh(["n1", "n2", "n3"])
        let client = SwarmClient(port: nodes[2].apiPort)
        let tasks: [[String: Any]] = (0..<40).map { ["id": "sleeper-\($0)", "argv": ["sleep", "60"], "memoryMB": 32] }
        let (id, _) = try client.submit(["tasks": tasks])
        // 3 nodes x 2 slots: six run, the rest wait.
        try waitUntil("six tasks run", seconds: 30) { (client.counts(id)?["running"] as? Int ?? 0) >= 6 }
        let (status, body) = httpCall(port: nodes[0].apiPort, method: "DELETE", path: "/v1/swarms/\(id)")
        #expect(status == 202, "\(String(decoding: body, as: UTF8.self))")
        let final = try client.waitUntilFinished(id, seconds: 20)
        #expect(final["state"] as? String == "cancelled")
        // The killed tasks' ends come back from their nodes: wait for every task to be final.
        try waitUntil("no task runs", seconds: 20) { (client.counts(id)?["running"] as? Int ?? 1) == 0 }
        let all = try client.tasks(id, total: 40)
        let killed = all.filter { ($0["result"] as? [String: Any])?["reason"] as? String == "killed" }
        let neverRan = all.filter { $0["result"] == nil }
        #expect(all.allSatisfy { $0["state"] as? String == "cancelled" }, "\(all.map { $0["state"] ?? "?" })")
        #expect(killed.count >= 6, "the running tasks were killed, not left to run: \(all.map { ($0["state"] ?? "?", ($0["result"] as? [String: Any])?["reason"] ?? "-") })")
        #expect(killed.count + neverRan.count == 40)
        // Nothing runs any more: every node's slots are free again.
        try waitUntil("every slot is free", seconds: 10) {
            (nodes[0].members() ?? []).allSatisfy { $0.capacity.free == $0.capacity.slots }
        }
        let (missing, _) = httpCall(port: nodes[1].apiPort, method: "DELETE", path: "/v1/swarms/0123456789abcdef")
        #expect(missing == 404)
    }

    @Test func swarmRunPrintsResultsAndExitsNonZeroWhenATaskFails() throws {
        let cluster = try LocalCluster()
        defer { cluster.shutdown() }
        let nodes = try cluster.startMesh(["n1", "n2"])
        let api = "127.0.0.1:\(nodes[1].apiPort)"
        let good = cluster.dir + "/good.json", bad = cluster.dir + "/bad.json"
        try #"{"tasks": [{"id": "a", "argv": ["echo", "alpha"]}, {"id": "b", "argv": ["echo", "beta"]}]}"#
            .write(toFile: good, atomically: true, encoding: .utf8)
        try #"{"tasks": [{"id": "ok", "argv": ["true"]}, {"id": "broken", "argv": ["sh", "-c", "exit 3"]}]}"#
            .write(toFile: bad, atomically: true, encoding: .utf8)
        let run = try runCLI(["swarm", "run", good, "--api", api, "--json"])
        #expect(run.status == 0, "\(run.err)")
        let status = jsonObject(Data(run.out.utf8))
        #expect(status["state"] as? String == "done")
        #expect(status["succeeded"] as? Int == 2)
        let plain = try runCLI(["swarm", "run", good, "--api", api])
        #expect(plain.status == 0)
        #expect(plain.out.contains("alpha") && plain.out.contains("beta"), "\(plain.out)")
        #expect(!plain.out.contains("\u{1B}["), "no terminal control codes when stdout is not a terminal")
        let failing = try runCLI(["swarm", "run", bad, "--api", api])
        #expect(failing.status != 0, "a failed task makes the exit status non-zero")
        #expect(failing.out.contains("broken"))
        let id = try #require(status["id"] as? String)
        let show = try runCLI(["swarm", "show", id, "--api", api, "--json"])
        #expect(jsonObject(Data(show.out.utf8))["succeeded"] as? Int == 2)
        let list = try runCLI(["swarm", "list", "--api", api, "--json"])
        let swarms = jsonObject(Data(list.out.utf8))["swarms"] as? [[String: Any]] ?? []
        #expect(swarms.count == 3)
        #expect(swarms.contains { $0["id"] as? String == id })
        let cancel = try runCLI(["swarm", "cancel", "0123456789abcdef", "--api", api])
        #expect(cancel.status != 0)
        let badFile = try runCLI(["swarm", "run", cluster.dir + "/missing.json", "--api", api])
        #expect(badFile.status != 0)
    }
}

/// Sub-swarms from inside a task, across real nodes: `$STARLING_SOCKET` in the sandbox.
@Suite("Sub-swarms through the task socket", .serialized)
struct SubSwarmIntegrationTests {
    static let fanOut = """
        api() { curl -s --unix-socket "$STARLING_SOCKET" "$@"; }
        children='{"tasks": [{"argv": ["sh", "-c", "echo 1"]}, {"argv": ["sh", "-c", "echo 2"]}, {"argv": ["sh", "-c", "echo 3"]}]}'
        id=$(api -X POST -H 'content-type: application/json' -d "$children" http://starling/v1/swarms | sed -E 's/.*"id" *: *"([^"]+)".*/\\1/')
        until api "http://starling/v1/swarms/$id?tasks=false" | grep -q '"state" *: *"done"'; do sleep 0.1; done
        sum=0
        for v in $(api "http://starling/v1/swarms/$id" | grep -oE '"stdout" *: *"[0-9]+' | grep -oE '[0-9]+$'); do sum=$((sum + v)); done
        echo "child=$id sum=$sum"
        echo "members=$(curl -s -o /dev/null -w '%{http_code}' --unix-socket "$STARLING_SOCKET" http://starling/v1/members)"
        echo "metrics=$(curl -s -o /dev/null -w '%{http_code}' --unix-socket "$STARLING_SOCKET" http://starling/metrics)"
        big='{"tasks": [{"argv": ["true"]}, {"argv": ["true"]}, {"argv": ["true"]}, {"argv": ["true"]}, {"argv": ["true"]}, {"argv": ["true"]}, {"argv": ["true"]}, {"argv": ["true"]}]}'
        echo "overBudget=$(curl -s -o /dev/null -w '%{http_code}' --unix-socket "$STARLING_SOCKET" -X POST -H 'content-type: application/json' -d "$big" http://starling/v1/swarms)"
        """

    @Test func aTaskFansOutAChildSwarmThroughItsSocketAndNothingElseIsReachable() throws {
        let cluster = try LocalCluster()
        defer { cluster.shutdown() }
        let nodes = try cluster.startMesh(["n1", "n2", "n3"])
        let client = SwarmClient(port: nodes[1].apiPort)
        let spec: [String: Any] = [
            "spawn": ["maxTasks": 5, "maxDepth": 1],
            "tasks": [["id": "fan", "argv": ["sh", "fan.sh"], "files": ["fan.sh": Self.fanOut], "timeoutSeconds": 60],
                      ["id": "plain", "argv": ["sh", "-c", "echo socket=${STARLING_SOCKET:-none} task=$STARLING_TASK"]]],
        ]
        let (id, _) = try client.submit(spec)
        _ = try client.waitUntilFinished(id, seconds: 90)
        let tasks = try client.tasks(id, total: 2)
        let fan = try #require(tasks.first { $0["id"] as? String == "fan" }?["result"] as? [String: Any])
        let out = fan["stdout"] as? String ?? ""
        #expect(out.contains("sum=6"), "the child swarm ran its 3 tasks: \(out) \(fan["stderr"] ?? "")")
        #expect(out.contains("members=404") && out.contains("metrics=404"), "nothing else of the node answers: \(out)")
        #expect(out.contains("overBudget=403"), "8 more tasks exceed the budget of 5 (3 spent): \(out)")
        let plain = try #require(tasks.first { $0["id"] as? String == "plain" }?["result"] as? [String: Any])
        #expect((plain["stdout"] as? String)?.contains("task=\(id)/plain") == true, "STARLING_TASK names the swarm and the task")
        // Every task of a spawning swarm has a socket; the child swarm is readable from outside too.
        let child = try #require(out.split(separator: " ").first { $0.hasPrefix("child=") }.map { String($0.dropFirst(6)) })
        #expect(client.counts(child)?["succeeded"] as? Int == 3)
        // A swarm without `spawn` gets no socket.
        let (plainSwarm, _) = try client.submit(["tasks": [["argv": ["sh", "-c", "echo socket=${STARLING_SOCKET:-none}"]]]])
        _ = try client.waitUntilFinished(plainSwarm, seconds: 30)
        let only = try client.tasks(plainSwarm, total: 1)
        #expect(((only.first?["result"] as? [String: Any])?["stdout"] as? String) == "socket=none\n")
    }

    @Test func cancellingAParentCancelsItsChildren() throws {
        let cluster = try LocalCluster()
        defer { cluster.shutdown() }
        let nodes = try cluster.startMesh(["n1", "n2", "n3"])
        let client = SwarmClient(port: nodes[0].apiPort)
        let script = """
            curl -s --unix-socket "$STARLING_SOCKET" -X POST -H 'content-type: application/json' \
              -d '{"tasks": [{"argv": ["sleep", "60"]}, {"argv": ["sleep", "60"]}]}' http://starling/v1/swarms > /task/out/child.json
            mkdir -p /task/out; sleep 60
            """
        let (id, _) = try client.submit(["spawn": ["maxTasks": 4, "maxDepth": 1],
                                         "tasks": [["id": "parent", "argv": ["sh", "-c", "mkdir -p /task/out; " + script], "timeoutSeconds": 120]]])
        // The child exists once some node lists a swarm other than the parent.
        let childID = try client.waitForChild(of: id, seconds: 30)
        try waitUntil("the child's tasks run", seconds: 30) { (client.counts(childID)?["running"] as? Int ?? 0) == 2 }
        #expect(httpCall(port: nodes[2].apiPort, method: "DELETE", path: "/v1/swarms/\(id)").0 == 202)
        let parentFinal = try client.waitUntilFinished(id, seconds: 30)
        #expect(parentFinal["state"] as? String == "cancelled")
        let childFinal = try client.waitUntilFinished(childID, seconds: 30)
        #expect(childFinal["state"] as? String == "cancelled", "cancelling a parent cancels its children")
    }
}
