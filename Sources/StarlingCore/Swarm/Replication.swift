/// Replication of a swarm's state from its acting owner to the rest of its replica set.
///
/// Every change the owner makes (a task assigned, a result recorded, the swarm cancelled) is
/// stored locally first, then sent as a delta that names the version it builds on; a replica
/// applies a delta only on top of exactly that version and otherwise asks for the whole swarm
/// (`needFull`), which the owner sends in chunks. What the owner promises a peer (a created
/// swarm, an assignment, an acknowledged result) waits until a majority of the replica set —
/// counting only members not known dead — holds the version with that change (`Waiter`).
extension Swarm {
    /// Sets a task's record on the owner: stores it, marks it for replication, keeps counters,
    /// and marks the swarm done when its last task became final.
    /// `first`: a record that becomes pending goes to the head of the pending queue, not its tail.
    mutating func setTask(_ id: SwarmID, _ index: UInt32, _ record: TaskRecord, first: Bool = false, now: Instant,
                          into out: inout Effects) {
        guard swarms[id] != nil, Int(index) < swarms[id]!.tasks.count else { return }
        swarms[id]!.set(index, record, first: first)
        swarms[id]!.dirty.insert(index)
        dirtySwarms.insert(id)
        out.append(.perform(.store(.task(id, index: index, record))))
        markFinishedIfDone(id, now: now, into: &out)
    }

    mutating func setSwarmState(_ id: SwarmID, _ state: SwarmState, now: Instant, into out: inout Effects) {
        guard swarms[id] != nil, swarms[id]!.state != state else { return }
        swarms[id]!.state = state
        swarms[id]!.metaDirty = true
        dirtySwarms.insert(id)
        out.append(.perform(.store(.swarmState(id, state, epoch: swarms[id]!.epoch))))
        markFinishedIfDone(id, now: now, into: &out)
    }

    mutating func markFinishedIfDone(_ id: SwarmID, now: Instant, into out: inout Effects) {
        guard let e = swarms[id], e.unfinished == 0 else { return }
        if e.state == .running {
            setSwarmState(id, .done, now: now, into: &out)
            return
        }
        if e.finishedAt == nil { swarms[id]!.finishedAt = now }
    }

    /// Sends what changed in every swarm this node owns, and whole swarms to replicas that
    /// need them; then releases the waiters whose version is stored on a majority.
    mutating func flushReplication(now: Instant, into out: inout Effects) {
        guard !dirtySwarms.isEmpty else { return }
        let ids = dirtySwarms.sorted()
        dirtySwarms.removeAll()
        for id in ids {
            guard let e = swarms[id], e.role == .owner else { continue }
            let others = e.definition.replicas.filter { $0 != myName && isUp($0) }
            if e.hasUnsentChanges {
                let records = e.dirty.sorted().map { IndexedRecord(index: $0, record: e.tasks[Int($0)]) }
                let chunks = Self.chunk(records)
                for (k, chunk) in chunks.enumerated() {
                    let base = swarms[id]!.version
                    swarms[id]!.version += 1
                    let update = ReplicaUpdate(id: id, epoch: e.epoch, baseVersion: base, version: base + 1, state: e.state,
                                               definition: nil, records: chunk, children: k == 0 ? e.newChildren : [],
                                               last: true)
                    for peer in others where !e.needsFull.contains(peer) {
                        sendRequest(.replicate(update), to: peer,
                                    context: .replicate(id, peer: peer, version: base + 1, completesFull: false),
                                    now: now, into: &out)
                    }
                }
                swarms[id]!.dirty.removeAll()
                swarms[id]!.metaDirty = false
                swarms[id]!.newChildren.removeAll()
            }
            for peer in swarms[id]!.needsFull.sorted() where isUp(peer) && !swarms[id]!.fullInFlight.contains(peer) {
                sendWholeSwarm(id, to: peer, now: now, into: &out)
            }
            // Every record changed so far is in a version sent (or stored whole on the next
            // transfer): the finish counter now is covered by this version.
            swarms[id]!.noteUnpublished()
            publishCommitted(id, into: &out)
            checkWaiters(id, now: now, into: &out)
        }
    }

