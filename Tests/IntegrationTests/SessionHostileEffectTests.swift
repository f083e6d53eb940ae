import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Glibc
import Synchronization
import Testing

/// A session effect that attacks its node: it reads another session's state and the node's key
/// from the data dir, the node's process through /proc, the node's API with `net: none`, writes
/// outside its work dir, prints far more than any cap, and fork-bombs within its pids limit. It
/// must get nothing, the node must stay healthy and keep serving, and the session's journal must
/// record each effect with its (cut) result.
@Suite("Sessions: a hostile effect task", .serialized)
struct SessionHostileEffectTests {
    @Test(.timeLimit(.minutes(4)))
    func aHostileEffectGetsNothingAndTheNodeStaysHealthy() throws {
        let cluster = try LocalCluster()
        defer { cluster.shutdown() }
        let node = try cluster.start("h1")
        let marker = "VICTIM-\(UInt32.random(in: 0...UInt32.max))-STATE"
        let hostFile = NSTemporaryDirectory() + "hostile-\(UUID().uuidString.prefix(8))"
        defer { try? FileManager.default.removeItem(atPath: hostFile) }

        let call = { (method: String, path: String, json: Any?) in try SessionCrashTests.retrying(node.apiPort, method, path, json: json) }
        #expect(try call("POST", "/v1/sessions", ["id": "victim"]).0 == 201)
        #expect(try call("POST", "/v1/sessions/victim/checkpoint", ["state": ["secret": marker]]).0 == 200)
        #expect(try call("POST", "/v1/sessions", ["id": "hostile"]).0 == 201)

        // Each probe prints LEAK:<what> if it got anything it should not have.
        let data = node.dataDir
        let probe = """
            grep -rl '\(marker)' '\(data)' 2>/dev/null && echo LEAK:other-session-state
            cat '\(data)/node.key' >/dev/null 2>&1 && echo LEAK:node-key
            cat '\(data)/starling.sqlite' >/dev/null 2>&1 && echo LEAK:store
            grep -l '\(marker)' /dev/shm/* /tmp/* 2>/dev/null && echo LEAK:state-in-tmp
            cat /proc/\(node.pid)/environ >/dev/null 2>&1 && echo LEAK:node-environ
            cat /proc/\(node.pid)/cmdline 2>/dev/null | grep -q starling && echo LEAK:node-cmdline
            ls /proc | grep -qx '\(node.pid)' && echo LEAK:node-pid-visible
            (exec 3<>/dev/tcp/127.0.0.1/\(node.apiPort)) 2>/dev/null && echo LEAK:api-reachable-with-net-none
            echo pwned > '\(hostFile)' 2>/dev/null
            echo pwned > /etc/starling-hostile 2>/dev/null
            echo pwned >> /etc/ld.so.cache 2>/dev/null && echo LEAK:host-etc-file-writable
            touch /usr/bin/starling-hostile 2>/dev/null && echo LEAK:usr-writable
            rm -f /usr/bin/env 2>/dev/null; [ -e /usr/bin/env ] || echo LEAK:usr-file-removed
            echo probed
            """
        let (probeStatus, probed) = try call("POST", "/v1/sessions/hostile/actions", ["key": "probe", "argv": ["bash", "-c", probe], "timeoutSeconds": 30])
        #expect(probeStatus == 200, "probe: \(probed)")
        let probeResult = probed["result"] as? [String: Any] ?? [:]
        let probeOut = probeResult["stdout"] as? String ?? ""
        #expect(probeOut.contains("probed"), "the probe ran: \(probeResult)")
        #expect(!probeOut.contains("LEAK:"), "the probe got: \(probeOut)")
        #expect(!FileManager.default.fileExists(atPath: hostFile), "the effect wrote \(hostFile) on the host")
        // The sandbox's /etc is its own (a tmpfs with a few files bound read-only): a file made
        // there must not appear on the host.
        #expect(!FileManager.default.fileExists(atPath: "/etc/starling-hostile"))
        #expect(!FileManager.default.fileExists(atPath: "/usr/bin/starling-hostile"))

        // 200 MB of output: cut to what a result may carry.
        let (floodStatus, flooded) = try call("POST", "/v1/sessions/hostile/actions",
                                              ["key": "flood", "argv": ["bash", "-c", "head -c 200000000 /dev/zero | tr '\\0' x; echo done"], "timeoutSeconds": 60])
        #expect(floodStatus == 200, "flood: \(flooded)")
        let floodResult = flooded["result"] as? [String: Any] ?? [:]
        let floodOut = floodResult["stdout"] as? String ?? ""
        #expect(floodOut.utf8.count <= 16 * 1024, "a result carried \(floodOut.utf8.count) bytes of stdout")
        #expect(floodOut.hasPrefix("xxxx"), "flood stdout: \(floodOut.prefix(80))")
        #expect((floodResult["truncated"] as? Bool) == true || !((floodResult["warnings"] as? [Any]) ?? []).isEmpty,
                "a cut result says so: \(floodResult.filter { $0.key != "stdout" })")

