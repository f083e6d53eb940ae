import Testing
@testable import StarlingCore

/// The owner's own free slots take the first tasks of a swarm it creates, in the create's write
/// (`Swarm.assignLocallyAtCreate`): one replication round before the run instead of two, and no
/// reservation or fetch for them.
@Suite("Swarm: the owner starts a new swarm's first tasks itself")
struct SwarmLocalStartTests {
    @Test func aSingleTaskRunsOnItsOwnerInTheCreatesOwnWriteAndOnlyOnceTheReplicasHoldIt() throws {
        var mesh = SwarmTestMesh(nodes: 3, slots: 2)
        let submitted = mesh.now
        let command = mesh.submit(draft(1), at: "n1")
        mesh.run(for: .seconds(5)) { !$0.runs.isEmpty }
        // One replication round after the create reached the owner (1 ms a hop here): the
        // entry's request, the owner's copy to the replicas, their answer. A reservation, a fetch
        // and the assignment's own round would come on top.
        #expect(mesh.now - submitted <= .milliseconds(4), "the task started \(mesh.now - submitted) after the submit")
        let run = try #require(mesh.runs.first)
        let id = run.run.swarm
        let owner = try #require(mesh.owner(of: id))
        #expect(run.node == owner, "the owner had free slots, yet the task ran on \(run.node)")
        #expect(run.run.attempt == 1)
        // When it started, a majority of the replica set (the owner and at least one other)
        // stored that this attempt runs on the owner: a new owner would adopt it.
        let definition = try #require(mesh.entry(id)).definition
        let holding = definition.replicas.filter { name in
            let r = mesh.nodes[name]!.swarm.swarms[id]?.tasks.first
            return r?.state == .running && r?.node == owner && r?.attempt == 1
        }
        #expect(holding.count >= 2, "stored as running by \(holding) only")
        mesh.run(for: .seconds(10)) { $0.isFinished(id) }
        #expect(mesh.entry(id)?.state == .done)
        #expect(mesh.swarmID(of: command) == id)
        #expect(mesh.runs.count == 1)
        #expect(mesh.violations.isEmpty, "\(mesh.violations)")
        // The hold became the run, and the run's end gave the slot back.
        let w = mesh.nodes[owner]!.swarm
        #expect(w.worker.heldAtCreate.isEmpty && w.worker.fetchingSlots == 0 && w.workerFreeSlots == 2)
    }

    @Test func theOwnerTakesNoMoreThanItsFreeSlotsAndTheRestArePlacedAsBefore() throws {
        var mesh = SwarmTestMesh(nodes: 4, slots: 2)
        mesh.runTime = { _ in .milliseconds(60) }
        // A swarm small enough to be taken at create with the test mesh's hold (up to 25 tasks:
        // `smallEnoughToStartAtCreate`).
        let tasks = 24
        #expect(mesh.nodes["n0"]!.swarm.smallEnoughToStartAtCreate(tasks: tasks))
        let command = mesh.submit(draft(tasks), at: "n2")
        mesh.run(for: .milliseconds(50)) { m in m.order.contains { m.nodes[$0]!.swarm.worker.heldAtCreate.count == 2 } }
        #expect(mesh.order.contains { mesh.nodes[$0]!.swarm.worker.heldAtCreate.count == 2 }, "the owner took none at create")
        mesh.run(for: .seconds(5)) { $0.swarmID(of: command) != nil }
        let id = try #require(mesh.swarmID(of: command))
        let owner = try #require(mesh.owner(of: id))
        mesh.run(for: .seconds(60)) { $0.isFinished(id) }
        #expect(mesh.entry(id)?.state == .done)
        #expect(mesh.runs.count == tasks)
        #expect(Set(mesh.runs.map(\.node)).count == 4, "placement no longer spreads: \(mesh.runs.map(\.node))")
        #expect((mesh.peakSandboxes[owner] ?? 0) <= 2)
        // About its share (6 of 24), not only the 2 it took at create: placement counted the
        // slots it held as free, so reservations queued behind its first tasks.
        let onOwner = mesh.runs.filter { $0.node == owner }.count
        #expect(onOwner >= 4, "the owner ran \(onOwner) of \(tasks) tasks: it idled after its first ones")
        #expect(mesh.violations.isEmpty, "\(mesh.violations)")
    }

