import Foundation
import Glibc
import Hummingbird
import NIOCore
import StarlingCore
import StarlingStore
@testable import StarlingRuntime
@testable import StarlingSandbox
import Synchronization
import Testing

/// The swarm machinery a task's socket talks to, held in memory: the mesh's gateway is wired by
/// the node; these tests check the socket, the sandbox and the rules, with real bubblewrap.
actor MemoryGateway: SpawnGateway {
    var swarms: [SwarmID: SwarmDefinition] = [:]
    var cancelled: Set<SwarmID> = []
    var submits = 0

    func add(_ definition: SwarmDefinition) { swarms[definition.id] = definition }

    func submit(_ draft: SwarmDraft) async -> SwarmReply {
        submits += 1
        let id = (0..<8).map { _ in String(format: "%02x", UInt8.random(in: 0...255)) }.joined()
        swarms[id] = SwarmDefinition(id: id, draft: draft, replicas: ["test"])
        return .submitted(id, owner: "test")
    }

    func cancel(_ id: SwarmID) async -> SwarmReply {
        guard swarms[id] != nil else { return .notFound(id) }
        cancelled.insert(id)
        return .cancelled(id)
    }

    func parent(of id: SwarmID) async -> TaskRef? { swarms[id]?.draft.parent }

    func children(of swarm: SwarmID) async throws -> [ChildSwarmRecord] {
        swarms.values.compactMap { d in
            d.draft.parent.flatMap { $0.swarm == swarm ? ChildSwarmRecord(id: d.id, parent: $0, taskCount: d.draft.tasks.count, options: d.draft.options) : nil }
        }
    }

    nonisolated func status(request: Request, context: TaskSocketContext) async throws -> Response {
        let id = context.parameters.get("id") ?? ""
        let state = await cancelled.contains(id) ? "cancelled" : "running"
        return Response(status: .ok, headers: [.contentType: "application/json"],
                        body: .init(byteBuffer: ByteBuffer(string: #"{"id":"\#(id)","state":"\#(state)"}"#)))
    }

    nonisolated func events(request: Request, context: TaskSocketContext) async throws -> Response {
        Response(status: .ok, headers: [.contentType: "text/event-stream"], body: .init(byteBuffer: ByteBuffer(string: "event: done\ndata: {}\n\n")))
    }
}

func initBinary() -> String {
    ProcessInfo.processInfo.environment["STARLING_INIT_BIN"]
        ?? URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent(".build/debug/starling-sandbox-init").path
}

/// Runs the blocking sandbox call on its own thread, never on the concurrency pool the socket's
/// server needs.
func offPool<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        Thread { continuation.resume(with: Result { try body() }) }.start()
    }
}

struct SpawnFixture {
    static let parent = "00000000000000aa"
    static let stranger = "00000000000000bb"
    let gateway = MemoryGateway()
    let ledger = SpawnLedger()
    let runner: SandboxRunner
    let root = "/dev/shm/starling-spawn-tests"

    init(warm: Int) throws {
        runner = try SandboxRunner(configuration: SandboxConfiguration(nodeName: "test", workRoot: root, initPath: initBinary(),
                                                                       warmPoolSize: warm, policy: Policy()))
    }

    /// The parent swarm (and an unrelated one) as the node would hold them.
    func store(options: SwarmOptions) async throws {
        let bytes = Array(try JSONEncoder().encode(options))
        for id in [Self.parent, Self.stranger] {
            await gateway.add(SwarmDefinition(id: id, draft: SwarmDraft(tasks: [], maxAttempts: 1, options: bytes, parent: nil, createdAtMs: 0),
                                              replicas: ["test"]))
        }
    }

    func socket(options: SwarmOptions, rate: RequestRate = RequestRate(burst: 64, perSecond: 32, total: 1000)) -> TaskSocketServer {
        TaskSocketServer(routes: SpawnRoutes(task: TaskRef(swarm: Self.parent, task: 0), options: options, nodeName: "test",
                                             gateway: gateway, ledger: ledger, rate: rate))
    }

    /// Runs `script` under /bin/sh in a sandbox; with `options`, the task gets its socket.
    func run(_ script: String, options: SwarmOptions?, warm: Bool = true, rate: RequestRate? = nil, env: [String: String]? = nil) async throws -> TaskResult {
        let runner = self.runner
        var listener: TaskSocketServer?
        if let options { listener = rate.map { socket(options: options, rate: $0) } ?? socket(options: options) }
        let task = TaskSpec(argv: ["/bin/sh", "-c", script], env: env, timeoutSeconds: 60)
        let context = TaskContext(taskID: "\(Self.parent)/0", socket: listener)
        return try await offPool { try runner.run(task, preferWarm: warm, context: context) }
    }

    /// Waits (bounded) until the warm pool has `n` sandboxes ready, so a run takes a warm one.
    func warmUp(_ n: Int) async throws {
        let deadline = ContinuousClock.now + .seconds(20)
        while runner.warmReady < n && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(10)) }
        #expect(runner.warmReady >= n)
    }
}

