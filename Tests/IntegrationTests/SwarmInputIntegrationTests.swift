import Foundation
import Testing

/// Swarms the public API's limits accept but the protocol's do not, against a real node.
@Suite("Swarm input past the protocol's bounds (real node)", .serialized)
struct SwarmInputIntegrationTests {
    /// Before, the mesh refused these and the API answered 503, which tells a client to retry
    /// the same body forever; they are the client's error.
    @Test func aTaskOrASwarmTooLargeForTheWireIsA400NotA503() throws {
        let cluster = try LocalCluster()
        defer { cluster.shutdown() }
        let node = try cluster.startMesh(["n1"])[0]
        // One task with 2 MiB of stdin: within the task's 16 MiB, over a task's 1 MiB encoded form.
        let big = String(repeating: "a", count: 2 << 20)
        let (status, body) = httpCall(port: node.apiPort, method: "POST", path: "/v1/swarms",
                                      json: ["tasks": [["argv": ["true"], "stdin": big]]], timeout: 30)
        #expect(status == 400, "\(status) \(String(decoding: body.prefix(300), as: UTF8.self))")
        // 17 tasks of 500 KiB (8.3 MiB): each within a swarm task's 512 KiB, over a swarm's 8 MiB.
        let chunk = String(repeating: "b", count: 500 << 10)
        let tasks = (0..<17).map { _ in ["argv": ["true"], "stdin": chunk] as [String: Any] }
        let (total, totalBody) = httpCall(port: node.apiPort, method: "POST", path: "/v1/swarms", json: ["tasks": tasks], timeout: 60)
        #expect(total == 400, "\(total) \(String(decoding: totalBody.prefix(300), as: UTF8.self))")
        // Nothing was created.
        let (listed, list) = httpCall(port: node.apiPort, method: "GET", path: "/v1/swarms")
        #expect(listed == 200)
        #expect((jsonObject(list)["swarms"] as? [Any])?.isEmpty ?? false, "\(String(decoding: list.prefix(300), as: UTF8.self))")
    }
}