    /// Owner: shows the events stream the finished tasks of every version a majority of the
    /// replica set stores. Before this, the owner's stream showed a result the moment the
    /// owner recorded it; when the owner died before a replica stored it, the successor gave
    /// that number to another task, and a client resuming with `Last-Event-ID` missed one task
    /// and saw the other twice.
    mutating func publishCommitted(_ id: SwarmID, into out: inout Effects) {
        guard let e = swarms[id], e.role == .owner, !e.unpublished.isEmpty else { return }
        let committed = committedVersion(e)
        var seq = e.published
        var released = 0
        for pending in e.unpublished {
            guard pending.version <= committed else { break }
            seq = max(seq, pending.seq)
            released += 1
        }
        guard released > 0 else { return }
        swarms[id]!.unpublished.removeFirst(released)
        publish(id, upTo: seq, into: &out)
    }

    /// Writes the events stream's watermark, if it rises.
    mutating func publish(_ id: SwarmID, upTo seq: UInt32, into out: inout Effects) {
        guard let published = swarms[id]?.published, seq > published else { return }
        swarms[id]!.published = seq
        out.append(.perform(.store(.visible(id, upTo: seq))))
    }

    /// Splits records into messages of at most `SwarmLimits.pageBytes` (one record may exceed it alone).
    static func chunk(_ records: [IndexedRecord]) -> [[IndexedRecord]] {
        var chunks: [[IndexedRecord]] = [[]]
        var bytes = 0
        for r in records {
            let size = 24 + (r.record.node?.utf8.count ?? 0) + (r.record.result?.count ?? 0)
            if bytes + size > SwarmLimits.pageBytes && !chunks[chunks.count - 1].isEmpty {
                chunks.append([])
                bytes = 0
            }
            chunks[chunks.count - 1].append(r)
            bytes += size
        }
        return chunks
    }

    /// The whole swarm to one replica: the definition with the first records, then the rest.
    mutating func sendWholeSwarm(_ id: SwarmID, to peer: PeerName, now: Instant, into out: inout Effects) {
        guard let e = swarms[id] else { return }
        swarms[id]!.needsFull.remove(peer)
        swarms[id]!.fullInFlight.insert(peer)
        let records = e.tasks.indices.compactMap { i -> IndexedRecord? in
            let r = e.tasks[i]
            return r == TaskRecord() ? nil : IndexedRecord(index: UInt32(i), record: r)
        }
        let chunks = Self.chunk(records)
        for (k, chunk) in chunks.enumerated() {
            let last = k == chunks.count - 1
            let update = ReplicaUpdate(id: id, epoch: e.epoch, baseVersion: e.version, version: e.version, state: e.state,
                                       definition: k == 0 ? e.definition : nil, records: chunk,
                                       children: k == 0 ? e.children : [], last: last,
                                       lineage: k == 0 ? e.lineage : FinishLineage())
            sendRequest(.replicate(update), to: peer,
                        context: .replicate(id, peer: peer, version: e.version, completesFull: last), now: now, into: &out)
        }
    }

    /// The highest version a majority of the replica set holds. Members not up in this node's
    /// view do not count (the owner carries on with fewer copies rather than stall).
    func committedVersion(_ e: SwarmEntry) -> UInt64 {
        let up = e.definition.replicas.filter(isUp)
        let needed = max(1, min(e.definition.replicas.count / 2 + 1, up.count))
        var versions = [e.version]
        for peer in up where peer != myName { versions.append(e.replicaVersion[peer] ?? 0) }
        versions.sort(by: >)
        return versions[min(needed, versions.count) - 1]
    }

    /// Queues something to do once the changes made so far are stored on a majority.
    mutating func whenStored(_ id: SwarmID, _ action: Waiter.Action, fallback: SwarmMessage?) {
        guard let e = swarms[id] else { return }
        swarms[id]!.waiters.append(Waiter(version: e.targetVersion, action: action, fallback: fallback))
        dirtySwarms.insert(id)
    }

