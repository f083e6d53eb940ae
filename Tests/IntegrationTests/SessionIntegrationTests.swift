import Foundation
import Glibc
import Synchronization
import Testing

/// A tiny HTTP server on 127.0.0.1 that records the path of every request: the "external
/// service" that effects call, so the test can count how often each key reached it.
final class RecordingHTTPServer: Sendable {
    // Each connection: read the request head, record its path, answer "ok", close.
    let port: UInt16
    private let fd: Int32
    let paths = Mutex<[String]>([])
    private let stopped = Mutex(false)

    init() throws {
        let sock = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var one: Int32 = 1
        setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var bound: UInt16 = 0
        for _ in 0..<20 {
            let p = freePort()
            let ok = withLoopback(port: p) { bind(sock, $0, $1) } == 0
            if ok { bound = p; break }
        }
        guard bound != 0, listen(sock, 64) == 0 else { close(sock); throw StartFailed(description: "the recording server cannot listen") }
        fd = sock
        port = bound
        let thread = Thread { [self] in serve() }
        thread.start()
    }

    private func serve() {
        while !stopped.withLock({ $0 }) {
            let client = accept(fd, nil, nil)
            if client < 0 { if stopped.withLock({ $0 }) { return }; continue }
            var buffer = [UInt8](repeating: 0, count: 4096)
            var request: [UInt8] = []
            // The whole request head, up to its blank line: closing with unread bytes would
            // reset the connection, and the task would see an error after its answer.
            while !(request.count >= 4 && Array(request.suffix(4)) == [13, 10, 13, 10]) && request.count < 65_536 {
                let n = read(client, &buffer, buffer.count)
                if n <= 0 { break }
                request += buffer[0..<n]
            }
            let line = String(decoding: request.prefix { $0 != 13 && $0 != 10 }, as: UTF8.self)
            let parts = line.split(separator: " ")
            if parts.count >= 2 { paths.withLock { $0.append(String(parts[1])) } }
            let answer = Array("HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok".utf8)
            _ = answer.withUnsafeBytes { write(client, $0.baseAddress, $0.count) }
            close(client)
        }
    }

    func stop() {
        stopped.withLock { $0 = true }
        shutdown(fd, Int32(SHUT_RDWR))
        close(fd)
    }
}

@Suite("Sessions across real nodes", .serialized)
struct SessionIntegrationTests {
    /// Retries a request while the mesh answers "try again" (503) or cannot yet find the
    /// session (404 during a takeover), up to a deadline.
    func call(_ port: UInt16, _ method: String, _ path: String, json: Any? = nil, seconds: Double = 30) throws -> (Int, [String: Any]) {
        httpCallRetrying(port: port, method: method, path: path, json: json, seconds: seconds)
    }

