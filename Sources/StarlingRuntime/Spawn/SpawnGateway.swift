import Hummingbird
import StarlingCore
import StarlingSandbox
import StarlingStore

/// What a task's socket needs of the node's swarm machinery. `MeshSpawnGateway` implements it
/// over the node's `SwarmGateway` and the public swarm routes, so a child swarm goes exactly
/// where a client's would; the socket adds only who may do what.
public protocol SpawnGateway: Sendable {
    /// Creates a swarm (here: a child, `draft.parent` set).
    func submit(_ draft: SwarmDraft) async -> SwarmReply
    /// Cancels a swarm and, by the protocol, its children.
    func cancel(_ id: SwarmID) async -> SwarmReply
    /// The task that spawned swarm `id`; nil when it has none or cannot be found.
    func parent(of id: SwarmID) async -> TaskRef?
    /// The children of `swarm` that can be found, for its spawn budget.
    /// Throws when they cannot be read: the budget is then unknown and the child refused.
    func children(of swarm: SwarmID) async throws -> [ChildSwarmRecord]
    /// The public `GET /v1/swarms/{id}` answer (query: `tasks`, `offset`, `limit`).
    func status(request: Request, context: TaskSocketContext) async throws -> Response
    /// The public `GET /v1/swarms/{id}/events` answer (server-sent events, `Last-Event-ID`).
    func events(request: Request, context: TaskSocketContext) async throws -> Response
}

/// Children this node submitted that its store may not show yet (the owner of a child is
/// usually another node), so that two requests in quick succession cannot both spend the same
/// budget. Per parent swarm; check-and-submit is serialised per parent on this node.
///
/// Bounded: entries live while a socket of that parent swarm is open here (`retain`/`release`),
/// and each costs at least one task of a budget of at most `SwarmLimits.maxSpawnTasks`.
public actor SpawnLedger {
    private var submitted: [SwarmID: [SwarmID: (task: UInt32, cost: Int)]] = [:]
    private var holders: [SwarmID: Int] = [:]
    private var busy: Set<SwarmID> = []
    private var waiting: [SwarmID: [CheckedContinuation<Void, Never>]] = [:]

    public init() {}

    func retain(_ parent: SwarmID) { holders[parent, default: 0] += 1 }

    func release(_ parent: SwarmID) {
        let n = holders[parent, default: 1] - 1
        if n > 0 { holders[parent] = n } else { holders[parent] = nil; submitted[parent] = nil }
    }

    /// Costs of the children of `parent` submitted from here, by child id.
    func recent(_ parent: SwarmID) -> [SwarmID: Int] { (submitted[parent] ?? [:]).mapValues(\.cost) }

    /// Whether `child` was submitted from here by `task`.
    func submitted(_ child: SwarmID, by task: TaskRef) -> Bool { submitted[task.swarm]?[child]?.task == task.task }

    func record(_ child: SwarmID, by task: TaskRef, cost: Int) {
        guard holders[task.swarm] != nil else { return }
        submitted[task.swarm, default: [:]][child] = (task.task, cost)
    }

    /// Runs `body` with no other admission for the same parent swarm running on this node.
    func exclusively<T: Sendable>(_ parent: SwarmID, _ body: @Sendable () async -> T) async -> T {
        while busy.contains(parent) {
            await withCheckedContinuation { waiting[parent, default: []].append($0) }
        }
        busy.insert(parent)
        defer {
            busy.remove(parent)
            if var queue = waiting[parent], !queue.isEmpty {
                queue.removeFirst().resume()
                waiting[parent] = queue.isEmpty ? nil : queue
            }
        }
        return await body()
    }
}
