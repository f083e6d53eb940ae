import Testing
@testable import StarlingCore

/// A tiny deterministic message pump for `Swarm` instances: virtual time, FIFO per pair of
/// nodes (1 ms a hop), requests answered exactly once (nil when the peer is gone), instant
/// "gossip" of advertised capacity, and runs that finish after a virtual duration. It checks,
/// at every step, that no node runs more than its slots or memory and that no task runs on two
/// nodes at once.
struct SwarmTestMesh {
    struct Node {
        var swarm: Swarm
        var up = true
        /// Sandboxes this node's host is running: (swarm, index) → attempt.
        var sandboxes: [TaskKey: UInt16] = [:]
        var sandboxMemory: UInt32 = 0
        var stores: [StoreChange] = []
        var metadata: MemberMetadata
    }

    enum Event {
        case message(SwarmMessage, from: PeerName, to: PeerName)
        case request(SwarmMessage, from: PeerName, to: PeerName, id: RequestID)
        case response(SwarmMessage?, to: PeerName, id: RequestID, from: PeerName)
        case finished(PeerName, SwarmActionOutcome)
    }

    var now = Instant.zero
    var nodes: [PeerName: Node] = [:]
    var order: [PeerName] = []
    private var queue: [(at: Instant, seq: Int, event: Event)] = []
    private var seq = 0
    var nextCommand: UInt64 = 1
    var replies: [UInt64: SwarmReply] = [:]
    /// Every `.run` any node's host was asked to start, in order.
    var runs: [(node: PeerName, run: TaskRun)] = []
    var kills: [(node: PeerName, swarm: SwarmID, index: UInt32, attempt: UInt16)] = []
    var violations: [String] = []
    /// The most sandboxes each node ran at once.
    var peakSandboxes: [PeerName: Int] = [:]
    /// How long a run takes, and how it ends (default: 50 ms, succeeded, result "ok <index>").
    var runTime: (TaskRun) -> Duration = { _ in .milliseconds(50) }
    var outcome: (PeerName, TaskRun) -> RunOutcome = { _, _ in .succeeded }
    /// Names whose messages are dropped (a node cut off from all others, still running).
    var isolated: Set<PeerName> = []
    /// Requests to drop (as if the link broke): (message, from, to) → drop it. The requester
    /// gets no answer (nil after its timeout).
    var dropRequest: ((SwarmMessage, PeerName, PeerName) -> Bool)?
    var droppedRequests = 0
    /// Bytes added to every run's result (to make syncs page and transfers chunk).
    var resultPadding = 0
    let hop = Duration.milliseconds(1)

    init(nodes count: Int, slots: UInt32 = 2, memoryMB: UInt32 = 1000, replication: Int = 3, probeRatio: Int = 2,
         perNode: [PeerName: (slots: UInt32, memoryMB: UInt32)] = [:]) {
        for i in 0..<count {
            let name = "n\(i)"
            let capacity = perNode[name] ?? (slots, memoryMB)
            let settings = SwarmSettings(slots: capacity.slots, memoryMB: capacity.memoryMB, replicationFactor: replication,
                                         probeRatio: probeRatio, requestTimeout: .milliseconds(200),
                                         retryInterval: .milliseconds(100))
            let meta = MemberMetadata(version: 1, api: "", slots: capacity.slots, free: capacity.slots,
                                      memoryMB: capacity.memoryMB, freeMemoryMB: capacity.memoryMB)
            nodes[name] = Node(swarm: Swarm(settings: settings, myName: name, seed: UInt64(i + 1), now: .zero), metadata: meta)
            order.append(name)
        }
        for name in order {
            for other in order { deliverView(of: other, status: .alive, to: name) }
        }
    }

    func view(_ name: PeerName, status: MemberStatus) -> PeerView {
        PeerView(name: name, address: NodeAddress(host: "127.0.0.1", port: 1), status: status, metadata: nodes[name]!.metadata)
    }

    /// What each node believes of each other node's status.
    var statuses: [PeerName: [PeerName: MemberStatus]] = [:]

    mutating func deliverView(of subject: PeerName, status: MemberStatus, to observer: PeerName) {
        guard nodes[observer]!.up else { return }
        statuses[observer, default: [:]][subject] = status
        let effects = nodes[observer]!.swarm.membershipChanged(.updated(view(subject, status: status)), now: now)
        carryOut(effects, at: observer)
    }

    // MARK: Driving

