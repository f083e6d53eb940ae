/// What a swarm carries besides its tasks (the opaque `options` bytes of a SwarmDraft, as JSON):
/// the policy its tasks run under and what they may spawn. A child swarm's options are derived
/// from its parent's by `SpawnRules.admit`, never given by the child alone.
public struct SwarmOptions: Codable, Sendable, Equatable {
    /// Narrows the node's policy for every task of the swarm (for a child: already narrowed by
    /// every ancestor's).
    public var policy: Policy?
    /// What the swarm's tasks may create through `$STARLING_SOCKET`: `maxTasks` tasks in all
    /// (children's tasks plus the budgets handed down to them), at most `maxDepth` levels below
    /// this swarm. nil: no socket.
    public var spawn: SwarmSpec.Spawn?
    /// Runs of one task before it counts as failed.
    public var maxAttempts: Int
    /// Levels below the swarm a client submitted (0 for it, 1 for its children, ...).
    public var depth: Int

    public init(policy: Policy? = nil, spawn: SwarmSpec.Spawn? = nil, maxAttempts: Int = 1, depth: Int = 0) {
        self.policy = policy
        self.spawn = spawn
        self.maxAttempts = maxAttempts
        self.depth = depth
    }

    enum CodingKeys: String, CodingKey { case policy, spawn, maxAttempts, depth }

    /// `maxAttempts` and `depth` may be absent (1 and 0): options written before they existed.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        policy = try c.decodeIfPresent(Policy.self, forKey: .policy)
        spawn = try c.decodeIfPresent(SwarmSpec.Spawn.self, forKey: .spawn)
        maxAttempts = try c.decodeIfPresent(Int.self, forKey: .maxAttempts) ?? 1
        depth = try c.decodeIfPresent(Int.self, forKey: .depth) ?? 0
    }

    /// Whether tasks of this swarm get a socket: a budget of at least one task, one level deep.
    public var allowsSpawning: Bool {
        guard let spawn else { return false }
        return spawn.maxTasks > 0 && spawn.maxDepth > 0
    }
}

/// Why a child swarm is refused; the socket answers 403 with `message`.
public struct SpawnRefusal: Error, Equatable, CustomStringConvertible {
    public var message: String
    public init(_ m: String) { message = m }
    public var description: String { message }
}

/// The rules a task's child swarm must pass, in one place and without I/O, so the socket and any
/// other caller (the owner of the parent swarm, when the protocol re-checks) apply the same.
///
/// Budget: a child costs its own tasks plus the spawn budget it is handed, reserved from the
/// parent swarm's `maxTasks` at once. So a swarm's whole subtree is bounded by its budget without
/// any ancestor tracking its grandchildren, and a swarm's use is the sum of its stored children's
/// costs: derived from what is replicated, it survives a task retried on another node.
public enum SpawnRules {
    /// What a child swarm costs its parent's budget. The options come from the store, that is
    /// from whichever peer replicated the child: a negative term counts as 0 (it would hand budget
    /// back) and a sum past `Int.max` stays there (it would trap the node).
    public static func cost(of child: SwarmOptions, tasks: Int) -> Int {
        let (sum, overflow) = max(0, tasks).addingReportingOverflow(max(0, child.spawn?.maxTasks ?? 0))
        return overflow ? Int.max : sum
    }

    /// The budget the children with these costs use, saturating at `Int.max` (a wrapped sum would
    /// read as a budget barely used).
    public static func used(_ costs: some Sequence<Int>) -> Int {
        costs.reduce(0) { total, cost in
            let (sum, overflow) = total.addingReportingOverflow(max(0, cost))
            return overflow ? Int.max : sum
        }
    }

    /// Admits `request` as a child of a swarm with `parent` options whose stored children already
    /// use `used` of its budget, and gives the child's options and cost. The child's policy is the
    /// parent's narrowed by the request's (never wider); its spawn budget and depth must fit in
    /// what the parent has left; asking for more is refused, not silently cut.
    public static func admit(_ request: SwarmSpec, parent: SwarmOptions, used: Int) -> Result<(options: SwarmOptions, cost: Int), SpawnRefusal> {
        let policy: Policy? = switch (parent.policy, request.policy) {
        case (nil, nil): nil
        case (let p?, let r): p.narrowed(by: r)
        case (nil, let r?): r
        }
        let child = SwarmOptions(policy: policy, spawn: request.spawn.map { .init(maxTasks: $0.maxTasks, maxDepth: $0.maxDepth) },
                                 maxAttempts: request.maxAttempts ?? 1,
                                 // A parent too deep is refused below; its depth (from a peer) may be Int.max.
                                 depth: parent.depth < SwarmLimits.maxSpawnDepth ? parent.depth + 1 : parent.depth)
        if let refusal = refusal(child: child, tasks: request.tasks.count, parent: parent, used: used) { return .failure(refusal) }
        // Refuse at once a task its own policy would refuse wherever it ran.
        if let policy {
            for (i, task) in request.tasks.enumerated() {
                if case .failure(let denial) = policy.decide(task) {
                    return .failure(SpawnRefusal("tasks[\(i)]: \(denial.description)"))
                }
            }
        }
        return .success((child, cost(of: child, tasks: request.tasks.count)))
    }

    /// Why a child swarm with options `child` and `tasks` tasks may not be created under a swarm
    /// with `parent` options that has spent `used`; nil when it may. `admit` uses it, and so can
    /// the parent swarm's owner, to re-check a submitted child against every child it knows of
    /// (the socket's check sees only the children its own node can find).
    public static func refusal(child: SwarmOptions, tasks: Int, parent: SwarmOptions, used: Int) -> SpawnRefusal? {
        guard let budget = parent.spawn, parent.allowsSpawning else { return SpawnRefusal("this task's swarm may not spawn") }
        guard parent.depth < SwarmLimits.maxSpawnDepth else {
            return SpawnRefusal("spawn depth exceeded: the swarm is already \(parent.depth) levels deep")
        }
        guard child.depth == parent.depth + 1 else { return SpawnRefusal("a child swarm is one level below its parent") }
        let levelsLeft = budget.maxDepth - 1
        if let asked = child.spawn {
            guard asked.maxDepth <= levelsLeft else {
                return SpawnRefusal("spawn depth exceeded: the child asks for maxDepth \(asked.maxDepth), \(levelsLeft) level(s) are left below it")
            }
            guard asked.maxDepth > 0 || asked.maxTasks == 0 else {
                return SpawnRefusal("spawn depth exceeded: the child's tasks may spawn \(asked.maxTasks) tasks but no level is left below it")
            }
        }
        if let ceiling = parent.policy, ceiling.narrowed(by: child.policy) != child.policy {
            return SpawnRefusal("the child's policy is wider than its parent's")
        }
        // Both terms are bounded by SwarmLimits (10,000 tasks, a budget of 100,000); a `used` past
        // the budget (two nodes at once) leaves 0, without overflow.
        let cost = cost(of: child, tasks: tasks)
        let left = max(0, budget.maxTasks - max(0, used))
        guard cost <= left else {
            return SpawnRefusal("spawn budget exceeded: this child needs \(cost) (\(tasks) tasks + a spawn budget of \(child.spawn?.maxTasks ?? 0)); \(left) of \(budget.maxTasks) left")
        }
        return nil
    }
}
