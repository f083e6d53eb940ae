/// The public face of swarm scheduling: what hosts (the runtime node, the simulator) and the
/// HTTP layer exchange with the `Swarm` protocol. Task bodies and results are opaque bytes here
/// (the host's JSON of a TaskSpec and a TaskResult): StarlingCore never interprets them, so it
/// stays free of the sandbox module, and the simulator can run tasks as virtual durations.

/// A swarm's id: 16 lowercase hex digits (64 random bits from the protocol's seeded RNG).
public typealias SwarmID = String

/// Resources one task asks for. Placement never puts a task where they are not free.
public struct TaskNeeds: Sendable, Equatable, Hashable {
    public var memoryMB: UInt32
    /// Thousandths of a CPU (cpus 0.5 is 500).
    public var milliCPUs: UInt32

    public init(memoryMB: UInt32, milliCPUs: UInt32) {
        self.memoryMB = memoryMB
        self.milliCPUs = milliCPUs
    }
}

/// One task of a swarm as the protocol carries it.
public struct SwarmTask: Sendable, Equatable {
    /// The task's id within its swarm (the client's, or "t<index>").
    public var id: String
    public var needs: TaskNeeds
    /// Host-opaque: the task's JSON (a TaskSpec) in the runtime; a duration in the simulator.
    public var payload: [UInt8]

    public init(id: String, needs: TaskNeeds, payload: [UInt8]) {
        self.id = id
        self.needs = needs
        self.payload = payload
    }
}

/// Which task of which swarm a sub-swarm was spawned from, for budgets and cascading cancel.
public struct TaskRef: Sendable, Equatable, Hashable {
    public var swarm: SwarmID
    public var task: UInt32

    public init(swarm: SwarmID, task: UInt32) {
        self.swarm = swarm
        self.task = task
    }
}

/// What a client submits, before the protocol gives it an id and a replica set.
public struct SwarmDraft: Sendable, Equatable {
    public var tasks: [SwarmTask]
    /// Runs of one task before it counts as failed (1 to 10).
    public var maxAttempts: UInt8
    /// Host-opaque swarm-wide options (the runtime's JSON of policy and spawn budget), handed
    /// back with every task run.
    public var options: [UInt8]
    /// Set for a sub-swarm: the task that spawned it.
    public var parent: TaskRef?
    /// Wall-clock milliseconds at submission (the host's clock; for listing newest first).
    public var createdAtMs: UInt64

    public init(tasks: [SwarmTask], maxAttempts: UInt8, options: [UInt8], parent: TaskRef?, createdAtMs: UInt64) {
        self.tasks = tasks
        self.maxAttempts = maxAttempts
        self.options = options
        self.parent = parent
        self.createdAtMs = createdAtMs
    }
}

/// A swarm as stored and replicated.
public struct SwarmDefinition: Sendable, Equatable {
    public var id: SwarmID
    public var draft: SwarmDraft
    /// The owner first, then its replicas (R = 3, fewer in a smaller mesh): the successors of
    /// the id on the consistent-hash ring when the swarm was created. Ownership passes down
    /// this list when the owner dies.
    public var replicas: [PeerName]

    public init(id: SwarmID, draft: SwarmDraft, replicas: [PeerName]) {
        self.id = id
        self.draft = draft
        self.replicas = replicas
    }
}

public enum SwarmState: UInt8, Sendable, Equatable {
    case running = 0, done = 1, cancelled = 2

    public var name: String {
        switch self {
        case .running: "running"
        case .done: "done"
        case .cancelled: "cancelled"
        }
    }
}

public enum TaskState: UInt8, Sendable, Equatable {
    case pending = 0, running = 1, succeeded = 2, failed = 3, cancelled = 4

    public var isFinal: Bool { self == .succeeded || self == .failed || self == .cancelled }

    public var name: String {
        switch self {
        case .pending: "pending"
        case .running: "running"
        case .succeeded: "succeeded"
        case .failed: "failed"
        case .cancelled: "cancelled"
        }
    }
}

/// How a run ended, as the host judged the result.
public enum RunOutcome: UInt8, Sendable, Equatable {
    /// Exit status 0.
    case succeeded = 0
    /// Non-zero exit, signal, timeout or OOM: retried while attempts remain.
    case failed = 1
    /// Refused before it ran (policy, a limit that could not be applied): never retried.
    case denied = 2
}

