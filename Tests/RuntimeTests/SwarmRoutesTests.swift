import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import NIOCore
import StarlingCore
import StarlingSandbox
import StarlingStore
import Synchronization
import Testing
@testable import StarlingRuntime

/// A gateway over a real store and nothing else: it stores a submitted swarm as its own owner
/// would, and cancels by writing the state. It stands in for the mesh ONLY to test the routes'
/// input validation, paging of stored data, event streams over stored data, and forwarding; the
/// scheduling behind these routes is tested with real nodes once the node wires its gateway.
final class StoreOnlyGateway: SwarmGateway {
    let store: SwarmStore?
    let nodeName: String
    private let holderAddresses: Mutex<[String]>
    private let otherAddresses: Mutex<[String]>
    private let counter = Atomic<UInt64>(0)
    /// Drafts as submitted, for checks of what the route built.
    let submitted = Mutex<[SwarmDraft]>([])

    init(store: SwarmStore?, name: String = "gw", holders: [String] = [], others: [String] = []) {
        self.store = store
        self.nodeName = name
        self.holderAddresses = Mutex(holders)
        self.otherAddresses = Mutex(others)
    }

    func setHolders(_ h: [String]) { holderAddresses.withLock { $0 = h } }

    func setOthers(_ o: [String]) { otherAddresses.withLock { $0 = o } }

    func submit(_ draft: SwarmDraft) async throws -> SwarmReply {
        guard let store else { return .refused("no store") }
        let n = counter.add(1, ordering: .relaxed).newValue
        let id = String(format: "%016llx", 0xa000_0000_0000_0000 | n)
        try store.apply([.swarm(SwarmDefinition(id: id, draft: draft, replicas: [nodeName]), epoch: 1, state: .running)])
        submitted.withLock { $0.append(draft) }
        return .submitted(id, owner: nodeName)
    }

    func cancel(_ id: SwarmID) async throws -> SwarmReply {
        guard let store, try store.has(id) else { return .notFound(id) }
        try store.apply([.swarmState(id, .cancelled, epoch: 1)])
        return .cancelled(id)
    }

    func holders(of id: SwarmID) -> [String] { holderAddresses.withLock { $0 } }

    func otherNodes() -> [String] { otherAddresses.withLock { $0 } }
}

/// The swarm routes alone on a router, as APIServer registers them.
func swarmRouter(_ gateway: (any SwarmGateway)?, events: SwarmEventSettings = SwarmEventSettings(pollInterval: .milliseconds(20))) -> Router<BasicRequestContext> {
    let router = Router()
    router.add(middleware: JSONErrorMiddleware())
    router.add(middleware: MethodNotAllowedMiddleware())
    var routes = SwarmRoutes(gateway: gateway, forwarder: SwarmForwarder(timeout: .seconds(2), logger: Logger(label: "test")), events: events,
                             logger: Logger(label: "test"))
    // The other nodes of these tests are in-process servers sharing the test process's 2-thread
    // concurrency pool with a hundred other tests: the production 2 s let a fresh-clone CI run
    // call the live one "unanswered". A node that refuses the connection is still unanswered at once.
    routes.meshList.timeout = .seconds(20)
    routes.register(on: router)
    return router
}

func temporaryStore(_ label: String) throws -> (SwarmStore, String) {
    let dir = NSTemporaryDirectory() + "starling-routes-\(label)-\(UUID().uuidString)"
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    return (try SwarmStore(directory: dir), dir)
}

extension TestResponse {
    var text: String { String(buffer: body) }
    var json: [String: Any]? { try? JSONSerialization.jsonObject(with: Data(buffer: body)) as? [String: Any] }
    var error: String? { json?["error"] as? String }
}

func body(_ s: String) -> ByteBuffer { ByteBuffer(string: s) }