    mutating func checkWaiters(_ id: SwarmID, now: Instant, into out: inout Effects) {
        guard let e = swarms[id], !e.waiters.isEmpty, e.role == .owner, !e.hasUnsentChanges else { return }
        let committed = committedVersion(e)
        let ready = e.waiters.filter { $0.version <= committed }
        guard !ready.isEmpty else { return }
        swarms[id]!.waiters.removeAll { $0.version <= committed }
        for w in ready {
            switch w.action {
            case .respond(let message, let responder):
                respond(message, to: responder, now: now, into: &out)
            case .startPlacement:
                if swarms[id] != nil { swarms[id]!.placing = true }
                place(id, now: now, into: &out)
            case .assigned(let index):
                swarms[id]?.assigning.remove(index)
            case .startLocal(let run):
                startLocal(run, now: now, into: &out)
            }
        }
    }

    /// This node is no longer the swarm's owner (a newer owner spoke, or the view changed):
    /// whatever waited on replication gets its fallback answer.
    mutating func stepDown(_ id: SwarmID, now: Instant, into out: inout Effects) {
        guard let e = swarms[id], e.role != .replica else { return }
        takeovers[id] = nil
        swarms[id]!.role = .replica
        swarms[id]!.placing = false
        swarms[id]!.waiters = []
        swarms[id]!.assigning = []
        swarms[id]!.auditing = []
        swarms[id]!.replicaVersion = [:]
        swarms[id]!.needsFull = []
        swarms[id]!.fullInFlight = []
        swarms[id]!.dirty = []
        swarms[id]!.metaDirty = false
        swarms[id]!.newChildren = []
        swarms[id]!.outstandingReservations = 0
        swarms[id]!.unpublished = []
        for w in e.waiters {
            switch w.action {
            case .respond(_, let responder):
                if let fallback = w.fallback { respond(fallback, to: responder, now: now, into: &out) }
            case .startLocal(let run):
                // Never started here. The new owner finds it running nowhere and requeues it,
                // which spends an attempt (it cannot tell a run that never started from one that
                // died with its node), as for any assignment whose node died before it ran.
                _ = releaseHold(TaskKey(swarm: run.swarm, index: run.index), attempt: run.attempt)
            case .startPlacement, .assigned:
                break
            }
        }
    }

    // MARK: Replica side

