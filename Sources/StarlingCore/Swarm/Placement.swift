/// Sparrow-style placement: batch sampling with power-of-two choices over the gossiped view.
///
/// For m pending tasks the owner sends d·m *reservations* (d = `probeRatio`), never tasks: for
/// each reservation it draws two members that take work and could fit the task (free slots and
/// free memory as they last advertised; if none has room now, members whose totals fit, so the
/// reservation waits in their queue), and reserves on the less loaded of the two, counting the
/// reservations it already sent in this round. A worker with a free slot and enough memory
/// later asks for a task (`fetch`, late binding): the first d·m fetches that find a pending
/// task get one, the rest get `noTask`.
extension Swarm {
    struct Candidate {
        var name: PeerName
        var slots: UInt32
        var free: UInt32
        /// nil: the member does not advertise memory (the worker itself enforces its limit).
        var freeMemoryMB: UInt32?
        var totalMemoryMB: UInt32?
        var sent = 0

        /// Of `free`, slots this node holds for tasks it took at create: they take reservations
        /// (which queue behind those tasks) but count as busy for the choice between two.
        var held = 0

        var used: Int { Int(slots) - Int(free) }
        /// Slots in use plus the reservations sent this round (`free <= slots`, so never negative).
        var load: UInt64 { UInt64(max(0, used + held + sent)) }
    }

    /// Members that take work, with the capacity each advertised (this node's own, live).
    func placementCandidates() -> [Candidate] {
        var list: [Candidate] = []
        for name in ringMembers.sorted() where takesWork(name) {
            if name == myName {
                guard settings.slots > 0 else { continue }
                // Slots held for tasks taken at create stay eligible: the creating swarm's own
                // placement runs just before those tasks start (`ownerCreate`), and this node
                // should get its share of reservations like any other (they wait in its queue
                // until a slot frees). Any other swarm placed while a hold lasts (up to two retry
                // intervals) sees them as eligible too, and its reservations queue here the same
                // way. They count as busy when two candidates are compared (`Candidate.held`).
                // (What this node gossips, `workerAdvertise`, counts them as free, as it does
                // slots being fetched for: both last moments, and a worker only pulls what fits.)
                let held = worker.heldAtCreate.count
                list.append(Candidate(name: name, slots: settings.slots, free: UInt32(max(0, workerFreeSlots + held)),
                                      freeMemoryMB: UInt32(clamping: max(0, workerFreeMemory + worker.heldAtCreateMemory)),
                                      totalMemoryMB: settings.memoryMB, held: held))
            } else if let view = peers[name], view.metadata.slots > 0 {
                let total = totalMemory(of: name)
                let advertisesMemory = total > 0 || view.metadata.freeMemoryMB > 0
                list.append(Candidate(name: name, slots: view.metadata.slots, free: min(view.metadata.free, view.metadata.slots),
                                      freeMemoryMB: advertisesMemory ? view.metadata.freeMemoryMB : nil,
                                      totalMemoryMB: advertisesMemory ? max(total, view.metadata.freeMemoryMB) : nil))
            }
        }
        return list
    }

    mutating func place(_ id: SwarmID, now: Instant, into out: inout Effects) {
        guard let e = swarms[id], e.role == .owner, e.placing, e.state == .running, e.pendingCount > 0 else { return }
        let d = settings.probeRatio
        let want = min(e.pendingCount, Bounds.maxPlacedPerRound) * d - e.outstandingReservations
        guard want > 0 else { return }
        var candidates = placementCandidates()
        guard !candidates.isEmpty else { return }
        var needsFor: [[TaskNeeds]] = Array(repeating: [], count: candidates.count)
        var probes = 0
        var i = e.queueHead
        while probes < want && i < e.pendingQueue.count {
            let index = Int(e.pendingQueue[i])
            i += 1
            guard e.tasks[index].state == .pending else { continue }
            let needs = e.definition.draft.tasks[index].needs
            var pool = candidates.indices.filter {
                candidates[$0].free > 0 && (candidates[$0].freeMemoryMB.map { $0 >= needs.memoryMB } ?? true)
            }
            if pool.isEmpty {
                pool = candidates.indices.filter { candidates[$0].totalMemoryMB.map { $0 >= needs.memoryMB } ?? true }
            }
            guard !pool.isEmpty else { continue }
            for _ in 0..<d where probes < want {
                let a = pool[Int(rng.next() % UInt64(pool.count))]
                let b = pool[Int(rng.next() % UInt64(pool.count))]
                // Less loaded: (used + reserved) / slots, compared without division, exactly in
                // 128 bits (slots are gossiped: up to 2³² each, and their product overflows Int).
                let loadA = candidates[a].load.multipliedFullWidth(by: UInt64(candidates[b].slots))
                let loadB = candidates[b].load.multipliedFullWidth(by: UInt64(candidates[a].slots))
                let chosen = (loadA.high, loadA.low) <= (loadB.high, loadB.low) ? a : b
                candidates[chosen].sent += 1
                needsFor[chosen].append(needs)
                probes += 1
            }
        }
        guard probes > 0 else { return }
        swarms[id]!.outstandingReservations += probes
        swarms[id]!.lastPlacement = now
        for (k, c) in candidates.enumerated() where !needsFor[k].isEmpty {
            send(.reserve(id, epoch: e.epoch, replicas: e.definition.replicas, needs: needsFor[k]), to: c.name, now: now, into: &out)
        }
    }
}
