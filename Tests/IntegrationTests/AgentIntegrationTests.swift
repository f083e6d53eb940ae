import Foundation
import Glibc
import Testing

/// `Examples/agent/scripted_model.py` run by the test on 127.0.0.1: an OpenAI-compatible server
/// with a fixed tool call per step, which counts requests by step and effects' hits. Ended by
/// its PID.
final class ScriptedModel {
    let process = Process()
    let port: UInt16

    init(key: String, echoKey: Bool = false) throws {
        process.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        process.arguments = [AgentFixtures.examples + "/scripted_model.py", "--key", key] + (echoKey ? ["--echo-key"] : [])
        let out = Pipe()
        process.standardOutput = out
        try process.run()
        // Its first line is its port.
        var line = Data()
        while !line.contains(10) {
            let byte = out.fileHandleForReading.readData(ofLength: 1)
            if byte.isEmpty { break }
            line.append(byte)
        }
        guard let port = UInt16(String(decoding: line, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)) else {
            process.terminate()
            throw StartFailed(description: "the scripted model did not say its port")
        }
        self.port = port
    }

    var baseURL: String { "http://127.0.0.1:\(port)/v1" }
    var hitURL: String { "http://127.0.0.1:\(port)/hit/" }

    func stats() -> [String: Any] { jsonObject(httpCall(port: port, method: "GET", path: "/stats").1) }
    func steps() -> [String: Int] { stats()["steps"] as? [String: Int] ?? [:] }

    func stop() {
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
    }
}

/// A TCP listener on 127.0.0.1 that accepts nothing and answers nothing: a model that never
/// replies (the kernel completes the connections into the backlog).
final class SilentServer {
    let fd: Int32
    let port: UInt16

    init() throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        self.fd = fd
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0, listen(fd, 16) == 0 else { throw POSIXError(.EADDRINUSE) }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        port = UInt16(bigEndian: address.sin_port)
    }

    func close() { Glibc.close(fd) }
}

enum AgentFixtures {
    static let examples = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Examples/agent").path
    static let key = "sk-test-4f1d8c2a9b7e6d5c3b2a1908"

    static func brain() throws -> String { try String(contentsOfFile: examples + "/brain.py", encoding: .utf8) }

    /// The start of a `python3 -c` brain: `U()`, an HTTP connection to its `$STARLING_SOCKET`.
    static let socketPrelude = """
        import http.client, json, os, socket, time
        class U(http.client.HTTPConnection):
            def __init__(self):
                super().__init__("localhost", timeout=600)
            def connect(self):
                self.sock = socket.socket(socket.AF_UNIX)
                self.sock.connect(os.environ["STARLING_SOCKET"])

        """