/// `curl` through the socket: prints `CODE BODY` per request, one a line.
func curl(_ method: String, _ path: String, _ body: String? = nil) -> String {
    let data = body.map { " -H 'content-type: application/json' --data '\($0)'" } ?? ""
    return #"printf '%s\n' "$(curl -s -o /tmp/b -w '%{http_code}' -X \#(method)\#(data) --unix-socket "$STARLING_SOCKET" http://x\#(path)) $(cat /tmp/b)"; "#
}

let spawning = SwarmOptions(policy: Policy(maxMemoryMB: 256), spawn: .init(maxTasks: 3, maxDepth: 1), depth: 0)

@Suite(.serialized) struct TaskSocketTests {
    @Test(arguments: [true, false]) func healthAnswersAndNothingElseOfTheNodeIsReachable(warm: Bool) async throws {
        let f = try SpawnFixture(warm: warm ? 1 : 0)
        defer { f.runner.shutdown() }
        try await f.store(options: spawning)
        if warm { try await f.warmUp(1) }
        let paths = ["/v1/members", "/metrics", "/v1/openapi.json", "/v1/swarms", "/v1/sessions", "/v1/agents",
                     "/v1/swarms/\(SpawnFixture.parent)", "/v1/swarms/\(SpawnFixture.stranger)", "/v1/swarms/\(SpawnFixture.stranger)/events",
                     "/mcp", "/v1/health/../members", "/"]
        var script = "echo \"task=$STARLING_TASK socket=$STARLING_SOCKET\"; " + curl("GET", "/v1/health")
        for p in paths { script += curl("GET", p) }
        script += curl("POST", "/v1/members", "{}") + curl("DELETE", "/v1/swarms/\(SpawnFixture.stranger)")
        script += curl("POST", "/v1/sessions", "{}")
        let result = try await f.run(script, options: spawning, warm: warm)
        let lines = result.stdout.split(separator: "\n").map(String.init)
        #expect(result.exitCode == 0, "\(result.stderr)")
        #expect(lines.first == "task=\(SpawnFixture.parent)/0 socket=/run/starling/api.sock")
        let health = lines.dropFirst().first ?? ""
        #expect(health.hasPrefix("200 {") && health.contains(#""node":"test""#) && health.contains(#""status":"ok""#), "\(health)")
        let rest = Array(lines.dropFirst(2))
        #expect(rest.count == paths.count + 3)
        for (i, line) in rest.enumerated() {
            #expect(line.hasPrefix("404 {\"error\""), "request \(i): \(line)")
        }
        #expect(await f.gateway.cancelled.isEmpty)
    }

    @Test func aChildSwarmIsCreatedReadAndCancelledWithItsPolicyNarrowed() async throws {
        let f = try SpawnFixture(warm: 1)
        defer { f.runner.shutdown() }
        try await f.store(options: spawning)
        try await f.warmUp(1)
        let child = #"{"tasks":[{"argv":["true"]},{"argv":["true"]}],"policy":{"maxMemoryMB":1024,"net":"host"}}"#
        let script = """
            out=$(curl -s --unix-socket "$STARLING_SOCKET" -H 'content-type: application/json' --data '\(child)' http://x/v1/swarms)
            echo "$out"
            id=$(echo "$out" | sed 's/.*"id":"\\([0-9a-f]*\\)".*/\\1/')
            \(curl("GET", "/v1/swarms/$id"))
            \(curl("GET", "/v1/swarms/$id/events"))
            \(curl("DELETE", "/v1/swarms/$id"))
            """
        let result = try await f.run(script, options: spawning)
        #expect(result.exitCode == 0, "\(result.stderr)")
        let children = await f.gateway.swarms.values.filter { $0.draft.parent?.swarm == SpawnFixture.parent }
        try #require(children.count == 1)
        let stored = children[0]
        #expect(stored.draft.parent == TaskRef(swarm: SpawnFixture.parent, task: 0))
        #expect(stored.draft.tasks.map(\.id) == ["t0", "t1"])
        let options = try JSONDecoder().decode(SwarmOptions.self, from: Data(stored.draft.options))
        // Narrowed, never widened: the child asked for 1024 MiB and got its parent's 256; the
        // parent set no network ceiling (the node's policy decides that where the task runs).
        #expect(options.policy == Policy(net: .host, maxMemoryMB: 256))
        #expect(options.depth == 1 && options.spawn == nil)
        let lines = result.stdout.split(separator: "\n").map(String.init)
        #expect(lines.first == #"{"id":"\#(stored.id)"}"#)
        #expect(lines.dropFirst().first == #"200 {"id":"\#(stored.id)","state":"running"}"#)
        #expect(lines.dropFirst(2).first?.hasPrefix("200 event: done") == true)
        #expect(lines.last == #"202 {"id":"\#(stored.id)"}"#, "\(lines)")
        #expect(await f.gateway.cancelled == [stored.id])
    }

