import Foundation
import StarlingCore
import StarlingCrypto
import Testing

/// Defects the adversarial review of the session protocol found, each shown on `SessionMesh`
/// (real Ed25519 and BLAKE2b, every message through the codec).
@Suite struct SessionReviewTests {
    /// An epoch is a number from the wire. A peer holding the cluster key that dials under the
    /// owner's name (or a replica answering `stale`) can make a node hold epoch `UInt64.max`;
    /// the next takeover that node leads computed `epoch + 1` and trapped: every replica of the
    /// session went down with it. Now such a session is left unled (and said so), never trapped.
    @Test func anEpochAtItsLimitFromAPeerNeverTrapsATakeover() throws {
        var mesh = try SessionMesh(["n1", "n2", "n3"])
        let owner = try SessionsTests.created(&mesh, "s1")
        _ = mesh.command(owner, .checkpoint(id: "s1", state: Array("1".utf8)))
        let replica = try #require(mesh.replica(of: "s1"))
        // A prepare at the largest epoch, under the owner's name: the replica promises it (the
        // owner may take a new epoch of its own session).
        var n = mesh.nodes[replica]!
        let effects = n.request(.prepare(session: "s1", epoch: .max), from: owner, token: RequestToken(rawValue: 999_999), now: mesh.now)
        mesh.nodes[replica] = n
        guard case .perform(.persist(.promise(_, .max, _), _))? = effects.first else {
            Issue.record("the replica did not promise: \(effects)"); return
        }
        mesh.deliver(replica, effects)
        mesh.run()
        // The owner dies: the replicas consider a takeover of a session at epoch UInt64.max.
        mesh.crash(owner)
        mesh.tick(seconds: 3)
        #expect(mesh.owner(of: "s1") == nil, "a session at the last epoch cannot be taken over, and is not")
        // The nodes still answer.
        for name in ["n1", "n2", "n3"] where name != owner {
            guard case .stats? = mesh.command(name, .stats) else { Issue.record("\(name) does not answer"); return }
        }
    }
}
