import Foundation
import Glibc
import Testing

/// Compaction across real nodes: a session past 64 effects and 1,024 records keeps recording,
/// compacts, survives its owner's kill -9, replays its recent keys and never runs an old one.
@Suite("Session compaction across real nodes", .serialized)
struct SessionCompactionIntegrationTests {
    @Test(.timeLimit(.minutes(10)))
    func aCompactedSessionSurvivesItsOwnersKillAndNoEffectRunsTwice() throws {
        let server = try RecordingHTTPServer()
        defer { server.stop() }
        let cluster = try LocalCluster()
        defer { cluster.shutdown() }
        let nodes = try cluster.startAlive(["c1", "c2", "c3", "c4"], extraArguments: ["--policy", try cluster.hostNetworkPolicy()])
        let (createStatus, created) = httpCallRetrying(port: nodes[0].apiPort, method: "POST", path: "/v1/sessions", json: ["id": "long-1"], seconds: 30)
        #expect(createStatus == 201, "create: \(created)")
        let ownerName = try #require(created["owner"] as? String)
        let owner = try #require(nodes.first { $0.name == ownerName })

        // 70 effects: past the old lifetime bound of 64 (refused with 400 before compaction).
        let script = "exec 3<>/dev/tcp/127.0.0.1/\(server.port) && printf 'GET /effect/%s HTTP/1.0\\r\\n\\r\\n' \"$STARLING_EFFECT_KEY\" >&3 && cat <&3"
        let act = { (port: UInt16, k: Int) in
            httpCallRetrying(port: port, method: "POST", path: "/v1/sessions/long-1/actions",
                             json: ["key": "e\(k)", "argv": ["bash", "-c", script], "net": "host"], seconds: 30)
        }
        for k in 1...70 {
            let (status, body) = act(owner.apiPort, k)
            #expect(status == 200 && (body["replayed"] as? Bool) == false, "effect e\(k): \(status) \(body)")
            if status != 200 { return }
        }
        // 900 checkpoints: 1 + 140 + 900 records, so the session compacts once (at 1,024).
        for i in 1...900 {
            let (status, body) = httpCallRetrying(port: owner.apiPort, method: "POST", path: "/v1/sessions/long-1/checkpoint",
                                                  json: ["state": ["step": i]], seconds: 30)
            #expect(status == 200, "checkpoint \(i): \(body)")
            if status != 200 { return }
        }
        let (_, before) = httpCallRetrying(port: owner.apiPort, method: "GET", path: "/v1/sessions/long-1?since=\(Int64.max)", seconds: 10)
        #expect((before["seq"] as? Int) == 1 + 140 + 900 + 1, "\(before["seq"] ?? "?")")  // the base is one record
        #expect(server.paths.withLock { $0.count } == 70)

        owner.signal(SIGKILL)
        _ = owner.waitForExit(seconds: 10)
        let survivor = try #require(nodes.first { $0.name != ownerName })
        var view: [String: Any] = [:]
        try waitUntil("a survivor serves the compacted session", seconds: 60) {
            let (status, body) = httpCall(port: survivor.apiPort, method: "GET", path: "/v1/sessions/long-1", timeout: 20)
            guard status == 200 else { return false }
            view = jsonObject(body)
            return true
        }
        #expect(((view["state"] as? [String: Any])?["step"] as? Int) == 900, "\(view["state"] ?? "?")")
        #expect(view["owner"] as? String != ownerName)
        // Every key is still in the journal (paged: 256 a page at most).
        let journal = view["journal"] as? [[String: Any]] ?? []
        #expect(journal.compactMap { $0["key"] as? String }.sorted() == (1...70).map { "e\($0)" }.sorted())
        #expect(journal.first { $0["key"] as? String == "e1" }?["outcome"] as? String == "expired")
        #expect(journal.first { $0["key"] as? String == "e70" }?["outcome"] as? String == "done")

        // A recent key replays its result; an old one answers 409 expired; neither runs again.
        let (recentStatus, recent) = act(survivor.apiPort, 70)
        #expect(recentStatus == 200 && (recent["replayed"] as? Bool) == true, "e70: \(recentStatus) \(recent)")
        let (oldStatus, old) = act(survivor.apiPort, 1)
        #expect(oldStatus == 409 && old["outcome"] as? String == "expired", "e1: \(oldStatus) \(old)")
        let seen = server.paths.withLock { $0 }
        #expect(seen.sorted() == (1...70).map { "/effect/long-1/e\($0)" }.sorted(), "the service saw \(seen.count) calls")

        // And the session records on under its new owner.
        let (status, body) = httpCallRetrying(port: survivor.apiPort, method: "POST", path: "/v1/sessions/long-1/checkpoint",
                                              json: ["state": ["step": 901]], seconds: 30)
        #expect(status == 200, "\(body)")

        // The dead owner's audit log has the compaction.
        let audit = try runCLI(["audit", "export", "--data", owner.dataDir])
        let kinds = audit.out.split(separator: "\n").compactMap { jsonObject(Data($0.utf8))["kind"] as? String }
        #expect(kinds.filter { $0 == "session.compact" }.count == 1, "audit kinds: \(Set(kinds))")
    }
}