    mutating func replicaApply(_ u: ReplicaUpdate, from peer: PeerName, responder: Responder, now: Instant,
                               into out: inout Effects) {
        if let e = swarms[u.id] {
            if u.epoch < e.epoch || (u.epoch == e.epoch && e.role != .replica && !precedes(peer, myName, in: e.definition)) {
                respond(.replicated(u.id, version: e.version, status: .staleEpoch(e.epoch)), to: responder, now: now, into: &out)
                return
            }
            if e.role != .replica { stepDown(u.id, now: now, into: &out) }
            if u.epoch > e.epoch {
                swarms[u.id]!.epoch = u.epoch
                out.append(.perform(.store(.swarmState(u.id, u.state, epoch: u.epoch))))
            }
        }
        if let definition = u.definition {
            if swarms[u.id] == nil, let reason = replicaRefusal(definition) {
                respond(.refused(reason), to: responder, now: now, into: &out)
                return
            }
            var entry = SwarmEntry(definition: definition, epoch: u.epoch, state: u.state,
                                   tasks: Array(repeating: TaskRecord(), count: definition.draft.tasks.count), now: now)
            out.append(.perform(.store(.swarm(definition, epoch: u.epoch, state: u.state))))
            out.append(.perform(.store(.hideAll(u.id))))
            // The copy held before is replaced, in memory and in the store: a finished record it
            // had that the transfer does not carry (an owner's finish that never reached the
            // others, kept in this node's store across its restart) must not stay in the store,
            // where the events stream would show it under a number the owner gives another task.
            // Later chunks of the transfer set the records they carry again.
            if let previous = swarms[u.id]?.tasks {
                let carried = Set(u.records.map(\.index))
                for i in previous.indices where previous[i].finishSeq > 0 && !carried.contains(UInt32(i)) {
                    out.append(.perform(.store(.task(u.id, index: UInt32(i), TaskRecord()))))
                }
            }
            for r in u.records where Int(r.index) < entry.tasks.count {
                entry.tasks[Int(r.index)] = r.record
                out.append(.perform(.store(.task(u.id, index: r.index, r.record))))
            }
            entry.children = u.children
            for c in u.children { out.append(.perform(.store(.child(u.id, c)))) }
            // The owner's numbering replaces this copy's (a whole transfer carries its lineage).
            entry.lineage = u.lineage
            out.append(.perform(.store(.lineage(u.id, u.lineage))))
            entry.version = u.version
            entry.restoredAt = nil
            entry.awaitingChunks = !u.last
            entry.recount()
            if entry.unfinished > 0 { entry.finishedAt = nil }
            swarms[u.id] = entry
        } else if swarms[u.id]?.awaitingChunks == true && u.version != u.baseVersion {
            // A change sent after a whole transfer whose later chunks have not come (a link
            // refused them): applied now, it would make the copy look whole, and the stream
            // would move past the numbers those chunks bring. The owner sends the whole again.
            respond(.replicated(u.id, version: swarms[u.id]!.version, status: .needFull), to: responder, now: now, into: &out)
            return
        } else if swarms[u.id]?.version == u.baseVersion {
            // Through the dictionary only: a local copy of the entry alive here would make each
            // record change copy every record.
            for r in u.records where Int(r.index) < swarms[u.id]!.tasks.count {
                swarms[u.id]!.set(r.index, r.record)
                out.append(.perform(.store(.task(u.id, index: r.index, r.record))))
            }
            // One set of the links held, not a scan per link: a message may carry 100,000.
            var known = Set(swarms[u.id]!.children.map(\.child))
            for c in u.children where swarms[u.id]!.children.count < SwarmLimits.maxChildren && known.insert(c.child).inserted {
                swarms[u.id]!.children.append(c)
                out.append(.perform(.store(.child(u.id, c))))
            }
            if u.state != swarms[u.id]!.state {
                swarms[u.id]!.state = u.state
                out.append(.perform(.store(.swarmState(u.id, u.state, epoch: u.epoch))))
            }
            swarms[u.id]!.version = u.version
            if u.last { swarms[u.id]!.awaitingChunks = false }
        } else {
            respond(.replicated(u.id, version: swarms[u.id]?.version ?? 0, status: .needFull), to: responder, now: now, into: &out)
            return
        }
        if let e = swarms[u.id] {
            if e.isFinished && e.finishedAt == nil { swarms[u.id]!.finishedAt = now }
            if !e.isFinished { swarms[u.id]!.finishedAt = nil }
            // The owner stored everything it sends before sending it: this node and the owner
            // hold these records, which is a majority of a replica set of up to 3 (the mesh's
            // R). A larger set would need the owner's watermark on the wire; until then its
            // replicas show nothing the owner did not confirm (their streams wait).
            // Only at a transfer's last chunk: after chunk 0 the finishes numbered below its
            // highest may still be missing (in later chunks, or just cleared above), and a stream
            // that moved past them would never show them (review of the event-id merge).
            if e.definition.replicas.count / 2 + 1 <= 2 && u.last && !e.awaitingChunks {
                publish(u.id, upTo: e.finishCounter, into: &out)
            }
        }
        swarms[u.id]!.heardOwner = (peer, now)
        respond(.replicated(u.id, version: swarms[u.id]!.version, status: .applied), to: responder, now: now, into: &out)
    }

    /// Why this node does not take a copy of a swarm it does not hold yet: any peer with the
    /// cluster key can send one, and each is kept in memory and in the store, so a swarm whose
    /// replica set leaves this node out is refused, and so is one over `Bounds.maxActiveSwarms`
    /// unfinished swarms (the bound a create is held to).
    func replicaRefusal(_ definition: SwarmDefinition) -> String? {
        guard definition.replicas.contains(myName) else {
            return "\(myName) is not in the replica set of swarm \(definition.id)"
        }
        let active = swarms.values.reduce(0) { $0 + ($1.isFinished ? 0 : 1) }
        guard active < Bounds.maxActiveSwarms else {
            return "\(myName) holds \(active) unfinished swarms, its limit"
        }
        return nil
    }

    /// Whether `a` comes before `b` in the swarm's replica set (the earlier one owns first).
    func precedes(_ a: PeerName, _ b: PeerName, in definition: SwarmDefinition) -> Bool {
        let ia = definition.replicas.firstIndex(of: a) ?? Int.max
        let ib = definition.replicas.firstIndex(of: b) ?? Int.max
        return ia < ib
    }