    /// A node policy that lets effects reach the test's server and names the model's secret,
    /// and a secrets file (mode 0600) that holds it.
    static func nodeArguments(_ cluster: LocalCluster) throws -> [String] {
        let policy = cluster.dir + "/policy.json"
        try Data(#"{"net": "host", "secrets": ["MODEL_KEY"]}"#.utf8).write(to: URL(fileURLWithPath: policy))
        let secrets = cluster.dir + "/secrets"
        try Data("MODEL_KEY=\(key)\n".utf8).write(to: URL(fileURLWithPath: secrets))
        chmod(secrets, 0o600)
        return ["--policy", policy, "--secrets-file", secrets]
    }

    /// Retries while the mesh answers "try again" (503), cannot be reached, or (for reads) cannot
    /// find the object yet.
    static func call(_ port: UInt16, _ method: String, _ path: String, json: Any? = nil, seconds: Double = 30) -> (Int, [String: Any]) {
        httpCallRetrying(port: port, method: method, path: path, json: json, seconds: seconds, pause: 100_000)
    }
}

@Suite("Hosted agents across real nodes", .serialized)
struct AgentIntegrationTests {
    @Test(.timeLimit(.minutes(6)))
    func theExampleBrainFinishesOnAnotherNodeAfterItsOwnerIsKilledAndNothingRunsTwice() throws {
        let model = try ScriptedModel(key: AgentFixtures.key)
        defer { model.stop() }
        let cluster = try LocalCluster()
        defer { cluster.shutdown() }
        // The ownership poll is 10 minutes here: the brain starts after the create, and restarts
        // on the new owner after the takeover, because those push (they do not wait for a poll).
        let arguments = try AgentFixtures.nodeArguments(cluster) + ["--agent-poll-ms", "600000"]
        let seed = try cluster.start("n1", extraArguments: arguments)
        var nodes = [seed]
        for name in ["n2", "n3"] { nodes.append(try cluster.start(name, join: [seed], extraArguments: arguments)) }
        try waitUntil("3 alive", seconds: 20) { nodes.allSatisfy { ($0.members() ?? []).filter { $0.status == "alive" }.count == 3 } }

        let spec: [String: Any] = [
            "id": "agent-resume",
            "brain": ["argv": ["python3", "brain.py"], "files": ["brain.py": try AgentFixtures.brain()],
                      "env": ["BRAIN_STEP_DELAY": "2", "BRAIN_HIT_URL": model.hitURL], "timeoutSeconds": 300],
            "policy": ["net": "host", "secrets": ["MODEL_KEY"]],
            "model": ["baseURL": model.baseURL, "secret": "MODEL_KEY"],
        ]
        let posted = Date()
        let (status, created) = AgentFixtures.call(nodes[1].apiPort, "POST", "/v1/agents", json: spec)
        #expect(status == 201, "create: \(created)")
        #expect(created["session"] as? String == "agent-resume")
        let ownerName = try #require(created["owner"] as? String)
        let owner = try #require(nodes.first { $0.name == ownerName })
        try waitUntil("the brain's first model call", seconds: 60) { (model.stats()["requests"] as? Int ?? 0) >= 1 }
        print("AGENT-FIRST-MODEL-CALL-MS \(Int(Date().timeIntervalSince(posted) * 1000))")

        // After the code ran (step 2 checkpointed; the brain sleeps 2 s), kill -9 the owner.
        let survivor = try #require(nodes.first { $0.name != ownerName })
        try waitUntil("the brain checkpointed step 2", seconds: 90) {
            let (s, session) = AgentFixtures.call(survivor.apiPort, "GET", "/v1/sessions/agent-resume", seconds: 5)
            return s == 200 && ((session["state"] as? [String: Any])?["step"] as? Int ?? 0) >= 2
        }
        #expect(model.steps()["fanout"] == nil, "the kill must come between steps 2 and 3")
        owner.signal(SIGKILL)
        _ = owner.waitForExit(seconds: 10)
        let killed = Date()
        // Figures: when a survivor serves the session again (the sessions' takeover), and when the
        // restarted brain makes its next model call.
        var served: Date?
        try waitUntil("the resumed brain's next model call", seconds: 90) {
            if served == nil {
                let (s, session) = AgentFixtures.call(survivor.apiPort, "GET", "/v1/sessions/agent-resume", seconds: 0)
                if s == 200, session["owner"] as? String != ownerName { served = Date() }
            }
            return model.steps()["fanout"] != nil
        }
        let resumed = Date()
        print("AGENT-RESUME-MS \(Int(resumed.timeIntervalSince(killed) * 1000)) SESSION-SERVED-MS \(served.map { Int($0.timeIntervalSince(killed) * 1000) } ?? -1)")

        var agent: [String: Any] = [:]
        try waitUntil("the agent is done", seconds: 120) {
            let (s, body) = AgentFixtures.call(survivor.apiPort, "GET", "/v1/agents/agent-resume", seconds: 5)
            agent = body
            return s == 200 && (body["state"] as? String == "done" || body["state"] as? String == "failed")
        }
        #expect(agent["state"] as? String == "done", "agent: \(agent)\nlogs: \(httpCall(port: survivor.apiPort, method: "GET", path: "/v1/agents/agent-resume/logs").1)")
        #expect(agent["owner"] as? String != ownerName)
        #expect(agent["restarts"] as? Int == 1)
        #expect(agent["modelCalls"] as? Int == 3)
        #expect(agent["exitCode"] as? Int == 0)
        #expect((agent["output"] as? String)?.contains("385") == true, "agent: \(agent)")
        // Every live node answers for the agent, the same.
        for node in nodes where node.isRunning {
            let (s, seen) = AgentFixtures.call(node.apiPort, "GET", "/v1/agents/agent-resume")
            #expect(s == 200 && seen["owner"] as? String == agent["owner"] as? String && seen["state"] as? String == "done", "\(node.name): \(seen)")
        }

        // The right answer, computed by the effect and the sub-swarm.
        let (_, session) = AgentFixtures.call(survivor.apiPort, "GET", "/v1/sessions/agent-resume")
        let state = session["state"] as? [String: Any] ?? [:]
        #expect((state["result"] as? [String: Any])?["squares"] as? Int == 385, "state: \(state)")
        #expect((state["result"] as? [String: Any])?["cubes"] as? Int == 224, "state: \(state)")
        // No step reached the model twice, and every call carried the node's key.
        #expect(model.steps() == ["plan": 1, "fanout": 1, "answer": 1], "steps: \(model.stats())")
        #expect(model.stats()["unauthorized"] as? Int == 0)
        // Every effect ran exactly once: the code's run and each task of the sub-swarm.
        let hits = model.stats()["hits"] as? [String: Int] ?? [:]
        #expect(hits == ["agent-resume/run-code": 1, "cube-2": 1, "cube-3": 1, "cube-4": 1, "cube-5": 1], "hits: \(hits)")
        // The journal holds each model call and the spawn once, under their keys.
        let keys = (session["journal"] as? [[String: Any]] ?? []).compactMap { $0["key"] as? String }
        #expect(keys.filter { $0.hasPrefix("model/") }.sorted() == ["model/answer", "model/fanout", "model/plan"], "keys: \(keys)")
        #expect(keys.filter { $0.hasPrefix("swarm/") } == ["swarm/fanout"])

        // The CLI reads the agent through any node.
        let shown = try runCLI(["agent", "show", "agent-resume", "--json", "--api", "127.0.0.1:\(nodes.first { $0.isRunning }!.apiPort)"])
        #expect(shown.status == 0, "\(shown.err)")
        #expect(jsonObject(Data(shown.out.utf8))["state"] as? String == "done")
    }

