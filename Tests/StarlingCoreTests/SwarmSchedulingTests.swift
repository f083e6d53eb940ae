import Testing
@testable import StarlingCore

@Suite("Swarm scheduling")
struct SwarmSchedulingTests {
    /// Submits through `entry` and runs until the swarm is finished (or `limit`).
    func runSwarm(_ mesh: inout SwarmTestMesh, _ d: SwarmDraft, at entry: PeerName = "n1",
                  limit: Duration = .seconds(60)) throws -> SwarmID {
        let command = mesh.submit(d, at: entry)
        mesh.run(for: .seconds(5)) { $0.replies[command] != nil }
        let id = try #require(mesh.swarmID(of: command), "submit answered \(String(describing: mesh.replies[command]))")
        mesh.run(for: limit) { $0.isFinished(id) }
        return id
    }

    @Test func everyTaskRunsOnceAndSucceedsAcrossTheMesh() throws {
        var mesh = SwarmTestMesh(nodes: 4, slots: 2)
        let id = try runSwarm(&mesh, draft(40))
        let e = try #require(mesh.entry(id))
        #expect(e.state == .done)
        #expect(e.tasks.allSatisfy { $0.state == .succeeded && $0.attempt == 1 && $0.result != nil })
        // finishSeq numbers completions 1...n at the owner.
        #expect(Set(e.tasks.map(\.finishSeq)) == Set(1...40))
        #expect(mesh.runs.count == 40)
        #expect(Set(mesh.runs.map(\.node)).count == 4, "tasks ran on \(Set(mesh.runs.map(\.node)))")
        #expect(mesh.violations.isEmpty, "\(mesh.violations)")
        // Replicas hold the same records, once the last changes reached them.
        mesh.run(for: .seconds(1))
        for name in e.definition.replicas {
            #expect(mesh.nodes[name]!.swarm.swarms[id]?.tasks == e.tasks, "replica \(name)")
        }
    }

    @Test func placementHonoursSlotsAndMemory() throws {
        // n3 has room for no 400 MiB task; n0..n2 for two at once by memory, but n2 has one slot.
        var mesh = SwarmTestMesh(nodes: 4, slots: 3, memoryMB: 900,
                                 perNode: ["n2": (1, 900), "n3": (4, 300)])
        let id = try runSwarm(&mesh, draft(30, memoryMB: 400))
        #expect(mesh.entry(id)?.state == .done)
        #expect(mesh.violations.isEmpty, "\(mesh.violations)")
        #expect(!mesh.runs.contains { $0.node == "n3" }, "a 400 MiB task went to a node with 300 MiB")
        #expect(mesh.runs.count == 30)
    }

    @Test func aSwarmNoMemberCanRunIsRefusedAtOnce() {
        var mesh = SwarmTestMesh(nodes: 3, memoryMB: 1000)
        let command = mesh.submit(draft(2, memoryMB: 4000), at: "n0")
        guard case .rejected(let reason) = mesh.replies[command] else {
            Issue.record("not rejected (the request's fault, a 400): \(String(describing: mesh.replies[command]))")
            return
        }
        #expect(reason.contains("4000 MiB"))
    }

    @Test func powerOfTwoChoicesSpreadsLoad() throws {
        // 10 nodes × 4 slots, 40 long tasks: all should run at once, spread over the nodes.
        var mesh = SwarmTestMesh(nodes: 10, slots: 4)
        mesh.runTime = { _ in .seconds(5) }
        let command = mesh.submit(draft(40), at: "n3")
        mesh.run(for: .seconds(2))
        let id = try #require(mesh.swarmID(of: command))
        let perNode = mesh.order.map { name in mesh.nodes[name]!.sandboxes.count }
        #expect(perNode.reduce(0, +) >= 36, "running per node \(perNode)")
        #expect(perNode.max()! <= 4)
        #expect(perNode.filter { $0 >= 2 }.count >= 8, "load not spread: \(perNode)")
        mesh.run(for: .seconds(30)) { $0.isFinished(id) }
        #expect(mesh.entry(id)?.state == .done)
        #expect(mesh.violations.isEmpty, "\(mesh.violations)")
    }

    @Test func lateBindingAOneSlotMeshRunsTasksOneAfterAnother() throws {
        var mesh = SwarmTestMesh(nodes: 1, slots: 1, replication: 1)
        let id = try runSwarm(&mesh, draft(6), at: "n0")
        #expect(mesh.entry(id)?.state == .done)
        #expect(mesh.runs.count == 6)
        #expect(mesh.violations.isEmpty, "\(mesh.violations)")
        // Reservations went out for all six; the worker pulled one at a time.
        #expect(mesh.nodes["n0"]!.swarm.worker.reservations.isEmpty)
    }

