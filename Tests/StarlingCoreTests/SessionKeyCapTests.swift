import Testing
@testable import StarlingCore

/// A session whose clients used up their effect keys can still take the node's own keys (an
/// agent's end): before, an agent at the cap could neither end nor be stopped, and its brain was
/// started again every ownership round (review of the compaction merge).
@Suite struct SessionKeyCapTests {
    @Test func theNodesKeysHaveAReservePastTheClientsCap() throws {
        var mesh = try SessionMesh(["n1", "n2", "n3"])
        let owner = try SessionsTests.created(&mesh, "s1")
        let clientKeys = SessionLimits.maxEffectKeys - SessionLimits.hostKeyReserve
        for k in 0..<clientKeys {
            guard case .acted? = mesh.command(owner, .act(id: "s1", key: "k\(k)", task: Array("{}".utf8))) else {
                Issue.record("effect k\(k) was not run"); return
            }
            // A checkpoint now and then lets the session compact.
            if k % 400 == 399 { _ = mesh.command(owner, .checkpoint(id: "s1", state: Array("{\"k\":\(k)}".utf8))) }
        }
        guard case .rejected(let reason)? = mesh.command(owner, .act(id: "s1", key: "one-more", task: Array("{}".utf8))) else {
            Issue.record("a client key past the cap was taken"); return
        }
        #expect(reason.contains("\(clientKeys)"))
        guard case .acted? = mesh.command(owner, .act(id: "s1", key: "starling.agent.end", task: Array("{}".utf8))) else {
            Issue.record("the node's own key was refused at the clients' cap"); return
        }
    }
}