    @Test(.timeLimit(.minutes(5)))
    func aSessionSurvivesItsOwnersKillAndNoEffectRunsTwice() throws {
        let server = try RecordingHTTPServer()
        defer { server.stop() }
        let cluster = try LocalCluster()
        defer { cluster.shutdown() }
        // The effects call the test's server, so the nodes' policy allows the host's network.
        let nodes = try cluster.startAlive(["n1", "n2", "n3", "n4"], extraArguments: ["--policy", try cluster.hostNetworkPolicy()])
        let entry = nodes[0]

        let (createStatus, created) = try call(entry.apiPort, "POST", "/v1/sessions", json: ["id": "agent-1"])
        #expect(createStatus == 201, "create: \(created)")
        let ownerName = try #require(created["owner"] as? String)
        let owner = try #require(nodes.first { $0.name == ownerName })

        for i in 1...20 {
            let (status, body) = try call(entry.apiPort, "POST", "/v1/sessions/agent-1/checkpoint", json: ["state": ["step": i, "note": "state \(i)"]])
            #expect(status == 200, "checkpoint \(i): \(body)")
            #expect((body["seq"] as? Int) == i + 1)
        }
        let script = "exec 3<>/dev/tcp/127.0.0.1/\(server.port) && printf 'GET /effect/%s HTTP/1.0\\r\\n\\r\\n' \"$STARLING_EFFECT_KEY\" >&3 && cat <&3"
        for k in 1...5 {
            let (status, body) = try call(entry.apiPort, "POST", "/v1/sessions/agent-1/actions",
                                          json: ["key": "k\(k)", "argv": ["bash", "-c", script], "net": "host"])
            #expect(status == 200, "effect k\(k): \(body)")
            #expect((body["replayed"] as? Bool) == false)
            let result = body["result"] as? [String: Any] ?? [:]
            #expect((result["exitCode"] as? Int) == 0, "effect k\(k): \(result)")
            #expect((result["stdout"] as? String)?.hasSuffix("ok") == true)
        }
        #expect(server.paths.withLock { $0.count } == 5)

        owner.signal(SIGKILL)
        _ = owner.waitForExit(seconds: 10)
        let survivor = try #require(nodes.first { $0.name != ownerName })

        let started = Date()
        var view: [String: Any] = [:]
        try waitUntil("a survivor serves the session again", seconds: 60) {
            let (status, body) = httpCall(port: survivor.apiPort, method: "GET", path: "/v1/sessions/agent-1", timeout: 20)
            guard status == 200 else { return false }
            view = jsonObject(body)
            return true
        }
        let resumeMs = Int(Date().timeIntervalSince(started) * 1000)
        print("SESSION-RESUME-MS \(resumeMs)")
        let state = view["state"] as? [String: Any] ?? [:]
        #expect((state["step"] as? Int) == 20, "state after resume: \(view)")
        #expect((view["seq"] as? Int) == 1 + 20 + 10)
        #expect(view["owner"] as? String != ownerName)
        let journal = view["journal"] as? [[String: Any]] ?? []
        #expect(journal.compactMap { $0["key"] as? String }.sorted() == ["k1", "k2", "k3", "k4", "k5"])
        #expect(journal.allSatisfy { ($0["outcome"] as? String) == "done" })

        for k in 1...5 {
            let (status, body) = try call(survivor.apiPort, "POST", "/v1/sessions/agent-1/actions",
                                          json: ["key": "k\(k)", "argv": ["bash", "-c", script], "net": "host"])
            #expect(status == 200, "replay k\(k): \(body)")
            #expect((body["replayed"] as? Bool) == true)
        }
        let seen = server.paths.withLock { $0 }
        #expect(seen.sorted() == (1...5).map { "/effect/agent-1/k\($0)" }, "the service saw \(seen)")

        // The new owner says, in its metrics, that it led a takeover and serves the session.
        let newOwner = try #require(nodes.first { $0.name == view["owner"] as? String })
        try waitUntil("the new owner's metrics show the takeover", seconds: 10) {
            newOwner.metric("starling_session_takeovers") >= 1 && newOwner.metric("starling_sessions_served") >= 1
        }

        // The dead owner's audit log recorded every checkpoint and effect it signed.
        let audit = try runCLI(["audit", "export", "--data", owner.dataDir])
        let kinds = audit.out.split(separator: "\n").compactMap { jsonObject(Data($0.utf8))["kind"] as? String }
        #expect(kinds.filter { $0 == "session.checkpoint" }.count == 20, "audit kinds: \(Set(kinds))")
        #expect(kinds.filter { $0 == "session.effect.result" }.count == 5)
        #expect(kinds.filter { $0 == "effect.start" }.count == 5)
        #expect(!audit.out.contains("state 20"), "a state's content reached the audit log")

        // The CLI reads it through any node.
        let shown = try runCLI(["session", "show", "agent-1", "--json", "--api", "127.0.0.1:\(survivor.apiPort)"])
        #expect(shown.status == 0, "\(shown.err)")
        #expect((jsonObject(Data(shown.out.utf8))["seq"] as? Int) == 31)

        // Reads page the journal; a delete through any node removes the session.
        let (pageStatus, page) = try call(survivor.apiPort, "GET", "/v1/sessions/agent-1?since=30")
        #expect(pageStatus == 200)
        #expect((page["journal"] as? [Any])?.count == 1)
        let (deleteStatus, _) = try call(survivor.apiPort, "DELETE", "/v1/sessions/agent-1")
        #expect(deleteStatus == 204)
        let (goneStatus, _) = try call(survivor.apiPort, "GET", "/v1/sessions/agent-1", seconds: 1)
        #expect(goneStatus == 404)
    }

    @Test(.timeLimit(.minutes(5)))
    func anOwnerRestartedOnItsDataServesItsSessionAgain() throws {
        let cluster = try LocalCluster()
        defer { cluster.shutdown() }
        let nodes = try cluster.startMesh(["r1", "r2", "r3"])
        let (status, created) = try call(nodes[0].apiPort, "POST", "/v1/sessions", json: ["id": "restart-1"])
        #expect(status == 201, "create: \(created)")
        for i in 1...3 {
            let (s, body) = try call(nodes[0].apiPort, "POST", "/v1/sessions/restart-1/checkpoint", json: ["state": ["i": i]])
            #expect(s == 200, "\(body)")
        }
        // The whole mesh stops and starts again on its data (SIGTERM: a leave).
        for node in nodes { node.signal(SIGTERM) }
        for node in nodes { _ = node.waitForExit(seconds: 15) }
        let seed = try cluster.start("r1")
        var again = [seed]
        for name in ["r2", "r3"] { again.append(try cluster.start(name, join: [seed])) }
        try waitUntil("3 alive", seconds: 15) { again.allSatisfy { ($0.members() ?? []).filter { $0.status == "alive" }.count == 3 } }
        let (s, view) = try call(again[1].apiPort, "GET", "/v1/sessions/restart-1", seconds: 30)
        #expect(s == 200, "\(view)")
        #expect(((view["state"] as? [String: Any])?["i"] as? Int) == 3)
        #expect((view["epoch"] as? Int ?? 0) >= 2)

        // The CLI, through a node that may not own the session.
        let api = "127.0.0.1:\(again[2].apiPort)"
        let checkpoint = try runCLI(["session", "checkpoint", "restart-1", "--state", #"{"i": 4}"#, "--api", api])
        #expect(checkpoint.status == 0 && checkpoint.out.hasPrefix("seq 5 "), "\(checkpoint)")
        let first = try runCLI(["session", "act", "restart-1", "--key", "greet", "--api", api, "--", "/bin/echo", "hello"])
        #expect(first.status == 0 && first.out == "hello\n" && !first.err.contains("replayed"), "\(first)")
        let second = try runCLI(["session", "act", "restart-1", "--key", "greet", "--api", api, "--", "/bin/echo", "other"])
        #expect(second.status == 0 && second.out == "hello\n" && second.err.contains("replayed"), "\(second)")
        let shown = try runCLI(["session", "show", "restart-1", "--api", api])
        #expect(shown.status == 0 && shown.out.contains(#"state {"i":4}"#) && shown.out.contains("greet done"), "\(shown)")
    }
}