    mutating func submit(_ draft: SwarmDraft, at entry: PeerName) -> UInt64 {
        let id = nextCommand
        nextCommand += 1
        let effects = nodes[entry]!.swarm.command(.submit(draft), id: CommandID(rawValue: id), now: now)
        carryOut(effects, at: entry)
        return id
    }

    mutating func cancel(_ swarm: SwarmID, at entry: PeerName) -> UInt64 {
        let id = nextCommand
        nextCommand += 1
        carryOut(nodes[entry]!.swarm.command(.cancel(swarm), id: CommandID(rawValue: id), now: now), at: entry)
        return id
    }

    /// Processes events and timers until `limit` (virtual), or until `until` holds.
    mutating func run(for limit: Duration, until done: ((SwarmTestMesh) -> Bool)? = nil) {
        let end = now + limit
        while true {
            if let done, done(self) { return }
            let nextTimer = order.filter { nodes[$0]!.up }.map { (nodes[$0]!.swarm.nextDeadline, $0) }.min { $0.0 < $1.0 }
            let nextEvent = queue.first?.at
            let t = min(nextTimer?.0 ?? .distantFuture, nextEvent ?? .distantFuture)
            guard t <= end else { now = end; return }
            now = max(now, t)
            if let e = nextEvent, e <= t {
                let item = queue.removeFirst()
                process(item.event)
            } else if let (_, name) = nextTimer {
                carryOut(nodes[name]!.swarm.tick(now: now), at: name)
            }
        }
    }

    private mutating func schedule(_ event: Event, after delay: Duration) {
        let at = now + delay
        seq += 1
        // Keep the queue sorted by (time, sequence): FIFO among equal times.
        let index = queue.firstIndex { $0.at > at } ?? queue.count
        queue.insert((at, seq, event), at: index)
    }

    private func reachable(_ a: PeerName, _ b: PeerName) -> Bool {
        nodes[a]?.up == true && nodes[b]?.up == true && !isolated.contains(a) && !isolated.contains(b)
    }

    private mutating func process(_ event: Event) {
        switch event {
        case .message(let m, let from, let to):
            guard reachable(from, to) else { return }
            carryOut(nodes[to]!.swarm.receive(roundTrip(m), from: from, now: now), at: to)
        case .request(let m, let from, let to, let id):
            if let dropRequest, reachable(from, to), dropRequest(m, from, to) {
                droppedRequests += 1
                schedule(.response(nil, to: from, id: id, from: to), after: .milliseconds(200))
                return
            }
            guard reachable(from, to) else {
                if nodes[from]?.up == true { schedule(.response(nil, to: from, id: id, from: to), after: .milliseconds(200)) }
                return
            }
            let token = RequestToken(rawValue: UInt64(tokens.count + 1))
            tokens.append((from, id, to))
            carryOut(nodes[to]!.swarm.request(roundTrip(m), from: from, token: token, now: now), at: to)
        case .response(let m, let to, let id, let from):
            guard nodes[to]?.up == true else { return }
            let delivered = m != nil && reachable(from, to) ? m.map(roundTrip) : nil
            carryOut(nodes[to]!.swarm.response(delivered, to: id, now: now), at: to)
        case .finished(let name, let outcome):
            guard nodes[name]?.up == true, case .finished(let s, let index, let attempt, _, _) = outcome,
                  nodes[name]!.sandboxes[TaskKey(swarm: s, index: index)] == attempt else { return }
            let key = TaskKey(swarm: s, index: index)
            nodes[name]!.sandboxes[key] = nil
            nodes[name]!.sandboxMemory -= memory(of: key)
            carryOut(nodes[name]!.swarm.performed(outcome, now: now), at: name)
        }
    }

    private var tokens: [(requester: PeerName, id: RequestID, server: PeerName)] = []
    private var answered: Set<Int> = []
    private var taskMemory: [TaskKey: UInt32] = [:]
    private func memory(of key: TaskKey) -> UInt32 { taskMemory[key] ?? 0 }

    /// Every message crosses the codec, as on the wire.
    private func roundTrip(_ m: SwarmMessage) -> SwarmMessage {
        let bytes = Swarm.encode(m)
        guard let back = try? Swarm.decode(bytes) else { fatalError("codec lost \(m)") }
        precondition(back == m, "codec changed \(m)")
        return back
    }

