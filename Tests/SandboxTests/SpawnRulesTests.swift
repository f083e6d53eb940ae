import Testing
@testable import StarlingSandbox

@Suite struct SpawnRulesTests {
    let parent = SwarmOptions(policy: Policy(allow: ["sh", "true"], maxMemoryMB: 256, secrets: ["A"]),
                              spawn: .init(maxTasks: 10, maxDepth: 2), depth: 0)

    func spec(_ n: Int, policy: Policy? = nil, spawn: SwarmSpec.Spawn? = nil) -> SwarmSpec {
        SwarmSpec(tasks: Array(repeating: TaskSpec(argv: ["true"]), count: n), policy: policy, spawn: spawn)
    }

    @Test func aChildCostsItsTasksAndTheBudgetItIsHanded() throws {
        let admitted = try SpawnRules.admit(spec(3, spawn: .init(maxTasks: 4, maxDepth: 1)), parent: parent, used: 0).get()
        #expect(admitted.cost == 7)
        #expect(admitted.options.depth == 1)
        #expect(admitted.options.spawn == .init(maxTasks: 4, maxDepth: 1))
        // 7 used: 3 left; a child of 3 fits exactly, of 4 does not.
        #expect(try SpawnRules.admit(spec(3), parent: parent, used: 7).get().cost == 3)
        guard case .failure(let refusal) = SpawnRules.admit(spec(4), parent: parent, used: 7) else { Issue.record("admitted"); return }
        #expect(refusal.message.contains("3 of 10 left"))
        // A budget already overspent (say, by two nodes at once) admits nothing and does not trap.
        #expect((try? SpawnRules.admit(spec(1), parent: parent, used: Int.max).get()) == nil)
    }

    @Test func depthIsBoundedByTheParents() {
        #expect((try? SpawnRules.admit(spec(1, spawn: .init(maxTasks: 1, maxDepth: 2)), parent: parent, used: 0).get()) == nil)
        #expect((try? SpawnRules.admit(spec(1, spawn: .init(maxTasks: 1, maxDepth: 0)), parent: parent, used: 0).get()) == nil)
        let leaf = SwarmOptions(spawn: .init(maxTasks: 10, maxDepth: 0), depth: 2)
        #expect(!leaf.allowsSpawning)
        #expect((try? SpawnRules.admit(spec(1), parent: leaf, used: 0).get()) == nil)
        #expect((try? SpawnRules.admit(spec(1), parent: SwarmOptions(), used: 0).get()) == nil)
        let tooDeep = SwarmOptions(spawn: .init(maxTasks: 10, maxDepth: 5), depth: SwarmLimits.maxSpawnDepth)
        #expect((try? SpawnRules.admit(spec(1), parent: tooDeep, used: 0).get()) == nil)
    }

    @Test func theChildsPolicyIsNeverWider() throws {
        let wide = Policy(allow: ["sh", "python3"], net: .host, maxMemoryMB: 4096, secrets: ["A", "B"])
        var shell = spec(1, policy: wide)
        shell.tasks[0].argv = ["sh", "-c", "true"]
        let child = try SpawnRules.admit(shell, parent: parent, used: 0).get().options.policy
        #expect(child == Policy(allow: ["sh"], net: .host, maxMemoryMB: 256, secrets: ["A"]))
        // A task its policy refuses is refused at once.
        var python = spec(1)
        python.tasks[0].argv = ["python3"]
        guard case .failure(let refusal) = SpawnRules.admit(python, parent: parent, used: 0) else { Issue.record("admitted"); return }
        #expect(refusal.message.contains("allow list"))
    }

    @Test func theParentsOwnerCanRecheckASubmittedChild() throws {
        let admitted = try SpawnRules.admit(spec(3, spawn: .init(maxTasks: 2, maxDepth: 1)), parent: parent, used: 0).get()
        #expect(SpawnRules.refusal(child: admitted.options, tasks: 3, parent: parent, used: 0) == nil)
        // Another node's child, seen only by the owner, leaves too little.
        #expect(SpawnRules.refusal(child: admitted.options, tasks: 3, parent: parent, used: 6)?.message.contains("4 of 10 left") == true)
        // Options that were not derived from the parent's are refused: wider, or at the wrong level.
        var wider = admitted.options
        wider.policy?.maxMemoryMB = 4096
        #expect(SpawnRules.refusal(child: wider, tasks: 3, parent: parent, used: 0)?.message.contains("wider") == true)
        var level = admitted.options
        level.depth = 0
        #expect(SpawnRules.refusal(child: level, tasks: 3, parent: parent, used: 0) != nil)
    }
}

/// A child's options and a parent's options come from the store or the wire (whatever peer
/// replicated them): numbers no honest node writes must not trap the node or hand budget back.
@Suite struct SpawnRulesHostileOptionsTests {
    @Test func aChildsCostSaturatesAndNeverGoesBelowItsTasks() {
        let huge = SwarmOptions(spawn: .init(maxTasks: Int.max, maxDepth: 1), depth: 1)
        #expect(SpawnRules.cost(of: huge, tasks: 5) == Int.max)
        let negative = SwarmOptions(spawn: .init(maxTasks: -1_000_000, maxDepth: 1), depth: 1)
        #expect(SpawnRules.cost(of: negative, tasks: 5) == 5)
    }

    @Test func theBudgetUsedSaturatesInsteadOfWrapping() {
        #expect(SpawnRules.used([Int.max, 5]) == Int.max)
        #expect(SpawnRules.used([3, -100, 4]) == 7)
        #expect(SpawnRules.used([]) == 0)
        // A parent with a budget of 10 and children whose costs wrap when summed: nothing is left.
        let parent = SwarmOptions(spawn: .init(maxTasks: 10, maxDepth: 2), depth: 0)
        let used = SpawnRules.used([Int.max, Int.max, 2])
        #expect((try? SpawnRules.admit(SwarmSpec(tasks: [TaskSpec(argv: ["true"])]), parent: parent, used: used).get()) == nil)
    }

    @Test func aParentAtTheDeepestDepthAnIntCanHoldIsRefusedWithoutTrapping() {
        let parent = SwarmOptions(spawn: .init(maxTasks: 10, maxDepth: 2), depth: Int.max)
        guard case .failure(let refusal) = SpawnRules.admit(SwarmSpec(tasks: [TaskSpec(argv: ["true"])]), parent: parent, used: 0) else {
            Issue.record("admitted")
            return
        }
        #expect(refusal.message.contains("depth"))
    }
}
