import Testing
@testable import StarlingCore

/// A node's other work (hosted agents' brains) holds slots and memory out of its swarm worker's:
/// the node advertises only what is left, and the worker starts tasks only there, keeping one
/// slot and half its memory for tasks whatever the brains hold.
@Suite("Swarm worker occupancy")
struct SwarmOccupancyTests {
    func occupy(_ mesh: inout SwarmTestMesh, _ name: PeerName, slots: UInt32, memoryMB: UInt32) {
        let effects = mesh.nodes[name]!.swarm.performed(.occupied(slots: slots, memoryMB: memoryMB), now: mesh.now)
        mesh.carryOut(effects, at: name)
    }

    func runSwarm(_ mesh: inout SwarmTestMesh, _ d: SwarmDraft) throws -> SwarmID {
        let command = mesh.submit(d, at: "n0")
        mesh.run(for: .seconds(5)) { $0.replies[command] != nil }
        let id = try #require(mesh.swarmID(of: command))
        mesh.run(for: .seconds(60)) { $0.isFinished(id) }
        #expect(mesh.entry(id)?.state == .done)
        return id
    }

    @Test func aNodeWhoseBrainsHoldItsSlotsRunsAtMostOneTaskAndAdvertisesNone() throws {
        var mesh = SwarmTestMesh(nodes: 3, slots: 3, memoryMB: 1000)
        mesh.runTime = { _ in .milliseconds(500) }
        // The swarm comes at once: the others still see n2's three free slots (an advertisement
        // waits out the interval since the last one) and reserve there; n2 runs one at a time.
        occupy(&mesh, "n2", slots: 3, memoryMB: 0)
        _ = try runSwarm(&mesh, draft(24))
        #expect(mesh.runs.count == 24)
        #expect((mesh.peakSandboxes["n2"] ?? 0) <= 1, "n2 ran \(mesh.peakSandboxes["n2"] ?? 0) at once beside brains holding its slots")
        #expect((mesh.peakSandboxes["n0"] ?? 0) == 3, "peaks: \(mesh.peakSandboxes)")
        #expect(mesh.violations.isEmpty, "\(mesh.violations)")
        mesh.run(for: .seconds(2))  // past the advertisement interval
        #expect(mesh.nodes["n2"]!.metadata.free == 0, "n2 advertises \(mesh.nodes["n2"]!.metadata.free) free slots")

        // The brains end: n2 has its slots back and says so.
        occupy(&mesh, "n2", slots: 0, memoryMB: 0)
        mesh.run(for: .seconds(2))
        #expect(mesh.nodes["n2"]!.metadata.free == 3)
    }

    /// One node, one slot, a brain in it that waits for the swarm it spawned: the swarm runs.
    @Test func aBrainFillingTheOnlySlotStillLetsItsSwarmRun() throws {
        var mesh = SwarmTestMesh(nodes: 1, slots: 1, memoryMB: 1000)
        occupy(&mesh, "n0", slots: 1, memoryMB: 512)
        let id = try runSwarm(&mesh, draft(4, memoryMB: 256))
        #expect(mesh.entry(id)?.tasks.allSatisfy { $0.state == .succeeded } == true)
        #expect(mesh.violations.isEmpty, "\(mesh.violations)")
    }

    @Test func heldMemoryKeepsTasksThatNoLongerFitAway() throws {
        // n2 has 1000 MiB, of which its brains hold 800 (counted up to half, 500, by its own
        // check): a 600 MiB task fits nowhere on n2, a 600 MiB task fits n0 and n1.
        var mesh = SwarmTestMesh(nodes: 3, slots: 4, memoryMB: 1000)
        occupy(&mesh, "n2", slots: 1, memoryMB: 800)
        _ = try runSwarm(&mesh, draft(8, memoryMB: 600))
        #expect(!mesh.runs.contains { $0.node == "n2" }, "a 600 MiB task ran beside brains holding 800 of 1000 MiB")
        mesh.run(for: .seconds(2))
        #expect(mesh.nodes["n2"]!.metadata.free == 3 && mesh.nodes["n2"]!.metadata.freeMemoryMB == 200)
    }
}