    mutating func carryOut(_ effects: [ProtocolEffect<Swarm>], at name: PeerName) {
        for effect in effects {
            switch effect {
            case .send(let m, let to):
                schedule(.message(m, from: name, to: to), after: hop)
            case .request(let m, let to, let id, _):
                schedule(.request(m, from: name, to: to, id: id), after: hop)
            case .respond(let m, let token):
                let t = tokens[Int(token.rawValue) - 1]
                precondition(t.server == name)
                schedule(.response(m, to: t.requester, id: t.id, from: name), after: hop)
            case .reply(let r, let command):
                precondition(replies[command.rawValue] == nil, "two replies to one command")
                replies[command.rawValue] = r
            case .perform(let action):
                perform(action, at: name)
            }
        }
    }

    private mutating func perform(_ action: SwarmAction, at name: PeerName) {
        switch action {
        case .run(let run):
            let key = TaskKey(swarm: run.swarm, index: run.index)
            for other in order where other != name && nodes[other]!.up && nodes[other]!.sandboxes[key] != nil {
                violations.append("task \(run.index) of \(run.swarm) runs on \(other) and \(name)")
            }
            if nodes[name]!.sandboxes[key] != nil { violations.append("task \(run.index) started twice on \(name)") }
            taskMemory[key] = run.task.needs.memoryMB
            nodes[name]!.sandboxes[key] = run.attempt
            nodes[name]!.sandboxMemory += run.task.needs.memoryMB
            let s = nodes[name]!.swarm.settings
            peakSandboxes[name] = max(peakSandboxes[name] ?? 0, nodes[name]!.sandboxes.count)
            if nodes[name]!.sandboxes.count > Int(s.slots) { violations.append("\(name) runs \(nodes[name]!.sandboxes.count) > \(s.slots) slots") }
            if nodes[name]!.sandboxMemory > s.memoryMB { violations.append("\(name) uses \(nodes[name]!.sandboxMemory) > \(s.memoryMB) MiB") }
            runs.append((name, run))
            let result = Array("ok \(run.index) on \(name)".utf8) + [UInt8](repeating: UInt8(ascii: "."), count: resultPadding)
            schedule(.finished(name, .finished(swarm: run.swarm, index: run.index, attempt: run.attempt,
                                               outcome: outcome(name, run), result: result)), after: runTime(run))
        case .kill(let swarm, let index, let attempt):
            kills.append((name, swarm, index, attempt))
            let key = TaskKey(swarm: swarm, index: index)
            if nodes[name]!.sandboxes[key] == attempt {
                schedule(.finished(name, .finished(swarm: swarm, index: index, attempt: attempt, outcome: .failed,
                                                   result: Array("killed".utf8))), after: .milliseconds(1))
            }
        case .store(let change):
            nodes[name]!.stores.append(change)
        case .advertise(let slots, let memory):
            nodes[name]!.metadata.free = slots
            nodes[name]!.metadata.freeMemoryMB = memory
            nodes[name]!.metadata.version += 1
            // Gossip: reaches the nodes on this side of a partition, status unchanged.
            for observer in order where nodes[observer]!.up && (observer == name || reachable(name, observer)) {
                deliverView(of: name, status: statuses[observer]?[name] ?? .alive, to: observer)
            }
        }
    }

    // MARK: Faults

    /// The process dies: nothing more in or out; its sandboxes die with it.
    mutating func crash(_ name: PeerName) {
        nodes[name]!.up = false
        nodes[name]!.sandboxes = [:]
        nodes[name]!.sandboxMemory = 0
        // What was on the way to or from it is lost; its requests in flight fail at their senders.
        var kept: [(at: Instant, seq: Int, event: Event)] = []
        var failed: [(PeerName, RequestID)] = []
        for item in queue {
            switch item.event {
            case .message(_, let from, let to): if from != name && to != name { kept.append(item) }
            case .request(_, let from, let to, let id):
                if to == name && from != name { failed.append((from, id)) } else if from != name { kept.append(item) }
            case .response(_, let to, _, _): if to != name { kept.append(item) }
            case .finished(let n, _): if n != name { kept.append(item) }
            }
        }
        queue = kept
        for (requester, id) in failed { schedule(.response(nil, to: requester, id: id, from: name), after: .milliseconds(200)) }
        // Requests it had received and not answered time out at their senders.
        for (i, t) in tokens.enumerated() where t.server == name && !answered.contains(i) {
            answered.insert(i)
            schedule(.response(nil, to: t.requester, id: t.id, from: name), after: .milliseconds(200))
        }
    }

    /// SWIM's verdict reaches every other live node (whether or not `name` really died).
    mutating func declare(_ name: PeerName, _ status: MemberStatus) {
        for observer in order where observer != name && nodes[observer]!.up {
            deliverView(of: name, status: status, to: observer)
        }
    }