    @Test func overBudgetAndTooDeepAreRefused() async throws {
        let f = try SpawnFixture(warm: 1)
        defer { f.runner.shutdown() }
        try await f.store(options: spawning)
        try await f.warmUp(1)
        let two = #"{"tasks":[{"argv":["true"]},{"argv":["true"]}]}"#
        let deeper = #"{"tasks":[{"argv":["true"]}],"spawn":{"maxTasks":0,"maxDepth":1}}"#
        let handsDownBudget = #"{"tasks":[{"argv":["true"]}],"spawn":{"maxTasks":5,"maxDepth":0}}"#
        let tooBig = #"{"tasks":[{"argv":["true"],"memoryMB":512}]}"#
        let script = curl("POST", "/v1/swarms", two) + curl("POST", "/v1/swarms", two) + curl("POST", "/v1/swarms", deeper)
            + curl("POST", "/v1/swarms", handsDownBudget) + curl("POST", "/v1/swarms", tooBig) + curl("POST", "/v1/swarms", "{nope")
            + curl("POST", "/v1/swarms", #"{"tasks":[{"argv":["true"]},{"id":"t0","argv":["true"]}]}"#)
        let result = try await f.run(script, options: spawning)
        #expect(result.exitCode == 0, "\(result.stderr)")
        let lines = result.stdout.split(separator: "\n").map(String.init)
        try #require(lines.count == 7, "\(lines)")
        #expect(lines[0].hasPrefix("202 {\"id\""))
        #expect(lines[1].hasPrefix("403 ") && lines[1].contains("spawn budget exceeded") && lines[1].contains("1 of 3 left"), "\(lines[1])")
        #expect(lines[2].hasPrefix("403 ") && lines[2].contains("spawn depth exceeded"), "\(lines[2])")
        #expect(lines[3].hasPrefix("403 ") && lines[3].contains("spawn depth exceeded"), "\(lines[3])")
        #expect(lines[4].hasPrefix("403 ") && lines[4].contains("memoryMB 512 exceeds the policy's 256"), "\(lines[4])")
        #expect(lines[5].hasPrefix("400 "), "\(lines[5])")
        #expect(lines[6].hasPrefix("409 ") && lines[6].contains("used twice"), "\(lines[6])")
        #expect(await f.gateway.submits == 1)
    }

    @Test func theBudgetCountsChildrenAlreadyStoredFromAnEarlierAttempt() async throws {
        let f = try SpawnFixture(warm: 0)
        defer { f.runner.shutdown() }
        try await f.store(options: spawning)
        // A child of another task of the same swarm, stored (say, by another node), costs 2.
        let childOptions = Array(try JSONEncoder().encode(SwarmOptions(spawn: nil, depth: 1)))
        let earlier = SwarmDraft(tasks: [SwarmTask(id: "a", needs: TaskNeeds(memoryMB: 8, milliCPUs: 10), payload: []),
                                         SwarmTask(id: "b", needs: TaskNeeds(memoryMB: 8, milliCPUs: 10), payload: [])],
                                 maxAttempts: 1, options: childOptions, parent: TaskRef(swarm: SpawnFixture.parent, task: 7), createdAtMs: 0)
        await f.gateway.add(SwarmDefinition(id: "00000000000000cc", draft: earlier, replicas: ["other"]))
        let two = #"{"tasks":[{"argv":["true"]},{"argv":["true"]}]}"#
        let result = try await f.run(curl("POST", "/v1/swarms", two) + curl("GET", "/v1/swarms/00000000000000cc"), options: spawning, warm: false)
        let lines = result.stdout.split(separator: "\n").map(String.init)
        #expect(lines.first?.hasPrefix("403 ") == true && lines.first?.contains("1 of 3 left") == true, "\(lines)")
        // Another task's child is not this task's to read.
        #expect(lines.last?.hasPrefix("404 ") == true, "\(lines)")
    }

    @Test func aBodyPastTheLimitIs413() async throws {
        let f = try SpawnFixture(warm: 0)
        defer { f.runner.shutdown() }
        try await f.store(options: spawning)
        let script = "head -c \(TaskSocketServer.Limits.maxBodyBytes + 1) /dev/zero | tr '\\0' a > /tmp/big; "
            + #"curl -s -w ' %{http_code}' -H 'content-type: application/json' --data-binary @/tmp/big --unix-socket "$STARLING_SOCKET" http://x/v1/swarms"#
        let result = try await f.run(script, options: spawning, warm: false)
        #expect(result.stdout.hasSuffix(" 413") && result.stdout.contains("at most"), "\(result.stdout) \(result.stderr)")
        #expect(await f.gateway.submits == 0)
    }

    @Test func theSocketIsRateLimited() async throws {
        let f = try SpawnFixture(warm: 0)
        defer { f.runner.shutdown() }
        try await f.store(options: spawning)
        let script = String(repeating: curl("GET", "/v1/health"), count: 4)
        let result = try await f.run(script, options: spawning, warm: false, rate: RequestRate(burst: 3, perSecond: 0.001, total: 100))
        let codes = result.stdout.split(separator: "\n").map { $0.prefix(3) }
        #expect(codes == ["200", "200", "200", "429"], "\(result.stdout)")
    }

    @Test(arguments: [true, false]) func aTaskThatMayNotSpawnHasNoSocket(warm: Bool) async throws {
        let f = try SpawnFixture(warm: warm ? 1 : 0)
        defer { f.runner.shutdown() }
        if warm { try await f.warmUp(1) }
        // The task's own env cannot plant a STARLING_SOCKET (or rename itself).
        let result = try await f.run("echo \"[$STARLING_SOCKET] [$STARLING_TASK]\"; ls -A /run/starling 2>/dev/null | wc -l; test -e /run/starling/api.sock && echo present; true",
                                     options: nil, warm: warm, env: ["STARLING_SOCKET": "/tmp/x", "STARLING_TASK": "me"])
        #expect(result.exitCode == 0, "\(result.stderr)")
        #expect(result.stdout == "[] [\(SpawnFixture.parent)/0]\n0\n")
    }

    @Test func theSocketIsGoneWhenTheTaskEnds() async throws {
        let f = try SpawnFixture(warm: 1)
        defer { f.runner.shutdown() }
        try await f.store(options: spawning)
        try await f.warmUp(1)
        let result = try await f.run("ls -ln /run/starling/api.sock | cut -c1-10", options: spawning)
        #expect(result.stdout == "srw-------\n", "\(result.stdout) \(result.stderr)")
        // Shut down, so the warm sandbox made after this one (with its own run directory) goes too.
        f.runner.shutdown()
        let left = (try? FileManager.default.contentsOfDirectory(atPath: "\(f.root)/\(getpid())")) ?? []
        #expect(!left.contains { $0.hasSuffix(".run") }, "\(left)")
    }
}

/// What a socket adds to a task's start: warm runs of `true`, without and with a socket, and with
/// a socket and one request through it. Figures for NOTES; run with STARLING_MEASURE=1.
@Suite(.serialized, .enabled(if: ProcessInfo.processInfo.environment["STARLING_MEASURE"] != nil))
struct TaskSocketCostTests {
    func median(_ f: SpawnFixture, _ runs: Int, _ script: String, options: SwarmOptions?, warm: Bool) async throws -> (p50: Double, p90: Double) {
        var ms: [Double] = []
        for _ in 0..<runs {
            if warm { try await f.warmUp(2) }
            let started = ContinuousClock.now
            let result = try await f.run(script, options: options, warm: warm)
            let d = started.duration(to: .now)
            #expect(result.exitCode == 0, "\(result.stderr)")
            ms.append(Double(d.components.seconds) * 1000 + Double(d.components.attoseconds) / 1e15)
        }
        ms.sort()
        return (ms[ms.count / 2], ms[ms.count * 9 / 10])
    }

