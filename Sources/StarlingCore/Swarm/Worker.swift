/// The worker's side: every node (owners included) queues reservations, pulls a task when it
/// has a free slot and the memory for it (late binding), runs it through its host, and
/// delivers the result to the swarm's acting owner until acknowledged.
struct WorkerState: Sendable {
    struct Reservation: Sendable {
        var swarm: SwarmID
        var owner: PeerName
        var epoch: UInt32
        var needs: TaskNeeds
    }

    struct RunningTask: Sendable {
        var attempt: UInt16
        var memoryMB: UInt32
        var epoch: UInt32
        var replicas: [PeerName]
        var killed = false
    }

    struct HeldResult: Sendable {
        var attempt: UInt16
        var outcome: RunOutcome
        var result: [UInt8]
        var replicas: [PeerName]
        /// Index in `replicas` of the member to try next.
        var target = 0
        var inFlight = false
        var nextSendAt: Instant
        var sends = 0
    }

    /// FIFO, at most `Swarm.Bounds.maxReservations`.
    var reservations: [Reservation] = []
    var running: [TaskKey: RunningTask] = [:]
    /// At most `Swarm.Bounds.maxHeldResults`; at the cap the worker stops fetching.
    var held: [TaskKey: HeldResult] = [:]
    var fetchingSlots = 0
    var fetchingMemory: Int64 = 0
    /// Slots held for tasks the owner took at create (`Swarm.assignLocallyAtCreate`) until they
    /// start; keyed, so that a hold is released once whichever way it ends. At most the slots.
    var heldAtCreate: [TaskKey: HeldStart] = [:]

    struct HeldStart: Sendable {
        var attempt: UInt16
        var memoryMB: UInt32
        var since: Instant
    }

    var heldAtCreateMemory: Int64 { heldAtCreate.values.reduce(0) { $0 + Int64($1.memoryMB) } }
    var runningMemory: Int64 = 0
    /// What this node's other work holds now (hosted agents' brains), as the host last said
    /// (`SwarmActionOutcome.occupied`): tasks start only in what is left.
    var occupiedSlots = 0
    var occupiedMemory: Int64 = 0
    /// The highest owner epoch seen per swarm: messages of a lower one are refused.
    var epochs: [SwarmID: UInt32] = [:]
    var advertised: (slots: UInt32, memoryMB: UInt32)?
    var lastAdvertiseAt: Instant?
    /// Free capacity changed since the last advertisement, which was too recent to repeat.
    var advertisePending = false
}

/// A fetch in flight: the slot and memory it holds until answered.
struct FetchInFlight: Sendable {
    var swarm: SwarmID
    var owner: PeerName
    var needs: TaskNeeds
}

extension Swarm {
    var workerFreeSlots: Int {
        Int(settings.slots) - worker.running.count - worker.fetchingSlots - worker.heldAtCreate.count - heldForOthers.slots
    }
    var workerFreeMemory: Int64 {
        Int64(settings.memoryMB) - worker.runningMemory - worker.fetchingMemory - worker.heldAtCreateMemory - heldForOthers.memoryMB
    }

    /// What the node's other work (agents' brains) holds, as the worker's own start check counts
    /// it: all of it up to every slot but one and half the memory. A brain may wait for a swarm
    /// it spawned; if brains could hold the whole node, a node whose slots they fill (one slot,
    /// or as many brains as slots everywhere) would never run that swarm and the brain would
    /// wait until its timeout. The node still advertises what brains hold in full, so placement
    /// prefers nodes with room; this floor only keeps a full node from stalling.
    var heldForOthers: (slots: Int, memoryMB: Int64) {
        (min(worker.occupiedSlots, max(0, Int(settings.slots) - 1)), min(worker.occupiedMemory, Int64(settings.memoryMB) / 2))
    }

    /// Whether this node runs that attempt, or holds its result.
    func workerHolds(_ key: TaskKey, attempt: UInt16) -> Bool {
        worker.running[key]?.attempt == attempt || worker.held[key]?.attempt == attempt
    }

    mutating func workerReserve(_ id: SwarmID, epoch: UInt32, replicas: [PeerName], needs: [TaskNeeds], owner: PeerName,
                                now: Instant) {
        guard epoch >= worker.epochs[id] ?? 0 else { return }  // from a deposed owner
        // From an owner already down in this view: it would hold a slot until its fetch timed
        // out. (Reservations of an owner that goes down later are dropped in `applyMembership`.)
        guard isUp(owner) else { return }
        noteEpoch(id, epoch)
        for n in needs {
            // A reservation this node can never honour is dropped at once (the owner re-places).
            guard worker.reservations.count < Bounds.maxReservations, settings.slots > 0,
                  n.memoryMB <= settings.memoryMB else { continue }
            worker.reservations.append(.init(swarm: id, owner: owner, epoch: epoch, needs: n))
        }
    }

    mutating func noteEpoch(_ id: SwarmID, _ epoch: UInt32) {
        if epoch > worker.epochs[id] ?? 0 { worker.epochs[id] = epoch }
    }