    @Test(.timeLimit(.minutes(4)))
    func theModelKeyNeverReachesTheBrainAndItsSocketReachesOnlyItsOwnAgent() throws {
        // A hostile model: it echoes the Authorization header it received into its answers.
        let model = try ScriptedModel(key: AgentFixtures.key, echoKey: true)
        defer { model.stop() }
        let cluster = try LocalCluster()
        defer { cluster.shutdown() }
        let node = try cluster.start("n1", extraArguments: try AgentFixtures.nodeArguments(cluster))
        let probe = try String(contentsOfFile: AgentFixtures.examples + "/probe_brain.py", encoding: .utf8)
        let spec: [String: Any] = [
            "id": "probe",
            "brain": ["argv": ["python3", "probe_brain.py"], "files": ["probe_brain.py": probe, "control.txt": "control-4f1d8c2a9b7e"],
                      "env": ["PROBE_NEEDLE_REVERSED": String(AgentFixtures.key.reversed()), "PROBE_CONTROL_REVERSED": String("control-4f1d8c2a9b7e".reversed())]],
            "policy": ["secrets": ["MODEL_KEY"]],
            "model": ["baseURL": model.baseURL, "secret": "MODEL_KEY"],
        ]
        let (status, created) = AgentFixtures.call(node.apiPort, "POST", "/v1/agents", json: spec)
        #expect(status == 201, "create: \(created)")
        var agent: [String: Any] = [:]
        try waitUntil("the probe ended", seconds: 90) {
            agent = AgentFixtures.call(node.apiPort, "GET", "/v1/agents/probe", seconds: 5).1
            return ["done", "failed"].contains(agent["state"] as? String ?? "")
        }
        let logs = String(decoding: httpCall(port: node.apiPort, method: "GET", path: "/v1/agents/probe/logs").1, as: UTF8.self)
        #expect(agent["state"] as? String == "done", "agent: \(agent)\nlogs: \(logs)")
        let session = httpCall(port: node.apiPort, method: "GET", path: "/v1/sessions/probe").1
        let state = jsonObject(session)["state"] as? [String: Any] ?? [:]

        // The key is nowhere the brain can look, though the model echoed it.
        #expect(state["found"] as? [String] == [], "the key was found at \(state["found"] ?? "?")")
        #expect(state["foundControl"] as? [String] == ["/task/control.txt"], "the scan does not find what is there: \(state)")
        let env = state["env"] as? [String] ?? []
        #expect(env.contains("STARLING_SOCKET") && env.contains("STARLING_SESSION") && env.contains("STARLING_AGENT"), "env: \(env)")
        let answer = (state["model"] as? [Any])?.last as? [String: Any] ?? [:]
        let content = ((answer["choices"] as? [[String: Any]])?.first?["message"] as? [String: Any])?["content"] as? String ?? ""
        #expect(content.contains("[REDACTED:MODEL_KEY]"), "the model's answer: \(answer)")
        // The same Idempotency-Key again: the recorded answer, no second request to the model.
        #expect((state["again"] as? [Any])?.first as? Int == 200)
        #expect(model.steps()["plan"] == 1, "model: \(model.stats())")
        // A model claiming negative tokens, replayed: the node lives (a negative count would trap
        // the metric's counter).
        #expect(state["negative"] as? [Int] == [200, 200], "state: \(state)")
        #expect(model.steps()["negative"] == 1 && node.isRunning)
        #expect(agent["modelCalls"] as? Int == 2)
        #expect(agent["modelCallsReplayed"] as? Int == 2)
        // Nothing but its own agent and session answers through the socket.
        let probes = state["probes"] as? [String: Int] ?? [:]
        #expect(probes["own session"] == 200 && probes["own agent"] == 200, "probes: \(probes)")
        #expect(probes["reserved key"] == 400 && probes["streaming"] == 400, "probes: \(probes)")
        #expect(probes["effect with the model key"] == 403 && probes["swarm with the model key"] == 403, "probes: \(probes)")
        let allowed = ["own session", "own agent", "reserved key", "streaming", "effect with the model key", "swarm with the model key"]
        for (probe, code) in probes where !allowed.contains(probe) {
            #expect(code == 404, "\(probe) answered \(code) through the brain's socket")
        }
        // Nor is the key in the journal, the logs, or anything the node stored.
        #expect(!String(decoding: session, as: UTF8.self).contains(AgentFixtures.key))
        #expect(!logs.contains(AgentFixtures.key) && logs.contains("probe:"), "logs: \(logs)")
        for file in (FileManager.default.enumerator(atPath: node.dataDir)?.allObjects as? [String]) ?? [] {
            let bytes = (try? Data(contentsOf: URL(fileURLWithPath: node.dataDir + "/" + file))) ?? Data()
            #expect(bytes.range(of: Data(AgentFixtures.key.utf8)) == nil, "the key is in \(file)")
        }
        #expect(node.metric("starling_agent_model_calls_replayed") >= 1)
        #expect(node.metric("starling_agent_model_tokens_saved") >= 120)
    }

