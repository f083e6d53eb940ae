import Foundation
import StarlingCore
import StarlingCrypto
@testable import StarlingRuntime
import StarlingSandbox
import StarlingStore
import Testing

/// An agent's spec lives in its session's creation record, which a member may hand a node (a
/// handoff, an install) without `POST /v1/agents` ever checking it. The node checks it again
/// before it starts the brain.
@Suite("Hosted agents: a spec the node did not check at its create", .serialized)
struct AgentHostileSpecTests {
    /// A session signed by the node's own identity, as a peer's handoff would leave it in the
    /// store: a brain asking for `Int.max` MiB (the occupancy sum overflowed and trapped the
    /// node, and a restart took the session over again: a crash loop) and a model at plain
    /// http to another host (the node would send its key in clear text).
    @Test(.timeLimit(.minutes(3)))
    func aStoredSpecOverItsBoundsIsRefusedAtTheBrainsStartAndTheNodeLives() throws {
        let cluster = try LocalCluster()
        defer { cluster.shutdown() }
        let dataDir = cluster.dir + "/n1"
        try FileManager.default.createDirectory(atPath: dataDir, withIntermediateDirectories: true)
        let identity = try NodeIdentity.loadOrCreate(dataDir: dataDir)
        let crypto = SessionService.crypto(identity)
        let store = SessionStore(store: try SwarmStore(directory: dataDir))
        let specs: [(String, AgentSpec)] = [
            ("huge-a", AgentSpec(brain: TaskSpec(argv: ["true"], memoryMB: Int.max))),
            ("huge-b", AgentSpec(brain: TaskSpec(argv: ["true"], memoryMB: Int.max))),
            ("cleartext", AgentSpec(brain: TaskSpec(argv: ["true"]), model: ModelEndpoint(baseURL: "http://198.51.100.7/v1", secret: "K"))),
        ]
        for (id, spec) in specs {
            let options = [UInt8](try JSONEncoder().encode(SessionOptions(agent: spec)))
            let create = crypto.seal(session: id, seq: 1, previousHash: SessionRecord.zeroHash, epoch: 1, kind: .create, key: "",
                                     content: options, signer: "n1")
            try store.apply([.image(SessionImage(id: id, epoch: 1, owner: "n1", replicas: ["n1"], records: [create]))])
        }
        let node = try cluster.start("n1")
        for (id, _) in specs {
            var agent: [String: Any] = [:]
            try waitUntil("agent \(id) is refused", seconds: 60) {
                agent = AgentFixtures.call(node.apiPort, "GET", "/v1/agents/\(id)").1
                return agent["state"] as? String == "failed"
            }
            #expect((agent["reason"] as? String ?? "").hasPrefix("refused:"), "\(id): \(agent)")
        }
        #expect(node.isRunning)
        #expect(node.metric("starling_agent_brain_starts") == 0)
    }
}
