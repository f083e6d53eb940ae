import Testing
@testable import StarlingCore

/// A node's other work (hosted agents' brains) holds slots and memory out of its swarm worker's:
/// the worker starts tasks only in what is left and advertises only that.
@Suite("Swarm worker occupancy")
struct SwarmOccupancyTests {
    func occupy(_ mesh: inout SwarmTestMesh, _ name: PeerName, slots: UInt32, memoryMB: UInt32) {
        let effects = mesh.nodes[name]!.swarm.performed(.occupied(slots: slots, memoryMB: memoryMB), now: mesh.now)
        mesh.carryOut(effects, at: name)
    }

    @Test func aNodeWhoseSlotsAreHeldRunsNoTaskAndAdvertisesNone() throws {
        var mesh = SwarmTestMesh(nodes: 3, slots: 2, memoryMB: 1000)
        // The swarm comes at once: the others still see n2's two free slots (an advertisement
        // waits out the interval since the last one) and reserve there; n2's worker says no.
        occupy(&mesh, "n2", slots: 2, memoryMB: 0)
        let command = mesh.submit(draft(12), at: "n0")
        mesh.run(for: .seconds(5)) { $0.replies[command] != nil }
        let id = try #require(mesh.swarmID(of: command))
        mesh.run(for: .seconds(60)) { $0.isFinished(id) }
        #expect(mesh.entry(id)?.state == .done)
        #expect(mesh.runs.count == 12)
        #expect(!mesh.runs.contains { $0.node == "n2" }, "a task ran on n2, whose slots its brains hold")
        #expect(mesh.violations.isEmpty, "\(mesh.violations)")
        mesh.run(for: .seconds(2))  // past the advertisement interval
        #expect(mesh.nodes["n2"]!.metadata.free == 0, "n2 advertises \(mesh.nodes["n2"]!.metadata.free) free slots")

        // The brains end: n2 has its slots back, says so, and takes work again.
        occupy(&mesh, "n2", slots: 0, memoryMB: 0)
        mesh.run(for: .seconds(2))
        #expect(mesh.nodes["n2"]!.metadata.free == 2)
        let again = mesh.submit(draft(30), at: "n0")
        mesh.run(for: .seconds(5)) { $0.replies[again] != nil }
        let second = try #require(mesh.swarmID(of: again))
        mesh.run(for: .seconds(60)) { $0.isFinished(second) }
        #expect(mesh.runs.contains { $0.node == "n2" && $0.run.swarm == second })
    }

    @Test func heldMemoryKeepsTasksThatNoLongerFitAway() throws {
        // n2 has 1000 MiB, of which its brains hold 800: a 400 MiB task does not fit there.
        var mesh = SwarmTestMesh(nodes: 3, slots: 4, memoryMB: 1000)
        occupy(&mesh, "n2", slots: 1, memoryMB: 800)
        let command = mesh.submit(draft(16, memoryMB: 400), at: "n0")
        mesh.run(for: .seconds(5)) { $0.replies[command] != nil }
        let id = try #require(mesh.swarmID(of: command))
        mesh.run(for: .seconds(60)) { $0.isFinished(id) }
        #expect(mesh.entry(id)?.state == .done)
        #expect(!mesh.runs.contains { $0.node == "n2" }, "a 400 MiB task ran beside 800 MiB of brains in 1000 MiB")
        mesh.run(for: .seconds(2))
        #expect(mesh.nodes["n2"]!.metadata.free == 3 && mesh.nodes["n2"]!.metadata.freeMemoryMB == 200)
    }
}