    @Test(.timeLimit(.minutes(4)))
    func aStoppedAgentStaysStoppedAndAFailingBrainIsFailedWithItsExitCode() throws {
        let cluster = try LocalCluster()
        defer { cluster.shutdown() }
        let node = try cluster.start("n1", extraArguments: try AgentFixtures.nodeArguments(cluster))
        let sleeper: [String: Any] = ["id": "sleeper", "brain": ["argv": ["python3", "-c",
            "import sys, time\nprint('brain says hello', file=sys.stderr, flush=True)\ntime.sleep(600)"]]]
        #expect(AgentFixtures.call(node.apiPort, "POST", "/v1/agents", json: sleeper).0 == 201)
        try waitUntil("the brain's stderr shows in its logs while it runs", seconds: 60) {
            String(decoding: httpCall(port: node.apiPort, method: "GET", path: "/v1/agents/sleeper/logs").1, as: UTF8.self)
                .contains("brain says hello")
        }
        #expect(AgentFixtures.call(node.apiPort, "GET", "/v1/agents/sleeper").1["state"] as? String == "running")
        // A running brain holds one of the node's two slots: the node advertises one free.
        let freeSlots = { node.members()?.first { $0.name == "n1" }?.capacity.free }
        try waitUntil("the node advertises one free slot while the brain runs", seconds: 10) { freeSlots() == 1 }
        let stop = try runCLI(["agent", "stop", "sleeper", "--api", "127.0.0.1:\(node.apiPort)"])
        #expect(stop.status == 0 && stop.out.contains("stopped"), "\(stop)")
        try waitUntil("the agent shows stopped", seconds: 10) {
            AgentFixtures.call(node.apiPort, "GET", "/v1/agents/sleeper").1["state"] as? String == "stopped"
        }
        // The session is kept; the slot is free again.
        #expect(AgentFixtures.call(node.apiPort, "GET", "/v1/sessions/sleeper").0 == 200)
        try waitUntil("the node advertises both slots free once the brain is stopped", seconds: 10) { freeSlots() == 2 }

        // A client may not write the node's own journal keys through the public session route:
        // it could pre-empt an agent's end or plant a model answer its brain would replay. The
        // agent is untouched and ends as its brain does. The agents below run for seconds after
        // it: the brain-starts count at the end shows its brain was started once.
        let hijacked: [String: Any] = ["id": "hijacked", "brain": ["argv": ["sh", "-c", "sleep 1; echo bye >&2; exit 0"]]]
        #expect(AgentFixtures.call(node.apiPort, "POST", "/v1/agents", json: hijacked).0 == 201)
        for key in ["starling.agent.end", "model/plan", "swarm/x", "starling.agent.start/1"] {
            let (status, refusal) = AgentFixtures.call(node.apiPort, "POST", "/v1/sessions/hijacked/actions", json: ["key": key, "argv": ["true"]])
            #expect(status == 400 && (refusal["error"] as? String ?? "").contains("are the node's"), "\(key): \(status) \(refusal)")
        }
        var hijackedAgent: [String: Any] = [:]
        try waitUntil("the hijacked agent ended as its brain did", seconds: 30) {
            hijackedAgent = AgentFixtures.call(node.apiPort, "GET", "/v1/agents/hijacked").1
            return hijackedAgent["state"] as? String == "done"
        }
        #expect(hijackedAgent["exitCode"] as? Int == 0, "\(hijackedAgent)")
        // An agent whose brain waits on its model shows `waiting` (the model here accepts the
        // connection and never answers); a stop ends it.
        let silent = try SilentServer()
        defer { silent.close() }
        let callsOnce = AgentFixtures.socketPrelude + """
            c = U()
            c.request("POST", "/v1/model/chat/completions", body=json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}),
                      headers={"content-type": "application/json"})
            c.getresponse().read()
            """
        let waiter: [String: Any] = ["id": "waiter", "brain": ["argv": ["python3", "-c", callsOnce]],
                                     "model": ["baseURL": "http://127.0.0.1:\(silent.port)/v1", "secret": "MODEL_KEY"]]
        #expect(AgentFixtures.call(node.apiPort, "POST", "/v1/agents", json: waiter).0 == 201)
        try waitUntil("the agent waits on its model", seconds: 60) {
            AgentFixtures.call(node.apiPort, "GET", "/v1/agents/waiter").1["state"] as? String == "waiting"
        }
        #expect(AgentFixtures.call(node.apiPort, "DELETE", "/v1/agents/waiter").0 == 202)
        try waitUntil("the waiting agent is stopped", seconds: 30) {
            AgentFixtures.call(node.apiPort, "GET", "/v1/agents/waiter").1["state"] as? String == "stopped"
        }

        // A plain session is not an agent.
        #expect(AgentFixtures.call(node.apiPort, "POST", "/v1/sessions", json: ["id": "plain"]).0 == 201)
        #expect(httpCall(port: node.apiPort, method: "GET", path: "/v1/agents/plain").0 == 404)

        // `agent run` follows an agent to its end and prints its answer (its stdout's tail).
        let answerSpec = cluster.dir + "/answer.json"
        try JSONSerialization.data(withJSONObject: ["id": "answer", "brain": ["argv": ["sh", "-c", "echo the answer is 42"]]])
            .write(to: URL(fileURLWithPath: answerSpec))
        let run = try runCLI(["agent", "run", answerSpec, "--api", "127.0.0.1:\(node.apiPort)"])
        #expect(run.status == 0 && run.out == "answer\nthe answer is 42\n", "\(run)")

        let failing: [String: Any] = ["id": "failing", "brain": ["argv": ["sh", "-c", "echo oops >&2; exit 3"]]]
        #expect(AgentFixtures.call(node.apiPort, "POST", "/v1/agents", json: failing).0 == 201)
        var ended: [String: Any] = [:]
        try waitUntil("the failing brain ended", seconds: 60) {
            ended = AgentFixtures.call(node.apiPort, "GET", "/v1/agents/failing").1
            return ended["state"] as? String == "failed"
        }
        #expect(ended["exitCode"] as? Int == 3, "agent: \(ended)")
        let logs = try runCLI(["agent", "logs", "failing", "--api", "127.0.0.1:\(node.apiPort)"])
        #expect(logs.out.contains("oops"), "\(logs)")
        // A stop after the end changes nothing.
        let (stopStatus, stopped) = AgentFixtures.call(node.apiPort, "DELETE", "/v1/agents/failing")
        #expect(stopStatus == 202 && stopped["state"] as? String == "failed", "\(stopped)")

        // Many ownership rounds (every 200 ms) have passed while the failing agent ran: the
        // stopped one was not started again.
        let sleeperAfter = AgentFixtures.call(node.apiPort, "GET", "/v1/agents/sleeper").1
        #expect(sleeperAfter["state"] as? String == "stopped" && sleeperAfter["restarts"] as? Int == 0, "agent: \(sleeperAfter)")
        #expect(!String(decoding: httpCall(port: node.apiPort, method: "GET", path: "/metrics").1, as: UTF8.self).isEmpty)
        #expect(node.metric("starling_agent_brain_starts") == 5, "one start per agent: sleeper, hijacked, waiter, answer, failing")

        // Refused up front: a brain asking for the network or a secret, an unknown agent.
        let net: [String: Any] = ["brain": ["argv": ["true"], "net": "host"]]
        #expect(AgentFixtures.call(node.apiPort, "POST", "/v1/agents", json: net).0 == 400)
        let secret: [String: Any] = ["brain": ["argv": ["true"], "secrets": ["MODEL_KEY"]]]
        #expect(AgentFixtures.call(node.apiPort, "POST", "/v1/agents", json: secret).0 == 400)
        #expect(httpCall(port: node.apiPort, method: "GET", path: "/v1/agents/nobody").0 == 404)
    }
}
