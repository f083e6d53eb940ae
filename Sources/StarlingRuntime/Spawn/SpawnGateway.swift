import Hummingbird
import StarlingCore
import StarlingSandbox

/// What a task's socket needs of the node's swarm machinery. The node's swarm gateway implements
/// it (the same calls its public `/v1/swarms` routes make), so a child swarm goes exactly where a
/// client's would; the socket adds only who may do what.
public protocol SpawnGateway: Sendable {
    /// Creates a swarm (here: a child, `draft.parent` set).
    func submit(_ draft: SwarmDraft) async -> SwarmReply
    /// Cancels a swarm and, by the protocol, its children.
    func cancel(_ id: SwarmID) async -> SwarmReply
    /// The stored definition of a swarm, nil when this node cannot find it.
    func definition(_ id: SwarmID) async -> SwarmDefinition?
    /// The stored children of a swarm (their `draft.parent?.swarm` is `swarm`), for its budget.
    func children(of swarm: SwarmID) async -> [SwarmDefinition]
    /// The public `GET /v1/swarms/ID` answer (query: `tasks`, `offset`, `limit`).
    func status(_ id: SwarmID, request: Request) async throws -> Response
    /// The public `GET /v1/swarms/ID/events` answer (server-sent events, `Last-Event-ID`).
    func events(_ id: SwarmID, request: Request) async throws -> Response
}

/// Children this node submitted that its store may not show yet (the owner of a child is
/// usually another node), so that two requests in quick succession cannot both spend the same
/// budget. Per parent swarm; check-and-submit is serialised per parent on this node.
///
/// Bounded: entries live while a socket of that parent swarm is open here (`retain`/`release`),
/// and each costs at least one task of a budget of at most `SwarmLimits.maxSpawnTasks`.
public actor SpawnLedger {
    private var submitted: [SwarmID: [SwarmID: Int]] = [:]
    private var holders: [SwarmID: Int] = [:]
    private var busy: Set<SwarmID> = []
    private var waiting: [SwarmID: [CheckedContinuation<Void, Never>]] = [:]

    public init() {}

    func retain(_ parent: SwarmID) { holders[parent, default: 0] += 1 }

    func release(_ parent: SwarmID) {
        let n = holders[parent, default: 1] - 1
        if n > 0 { holders[parent] = n } else { holders[parent] = nil; submitted[parent] = nil }
    }

    /// Children submitted from here, by id and cost.
    func recent(_ parent: SwarmID) -> [SwarmID: Int] { submitted[parent] ?? [:] }

    func record(_ parent: SwarmID, child: SwarmID, cost: Int) {
        guard holders[parent] != nil else { return }
        submitted[parent, default: [:]][child] = cost
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