    mutating func replicationAnswered(_ id: SwarmID, peer: PeerName, version: UInt64, completesFull: Bool,
                                      _ message: SwarmMessage?, now: Instant, into out: inout Effects) {
        guard let e = swarms[id], e.role == .owner else { return }
        switch message {
        case .replicated(_, let replicaVersion, .applied):
            if completesFull { swarms[id]!.fullInFlight.remove(peer) }
            if !swarms[id]!.fullInFlight.contains(peer) {
                swarms[id]!.replicaVersion[peer] = max(e.replicaVersion[peer] ?? 0, min(replicaVersion, e.version))
            }
            dirtySwarms.insert(id)
        case .replicated(_, _, .needFull):
            // The last chunk refused (an earlier one was lost): this transfer is over, and the
            // peer needs another (before, it stayed "in flight" and got none again).
            if completesFull { swarms[id]!.fullInFlight.remove(peer) }
            if !swarms[id]!.fullInFlight.contains(peer) {
                swarms[id]!.needsFull.insert(peer)
                dirtySwarms.insert(id)
            }
        case .replicated(_, _, .staleEpoch(let theirs)):
            if theirs >= e.epoch { stepDown(id, now: now, into: &out) }
        default:
            // Unreachable, timed out, or nonsense: send the whole swarm again (on the next
            // input; a peer that keeps timing out costs one transfer per request timeout).
            swarms[id]!.fullInFlight.remove(peer)
            swarms[id]!.replicaVersion[peer] = nil
            if isUp(peer) { swarms[id]!.needsFull.insert(peer) }
            dirtySwarms.insert(id)
        }
    }

    /// A page of what this node holds of a swarm, for a replica that is taking over.
    func syncPage(_ id: SwarmID, from: UInt32) -> SwarmMessage {
        guard let e = swarms[id] else {
            return .syncPage(SyncPage(id: id, known: false, epoch: 0, version: 0, state: .running, children: [],
                                      from: 0, records: [], next: nil))
        }
        var records: [TaskRecord] = []
        var bytes = 0
        var i = Int(from)
        while i < e.tasks.count {
            let size = 24 + (e.tasks[i].node?.utf8.count ?? 0) + (e.tasks[i].result?.count ?? 0)
            if bytes + size > SwarmLimits.pageBytes && !records.isEmpty { break }
            records.append(e.tasks[i])
            bytes += size
            i += 1
        }
        return .syncPage(SyncPage(id: id, known: true, epoch: e.epoch, version: e.version, state: e.state,
                                  children: from == 0 ? e.children : [], from: min(from, UInt32(e.tasks.count)),
                                  records: records, next: i < e.tasks.count ? UInt32(i) : nil,
                                  lineage: from == 0 ? e.lineage : FinishLineage()))
    }
}

extension SwarmEntry {
    /// Versions whose publication waits for a majority (`unpublished`): coalesced past this
    /// many (a later version covers an earlier one's finishes, so merging only delays them).
    static let maxUnpublished = 1024

    /// Owner: notes that the version sent last covers every finish numbered so far.
    mutating func noteUnpublished() {
        guard finishCounter > (unpublished.last?.seq ?? published) else { return }
        if unpublished.count >= Self.maxUnpublished {
            unpublished[unpublished.count - 1] = (version, finishCounter)
        } else {
            unpublished.append((version, finishCounter))
        }
    }

    /// Replaces one record, keeping the counters and the pending queue right (a record that
    /// becomes pending joins the queue's tail, or its head when `first`).
    mutating func set(_ index: UInt32, _ record: TaskRecord, first: Bool = false) {
        let i = Int(index)
        let old = tasks[i]
        if old.state.isFinal != record.state.isFinal { unfinished += record.state.isFinal ? -1 : 1 }
        if old.state == .pending && record.state != .pending { pendingCount -= 1 }
        if old.state != .pending && record.state == .pending {
            pendingCount += 1
            if first { enqueueFirst(index) } else { enqueue(index) }
        }
        if record.finishSeq > finishCounter { finishCounter = record.finishSeq }
        tasks[i] = record
    }
}