    @Test func aLateResultFromANodeDeclaredDeadIsRefusedAndTheTaskIsRecordedOnce() throws {
        var mesh = SwarmTestMesh(nodes: 3, slots: 2)
        mesh.runTime = { _ in .milliseconds(500) }
        let command = mesh.submit(draft(6), at: "n0")
        mesh.run(for: .milliseconds(100)) { $0.replies[command] != nil }
        let id = try #require(mesh.swarmID(of: command))
        mesh.run(for: .milliseconds(100))
        let owner = try #require(mesh.owner(of: id))
        let victim = try #require(mesh.order.first { $0 != owner && !mesh.nodes[$0]!.sandboxes.isEmpty })
        let itsTasks = Set(mesh.nodes[victim]!.sandboxes.keys.map(\.index))
        #expect(!itsTasks.isEmpty)
        // SWIM wrongly declares the victim dead; it goes on running and reports late.
        mesh.declare(victim, .dead)
        mesh.run(for: .seconds(20)) { $0.isFinished(id) }
        let e = try #require(mesh.entry(id))
        #expect(e.state == .done)
        for index in itsTasks {
            let record = e.tasks[Int(index)]
            #expect(record.state == .succeeded)
            #expect(record.node != victim, "task \(index) recorded from the node declared dead")
            // The recorded result is the run of the attempt recorded, not the victim's late one.
            #expect(record.result == Array("ok \(index) on \(record.node ?? "?")".utf8), "task \(index)")
            #expect(record.attempt == 2)
        }
        // Exactly once: one final record stored per task at the owner.
        let finals = mesh.nodes[owner]!.stores.compactMap { change -> UInt32? in
            if case .task(let s, let index, let r) = change, s == id, r.state.isFinal { return index }
            return nil
        }
        #expect(finals.sorted() == Array(0..<6))
        // The victim's late results were answered (stale), so it holds nothing.
        #expect(mesh.nodes[victim]!.swarm.worker.held.isEmpty)
    }

    @Test func suspicionAloneMovesNothing() throws {
        var mesh = SwarmTestMesh(nodes: 3, slots: 2)
        mesh.runTime = { _ in .seconds(1) }
        let command = mesh.submit(draft(6), at: "n0")
        mesh.run(for: .milliseconds(200)) { $0.replies[command] != nil }
        let id = try #require(mesh.swarmID(of: command))
        mesh.run(for: .milliseconds(200))
        let owner = try #require(mesh.owner(of: id))
        let victim = try #require(mesh.order.first { $0 != owner && !mesh.nodes[$0]!.sandboxes.isEmpty })
        mesh.declare(victim, .suspect)
        mesh.run(for: .milliseconds(500))
        mesh.declare(victim, .alive)
        mesh.run(for: .seconds(10)) { $0.isFinished(id) }
        let e = try #require(mesh.entry(id))
        #expect(e.state == .done)
        #expect(e.tasks.allSatisfy { $0.attempt == 1 }, "a task moved on suspicion")
        #expect(mesh.runs.count == 6)
    }