    /// A brain (the host's other work) takes a slot while the create is being stored: the held
    /// task goes back to pending and is placed at once, not at the owner's next quiet tick
    /// (review13 F1: the create's placement had run while it still counted as running).
    @Test func aHeldTaskThatLostItsRoomIsPlacedAtOnce() throws {
        var mesh = SwarmTestMesh(nodes: 3, slots: 2)
        mesh.runTime = { _ in .milliseconds(5) }
        _ = mesh.submit(draft(2), at: "n0")
        func holder(_ m: SwarmTestMesh) -> PeerName? { m.order.first { m.nodes[$0]!.swarm.worker.heldAtCreate.count == 2 } }
        mesh.run(for: .milliseconds(50)) { holder($0) != nil }
        let owner = try #require(holder(mesh), "the owner took both tasks at create")
        let taken = mesh.now
        mesh.carryOut(mesh.nodes[owner]!.swarm.performed(.occupied(slots: 1, memoryMB: 0), now: mesh.now), at: owner)
        mesh.run(for: .seconds(5)) { $0.runs.count == 2 }
        #expect(mesh.runs.count == 2)
        let retryInterval = mesh.nodes[owner]!.swarm.settings.retryInterval
        #expect(mesh.now - taken < retryInterval / 2, "the task given back started \(mesh.now - taken) after the hold")
        #expect(mesh.runs.allSatisfy { $0.run.attempt == 1 }, "\(mesh.runs.map(\.run.attempt))")
        #expect(mesh.violations.isEmpty, "\(mesh.violations)")
    }

    /// A swarm whose create is not expected stored well within the hold takes nothing at create
    /// (review13 F4): its slots would be kept from other swarms, and the hold would lapse.
    @Test func aSwarmTooLargeForTheHoldIsNotStartedAtCreate() throws {
        var mesh = SwarmTestMesh(nodes: 3, slots: 2)
        mesh.runTime = { _ in .milliseconds(50) }
        let limit = mesh.nodes["n0"]!.swarm.holdLimit
        var large = 1
        while large < 1_000 && mesh.nodes["n0"]!.swarm.smallEnoughToStartAtCreate(tasks: large) { large += 1 }
        #expect(large > 1 && large < 1_000, "a limit of \(limit) fits \(large - 1) tasks")
        let command = mesh.submit(draft(large), at: "n1")
        func owner(_ m: SwarmTestMesh) -> PeerName? {
            m.order.first { n in m.nodes[n]!.swarm.swarms.values.contains { $0.role == .owner } }
        }
        mesh.run(for: .milliseconds(300)) { owner($0) != nil }
        let o = try #require(owner(mesh))
        #expect(mesh.nodes[o]!.swarm.worker.heldAtCreate.isEmpty, "the owner held slots for a \(large)-task swarm")
        mesh.run(for: .seconds(60)) { m in m.swarmID(of: command).map { m.isFinished($0) } ?? false }
        let id = try #require(mesh.swarmID(of: command))
        #expect(mesh.entry(id)?.state == .done)
        #expect(mesh.violations.isEmpty, "\(mesh.violations)")
        // One task fewer is taken at create: the rule, not the mesh, made the difference.
        // (A hold comes before any run: the create's first tasks are held until it is stored.)
        var small = SwarmTestMesh(nodes: 3, slots: 2)
        _ = small.submit(draft(large - 1), at: "n1")
        var sawHold = false
        small.run(for: .milliseconds(300)) { m in
            if m.order.contains(where: { !m.nodes[$0]!.swarm.worker.heldAtCreate.isEmpty }) { sawHold = true }
            return sawHold || !m.runs.isEmpty
        }
        #expect(sawHold, "a \(large - 1)-task swarm was not taken at create either")
    }

    /// Opened by the test: until then the replicas drop every `replicate`.
    final class Gate { var closed = true }

    /// A one-task swarm submitted through n0 whose create the replicas do not store (their
    /// `replicate`s are dropped until `gate` opens): the owner holds a slot for the task it took.
    static func unstoredCreate(tasks: Int = 1, slots: UInt32 = 2) throws -> (mesh: SwarmTestMesh, gate: Gate, owner: PeerName, id: SwarmID, command: UInt64) {
        var mesh = SwarmTestMesh(nodes: 3, slots: slots)
        let gate = Gate()
        mesh.dropRequest = { m, _, _ in
            if case .replicate = m { return gate.closed }
            return false
        }
        let command = mesh.submit(draft(tasks), at: "n0")
        mesh.run(for: .milliseconds(20))
        let owner = try #require(mesh.order.first { !mesh.nodes[$0]!.swarm.swarms.isEmpty })
        let id = try #require(mesh.nodes[owner]!.swarm.swarms.keys.first)
        #expect(mesh.runs.isEmpty)
        #expect(mesh.nodes[owner]!.swarm.worker.heldAtCreate.count == min(tasks, Int(slots)), "the owner holds a slot for each task it took")
        return (mesh, gate, owner, id, command)
    }