@Suite("Swarm routes (real store; the mesh stood in for by the store)")
struct SwarmRoutesTests {
    @Test func aBadSwarmIsA400WithItsReasonAndNothingIsSubmitted() async throws {
        let (store, dir) = try temporaryStore("bad")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let gateway = StoreOnlyGateway(store: store)
        let app = Application(router: swarmRouter(gateway))
        let cases: [(String, String)] = [
            ("", "not valid JSON"),
            ("[1]", "not a SwarmSpec"),
            ("{}", "tasks is missing"),
            (#"{"tasks": []}"#, "at least one task"),
            (#"{"tasks": [{"argv": []}]}"#, "argv must name a program"),
            (#"{"tasks": [{"argv": [""]}]}"#, "argv must name a program"),
            (#"{"tasks": [{"argv": "echo"}]}"#, "tasks[0].argv"),
            (#"{"tasks": [{"argv": ["a"], "id": ".."}]}"#, "id must be"),
            (#"{"tasks": [{"argv": ["a"], "memoryMB": 4}]}"#, "memoryMB"),
            (#"{"tasks": [{"argv": ["a"], "cpus": 0}]}"#, "cpus"),
            (#"{"tasks": [{"argv": ["a"], "files": {"../x": "y"}}]}"#, "bad file name"),
            (#"{"tasks": [{"argv": ["a"]}], "maxAttempts": 11}"#, "maxAttempts"),
            (#"{"tasks": [{"argv": ["a"]}], "policy": {"maxMemoryMB": 0}}"#, "policy"),
            (#"{"tasks": [{"argv": ["a"]}], "spawn": {"maxTasks": 1, "maxDepth": 9}}"#, "spawn.maxDepth"),
            (#"{"tasks": [{"argv": ["a"]}], "spawn": {"maxTasks": 1}}"#, "maxDepth is missing"),
        ]
        try await app.test(.router) { client in
            for (payload, reason) in cases {
                try await client.execute(uri: "/v1/swarms", method: .post, body: body(payload)) { r in
                    #expect(r.status == .badRequest, "\(payload) → \(r.status) \(r.text)")
                    #expect(r.error?.contains(reason) == true, "\(payload) → \(r.text), expected it to mention \(reason)")
                }
            }
        }
        // Two tasks under one id, the default t<index> included: 409.
        try await app.test(.router) { client in
            for payload in [#"{"tasks": [{"argv": ["a"], "id": "x"}, {"argv": ["b"], "id": "x"}]}"#,
                            #"{"tasks": [{"argv": ["a"]}, {"argv": ["b"], "id": "t0"}]}"#] {
                try await client.execute(uri: "/v1/swarms", method: .post, body: body(payload)) { r in
                    #expect(r.status == .conflict, "\(payload) → \(r.status) \(r.text)")
                    #expect(r.error?.contains("used twice") == true, "\(r.text)")
                }
            }
        }
        #expect(gateway.submitted.withLock { $0.isEmpty })
        #expect(try store.list().isEmpty)
    }

    @Test func aGoodSwarmIs202WithItsIdAndTheDraftCarriesTasksNeedsAndOptions() async throws {
        let (store, dir) = try temporaryStore("good")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let gateway = StoreOnlyGateway(store: store)
        let app = Application(router: swarmRouter(gateway))
        let spec = #"{"tasks": [{"argv": ["echo", "a"]}, {"id": "mine", "argv": ["echo", "b"], "memoryMB": 64, "cpus": 0.25}],"#
            + #" "maxAttempts": 3, "policy": {"maxMemoryMB": 128}, "spawn": {"maxTasks": 10, "maxDepth": 2}}"#
        let id = try await app.test(.router) { client in
            try await client.execute(uri: "/v1/swarms", method: .post, body: body(spec)) { r -> String in
                #expect(r.status == .accepted, "\(r.text)")
                #expect(r.json?["owner"] as? String == "gw")
                return try #require(r.json?["id"] as? String)
            }
        }
        #expect(try store.has(id))
        let draft = try #require(gateway.submitted.withLock { $0.first })
        #expect(draft.maxAttempts == 3)
        #expect(draft.tasks.map(\.id) == ["t0", "mine"])
        // No memory asked: the sandbox's default (512) capped by the swarm policy's ceiling.
        #expect(draft.tasks[0].needs == TaskNeeds(memoryMB: 128, milliCPUs: 1000))
        #expect(draft.tasks[1].needs == TaskNeeds(memoryMB: 64, milliCPUs: 250))
        let task = try JSONDecoder().decode(TaskSpec.self, from: Data(draft.tasks[0].payload))
        #expect(task == TaskSpec(id: "t0", argv: ["echo", "a"]))
        let options = try JSONDecoder().decode(SwarmOptions.self, from: Data(draft.options))
        #expect(options == SwarmOptions(policy: Policy(maxMemoryMB: 128), spawn: .init(maxTasks: 10, maxDepth: 2), maxAttempts: 3))
    }

    @Test func withoutAGatewaySubmitIs503AndReadsFindNothing() async throws {
        let app = Application(router: swarmRouter(nil))
        try await app.test(.router) { client in
            try await client.execute(uri: "/v1/swarms", method: .post, body: body(#"{"tasks": [{"argv": ["a"]}]}"#)) { r in
                #expect(r.status == .serviceUnavailable)
                #expect(r.headers[.retryAfter] == "1")
                #expect(r.error != nil)
            }
            try await client.execute(uri: "/v1/swarms/0123456789abcdef", method: .get) { r in #expect(r.status == .notFound) }
            try await client.execute(uri: "/v1/swarms", method: .get) { r in #expect(r.text == #"{"swarms":[]}"#) }
        }
    }

    @Test func statusPagesTasksAndCountsOnlyWithTasksFalse() async throws {
        let (store, dir) = try temporaryStore("paging")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let gateway = StoreOnlyGateway(store: store)
        let app = Application(router: swarmRouter(gateway))
        let tasks = (0..<2_500).map { #"{"argv": ["echo", "\#($0)"]}"# }.joined(separator: ",")
        try await app.test(.router) { client in
            let id = try await client.execute(uri: "/v1/swarms", method: .post, body: body(#"{"tasks": [\#(tasks)]}"#)) { r in
                try #require(r.json?["id"] as? String)
            }
            // One finished task with a real result, one whose stored bytes do not decode.
            let result = TaskResult(exitCode: 0, signal: nil, reason: .exited, stdout: "hi\n", stderr: "", truncated: false, outputs: [:],
                                    outputsBase64: ["b": "/w=="], warnings: ["w"], node: "n2", attempts: 1, durationMs: 5, cpuMs: 1, peakMemoryKB: 10)
            try store.apply([.task(id, index: 1, TaskRecord(state: .succeeded, attempt: 1, node: "n2", result: Array(try JSONEncoder().encode(result)), finishSeq: 1)),
                             .task(id, index: 2, TaskRecord(state: .failed, attempt: 1, node: "n3", result: Array("not json".utf8), finishSeq: 2)),
                             .task(id, index: 3, TaskRecord(state: .running, attempt: 2, node: "n1"))])

            try await client.execute(uri: "/v1/swarms/\(id)?tasks=false", method: .get) { r in
                #expect(r.status == .ok)
                let j = try #require(r.json)
                #expect(j["tasks"] == nil && j["nextOffset"] == nil)
                #expect(j["total"] as? Int == 2_500 && j["succeeded"] as? Int == 1 && j["failed"] as? Int == 1)
                #expect(j["running"] as? Int == 1 && j["pending"] as? Int == 2_497 && j["state"] as? String == "running")
            }
            try await client.execute(uri: "/v1/swarms/\(id)", method: .get) { r in
                let status = try JSONDecoder().decode(SwarmStatusJSON.self, from: Data(buffer: r.body))
                #expect(status.tasks?.count == 1_000)
                #expect(status.offset == 0 && status.nextOffset == 1_000)
                #expect(status.tasks?[0] == SwarmTaskJSON(id: "t0", state: "pending", node: nil, attempt: 0, result: nil))
                #expect(status.tasks?[1].result == result)
                #expect(status.tasks?[2].state == "failed" && status.tasks?[2].result == nil, "bytes that do not decode are left out")
                #expect(status.tasks?[3] == SwarmTaskJSON(id: "t3", state: "running", node: "n1", attempt: 2, result: nil))
            }
            try await client.execute(uri: "/v1/swarms/\(id)?offset=2000&limit=1000", method: .get) { r in
                let status = try JSONDecoder().decode(SwarmStatusJSON.self, from: Data(buffer: r.body))
                #expect(status.tasks?.map(\.id) == (2_000..<2_500).map { "t\($0)" })
                #expect(status.nextOffset == nil)
            }
            try await client.execute(uri: "/v1/swarms/\(id)?offset=10&limit=2", method: .get) { r in
                let status = try JSONDecoder().decode(SwarmStatusJSON.self, from: Data(buffer: r.body))
                #expect(status.tasks?.map(\.id) == ["t10", "t11"] && status.nextOffset == 12)
            }
            for bad in ["limit=0", "limit=1001", "limit=x", "offset=-1", "offset=1.5", "tasks=maybe", "tasks=true&tasks=false"] {
                try await client.execute(uri: "/v1/swarms/\(id)?\(bad)", method: .get) { r in
                    #expect(r.status == .badRequest, "\(bad) → \(r.status)")
                    #expect(r.error != nil)
                }
            }
            for missing in ["/v1/swarms/0000000000000000", "/v1/swarms/NOTANID", "/v1/swarms/0123456789ABCDEF", "/v1/swarms/0123456789abcdef0"] {
                try await client.execute(uri: missing, method: .get) { r in #expect(r.status == .notFound, "\(missing)") }
                try await client.execute(uri: missing, method: .delete) { r in #expect(r.status == .notFound, "\(missing)") }
                try await client.execute(uri: missing + "/events", method: .get) { r in #expect(r.status == .notFound, "\(missing)") }
            }
        }
    }

    @Test func listIsNewestFirstAndCancelKeepsTheSwarmReadable() async throws {
        let (store, dir) = try temporaryStore("list")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let app = Application(router: swarmRouter(StoreOnlyGateway(store: store)))
        try await app.test(.router) { client in
            var ids: [String] = []
            for i in 0..<3 {
                ids.append(try await client.execute(uri: "/v1/swarms", method: .post, body: body(#"{"tasks": [{"argv": ["x\#(i)"]}]}"#)) { r in
                    try #require(r.json?["id"] as? String)
                })
                try await Task.sleep(for: .milliseconds(3))  // distinct creation milliseconds, for the order
            }
            try await client.execute(uri: "/v1/swarms/\(ids[1])", method: .delete) { r in
                #expect(r.status == .accepted)
                #expect(r.json?["id"] as? String == ids[1])
            }
            try await client.execute(uri: "/v1/swarms", method: .get) { r in
                let list = try JSONDecoder().decode(SwarmListJSON.self, from: Data(buffer: r.body))
                #expect(list.swarms.map(\.id) == ids.reversed())
                #expect(list.swarms.map(\.state) == ["running", "cancelled", "running"])
                #expect(list.swarms[0].total == 1)
            }
            let newest = ids[2]
            try await client.execute(uri: "/v1/swarms?limit=1", method: .get) { r in
                let list = try JSONDecoder().decode(SwarmListJSON.self, from: Data(buffer: r.body))
                #expect(list.swarms.map(\.id) == [newest])
            }
            try await client.execute(uri: "/v1/swarms?limit=0", method: .get) { r in #expect(r.status == .badRequest) }
        }
    }

    @Test func eventsStreamEachFinishedTaskOnceInOrderThenDoneAndResumeAfterLastEventID() async throws {
        let (store, dir) = try temporaryStore("events")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let app = Application(router: swarmRouter(StoreOnlyGateway(store: store)))
        try await app.test(.router) { client in
            let id = try await client.execute(uri: "/v1/swarms", method: .post,
                                              body: body(#"{"tasks": [{"argv": ["a"]}, {"argv": ["b"]}, {"argv": ["c"]}]}"#)) { r in
                try #require(r.json?["id"] as? String)
            }
            let result = Array(try JSONEncoder().encode(TaskResult(exitCode: 0, signal: nil, reason: .exited, stdout: "", stderr: "", truncated: false,
                                                                  outputs: [:], node: "n1", attempts: 1, durationMs: 1, cpuMs: 0, peakMemoryKB: 0)))
            try store.apply([.task(id, index: 2, TaskRecord(state: .succeeded, attempt: 1, node: "n1", result: result, finishSeq: 1)),
                             .visible(id, upTo: 1)])
            // The stream opens while the swarm runs; the rest finishes while it is open.
            async let streamed = client.execute(uri: "/v1/swarms/\(id)/events", method: .get) { r in (r.status, r.headers[.contentType], r.text) }
            try await Task.sleep(for: .milliseconds(100))
            try store.apply([.task(id, index: 0, TaskRecord(state: .failed, attempt: 1, node: "n2", result: result, finishSeq: 2)),
                             .visible(id, upTo: 2)])
            // The last finish and the end are stored before a majority holds them: neither the
            // task nor `done` may be shown until the visible mark covers it.
            try store.apply([.task(id, index: 1, TaskRecord(state: .cancelled, attempt: 0, finishSeq: 3)), .swarmState(id, .done, epoch: 1)])
            try await Task.sleep(for: .milliseconds(100))
            let held = try #require(try store.events(id, afterSeq: 2))
            #expect(held.tasks.isEmpty && !held.allVisible && held.state == .done)
            try store.apply([.visible(id, upTo: 3)])
            let (status, type, text) = try await streamed
            #expect(status == .ok)
            #expect(type == "text/event-stream")
            let events = text.components(separatedBy: "\n\n").filter { $0.contains("event:") }
            #expect(events.count == 4, "\(text)")
            #expect(events.first?.contains("id: 1\nevent: task\ndata: {") == true, "\(text)")
            #expect(events.first?.contains(#""id":"t2""#) == true && events.first?.contains(#""state":"succeeded""#) == true)
            #expect(events.dropFirst().first?.hasPrefix("id: 2\nevent: task") == true)
            #expect(events.dropFirst(2).first?.hasPrefix("id: 3\nevent: task") == true)
            #expect(events.dropFirst(2).first?.contains("result") == false, "a task that never ran has no result")
            #expect(events.last == #"event: done"# + "\n" + #"data: {"id":"\#(id)","state":"done"}"#, "\(text)")

            // Resumed after event 2: only 3, then done.
            try await client.execute(uri: "/v1/swarms/\(id)/events", method: .get, headers: [HTTPField.Name("Last-Event-ID")!: "2"]) { r in
                let events = r.text.components(separatedBy: "\n\n").filter { $0.contains("event:") }
                #expect(events.count == 2 && events[0].hasPrefix("id: 3\n") && events[1].hasPrefix("event: done"), "\(r.text)")
            }
            try await client.execute(uri: "/v1/swarms/\(id)/events", method: .get, headers: [HTTPField.Name("Last-Event-ID")!: "x"]) { r in
                #expect(r.status == .badRequest)
            }
            try await client.execute(uri: "/v1/swarms/\(id)/events", method: .get, headers: [HTTPField.Name("Last-Event-ID")!: "1.2.3.4"]) { r in
                #expect(r.status == .badRequest)
            }

            // With a lineage (a swarm the protocol created, then taken over at epoch 2 by the
            // replica set's second from finish 1 on), ids name the reign, and a cursor of the
            // first reign past the fork resumes at the fork.
            var lineage = FinishLineage.created
            lineage.begin(Reign(epoch: 2, owner: 1), from: 1)
            try store.apply([.lineage(id, lineage)])
            try await client.execute(uri: "/v1/swarms/\(id)/events", method: .get, headers: [HTTPField.Name("Last-Event-ID")!: "1.0.3"]) { r in
                let events = r.text.components(separatedBy: "\n\n").filter { $0.contains("event:") }
                #expect(events.count == 3 && events[0].hasPrefix("id: 2.1.2\n") && events[1].hasPrefix("id: 2.1.3\n")
                        && events[2].hasPrefix("event: done"), "\(r.text)")
            }
            try await client.execute(uri: "/v1/swarms/\(id)/events", method: .get, headers: [HTTPField.Name("Last-Event-ID")!: "2.1.2"]) { r in
                let events = r.text.components(separatedBy: "\n\n").filter { $0.contains("event:") }
                #expect(events.count == 2 && events[0].hasPrefix("id: 2.1.3\n"), "\(r.text)")
            }
        }
    }

    @Test func aStreamClosesAtItsLifetimeAndKeepsAliveMeanwhile() async throws {
        let (store, dir) = try temporaryStore("lifetime")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        // The lifetime is 40 keep-alive intervals: on a loaded machine one turn of the stream's
        // loop (a store read, a write) can take longer than 300 ms, and a lifetime of a few
        // intervals could end before the first keep-alive was due.
        let settings = SwarmEventSettings(pollInterval: .milliseconds(10), keepAliveInterval: .milliseconds(50), maxLifetime: .seconds(2))
        let app = Application(router: swarmRouter(StoreOnlyGateway(store: store), events: settings))
        // The stream's loop on threads of its own: when other suites held the process's pool
        // past the 2 s lifetime, its first wait ended after the lifetime, with no keep-alive sent.
        try await withTaskExecutorPreference(measuringThreads) { try await app.test(.router) { client in
            let id = try await client.execute(uri: "/v1/swarms", method: .post, body: body(#"{"tasks": [{"argv": ["a"]}]}"#)) { r in
                try #require(r.json?["id"] as? String)
            }
            let started = ContinuousClock.now
            try await client.execute(uri: "/v1/swarms/\(id)/events", method: .get) { r in
                #expect(r.text.contains(": keep-alive\n\n"), "\(r.text)")
                #expect(!r.text.contains("event: done"), "the swarm still runs")
            }
            #expect(ContinuousClock.now - started < .seconds(10), "the stream ends at its lifetime")
        } }
    }
}

@Suite("Swarm routes: forwarding to the node that holds the swarm (two real HTTP servers)")
struct SwarmForwardingTests {
    @Test func readsCancelsAndEventsOfASwarmHeldElsewhereAreForwardedOnce() async throws {
        let (store, dir) = try temporaryStore("holder")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (emptyStore, emptyDir) = try temporaryStore("front")
        defer { try? FileManager.default.removeItem(atPath: emptyDir) }
        let holder = StoreOnlyGateway(store: store, name: "holder")
        let holderApp = Application(router: swarmRouter(holder), configuration: .init(address: .hostname("127.0.0.1", port: 0)))
        // Both nodes on threads of their own, as two processes are (see otherNodeThreads).
        try await withTaskExecutorPreference(otherNodeThreads) { try await holderApp.test(.live) { holderClient in
            let port = try #require(holderClient.port)
            let id = try await holderClient.execute(uri: "/v1/swarms", method: .post, body: body(#"{"tasks": [{"argv": ["a"]}, {"argv": ["b"]}]}"#)) { r in
                try #require(r.json?["id"] as? String)
            }
            // The front node holds nothing; the first candidate is down, the second holds it.
            let front = StoreOnlyGateway(store: emptyStore, name: "front", holders: ["127.0.0.1:1", "127.0.0.1:\(port)"])
            let frontApp = Application(router: swarmRouter(front))
            try await frontApp.test(.router) { client in
                try await client.execute(uri: "/v1/swarms/\(id)?tasks=false", method: .get) { r in
                    #expect(r.status == .ok, "\(r.text)")
                    #expect(r.json?["id"] as? String == id && r.json?["total"] as? Int == 2)
                }
                try await client.execute(uri: "/v1/swarms/\(id)?limit=1", method: .get) { r in
                    #expect((r.json?["tasks"] as? [Any])?.count == 1 && r.json?["nextOffset"] as? Int == 1)
                }
                // Bad input is answered by the holder as by anyone: still a 400, passed back.
                try await client.execute(uri: "/v1/swarms/\(id)?limit=0", method: .get) { r in #expect(r.status == .badRequest) }
                // A request already forwarded once is never forwarded again: "not here", marked so
                // that the forwarder asks the next holder (any other 404 would be the answer).
                for method in [HTTPRequest.Method.get, .delete] {
                    try await client.execute(uri: "/v1/swarms/\(id)", method: method,
                                             headers: [SwarmForwarder.hopHeader: "someone"]) { r in
                        #expect(r.status == .notFound && r.headers[HolderForwarding.notHereHeader] == "1", "\(method): \(r.status) \(r.headers)")
                    }
                }
                try await client.execute(uri: "/v1/swarms/\(id)/events", method: .get, headers: [SwarmForwarder.hopHeader: "someone"]) { r in
                    #expect(r.status == .notFound && r.headers[HolderForwarding.notHereHeader] == "1", "events: \(r.status) \(r.headers)")
                }
                try await client.execute(uri: "/v1/swarms/\(id)", method: .delete) { r in #expect(r.status == .accepted, "\(r.text)") }
                #expect(try store.status(id, includeTasks: false)?.state == .cancelled)
                // The first candidate refuses the connection: the next one is asked at once (the
                // client once retried the refused connection until the stream's deadline).
                let asked = ContinuousClock.now
                try await client.execute(uri: "/v1/swarms/\(id)/events", method: .get) { r in
                    #expect(ContinuousClock.now - asked < .seconds(5))
                    #expect(r.headers[.contentType] == "text/event-stream")
                    #expect(r.text.contains("event: done\ndata: {\"id\":\"\(id)\",\"state\":\"cancelled\"}"), "\(r.text)")
                }
                // Unknown everywhere: 404 after asking.
                try await client.execute(uri: "/v1/swarms/ffffffffffffffff", method: .get) { r in #expect(r.status == .notFound, "\(r.text)") }
                // Nobody reachable: 503, not a claim that the swarm does not exist.
                front.setHolders(["127.0.0.1:1"])
                try await client.execute(uri: "/v1/swarms/\(id)", method: .get) { r in
                    #expect(r.status == .serviceUnavailable, "\(r.text)")
                }
                // No candidates at all: 404.
                front.setHolders([])
                try await client.execute(uri: "/v1/swarms/\(id)", method: .get) { r in #expect(r.status == .notFound) }
            }
        } }
    }
}