/// One task's state as recorded by the swarm's owner and replicated.
public struct TaskRecord: Sendable, Equatable {
    public var state: TaskState
    /// The attempt now running or last run (0 before the first). Results of any other attempt
    /// are refused: this is the fence that records a result exactly once.
    public var attempt: UInt16
    /// The node that runs (or ran) the current attempt.
    public var node: PeerName?
    /// The host's TaskResult bytes, once final (a cancelled task has none unless it ran).
    public var result: [UInt8]?
    /// Order of completion within the swarm, from 1 (the server-sent events' id); 0 until final.
    /// The stream shows a number only once a majority of the replica set stores it
    /// (`StoreChange.visible`), so numbers already shown are never given to another task.
    public var finishSeq: UInt32

    public init(state: TaskState = .pending, attempt: UInt16 = 0, node: PeerName? = nil, result: [UInt8]? = nil, finishSeq: UInt32 = 0) {
        self.state = state
        self.attempt = attempt
        self.node = node
        self.result = result
        self.finishSeq = finishSeq
    }
}

/// Work from an HTTP handler (or the sandbox socket of a task that spawns).
public enum SwarmCommand: Sendable {
    /// Create a swarm; this node finds the owner and hands it over. Replied `.submitted` once the
    /// owner stored it (and a majority of its replica set, when the mesh has one).
    case submit(SwarmDraft)
    /// Cancel a swarm wherever it is owned: running tasks are killed, pending ones never start,
    /// child swarms are cancelled too.
    case cancel(SwarmID)
}

public enum SwarmReply: Sendable, Equatable {
    case submitted(SwarmID, owner: PeerName)
    case cancelled(SwarmID)
    case notFound(SwarmID)
    /// Refused with a reason a client can read, for a reason of the mesh's (no live owner
    /// reachable, too busy): retrying later may succeed (HTTP 503).
    case refused(String)
    /// Refused because of the request itself (too large, or asks for more than any member
    /// has): the same request will never succeed (HTTP 4xx).
    case rejected(String)
    /// Refused by a rule of the parent swarm (a child over its spawn budget or depth, checked
    /// by the parent's owner): the same request will never succeed (HTTP 403).
    case forbidden(String)
}

/// One attempt handed to a node's sandbox.
public struct TaskRun: Sendable, Equatable {
    public var swarm: SwarmID
    public var index: UInt32
    public var attempt: UInt16
    public var task: SwarmTask
    public var options: [UInt8]
    public var maxAttempts: UInt8

    public init(swarm: SwarmID, index: UInt32, attempt: UInt16, task: SwarmTask, options: [UInt8], maxAttempts: UInt8) {
        self.swarm = swarm
        self.index = index
        self.attempt = attempt
        self.task = task
        self.options = options
        self.maxAttempts = maxAttempts
    }
}

/// A durable change; the host writes it (SQLite in the runtime) before carrying out the effects
/// that follow it.
public enum StoreChange: Sendable, Equatable {
    /// A swarm this node owns or replicates, with the owner epoch it is held under.
    case swarm(SwarmDefinition, epoch: UInt32, state: SwarmState)
    case task(SwarmID, index: UInt32, TaskRecord)
    case swarmState(SwarmID, SwarmState, epoch: UInt32)
    /// A child swarm of a held swarm (written once per link; a repeat is harmless): kept so a
    /// cancel of the parent reaches its children after every holder of the parent restarted.
    case child(SwarmID, ChildLink)
    /// Every finished task of the swarm numbered up to `upTo` (`TaskRecord.finishSeq`) is stored
    /// on a majority of its replica set: the events stream may show them. It never shows a
    /// higher number, so an event id a client saw names the same task on whichever node takes
    /// the swarm over next (a successor syncs from the replicas, and a majority includes one
    /// that survived). The host keeps the highest value written (it goes down only at `hideAll`).
    case visible(SwarmID, upTo: UInt32)
    /// The reigns that numbered the swarm's finishes (`FinishLineage`), replacing the stored
    /// ones: the events stream's ids name them, so a cursor from another reign resumes where
    /// the numbering still agrees with it.
    case lineage(SwarmID, FinishLineage)
    /// A whole copy of the swarm is arriving in place of the one held (a replica's transfer, a
    /// takeover's copy of the best replica): the events stream shows nothing until it is all
    /// stored. Until then the copy mixes old rows with new ones, and the old mark could let a
    /// stream move past a number a later chunk brings. A `visible` follows at the transfer's
    /// last chunk (changes before it are refused: `SwarmEntry.awaitingChunks`), or, for a
    /// takeover (its copy staged and applied whole), in its own input with a replica set of up
    /// to 3, else once the replica set stores its whole transfer.
    case hideAll(SwarmID)
}

