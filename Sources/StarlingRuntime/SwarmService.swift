import Foundation
import Glibc
import Logging
import StarlingCore
import StarlingCrypto
import StarlingSandbox
import StarlingStore

/// Swarms on a running node: the `Swarm` protocol hosted on the mesh node's loop, its actions
/// carried out (sandboxed attempts, SQLite writes, gossiped capacity), and the gateway the HTTP
/// routes and the task sockets use.
public final class SwarmService: SwarmGateway {
    public let nodeName: String
    public let store: SwarmStore?
    let node: MeshNode
    let handle: ProtocolHandle<Swarm>
    let executor: SwarmTaskExecutor

    /// Registers the protocol on `node` (before it starts) with the swarms stored in `store`.
    /// `audit`: where every task run on this node is recorded (nil: nowhere).
    public init(node: MeshNode, store: SwarmStore, runner: SandboxRunner, memoryMB: Int,
                requestTimeout: Duration = .seconds(5), logger: Logger, audit: AuditLog? = nil) throws {
        nodeName = node.configuration.name
        self.store = store
        self.node = node
        let slots = node.configuration.slots
        executor = SwarmTaskExecutor(runner: runner, nodeName: nodeName, slots: slots, audit: audit)
        let settings = SwarmSettings(slots: UInt32(clamping: slots), memoryMB: UInt32(clamping: memoryMB), requestTimeout: requestTimeout)
        var swarm = Swarm(settings: settings, myName: nodeName, seed: secureRandomUInt64(), now: node.now)
        swarm.childRule = SpawnAdmission.rule
        let stored = try store.loadAll()
        let links = try store.childLinks()
        let lineages = try store.lineages()
        // Effects of a restore are writes of what was just read, and sends that the protocol's
        // own timers repeat; nothing of it must run before the node is up.
        let restored = swarm.restore(stored, children: links, lineages: lineages, now: node.now)
        if !stored.isEmpty {
            logger.info("swarms restored from the store", metadata: ["swarms": "\(stored.count)", "effectsDeferred": "\(restored.count)"])
        }
        // `STARLING_SWARM_COMMIT=loop` commits on the loop thread as before (for measuring the
        // two against each other in one binary); the default commits on the writer thread.
        let onLoop = ProcessInfo.processInfo.environment["STARLING_SWARM_COMMIT"] == "loop"
        handle = node.register(swarm, performer: SwarmPerformer(executor: executor, store: store, node: node, logger: logger,
                                                                staged: StagedStoreChanges(), commitsOnLoop: onLoop))
        let sockets = TaskSockets(swarms: self, logger: logger)
        executor.sockets.withLock { $0 = sockets }
    }

    public func submit(_ draft: SwarmDraft) async throws -> SwarmReply { try await handle.command(.submit(draft)) }

    public func cancel(_ id: SwarmID) async throws -> SwarmReply { try await handle.command(.cancel(id)) }

    public func occupy(slots: Int, memoryMB: Int) {
        handle.complete(.occupied(slots: UInt32(clamping: slots), memoryMB: UInt32(clamping: memoryMB)))
    }

    /// The API addresses of the live members that may hold `id`: its preference list on the ring
    /// of members that are alive now, then every other alive member (the swarm's replica set was
    /// fixed when it was created, and members may have joined since), this node excluded.
    public func holders(of id: SwarmID) -> [String] {
        let alive = node.snapshot().members.filter { $0.status == .alive }
        let ring = SwarmRing(members: alive.map(\.name))
        let preferred = ring.preferenceList(id, count: alive.count)
        let api = Dictionary(alive.map { ($0.name, $0.metadata.api) }, uniquingKeysWith: { a, _ in a })
        return preferred.filter { $0 != nodeName }.compactMap { api[$0] }.filter { !$0.isEmpty }
    }
}

extension SwarmService {
    /// The API addresses of every other member alive now (what `GET /v1/swarms` merges).
    public func otherNodes() -> [String] {
        node.snapshot().members
            .filter { $0.status == .alive && $0.name != nodeName && !$0.metadata.api.isEmpty }
            .sorted { $0.name < $1.name }
            .map(\.metadata.api)
    }
}

/// Store changes staged and not yet handed to a commit (loop thread only).
final class StagedStoreChanges {
    var changes: [StoreChange] = []
}

/// Carries out the swarm protocol's actions on the loop thread. Store writes are staged and
/// committed in groups on the runner's writer thread (`detachStaged`: one transaction and one
/// fsync for every input that came while the previous commit ran), so an fsync never blocks
/// the loop: a result recorded with the swarm's end, or a replica's delta of many records, was
/// one transaction per change, and every commit blocked membership for its fsync.
struct SwarmPerformer: ProtocolPerformer {
    typealias Hosted = Swarm
    let executor: SwarmTaskExecutor
    let store: SwarmStore
    let node: MeshNode
    let logger: Logger
    let staged: StagedStoreChanges
    /// Commit on the loop thread (`commitStaged`) instead of the writer thread.
    var commitsOnLoop = false

    func perform(_ action: SwarmAction, host: ProtocolHandle<Swarm>) {
        switch action {
        case .run(let run):
            executor.start(run) { host.complete($0) }
        case .kill(let swarm, let index, let attempt):
            executor.kill(swarm: swarm, index: index, attempt: attempt)
        case .store(let change):
            // Not reached: the runner stages every store write (`stage`). Written at once if it were.
            staged.changes.append(change)
            _ = commitStaged(host: host)
        case .advertise(let freeSlots, let freeMemoryMB):
            node.setCapacity(freeSlots: Int(freeSlots), freeMemoryMB: Int(freeMemoryMB))
        }
    }

    func stage(_ action: SwarmAction) -> Bool {
        guard case .store(let change) = action else { return false }
        staged.changes.append(change)
        return true
    }

    /// The writes staged so far as one job for the writer thread.
    func detachStaged() -> (@Sendable () -> Bool)? {
        guard !commitsOnLoop else { return nil }
        let changes = staged.changes
        staged.changes = []
        return { [store, node, logger] in Self.commit(changes, store: store, node: node, logger: logger) }
    }

    /// On the loop thread (only when a write is performed at once, which the runner never asks).
    func commitStaged(host: ProtocolHandle<Swarm>) -> Bool {
        let changes = staged.changes
        staged.changes = []
        guard Self.commit(changes, store: store, node: node, logger: logger) else {
            host.halt()
            return false
        }
        return true
    }

    /// All the changes in one transaction, or none and the node leaves.
    static func commit(_ changes: [StoreChange], store: SwarmStore, node: MeshNode, logger: Logger) -> Bool {
        do {
            try store.apply(changes)
            return true
        } catch {
            // Fail closed: the protocol goes on only with what is durable. A node that cannot
            // write its store must not acknowledge anything more: it leaves the mesh, and
            // SWIM moves its work (and its swarms' ownership) to the others. The runner stops
            // the protocol, which drops the effects held behind these writes (the ack of a
            // replicate, say) and every later input: nothing is said while leaving.
            logger.critical("the swarm store refused a write; leaving the mesh", metadata: ["error": "\(error)"])
            node.requestLeave()
            return false
        }
    }
}