    @Test func aSwarmCancelledBeforeItsCreateIsStoredNeverStartsAndGivesTheSlotBack() throws {
        var (mesh, gate, owner, id, command) = try Self.unstoredCreate()
        _ = mesh.cancel(id, at: owner)
        mesh.run(for: .milliseconds(50))
        // Given back at the cancel, not when the create is stored at last.
        #expect(mesh.nodes[owner]!.swarm.worker.heldAtCreate.isEmpty)
        #expect(mesh.nodes[owner]!.swarm.workerFreeSlots == 2)
        #expect(mesh.nodes[owner]!.swarm.swarms[id]?.tasks.first?.state == .cancelled)
        gate.closed = false
        mesh.run(for: .seconds(10)) { $0.isFinished(id) && $0.replies[command] != nil }
        #expect(mesh.replies[command] != nil)
        #expect(mesh.runs.isEmpty, "a task of a swarm cancelled before its create was stored ran")
        #expect(mesh.entry(id)?.state == .cancelled)
        let w = mesh.nodes[owner]!.swarm
        #expect(w.worker.heldAtCreate.isEmpty && w.worker.fetchingSlots == 0 && w.workerFreeSlots == 2)
        #expect(mesh.violations.isEmpty, "\(mesh.violations)")
    }

    /// A replica set that does not store the create (here: it never answers) must not take the
    /// owner's slots out of the mesh: after the hold's limit they are free again, the task is
    /// pending with its attempt not spent, and once the replicas answer it runs, attempt 1.
    @Test func aCreateTheReplicasDoNotStoreGivesTheHeldSlotsBackAfterTheLimit() throws {
        var (mesh, gate, owner, id, _) = try Self.unstoredCreate()
        let limit = mesh.nodes[owner]!.swarm.holdLimit
        mesh.run(for: limit + .milliseconds(150))
        let w = mesh.nodes[owner]!.swarm
        #expect(w.worker.heldAtCreate.isEmpty, "still held after \(limit)")
        #expect(w.workerFreeSlots == 2)
        let record = try #require(w.swarms[id]?.tasks.first)
        #expect(record.state == .pending && record.attempt == 0 && record.node == nil, "\(record)")
        #expect(mesh.runs.isEmpty)
        gate.closed = false
        mesh.run(for: .seconds(10)) { $0.isFinished(id) }
        #expect(mesh.entry(id)?.state == .done)
        #expect(mesh.runs.map(\.run.attempt) == [1], "\(mesh.runs.map(\.run.attempt))")
        #expect(mesh.violations.isEmpty, "\(mesh.violations)")
    }

    /// A hold that lapsed gives its task back first in the queue, where it was taken from
    /// (review13 F6): the swarm's first task still runs in its first wave, not after all the rest.
    @Test func aTaskWhoseHoldLapsedKeepsItsPlaceAtTheHeadOfTheQueue() throws {
        var (mesh, gate, owner, id, _) = try Self.unstoredCreate(tasks: 6, slots: 1)
        mesh.runTime = { _ in .milliseconds(200) }
        let held = try #require(mesh.nodes[owner]!.swarm.worker.heldAtCreate.keys.first).index
        mesh.run(for: mesh.nodes[owner]!.swarm.holdLimit + .milliseconds(150))
        #expect(mesh.nodes[owner]!.swarm.worker.heldAtCreate.isEmpty)
        gate.closed = false
        mesh.run(for: .seconds(10)) { $0.runs.count >= 3 }
        // Three nodes of one slot: the first wave is three tasks.
        let firstWave = mesh.runs.prefix(3).map(\.run.index)
        #expect(firstWave.contains(held), "task \(held), taken at create, ran after \(firstWave)")
        mesh.run(for: .seconds(30)) { $0.isFinished(id) }
        #expect(mesh.entry(id)?.state == .done)
        #expect(mesh.violations.isEmpty, "\(mesh.violations)")
    }

    /// A child swarm is not admitted by its parent's owner when it is created: its owner takes
    /// none of its tasks at create (a refused child must not have started anything).
    @Test func aChildSwarmIsNotStartedAtCreate() throws {
        var mesh = SwarmTestMesh(nodes: 3, slots: 4)
        mesh.runTime = { _ in .seconds(2) }
        let parentCommand = mesh.submit(draft(1), at: "n0")
        mesh.run(for: .milliseconds(300)) { !$0.runs.isEmpty && $0.replies[parentCommand] != nil }
        let parent = try #require(mesh.swarmID(of: parentCommand))
        let spawner = try #require(mesh.runs.first).node
        _ = mesh.submit(draft(3, parent: TaskRef(swarm: parent, task: 0)), at: spawner)
        // The first moment the child's owner holds it: a local start would hold slots then.
        func childOwner(_ m: SwarmTestMesh) -> PeerName? {
            m.order.first { n in m.nodes[n]!.swarm.swarms.values.contains { $0.definition.draft.parent != nil && $0.role == .owner } }
        }
        mesh.run(for: .milliseconds(300)) { childOwner($0) != nil }
        let owner = try #require(childOwner(mesh))
        #expect(mesh.nodes[owner]!.swarm.worker.heldAtCreate.isEmpty, "the child's owner took its tasks at create")
        #expect(mesh.nodes[owner]!.swarm.workerFreeSlots > 0, "no room to take any: the test shows nothing")
        #expect(mesh.violations.isEmpty, "\(mesh.violations)")
    }
}