    /// Sends a fetch for each reservation that fits in the room left, oldest first. Returns
    /// whether it sent any.
    @discardableResult
    mutating func workerFetchIfRoom(now: Instant, into out: inout Effects) -> Bool {
        var sent = false
        // Every queued reservation's owner is up: those of an owner that goes down are dropped
        // when it does (`applyMembership`), and none is queued from one that is down
        // (`workerReserve`). The queue is not scanned here: this runs after every input, and a
        // scan of thousands of reservations (hashing each owner's name) cost more CPU per task
        // than the task's SQLite writes (the swarm benchmark's profile).
        var budget = worker.reservations.count  // each reservation is looked at once per call
        while budget > 0, worker.held.count < Bounds.maxHeldResults, workerFreeSlots > 0 {
            budget -= 1
            let free = workerFreeMemory
            guard let at = worker.reservations.firstIndex(where: { Int64($0.needs.memoryMB) <= free }) else { break }
            let r = worker.reservations.remove(at: at)
            worker.fetchingSlots += 1
            worker.fetchingMemory += Int64(r.needs.memoryMB)
            sent = true
            sendRequest(.fetch(r.swarm, epoch: r.epoch, maxMemoryMB: r.needs.memoryMB), to: r.owner,
                        context: .fetch(FetchInFlight(swarm: r.swarm, owner: r.owner, needs: r.needs)), now: now, into: &out)
        }
        return sent
    }

    mutating func workerFetchAnswered(_ f: FetchInFlight, _ message: SwarmMessage?, now: Instant, into out: inout Effects) {
        worker.fetchingSlots -= 1
        worker.fetchingMemory -= Int64(f.needs.memoryMB)
        switch message {
        case .assign(let run, let epoch, let replicas) where run.swarm == f.swarm:
            noteEpoch(run.swarm, epoch)
            workerStart(run, epoch: epoch, owners: replicas.isEmpty ? [f.owner] : replicas, now: now, into: &out)
        case .noTask(let id) where id == f.swarm:
            // Nothing fits that much memory now: the swarm's other reservations that ask no more
            // are useless too (Sparrow's proactive cancellation).
            worker.reservations.removeAll { $0.swarm == id && $0.needs.memoryMB <= f.needs.memoryMB }
        default:
            break  // unreachable owner: the reservation is gone; the owner re-places if needed
        }
    }

    /// Starts an attempt assigned to this node (fetched, or taken by the owner at create), in
    /// the room its fetch or hold gave back just before.
    mutating func workerStart(_ run: TaskRun, epoch: UInt32, owners: [PeerName], now: Instant, into out: inout Effects) {
        let key = TaskKey(swarm: run.swarm, index: run.index)
        guard worker.running[key] == nil, worker.held[key]?.attempt != run.attempt else { return }
        if workerFreeSlots > 0 && Int64(run.task.needs.memoryMB) <= workerFreeMemory {
            worker.running[key] = .init(attempt: run.attempt, memoryMB: run.task.needs.memoryMB, epoch: epoch, replicas: owners)
            worker.runningMemory += Int64(run.task.needs.memoryMB)
            assert(worker.running.count <= Int(settings.slots), "a worker runs more tasks than its slots")
            assert(worker.runningMemory <= Int64(settings.memoryMB), "a worker runs tasks over its memory")
            out.append(.perform(.run(run)))
        } else {
            // An owner that ignored the fetch's memory bound, or room taken by the host's other
            // work (a brain) while the fetch was answered: the attempt is reported failed (with
            // no result) instead of overrunning this node.
            holdResult(key, attempt: run.attempt, outcome: .failed, result: [], replicas: owners, now: now, into: &out)
        }
    }

    mutating func workerFinished(_ id: SwarmID, index: UInt32, attempt: UInt16, outcome: RunOutcome, result: [UInt8],
                                 now: Instant, into out: inout Effects) {
        let key = TaskKey(swarm: id, index: index)
        guard let r = worker.running[key], r.attempt == attempt else { return }
        worker.running[key] = nil
        worker.runningMemory -= Int64(r.memoryMB)
        if result.count > SwarmLimits.maxResultBytes {
            // Cannot travel: recorded as a failed run without its result.
            holdResult(key, attempt: attempt, outcome: .failed, result: [], replicas: r.replicas, now: now, into: &out)
        } else {
            holdResult(key, attempt: attempt, outcome: outcome, result: result, replicas: r.replicas, now: now, into: &out)
        }
    }

    mutating func holdResult(_ key: TaskKey, attempt: UInt16, outcome: RunOutcome, result: [UInt8], replicas: [PeerName],
                             now: Instant, into out: inout Effects) {
        worker.held[key] = .init(attempt: attempt, outcome: outcome, result: result, replicas: replicas, nextSendAt: now)
        sendHeld(key, now: now, into: &out)
    }

