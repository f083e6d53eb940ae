import Foundation
import Glibc
import Synchronization
import Testing

/// kill -9 of a session's owner at each step of an effect's write path, in real processes (three
/// `starling node`s on 127.0.0.1, so the replica set is all three), with nothing in the node
/// changed for the test. Each point is hit deterministically:
///
/// - **start recorded, task not run**: both other replicas are stopped (SIGSTOP) before the act,
///   so the owner can store its `effect-started` record and send it, but never hears a majority
///   and so never runs the task; it is killed once its own store holds the record, and the
///   replicas, continued, store the record waiting in their sockets.
/// - **task running**: the task calls the test's service and then blocks on a gate the service
///   holds; the owner is killed while it waits.
/// - **result recorded, answer not sent**: the task runs on a majority-recorded start; the other
///   replicas are stopped while it blocks on its gate; the gate opens, the owner stores the
///   `effect-result` record and sends it, but cannot hear a majority, so it cannot answer the
///   client; it is killed once its store holds the result.
///
/// Then, through a survivor: a start without its result is the unknown rule (409
/// `outcome: unknown`, every time, the key never run again); a recorded result replays
/// (`replayed: true`); and the service saw each key at most once (exactly once where it ran).
@Suite("Sessions: kill -9 of the owner at each step of an effect", .serialized)
struct SessionCrashTests {
    /// Three nodes allowing `net: host`, a session created on them with one checkpoint, and its
    /// owner and other replicas.
    struct Setup {
        let cluster: LocalCluster
        let nodes: [NodeProcess]
        let owner: NodeProcess
        let others: [NodeProcess]
    }