        // A fork bomb inside the effect's pids limit, ended by its timeout.
        let (bombStatus, bombed) = try call("POST", "/v1/sessions/hostile/actions",
                                            ["key": "bomb", "argv": ["bash", "-c", "b() { b | b & }; b; sleep 100"], "timeoutSeconds": 5])
        #expect(bombStatus == 200, "bomb: \(bombed)")
        let bombResult = bombed["result"] as? [String: Any] ?? [:]
        #expect(bombResult["exitCode"] as? Int != 0, "bomb: \(bombResult.filter { $0.key != "stdout" && $0.key != "stderr" })")

        // The node is healthy and serves both sessions; the journal holds the three effects.
        #expect(httpGet(port: node.apiPort, path: "/v1/health") != nil)
        let (after, _) = try call("POST", "/v1/sessions/victim/checkpoint", ["state": ["secret": marker, "after": true]])
        #expect(after == 200)
        let (_, view) = try call("GET", "/v1/sessions/hostile", nil)
        let journal = view["journal"] as? [[String: Any]] ?? []
        #expect(journal.compactMap { $0["key"] as? String } == ["probe", "flood", "bomb"], "journal: \(journal.map { $0["key"] ?? "?" })")
        #expect(journal.allSatisfy { $0["outcome"] as? String == "done" })
        let recordedFlood = (journal.first { $0["key"] as? String == "flood" }?["result"] as? [String: Any])?["stdout"] as? String ?? ""
        #expect(recordedFlood == floodOut, "the journal keeps the cut result")
        // Replays give the recorded results, not new runs.
        let (replayStatus, replay) = try call("POST", "/v1/sessions/hostile/actions", ["key": "bomb", "argv": ["true"]])
        #expect(replayStatus == 200 && replay["replayed"] as? Bool == true)
        print("session-hostile: probe \(probeOut.split(separator: "\n")), flood stdout \(floodOut.utf8.count) bytes, bomb \(bombResult.filter { $0.key != "stdout" && $0.key != "stderr" })")
    }
}