    @Test(arguments: [true, false]) func socketStartCost(warm: Bool) async throws {
        let f = try SpawnFixture(warm: warm ? 2 : 0)
        defer { f.runner.shutdown() }
        try await f.store(options: spawning)
        let runs = Int(ProcessInfo.processInfo.environment["STARLING_MEASURE_RUNS"] ?? "") ?? 40
        _ = try await median(f, 3, "true", options: spawning, warm: warm)
        let plain = try await median(f, runs, "true", options: nil, warm: warm)
        let socket = try await median(f, runs, "true", options: spawning, warm: warm)
        let request = try await median(f, runs, #"curl -sf --unix-socket "$STARLING_SOCKET" http://x/v1/health >/dev/null"#, options: spawning, warm: warm)
        let plainCurl = try await median(f, runs, #"curl -s --unix-socket /nonexistent http://x/ >/dev/null; true"#, options: nil, warm: warm)
        print(String(format: "task-socket-cost warm=%@ runs=%d plain p50=%.2f p90=%.2f | socket p50=%.2f p90=%.2f | socket+health p50=%.2f p90=%.2f | plain+curl(no socket) p50=%.2f p90=%.2f ms",
                     "\(warm)", runs, plain.p50, plain.p90, socket.p50, socket.p90, request.p50, request.p90, plainCurl.p50, plainCurl.p90))
    }
}