    static func setUp(session id: String) throws -> Setup {
        let cluster = try LocalCluster()
        let policy = cluster.dir + "/policy.json"
        try Data(#"{"net": "host"}"#.utf8).write(to: URL(fileURLWithPath: policy))
        let seed = try cluster.start("c1", extraArguments: ["--policy", policy])
        var nodes = [seed]
        for name in ["c2", "c3"] { nodes.append(try cluster.start(name, join: [seed], extraArguments: ["--policy", policy])) }
        try waitUntil("3 alive", seconds: 20) {
            nodes.allSatisfy { ($0.members() ?? []).filter { $0.status == "alive" }.count == 3 }
        }
        let (status, created) = try retrying(nodes[0].apiPort, "POST", "/v1/sessions", json: ["id": id])
        guard status == 201, let ownerName = created["owner"] as? String, let owner = nodes.first(where: { $0.name == ownerName }) else {
            throw StartFailed(description: "create \(id): \(status) \(created)")
        }
        let (s, body) = try retrying(owner.apiPort, "POST", "/v1/sessions/\(id)/checkpoint", json: ["state": ["step": 1]])
        guard s == 200 else { throw StartFailed(description: "checkpoint: \(s) \(body)") }
        return Setup(cluster: cluster, nodes: nodes, owner: owner, others: nodes.filter { $0 !== owner })
    }

    /// Retries while the mesh says "try again" (503, or 404 for a read during a takeover).
    static func retrying(_ port: UInt16, _ method: String, _ path: String, json: Any? = nil, seconds: Double = 60) throws -> (Int, [String: Any]) {
        httpCallRetrying(port: port, method: method, path: path, json: json, seconds: seconds)
    }

    /// An act sent on a thread of its own, so the test can kill the owner while it waits.
    final class PendingCall: Sendable {
        private let result = Mutex<(Int, Data)?>(nil)
        init(port: UInt16, path: String, json: [String: Any]) {
            let body = try? JSONSerialization.data(withJSONObject: json)
            let thread = Thread { [self] in
                let object = body.flatMap { try? JSONSerialization.jsonObject(with: $0) } ?? [:]
                let answer = httpCall(port: port, method: "POST", path: path, json: object, timeout: 60)
                result.withLock { $0 = answer }
            }
            thread.start()
        }
        /// The answer, once it came (status 0: the connection failed).
        func wait(seconds: Double) throws -> (Int, [String: Any]) {
            var answer: (Int, Data)?
            try waitUntil("the client's request ends", seconds: seconds) {
                answer = result.withLock { $0 }
                return answer != nil
            }
            return (answer!.0, jsonObject(answer!.1))
        }
    }

    /// Waits until `node`'s store holds a record of `kind` (3 effect-started, 4 effect-result) for `key`.
    static func waitForRecord(kind: Int, key: String, session: String, in node: NodeProcess, seconds: Double = 20) throws {
        try waitUntil("\(node.name) stored record kind \(kind) of \(key)", seconds: seconds) {
            ((try? storedRecords(dataDir: node.dataDir, session: session)) ?? []).contains { $0.kind == kind && $0.key == key }
        }
    }

    static func stopOthers(_ setup: Setup) { for node in setup.others { node.signal(SIGSTOP) } }
    static func continueOthers(_ setup: Setup) { for node in setup.others { node.signal(SIGCONT) } }

    static func killOwner(_ setup: Setup) {
        setup.owner.signal(SIGKILL)
        _ = setup.owner.waitForExit(seconds: 10)
    }

    /// The session as a survivor serves it after the takeover.
    static func resumed(_ id: String, through survivor: NodeProcess, former owner: NodeProcess) throws -> [String: Any] {
        let (status, view) = try retrying(survivor.apiPort, "GET", "/v1/sessions/\(id)", seconds: 60)
        #expect(status == 200, "\(id) through \(survivor.name): \(status) \(view)")
        #expect(view["owner"] as? String != owner.name)
        return view
    }

    static func act(_ server: EffectServer, gate: String? = nil, key: String) -> [String: Any] {
        ["key": key, "argv": ["bash", "-c", server.effectScript(gate: gate)], "net": "host", "timeoutSeconds": 60]
    }

    @Test(.timeLimit(.minutes(3)))
    func killedAfterTheStartWasRecordedAndBeforeTheTaskRanTheKeyIsUnknownAndNeverRuns() throws {
        let server = try EffectServer()
        defer { server.stop() }
        let id = "crash-a"
        let setup = try Self.setUp(session: id)
        defer { Self.continueOthers(setup); setup.cluster.shutdown() }

        Self.stopOthers(setup)
        let call = PendingCall(port: setup.owner.apiPort, path: "/v1/sessions/\(id)/actions", json: Self.act(server, key: "a1"))
        try Self.waitForRecord(kind: 3, key: "a1", session: id, in: setup.owner)
        Self.killOwner(setup)
        Self.continueOthers(setup)
        let (clientStatus, _) = try call.wait(seconds: 60)
        #expect(clientStatus != 200, "the client was answered \(clientStatus) by an owner that never heard a majority")

        let survivor = setup.others[0]
        let view = try Self.resumed(id, through: survivor, former: setup.owner)
        // The point was hit: the start reached the replicas (it is in the resumed chain) ...
        let journal = view["journal"] as? [[String: Any]] ?? []
        #expect(journal.map { $0["key"] as? String } == ["a1"], "journal: \(journal)")
        #expect(journal.first?["outcome"] as? String == "unknown", "journal: \(journal)")
        // ... and the task never ran.
        for attempt in 1...2 {
            let (status, body) = try Self.retrying(survivor.apiPort, "POST", "/v1/sessions/\(id)/actions", json: Self.act(server, key: "a1"))
            #expect(status == 409 && body["outcome"] as? String == "unknown", "a1 again (\(attempt)): \(status) \(body)")
            #expect(body["startedSeq"] as? Int == 3)
        }
        #expect(server.effectCounts()["\(id)/a1"] == nil, "the task of a1 ran: \(server.paths)")
        print("session-crash: start recorded, task not run: client got \(clientStatus), journal \(journal), service saw \(server.effectCounts())")
    }

    @Test(.timeLimit(.minutes(3)))
    func killedWhileTheTaskRunsTheKeyIsUnknownAndRunsOnlyOnce() throws {
        let server = try EffectServer()
        defer { server.stop() }
        let id = "crash-b"
        let setup = try Self.setUp(session: id)
        defer { Self.continueOthers(setup); setup.cluster.shutdown() }

        let call = PendingCall(port: setup.owner.apiPort, path: "/v1/sessions/\(id)/actions", json: Self.act(server, gate: "b1", key: "b1"))
        try waitUntil("the task of b1 runs and waits on its gate", seconds: 30) { server.isWaiting("b1") }
        Self.killOwner(setup)
        let (clientStatus, _) = try call.wait(seconds: 60)
        #expect(clientStatus != 200)

        let survivor = setup.others[0]
        let view = try Self.resumed(id, through: survivor, former: setup.owner)
        let journal = view["journal"] as? [[String: Any]] ?? []
        #expect(journal.first?["outcome"] as? String == "unknown", "journal: \(journal)")
        server.open("b1")
        for attempt in 1...2 {
            let (status, body) = try Self.retrying(survivor.apiPort, "POST", "/v1/sessions/\(id)/actions", json: Self.act(server, key: "b1"))
            #expect(status == 409 && body["outcome"] as? String == "unknown", "b1 again (\(attempt)): \(status) \(body)")
        }
        #expect(server.effectCounts()["\(id)/b1"] == 1, "the service saw b1 \(server.effectCounts()["\(id)/b1"] ?? 0) times")
        print("session-crash: task running: client got \(clientStatus), journal \(journal), service saw \(server.effectCounts())")
    }

    @Test(.timeLimit(.minutes(3)))
    func killedAfterTheResultWasRecordedAndBeforeTheAnswerTheKeyReplays() throws {
        let server = try EffectServer()
        defer { server.stop() }
        let id = "crash-c"
        let setup = try Self.setUp(session: id)
        defer { Self.continueOthers(setup); setup.cluster.shutdown() }

        let call = PendingCall(port: setup.owner.apiPort, path: "/v1/sessions/\(id)/actions", json: Self.act(server, gate: "c1", key: "c1"))
        try waitUntil("the task of c1 runs and waits on its gate", seconds: 30) { server.isWaiting("c1") }
        Self.stopOthers(setup)
        server.open("c1")
        try Self.waitForRecord(kind: 4, key: "c1", session: id, in: setup.owner)
        Self.killOwner(setup)
        Self.continueOthers(setup)
        let (clientStatus, _) = try call.wait(seconds: 60)
        #expect(clientStatus != 200, "the client was answered \(clientStatus) by an owner that never heard a majority for the result")

        let survivor = setup.others[0]
        let view = try Self.resumed(id, through: survivor, former: setup.owner)
        let journal = view["journal"] as? [[String: Any]] ?? []
        #expect(journal.first?["outcome"] as? String == "done", "journal: \(journal)")
        for attempt in 1...2 {
            let (status, body) = try Self.retrying(survivor.apiPort, "POST", "/v1/sessions/\(id)/actions", json: Self.act(server, key: "c1"))
            #expect(status == 200 && body["replayed"] as? Bool == true, "c1 again (\(attempt)): \(status) \(body)")
            let stdout = (body["result"] as? [String: Any])?["stdout"] as? String ?? ""
            #expect(stdout.hasSuffix("go"), "the replayed result is the run's: \(stdout.debugDescription)")
        }
        #expect(server.effectCounts()["\(id)/c1"] == 1, "the service saw c1 \(server.effectCounts()["\(id)/c1"] ?? 0) times")
        print("session-crash: result recorded, answer not sent: client got \(clientStatus), journal \(journal), service saw \(server.effectCounts())")
    }
}
