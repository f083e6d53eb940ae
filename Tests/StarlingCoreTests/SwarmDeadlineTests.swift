@testable import StarlingCore
import Testing

/// A request whose receiver must store (and replicate) a whole swarm before it answers waits
/// longer the larger the swarm: a 10,000-task create timed out at 5 s on a loaded machine.
@Suite struct SwarmDeadlineTests {
    @Test func createsTransfersAndCancelsOfLargeSwarmsWaitLonger() throws {
        var mesh = SwarmTestMesh(nodes: 3, slots: 1)
        let base = mesh.nodes["n0"]!.swarm.settings.requestTimeout
        let big = SwarmDefinition(id: "00000000000000aa", draft: draft(10_000), replicas: ["n0", "n1", "n2"])
        let swarm = mesh.nodes["n0"]!.swarm
        #expect(swarm.timeout(for: .create(big)) == base + .seconds(20), "stored by the owner, then by its replicas")
        let whole = ReplicaUpdate(id: big.id, epoch: 1, baseVersion: 1, version: 1, state: .running, definition: big,
                                  records: [], children: [], last: true)
        #expect(swarm.timeout(for: .replicate(whole)) == base + .seconds(10))
        var delta = whole
        delta.definition = nil
        #expect(swarm.timeout(for: .replicate(delta)) == base)
        #expect(swarm.timeout(for: .fetch(big.id, epoch: 1, maxMemoryMB: 1)) == base)
        #expect(swarm.timeout(for: .cancel(big.id)) == base, "a swarm this node does not hold: its size is unknown")
        let command = mesh.submit(draft(10_000), at: "n0")
        mesh.run(for: .seconds(5)) { $0.replies[command] != nil }
        let id = try #require(mesh.swarmID(of: command))
        #expect(mesh.nodes["n1"]!.swarm.timeout(for: .cancel(id)) == base + .seconds(10), "a held swarm: its size is known")
    }
}