/// Bad input at the session routes of a real node: each is refused with a 4xx and its reason,
/// and the node goes on serving.
@Suite("Sessions: bad input at the routes", .serialized)
struct SessionBadInputTests {
    @Test(.timeLimit(.minutes(3)))
    func badBodiesIdsKeysAndSinceAreRefusedAndTheNodeStaysUp() throws {
        let cluster = try LocalCluster()
        defer { cluster.shutdown() }
        let node = try cluster.start("b1")
        let port = node.apiPort
        #expect(try SessionCrashTests.retrying(port, "POST", "/v1/sessions", json: ["id": "s"]).0 == 201)

        /// Status of a raw request (body bytes as they are).
        func raw(_ method: String, _ path: String, _ body: String?) -> Int {
            var request = URLRequest(url: URL(string: "http://127.0.0.1:\(port)\(path)")!)
            request.httpMethod = method
            request.timeoutInterval = 30
            if let body { request.httpBody = Data(body.utf8); request.setValue("application/json", forHTTPHeaderField: "Content-Type") }
            final class Box: Sendable { let status = Mutex(0) }
            let box = Box()
            let done = DispatchSemaphore(value: 0)
            URLSession.shared.dataTask(with: request) { _, response, _ in
                box.status.withLock { $0 = (response as? HTTPURLResponse)?.statusCode ?? 0 }
                done.signal()
            }.resume()
            done.wait()
            return box.status.withLock { $0 }
        }

        let deep = String(repeating: "[", count: 200_000) + String(repeating: "]", count: 200_000)
        var cases: [(String, String, String, String?, ClosedRange<Int>)] = [
            ("state nested 200,000 deep", "POST", "/v1/sessions/s/checkpoint", "{\"state\": \(deep)}", 400...413),
            ("task nested 200,000 deep", "POST", "/v1/sessions/s/actions", "{\"key\": \"k\", \"argv\": \(deep)}", 400...413),
            ("not JSON", "POST", "/v1/sessions/s/checkpoint", "{\"state\": ", 400...400),
            ("no state", "POST", "/v1/sessions/s/checkpoint", "{}", 400...400),
            ("state over 1 MiB", "POST", "/v1/sessions/s/checkpoint", "{\"state\": \"" + String(repeating: "x", count: (1 << 20) + 1) + "\"}", 413...413),
            ("key with a space", "POST", "/v1/sessions/s/actions", #"{"key": "a b", "argv": ["true"]}"#, 400...400),
            ("key of 129 bytes", "POST", "/v1/sessions/s/actions", "{\"key\": \"\(String(repeating: "k", count: 129))\", \"argv\": [\"true\"]}", 400...400),
            ("key not ASCII", "POST", "/v1/sessions/s/actions", #"{"key": "ключ", "argv": ["true"]}"#, 400...400),
            ("no argv", "POST", "/v1/sessions/s/actions", #"{"key": "k"}"#, 400...400),
            ("id of 65 bytes", "POST", "/v1/sessions", "{\"id\": \"\(String(repeating: "i", count: 65))\"}", 400...400),
            ("id with a slash", "POST", "/v1/sessions", #"{"id": "a/b"}"#, 400...400),
            ("id a number", "POST", "/v1/sessions", #"{"id": 7}"#, 400...400),
            ("since negative", "GET", "/v1/sessions/s?since=-1", nil, 400...400),
            ("since past Int64", "GET", "/v1/sessions/s?since=99999999999999999999", nil, 400...400),
            ("since not a number", "GET", "/v1/sessions/s?since=abc", nil, 400...400),
            ("unknown id", "GET", "/v1/sessions/nope", nil, 404...404),
            ("id too long in the path", "GET", "/v1/sessions/\(String(repeating: "p", count: 65))", nil, 404...404),
        ]
        cases.append(("since at Int64.max", "GET", "/v1/sessions/s?since=9223372036854775807", nil, 200...200))
        var seen: [String: Int] = [:]
        for (what, method, path, body, expected) in cases {
            let status = raw(method, path, body)
            seen[what] = status
            #expect(expected.contains(status), "\(what): \(status), expected \(expected)")
            #expect(httpGet(port: port, path: "/v1/health") != nil, "the node stopped answering after \(what)")
        }
        // The session is intact and still takes writes.
        let (status, body) = try SessionCrashTests.retrying(port, "POST", "/v1/sessions/s/checkpoint", json: ["state": ["ok": true]])
        #expect(status == 200 && body["seq"] as? Int == 2, "\(status) \(body)")
        print("session-bad-input: \(seen.sorted { $0.key < $1.key })")
    }
}
