@testable import StarlingCore
import Testing

/// Child swarms at the parent's owner: the spawn budget checked there against every child it
/// holds, and child links that survive a restart of every holder of the parent.
@Suite struct SwarmChildTests {
    /// A budget of `budget` tasks per parent: what `SpawnAdmission.rule` does with SwarmOptions,
    /// reduced to the count (the core sees options as bytes).
    static func budgetRule(_ budget: UInt64) -> ChildRule {
        { request in
            let cost = UInt64(request.childTasks)
            return request.used + cost <= budget
                ? .admit(cost: cost)
                : .refuse("spawn budget exceeded: this child needs \(cost); \(budget - min(budget, request.used)) of \(budget) left")
        }
    }

    /// Starts a parent of two long tasks, one per node (1 slot each), and gives the nodes that
    /// run them with the task each runs.
    static func parentRunningOnTwoNodes(_ mesh: inout SwarmTestMesh) throws -> (parent: SwarmID, spawners: [(node: PeerName, task: UInt32)]) {
        let command = mesh.submit(draft(2), at: "n0")
        mesh.run(for: .milliseconds(300)) { $0.replies[command] != nil }
        let parent = try #require(mesh.swarmID(of: command))
        mesh.run(for: .seconds(2)) { m in m.order.filter { m.nodes[$0]!.sandboxes.keys.contains { $0.swarm == parent } }.count == 2 }
        let spawners = mesh.order.compactMap { n -> (node: PeerName, task: UInt32)? in
            mesh.nodes[n]!.sandboxes.keys.first { $0.swarm == parent }.map { (n, $0.index) }
        }
        try #require(spawners.count == 2, "the parent's two tasks run on two nodes")
        return (parent, spawners)
    }

    @Test func twoTasksOnTwoNodesSpawningAtOnceCannotOverspendTheParentsBudget() throws {
        var mesh = SwarmTestMesh(nodes: 3, slots: 1)
        for name in mesh.order { mesh.nodes[name]!.swarm.childRule = Self.budgetRule(5) }
        mesh.runTime = { _ in .seconds(30) }
        let (parent, spawners) = try Self.parentRunningOnTwoNodes(&mesh)
        // In the same instant, each task asks for 3 of the parent's 5; neither entry can know of
        // the other's child.
        let a = mesh.submit(draft(3, parent: TaskRef(swarm: parent, task: spawners[0].task)), at: spawners[0].node)
        let b = mesh.submit(draft(3, parent: TaskRef(swarm: parent, task: spawners[1].task)), at: spawners[1].node)
        mesh.run(for: .seconds(2)) { $0.replies[a] != nil && $0.replies[b] != nil }
        let replies = [try #require(mesh.replies[a]), try #require(mesh.replies[b])]
        let admitted = replies.compactMap { reply -> SwarmID? in if case .submitted(let id, _) = reply { return id } else { return nil } }
        let refusals = replies.compactMap { reply -> String? in if case .forbidden(let why) = reply { return why } else { return nil } }
        #expect(admitted.count == 1, "exactly one child fits the budget: \(replies)")
        #expect(refusals.count == 1 && refusals[0].contains("spawn budget exceeded"), "the other is refused with the reason: \(replies)")
        #expect(mesh.entry(parent)?.children.map(\.child) == admitted)
        #expect(mesh.entry(parent)?.children.map(\.cost) == [3])
        // The refused child was created before the parent's owner saw it: it is cancelled, and
        // never runs a task after that.
        let refusedChild = mesh.order.lazy.compactMap { n in mesh.nodes[n]!.swarm.swarms.keys.first { $0 != parent && !admitted.contains($0) } }.first
        let refused = try #require(refusedChild)
        mesh.run(for: .seconds(2)) { $0.isFinished(refused) }
        #expect(mesh.entry(refused)?.state == .cancelled)
        #expect(mesh.violations.isEmpty, "\(mesh.violations)")
    }

    @Test func aChildNoticeRetriedIsAdmittedOnceAndChargedOnce() throws {
        var mesh = SwarmTestMesh(nodes: 3, slots: 1)
        for name in mesh.order { mesh.nodes[name]!.swarm.childRule = Self.budgetRule(5) }
        mesh.runTime = { _ in .seconds(30) }
        let (parent, spawners) = try Self.parentRunningOnTwoNodes(&mesh)
        let first = mesh.submit(draft(2, parent: TaskRef(swarm: parent, task: spawners[0].task)), at: spawners[0].node)
        mesh.run(for: .seconds(1)) { $0.replies[first] != nil }
        let second = mesh.submit(draft(3, parent: TaskRef(swarm: parent, task: spawners[1].task)), at: spawners[1].node)
        mesh.run(for: .seconds(1)) { $0.replies[second] != nil }
        #expect(mesh.swarmID(of: first) != nil && mesh.swarmID(of: second) != nil, "2 + 3 fit a budget of 5")
        let third = mesh.submit(draft(1, parent: TaskRef(swarm: parent, task: spawners[0].task)), at: spawners[0].node)
        mesh.run(for: .seconds(1)) { $0.replies[third] != nil }
        guard case .forbidden = mesh.replies[third] else {
            Issue.record("a sixth task is over the budget: \(String(describing: mesh.replies[third]))")
            return
        }
    }

    @Test func childLinksSurviveARestartOfEveryHolderOfTheParent() throws {
        var mesh = SwarmTestMesh(nodes: 3, slots: 2)
        mesh.runTime = { _ in .seconds(600) }
        let (parent, child) = try mesh.parentWithAChild()
        #expect(mesh.entry(parent)?.children.map(\.child) == [child])
        // Every node (the parent's whole replica set) goes down and comes back from its store.
        for name in mesh.order { mesh.crash(name) }
        for name in mesh.order { mesh.restart(name) }
        mesh.run(for: .seconds(40)) { $0.owner(of: parent) != nil && $0.owner(of: child) != nil }
        #expect(mesh.entry(parent)?.children.map(\.child) == [child], "the parent's owner restored its child link")
        let cancel = mesh.cancel(parent, at: "n1")
        mesh.run(for: .seconds(10)) { $0.isFinished(parent) && $0.isFinished(child) && $0.replies[cancel] != nil }
        #expect(mesh.replies[cancel] == .cancelled(parent))
        #expect(mesh.entry(child)?.state == .cancelled, "the cancel of the parent reached the child after the restart")
    }
}
