import Foundation
import Testing

/// Large states across real nodes: a checkpoint that changes one field of a ~1 MiB state sends
/// its changed chunks, not the state, to the other replicas (issue #11 item 4).
@Suite("Session chunks across real nodes", .serialized)
struct SessionChunksIntegrationTests {
    /// Session-channel bytes every node sent (`starling_link_bytes_total`, out).
    static func sessionBytesSent(_ nodes: [NodeProcess]) -> Int {
        var total = 0
        for node in nodes {
            for line in node.metrics().split(separator: "\n") where line.hasPrefix("starling_link_bytes_total")
                && line.contains("channel=\"session\"") && line.contains("direction=\"out\"") {
                total += Int(Double(line.split(separator: " ").last ?? "0") ?? 0)
            }
        }
        return total
    }

    @Test(.timeLimit(.minutes(5)))
    func aOneFieldChangeOfALargeStateSendsOnlyItsChunks() throws {
        let cluster = try LocalCluster()
        defer { cluster.shutdown() }
        let seed = try cluster.start("n1")
        var nodes = [seed]
        for name in ["n2", "n3"] { nodes.append(try cluster.start(name, join: [seed])) }
        try waitUntil("3 alive", seconds: 15) {
            nodes.allSatisfy { ($0.members() ?? []).filter { $0.status == "alive" }.count == 3 }
        }
        let entry = nodes[0].apiPort
        var (status, body) = (0, [String: Any]())
        let deadline = Date().addingTimeInterval(30)
        repeat {
            let answer = httpCall(port: entry, method: "POST", path: "/v1/sessions", json: ["id": "big"], timeout: 20)
            (status, body) = (answer.0, jsonObject(answer.1))
            if status == 201 { break }
            usleep(200_000)
        } while Date() < deadline
        #expect(status == 201, "create: \(body)")
        // ~1 MiB of words; the state is an array so its order is the client's ([counter, notes]).
        var x: UInt64 = 5
        var words: [String] = []
        var length = 0
        while length < 1_000_000 {
            x = x &* 6364136223846793005 &+ 1442695040888963407
            let letters = (0..<Int(x >> 61) + 2).map { k in UInt8(0x61 + Int((x >> UInt64(8 + k * 3)) & 0x0F)) }
            words.append(String(decoding: letters, as: UTF8.self))
            length += letters.count + 1
        }
        let notes = words.joined(separator: " ")
        let first = httpCall(port: entry, method: "POST", path: "/v1/sessions/big/checkpoint", json: ["state": [0, notes]], timeout: 30)
        #expect(first.0 == 200, "first checkpoint: \(String(decoding: first.1, as: UTF8.self))")
        for counter in 1...3 {
            let before = Self.sessionBytesSent(nodes)
            let answer = httpCall(port: entry, method: "POST", path: "/v1/sessions/big/checkpoint", json: ["state": [counter, notes]], timeout: 30)
            #expect(answer.0 == 200, "checkpoint \(counter): \(String(decoding: answer.1, as: UTF8.self))")
            let sent = Self.sessionBytesSent(nodes) - before
            print("session bytes sent for checkpoint \(counter): \(sent)")
            // Whole, the state would cross twice (two other replicas): over 2 MB.
            #expect(sent > 0 && sent < 600_000, "session bytes sent for one checkpoint: \(sent)")
        }
        let shown = httpCall(port: entry, method: "GET", path: "/v1/sessions/big", timeout: 30)
        let state = jsonObject(shown.1)["state"] as? [Any]
        #expect((state?.first as? Int) == 3 && (state?.last as? String) == notes)
    }
}