    @Test func tasksOfACrashedWorkerRetryElsewhereUpToMaxAttempts() throws {
        var mesh = SwarmTestMesh(nodes: 4, slots: 2)
        mesh.runTime = { _ in .milliseconds(300) }
        // Every run on n3 fails; others succeed.
        mesh.outcome = { node, _ in node == "n3" ? .failed : .succeeded }
        let command = mesh.submit(draft(12, maxAttempts: 2), at: "n0")
        mesh.run(for: .milliseconds(150)) { $0.replies[command] != nil }
        let id = try #require(mesh.swarmID(of: command))
        mesh.run(for: .milliseconds(100))
        let owner = try #require(mesh.owner(of: id))
        let victim = try #require(mesh.order.first { $0 != owner && $0 != "n3" && !mesh.nodes[$0]!.sandboxes.isEmpty })
        mesh.crash(victim)
        mesh.declare(victim, .dead)
        mesh.run(for: .seconds(30)) { $0.isFinished(id) }
        let e = try #require(mesh.entry(id))
        #expect(e.state == .done)
        for (i, t) in e.tasks.enumerated() {
            #expect(t.attempt <= 2, "task \(i) ran \(t.attempt) times")
            #expect(t.state.isFinal)
            if t.state == .failed { #expect(t.attempt == 2, "task \(i) failed early") }
        }
        #expect(!mesh.runs.contains { $0.node == victim && $0.run.attempt > 1 && mesh.runs.firstIndex { $0.node == victim } == nil })
        #expect(mesh.violations.isEmpty, "\(mesh.violations)")
    }

    @Test func aFailedRunIsRetriedAndDeniedIsFinal() throws {
        var mesh = SwarmTestMesh(nodes: 2, slots: 2, replication: 2)
        mesh.outcome = { _, run in run.index == 0 ? .failed : (run.index == 1 ? .denied : .succeeded) }
        let id = try runSwarm(&mesh, draft(3, maxAttempts: 3), at: "n0")
        let e = try #require(mesh.entry(id))
        #expect(e.tasks[0].state == .failed && e.tasks[0].attempt == 3)
        #expect(e.tasks[1].state == .failed && e.tasks[1].attempt == 1)
        #expect(e.tasks[2].state == .succeeded && e.tasks[2].attempt == 1)
    }

    @Test func aNewOwnerAdoptsRunningTasksAndFinishesTheSwarm() throws {
        var mesh = SwarmTestMesh(nodes: 4, slots: 3)
        mesh.runTime = { _ in .seconds(2) }
        let command = mesh.submit(draft(8), at: "n0")
        mesh.run(for: .milliseconds(200)) { $0.replies[command] != nil }
        let id = try #require(mesh.swarmID(of: command))
        mesh.run(for: .milliseconds(300))
        let oldOwner = try #require(mesh.owner(of: id))
        let definition = try #require(mesh.entry(id)).definition
        let runningElsewhere = mesh.order.filter { $0 != oldOwner }.flatMap { n in mesh.nodes[n]!.sandboxes.keys.map(\.index) }
        #expect(runningElsewhere.count >= 4)
        let runsBefore = mesh.runs.count
        mesh.crash(oldOwner)
        mesh.declare(oldOwner, .dead)
        mesh.run(for: .seconds(30)) { $0.isFinished(id) }
        let newOwner = try #require(mesh.owner(of: id))
        #expect(newOwner == definition.replicas[1])
        let e = try #require(mesh.entry(id))
        #expect(e.state == .done)
        #expect(e.epoch == 2)
        #expect(e.tasks.allSatisfy { $0.state == .succeeded })
        // Tasks running on live nodes were adopted, not started again.
        for index in runningElsewhere {
            #expect(mesh.runs.filter { $0.run.index == index }.count == 1, "task \(index) restarted")
        }
        // Only the old owner's own tasks ran again (attempt 2).
        let reruns = mesh.runs[runsBefore...].filter { $0.run.attempt > 1 }
        #expect(reruns.count == mesh.runs[..<runsBefore].filter { $0.node == oldOwner }.count)
        #expect(mesh.violations.isEmpty, "\(mesh.violations)")
    }

    @Test func cancelKillsRunningTasksAndNeverStartsPendingOnes() throws {
        var mesh = SwarmTestMesh(nodes: 3, slots: 1)
        mesh.runTime = { _ in .seconds(5) }
        let command = mesh.submit(draft(10), at: "n2")
        mesh.run(for: .milliseconds(300)) { $0.replies[command] != nil }
        let id = try #require(mesh.swarmID(of: command))
        mesh.run(for: .milliseconds(300))
        let running = mesh.order.reduce(0) { $0 + mesh.nodes[$1]!.sandboxes.count }
        #expect(running == 3)
        let runsBefore = mesh.runs.count
        let cancel = mesh.cancel(id, at: "n1")
        mesh.run(for: .seconds(3)) { $0.isFinished(id) && $0.replies[cancel] != nil }
        #expect(mesh.replies[cancel] == .cancelled(id))
        #expect(mesh.kills.count == 3)
        #expect(mesh.runs.count == runsBefore, "a task started after the cancel")
        let e = try #require(mesh.entry(id))
        #expect(e.state == .cancelled)
        #expect(e.tasks.allSatisfy { $0.state == .cancelled })
        // The killed ones carry their (killed) result; the pending ones none.
        #expect(e.tasks.filter { $0.result != nil }.count == 3)
        mesh.run(for: .seconds(2))
        #expect(mesh.runs.count == runsBefore)
    }

    @Test func cancellingAParentCancelsItsChildren() throws {
        var mesh = SwarmTestMesh(nodes: 3, slots: 2)
        mesh.runTime = { _ in .seconds(10) }
        let (parent, child) = try mesh.parentWithAChild()
        #expect(mesh.entry(parent)?.children.map(\.child) == [child])
        let cancel = mesh.cancel(parent, at: "n2")
        mesh.run(for: .seconds(5)) { $0.isFinished(parent) && $0.isFinished(child) && $0.replies[cancel] != nil }
        #expect(mesh.replies[cancel] == .cancelled(parent))
        #expect(mesh.entry(child)?.state == .cancelled)
        #expect(mesh.entry(parent)?.state == .cancelled)
    }

    @Test func aRestartedNodeRestoresItsSwarms() throws {
        var mesh = SwarmTestMesh(nodes: 1, slots: 1, replication: 1)
        mesh.runTime = { _ in .seconds(1) }
        let command = mesh.submit(draft(3), at: "n0")
        mesh.run(for: .milliseconds(1500)) { $0.replies[command] != nil && $0.entry($0.swarmID(of: command)!)?.tasks[0].state == .succeeded }
        let id = try #require(mesh.swarmID(of: command))
        // Rebuild the stored rows the way a store would (last write wins).
        var definition: SwarmDefinition?
        var epoch: UInt32 = 0
        var state = SwarmState.running
        var records = Array(repeating: TaskRecord(), count: 3)
        for change in mesh.nodes["n0"]!.stores {
            switch change {
            case .swarm(let d, let e, let s) where d.id == id: definition = d; epoch = e; state = s
            case .task(let s, let index, let r) where s == id: records[Int(index)] = r
            case .swarmState(let s, let st, let e) where s == id: state = st; epoch = e
            default: break
            }
        }
        var fresh = Swarm(settings: mesh.nodes["n0"]!.swarm.settings, myName: "n0", seed: 99, now: mesh.now)
        _ = fresh.restore([(try #require(definition), epoch: epoch, state: state, tasks: records)], now: mesh.now)
        mesh.crash("n0")
        mesh.nodes["n0"] = .init(swarm: fresh, metadata: mesh.nodes["n0"]!.metadata)
        mesh.deliverView(of: "n0", status: .alive, to: "n0")
        mesh.run(for: .seconds(20)) { $0.isFinished(id) }
        let e = try #require(mesh.entry(id))
        #expect(e.state == .done)
        #expect(e.epoch == epoch + 1)
        #expect(e.tasks.allSatisfy { $0.state == .succeeded })
        #expect(e.tasks[0].attempt == 1, "a task recorded before the restart ran again")
    }

    /// Under a partition both sides may own the swarm and a task may run on both; after the
    /// heal one owner (the first of the replica set) merges: every task ends final once,
    /// completions recorded on either side are kept, and finishSeq stays unique.
    @Test func aHealedPartitionEndsWithOneOwnerAndEveryTaskFinalOnce() throws {
        var mesh = SwarmTestMesh(nodes: 5, slots: 2)
        mesh.runTime = { _ in .milliseconds(700) }
        let command = mesh.submit(draft(30), at: "n1")
        mesh.run(for: .milliseconds(300)) { $0.replies[command] != nil }
        let id = try #require(mesh.swarmID(of: command))
        mesh.run(for: .milliseconds(200))
        let owner = try #require(mesh.owner(of: id))
        // Cut the owner off; each side declares the other dead.
        mesh.isolated = [owner]
        let others = mesh.order.filter { $0 != owner }
        mesh.declare(owner, .dead)
        for other in others { mesh.deliverView(of: other, status: .dead, to: owner) }
        mesh.run(for: .seconds(2))
        let owners = mesh.order.filter { mesh.nodes[$0]!.swarm.swarms[id]?.role == .owner }
        #expect(owners.count == 2, "both sides own during the partition: \(owners) roles \(mesh.order.map { ($0, String(describing: mesh.nodes[$0]!.swarm.swarms[id]?.role), mesh.nodes[$0]!.swarm.swarms[id]?.epoch ?? 0) }) replicas \(mesh.entry(id)?.definition.replicas ?? [])")
        // Heal.
        mesh.isolated = []
        mesh.declare(owner, .alive)
        for other in others { mesh.deliverView(of: other, status: .alive, to: owner) }
        mesh.run(for: .seconds(60)) { $0.isFinished(id) }
        mesh.run(for: .seconds(1))
        let after = mesh.order.filter { mesh.nodes[$0]!.swarm.swarms[id]?.role == .owner }
        #expect(after == [owner], "one owner after the heal, the first of the replica set")
        let e = try #require(mesh.entry(id))
        #expect(e.state == .done)
        #expect(e.epoch >= 3)
        #expect(e.tasks.allSatisfy { $0.state == .succeeded && $0.result != nil })
        let seqs = e.tasks.map(\.finishSeq)
        #expect(Set(seqs).count == seqs.count, "finishSeq not unique: \(seqs.sorted())")
        for name in e.definition.replicas where name != owner {
            #expect(mesh.nodes[name]!.swarm.swarms[id]?.tasks == e.tasks, "replica \(name) differs")
        }
        // Tasks that ran on both sides at once are allowed under a partition; slots never.
        #expect(mesh.violations.allSatisfy { $0.contains(" runs on ") && !$0.contains("slots") }, "\(mesh.violations)")
        #expect(mesh.nodes.values.allSatisfy { $0.swarm.worker.held.isEmpty })
    }

    @Test func twoThousandTasksOverTwentyNodesWithACrash() throws {
        var mesh = SwarmTestMesh(nodes: 20, slots: 4)
        mesh.runTime = { run in .milliseconds(20 + Int64(run.index % 7) * 10) }
        let command = mesh.submit(draft(2000), at: "n5")
        mesh.run(for: .seconds(1)) { $0.replies[command] != nil }
        let id = try #require(mesh.swarmID(of: command))
        mesh.run(for: .milliseconds(300))
        let owner = try #require(mesh.owner(of: id))
        let victim = try #require(mesh.order.first { $0 != owner && !mesh.nodes[$0]!.sandboxes.isEmpty })
        mesh.crash(victim)
        mesh.declare(victim, .dead)
        mesh.run(for: .seconds(120)) { $0.isFinished(id) }
        let e = try #require(mesh.entry(id))
        #expect(e.state == .done)
        #expect(e.tasks.allSatisfy { $0.state == .succeeded })
        #expect(Set(e.tasks.map(\.finishSeq)).count == 2000)
        #expect(mesh.violations.isEmpty, "\(mesh.violations.prefix(5))")
        let perNode = Dictionary(grouping: mesh.runs, by: \.node).mapValues(\.count)
        #expect(perNode.count == 20, "\(perNode)")
    }

    /// The replica that comes first in the set restarts with a stale store while a later one
    /// owns the swarm: it takes over only after syncing, the later owner stops assigning as soon
    /// as it is asked, and no task runs twice or goes back to an earlier attempt.
    @Test func aRestartedFirstReplicaTakesOverFromTheActingOwnerWithoutRunningTasksTwice() throws {
        var mesh = SwarmTestMesh(nodes: 5, slots: 2)
        mesh.runTime = { _ in .milliseconds(600) }
        let command = mesh.submit(draft(40), at: "n4")
        mesh.run(for: .milliseconds(300)) { $0.replies[command] != nil }
        let id = try #require(mesh.swarmID(of: command))
        let replicas = try #require(mesh.entry(id)).definition.replicas
        let (first, second, third) = (replicas[0], replicas[1], replicas[2])
        mesh.run(for: .milliseconds(200))
        mesh.crash(second)
        mesh.declare(second, .dead)
        mesh.run(for: .milliseconds(400))
        mesh.crash(first)
        mesh.declare(first, .dead)
        mesh.run(for: .milliseconds(1500))
        #expect(mesh.owner(of: id) == third)
        // The second comes back with its store from before: it precedes the third, which hears
        // of it only later (gossip is slower than the restarted node's own view).
        mesh.restart(second, announce: false)
        mesh.run(for: .milliseconds(400))
        mesh.declare(second, .alive)
        mesh.run(for: .seconds(60)) { $0.isFinished(id) }
        mesh.run(for: .seconds(1))
        #expect(mesh.owner(of: id) == second)
        let e = try #require(mesh.entry(id))
        #expect(e.state == .done)
        #expect(e.tasks.allSatisfy { $0.state == .succeeded })
        #expect(mesh.violations.isEmpty, "\(mesh.violations.prefix(5)) replicas \(replicas) runs of 0: \(mesh.runs.filter { $0.run.index == 0 }.map { ($0.node, $0.run.attempt) })")
        // Attempts of a task only go up, run after run.
        var lastAttempt: [UInt32: UInt16] = [:]
        for r in mesh.runs {
            #expect(r.run.attempt > lastAttempt[r.run.index] ?? 0, "task \(r.run.index) attempt \(r.run.attempt) after \(lastAttempt[r.run.index] ?? 0)")
            lastAttempt[r.run.index] = r.run.attempt
        }
        // The recorded result is from the recorded attempt's own run.
        for (i, t) in e.tasks.enumerated() {
            #expect(t.result == Array("ok \(i) on \(t.node ?? "?")".utf8))
            #expect(mesh.runs.contains { $0.run.index == UInt32(i) && $0.run.attempt == t.attempt && $0.node == t.node })
        }
    }
}
