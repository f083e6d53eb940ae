/// A batch of tasks submitted together (interface.md's SwarmSpec), the body of `POST /v1/swarms`.
public struct SwarmSpec: Codable, Sendable, Equatable {
    /// How many descendants the swarm's tasks may create through `$STARLING_SOCKET`, and how deep.
    public struct Spawn: Codable, Sendable, Equatable {
        public var maxTasks: Int
        public var maxDepth: Int

        public init(maxTasks: Int, maxDepth: Int) {
            self.maxTasks = maxTasks
            self.maxDepth = maxDepth
        }
    }

    public var tasks: [TaskSpec]
    /// Runs of one task before it counts as failed (default 1: no retry).
    public var maxAttempts: Int?
    /// Narrows the node's policy for every task of the swarm.
    public var policy: Policy?
    public var spawn: Spawn?

    public init(tasks: [TaskSpec], maxAttempts: Int? = nil, policy: Policy? = nil, spawn: Spawn? = nil) {
        self.tasks = tasks
        self.maxAttempts = maxAttempts
        self.policy = policy
        self.spawn = spawn
    }
}

/// A swarm whose shape is wrong (an HTTP layer answers these with 400).
public struct InvalidSwarm: Error, CustomStringConvertible, Equatable {
    public var description: String
    public init(_ d: String) { description = d }
}

/// Bounds a server checks on a submitted swarm before it stores or schedules any of it.
public enum SwarmLimits {
    public static let maxTasks = 10_000
    public static let maxAttempts = 10
    /// Bytes of argv, stdin and files over all the swarm's tasks. A swarm's definition travels
    /// whole in one message between nodes (the swarm protocol's `SwarmLimits.maxMessageBytes`,
    /// 24 MiB, less room for a page of records and a result): 8 MiB of inputs leave margin for
    /// their JSON. Larger inputs belong in files the tasks fetch, or in several swarms.
    public static let maxInputBytes = 8 << 20
    /// Bytes of argv, stdin and files of one task of a swarm (each task travels as its JSON,
    /// at most 1 MiB, between nodes).
    public static let maxTaskInputBytes = 512 << 10
    public static let maxTaskIdBytes = 128
    public static let maxSpawnTasks = 100_000
    public static let maxSpawnDepth = 8

    /// Checks every task's shape and the swarm's own fields. Policy is checked separately,
    /// against the node's, when tasks are placed.
    public static func validate(_ s: SwarmSpec) throws(InvalidSwarm) {
        guard !s.tasks.isEmpty else { throw InvalidSwarm("a swarm needs at least one task") }
        guard s.tasks.count <= maxTasks else { throw InvalidSwarm("more than \(maxTasks) tasks") }
        var ids = Set<String>()
        var bytes = 0
        for (i, task) in s.tasks.enumerated() {
            do {
                try TaskLimits.validate(task)
            } catch {
                throw InvalidSwarm("tasks[\(i)]: \(error.description)")
            }
            // (`TaskLimits.validate` checked the id's shape.)
            if let id = task.id {
                guard ids.insert(id).inserted else { throw InvalidSwarm("tasks[\(i)]: id \(id.debugDescription) is used twice") }
            }
            // Each task is within TaskLimits.maxInputBytes (16 MiB) and there are at most
            // maxTasks of them, so this sum cannot overflow.
            let taskBytes = inputBytes(task)
            guard taskBytes <= maxTaskInputBytes else {
                throw InvalidSwarm("tasks[\(i)]: argv, stdin and files exceed \(maxTaskInputBytes) bytes (a task of a swarm)")
            }
            bytes += taskBytes
            guard bytes <= maxInputBytes else { throw InvalidSwarm("the tasks' inputs exceed \(maxInputBytes) bytes") }
        }
        if let n = s.maxAttempts, !(1...maxAttempts).contains(n) {
            throw InvalidSwarm("maxAttempts must be 1 to \(maxAttempts)")
        }
        if let p = s.policy {
            do { try p.validate() } catch { throw InvalidSwarm("policy: \(error.description)") }
        }
        if let spawn = s.spawn {
            guard (0...maxSpawnTasks).contains(spawn.maxTasks) else { throw InvalidSwarm("spawn.maxTasks must be 0 to \(maxSpawnTasks)") }
            guard (0...maxSpawnDepth).contains(spawn.maxDepth) else { throw InvalidSwarm("spawn.maxDepth must be 0 to \(maxSpawnDepth)") }
        }
    }

    /// A task id the client chose: safe in a URL path and a log line.
    public static func isTaskId(_ s: String) -> Bool {
        !s.isEmpty && s.utf8.count <= maxTaskIdBytes && s != "." && s != ".."
            && s.utf8.allSatisfy { $0.isASCIILetterOrDigit || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: "_") || $0 == UInt8(ascii: ".") }
    }

    static func inputBytes(_ t: TaskSpec) -> Int {
        (t.stdin?.utf8.count ?? 0) + t.argv.reduce(0) { $0 + $1.utf8.count }
            + (t.files ?? [:]).values.reduce(0) { $0 + $1.utf8.count }
    }
}

extension UInt8 {
    fileprivate var isASCIILetterOrDigit: Bool {
        (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(self) || (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(self)
            || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(self)
    }
}