    /// The node starts again with what it stored (last write wins per row), as the runtime
    /// does from SQLite, and the others see it alive.
    mutating func restart(_ name: PeerName, seed: UInt64 = 99, announce: Bool = true) {
        var definitions: [SwarmID: SwarmDefinition] = [:]
        var epochs: [SwarmID: UInt32] = [:]
        var states: [SwarmID: SwarmState] = [:]
        var records: [SwarmID: [UInt32: TaskRecord]] = [:]
        var children: [SwarmID: [ChildLink]] = [:]
        var lineages: [SwarmID: FinishLineage] = [:]
        for change in nodes[name]!.stores {
            switch change {
            case .swarm(let d, let e, let st): definitions[d.id] = d; epochs[d.id] = e; states[d.id] = st
            case .task(let id, let index, let r): records[id, default: [:]][index] = r
            case .swarmState(let id, let st, let e): states[id] = st; epochs[id] = e
            case .child(let id, let link):
                if !(children[id] ?? []).contains(where: { $0.child == link.child }) { children[id, default: []].append(link) }
            case .lineage(let id, let lineage): lineages[id] = lineage
            case .visible, .hideAll: break  // read by the events stream only
            }
        }
        let stored = definitions.keys.sorted().map { id in
            let d = definitions[id]!
            let tasks = (0..<d.draft.tasks.count).map { records[id]?[UInt32($0)] ?? TaskRecord() }
            return (d, epoch: epochs[id] ?? 1, state: states[id] ?? .running, tasks: tasks)
        }
        var fresh = Swarm(settings: nodes[name]!.swarm.settings, myName: name, seed: seed, now: now)
        fresh.childRule = nodes[name]!.swarm.childRule
        _ = fresh.restore(stored, children: children, lineages: lineages, now: now)
        let stores = nodes[name]!.stores
        nodes[name] = Node(swarm: fresh, stores: stores, metadata: nodes[name]!.metadata)
        for other in order where nodes[other]!.up {
            deliverView(of: other, status: other == name ? .alive : (statuses[name]?[other] ?? .alive), to: name)
        }
        if announce { declare(name, .alive) }
    }

    // MARK: Reading

    /// The acting owner's entry for a swarm (the live node that owns it).
    func owner(of id: SwarmID) -> PeerName? {
        order.first { nodes[$0]!.up && nodes[$0]!.swarm.swarms[id]?.role == .owner }
    }

    func entry(_ id: SwarmID) -> SwarmEntry? {
        owner(of: id).flatMap { nodes[$0]!.swarm.swarms[id] }
    }

    func swarmID(of command: UInt64) -> SwarmID? {
        if case .submitted(let id, _) = replies[command] { return id }
        return nil
    }

    func isFinished(_ id: SwarmID) -> Bool { entry(id)?.isFinished ?? false }
}

func draft(_ count: Int, memoryMB: UInt32 = 100, maxAttempts: UInt8 = 3, parent: TaskRef? = nil) -> SwarmDraft {
    SwarmDraft(tasks: (0..<count).map { SwarmTask(id: "t\($0)", needs: TaskNeeds(memoryMB: memoryMB, milliCPUs: 1000), payload: [UInt8($0 % 256)]) },
               maxAttempts: maxAttempts, options: [1, 2, 3], parent: parent, createdAtMs: 1_700_000_000_000)
}

extension SwarmTestMesh {
    /// A 2-task parent swarm submitted through n0, and a 3-task child submitted through the node
    /// that runs one of the parent's tasks (the way a task spawns one): their ids.
    mutating func parentWithAChild() throws -> (parent: SwarmID, child: SwarmID) {
        let parentCommand = submit(draft(2), at: "n0")
        run(for: .milliseconds(300)) { $0.replies[parentCommand] != nil }
        let parent = try #require(swarmID(of: parentCommand))
        run(for: .milliseconds(200))
        let spawner = try #require(order.first { n in nodes[n]!.sandboxes.keys.contains { $0.swarm == parent } })
        let task = try #require(nodes[spawner]!.sandboxes.keys.first { $0.swarm == parent }).index
        let childCommand = submit(draft(3, parent: TaskRef(swarm: parent, task: task)), at: spawner)
        run(for: .milliseconds(500)) { $0.replies[childCommand] != nil }
        return (parent, try #require(swarmID(of: childCommand)))
    }
}