/// Local work the protocol asks of its host.
public enum SwarmAction: Sendable, Equatable {
    /// Start the attempt in a sandbox; `SwarmActionOutcome.finished` follows exactly once
    /// (also after `.kill`).
    case run(TaskRun)
    /// Kill the attempt if it is still running.
    case kill(swarm: SwarmID, index: UInt32, attempt: UInt16)
    case store(StoreChange)
    /// Free capacity to gossip in this node's membership metadata.
    case advertise(freeSlots: UInt32, freeMemoryMB: UInt32)
}

public enum SwarmActionOutcome: Sendable, Equatable {
    /// The attempt ended; `result` is the host's TaskResult bytes.
    case finished(swarm: SwarmID, index: UInt32, attempt: UInt16, outcome: RunOutcome, result: [UInt8])
    /// What this node's other work (hosted agents' brains) holds now, told by the host whenever
    /// it changes: the node advertises only the slots and memory left, and the worker starts
    /// tasks only in them, always keeping one slot and half its memory for tasks
    /// (`Swarm.heldForOthers`). Tasks already running go on.
    case occupied(slots: UInt32, memoryMB: UInt32)
}

/// What this node offers and how the protocol paces itself.
public struct SwarmSettings: Sendable, Equatable {
    /// Tasks this node runs at once.
    public var slots: UInt32
    /// Memory tasks may use on this node, in MiB.
    public var memoryMB: UInt32
    /// Replica set size, owner included.
    public var replicationFactor: Int
    /// Reservations a swarm places per task waiting (Sparrow's d: 2 is power-of-two choices).
    public var probeRatio: Int
    /// How long a request to a peer waits for its answer.
    public var requestTimeout: Duration
    /// How often an owner re-places tasks whose reservations were all refused or lost, and a
    /// worker resends results not yet acknowledged.
    public var retryInterval: Duration

    public init(slots: UInt32, memoryMB: UInt32, replicationFactor: Int = 3, probeRatio: Int = 2,
                requestTimeout: Duration = .seconds(5), retryInterval: Duration = .milliseconds(500)) {
        self.slots = slots
        self.memoryMB = memoryMB
        self.replicationFactor = replicationFactor
        self.probeRatio = probeRatio
        self.requestTimeout = requestTimeout
        self.retryInterval = retryInterval
    }
}

/// What a parent swarm's acting owner weighs when told of a new child: the parent's and the
/// child's options (host-opaque bytes, the runtime's SwarmOptions JSON), the child's task count,
/// and what the children the owner already holds cost, summed (saturating).
public struct ChildAdmissionRequest: Sendable, Equatable {
    public var parentOptions: [UInt8]
    public var childOptions: [UInt8]
    public var childTasks: Int
    public var used: UInt64

    public init(parentOptions: [UInt8], childOptions: [UInt8], childTasks: Int, used: UInt64) {
        self.parentOptions = parentOptions
        self.childOptions = childOptions
        self.childTasks = childTasks
        self.used = used
    }
}

/// The parent's owner's verdict on a child swarm.
public enum ChildAdmission: Sendable, Equatable {
    /// Recorded, charging `cost` to the parent's spawn budget.
    case admit(cost: UInt64)
    /// Refused: the entry cancels the child and answers its submitter with the reason.
    case refuse(String)
}

/// The host's rule for child swarms (the runtime applies `SpawnRules`). Pure and deterministic:
/// the owner calls it inside the state machine. Because every child of a parent is recorded at
/// the parent's one acting owner, one after the other, the check there cannot be raced by two
/// tasks spawning at once on different nodes.
public typealias ChildRule = @Sendable (ChildAdmissionRequest) -> ChildAdmission