    /// Sends a held result to the first member of the swarm's replica set, from `target` on,
    /// that is up in this view (the acting owner as this node sees it).
    mutating func sendHeld(_ key: TaskKey, now: Instant, into out: inout Effects) {
        guard var h = worker.held[key], !h.inFlight else { return }
        var i = h.target
        while i < h.replicas.count && !isUp(h.replicas[i]) { i += 1 }
        guard i < h.replicas.count else {
            h.target = 0
            h.nextSendAt = now + settings.retryInterval
            worker.held[key] = h
            return
        }
        h.sends += 1
        guard h.sends <= Bounds.maxResultSends else {
            worker.held[key] = nil
            return
        }
        h.target = i
        h.inFlight = true
        worker.held[key] = h
        sendRequest(.result(key.swarm, index: key.index, attempt: h.attempt, outcome: h.outcome, result: h.result),
                    to: h.replicas[i], context: .result(key, attempt: h.attempt), now: now, into: &out)
    }

    mutating func workerResultAnswered(_ key: TaskKey, attempt: UInt16, _ message: SwarmMessage?, now: Instant,
                                       into out: inout Effects) {
        guard var h = worker.held[key], h.attempt == attempt else { return }
        h.inFlight = false
        switch message {
        case .resultAck(_, _, _, .recorded), .resultAck(_, _, _, .stale):
            worker.held[key] = nil
        case .resultAck(_, _, _, .notOwner):
            h.target += 1
            if h.target < h.replicas.count {
                worker.held[key] = h
                sendHeld(key, now: now, into: &out)
            } else {
                h.target = 0
                h.nextSendAt = now + settings.retryInterval
                worker.held[key] = h
            }
        default:
            h.nextSendAt = now + settings.retryInterval
            worker.held[key] = h
        }
    }

    mutating func workerKill(_ id: SwarmID, index: UInt32, attempt: UInt16, epoch: UInt32, into out: inout Effects) {
        let key = TaskKey(swarm: id, index: index)
        guard var r = worker.running[key], r.attempt == attempt, epoch >= r.epoch, !r.killed else { return }
        r.killed = true
        r.epoch = epoch
        worker.running[key] = r
        noteEpoch(id, epoch)
        out.append(.perform(.kill(swarm: id, index: index, attempt: attempt)))
    }

    /// A (new) owner asks which of these attempts this node still runs or holds a result for;
    /// those it keeps, now answering to that owner.
    mutating func workerAdopt(_ id: SwarmID, epoch: UInt32, replicas: [PeerName], runs: [RunRef]) -> SwarmMessage {
        guard epoch >= worker.epochs[id] ?? 0 else { return .adopted(id, runs: []) }
        noteEpoch(id, epoch)
        var still: [RunRef] = []
        for run in runs {
            let key = TaskKey(swarm: id, index: run.index)
            if var r = worker.running[key], r.attempt == run.attempt {
                r.epoch = epoch
                if !replicas.isEmpty { r.replicas = replicas }
                worker.running[key] = r
                still.append(run)
            } else if worker.held[key]?.attempt == run.attempt {
                still.append(run)
            }
        }
        return .adopted(id, runs: still)
    }

    mutating func workerTick(now: Instant, into out: inout Effects) {
        for key in worker.held.keys.sorted() {
            if let h = worker.held[key], !h.inFlight, h.nextSendAt <= now { sendHeld(key, now: now, into: &out) }
        }
        if worker.epochs.count > Bounds.maxKnownEpochs {
            let busy = Set(worker.running.keys.map(\.swarm)).union(worker.held.keys.map(\.swarm))
                .union(worker.reservations.map(\.swarm))
            worker.epochs = worker.epochs.filter { busy.contains($0.key) }
        }
    }

    /// Advertises free slots and memory when they changed (the host gossips them), at most once
    /// per `Bounds.advertiseInterval`: every advertisement is a fresh `alive` in membership's
    /// gossip, and one per task start and finish crowds out news of deaths. Placement tolerates
    /// the staleness (late binding: a worker only pulls what fits).
    mutating func workerAdvertise(now: Instant, into out: inout Effects) {
        let slots = UInt32(clamping: Int(settings.slots) - worker.running.count - worker.occupiedSlots)
        let memory = UInt32(clamping: Int64(settings.memoryMB) - worker.runningMemory - worker.occupiedMemory)
        guard worker.advertised.map({ $0.slots != slots || $0.memoryMB != memory }) ?? true else {
            worker.advertisePending = false
            return
        }
        if let last = worker.lastAdvertiseAt, now - last < Bounds.advertiseInterval {
            worker.advertisePending = true
            return
        }
        worker.advertised = (slots, memory)
        worker.lastAdvertiseAt = now
        worker.advertisePending = false
        out.append(.perform(.advertise(freeSlots: slots, freeMemoryMB: memory)))
    }
}

extension TaskKey: Comparable {
    static func < (a: TaskKey, b: TaskKey) -> Bool { a.swarm != b.swarm ? a.swarm < b.swarm : a.index < b.index }
}
