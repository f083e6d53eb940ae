/// SWIM's rules for alive, suspect and dead updates, ordered by incarnation (paper section 4.2).
///
/// - `alive(i)` overrides `suspect(j)` and `alive(j)` when i > j, and `dead`/`left` when i > j.
/// - `suspect(i)` overrides `alive(j)` when i ≥ j, and `suspect(j)` when i > j.
/// - `dead(i)` overrides `alive(j)` and `suspect(j)` when i ≥ j.
/// - Only the member itself raises its incarnation, to refute a suspicion or death.
///
/// The incarnation rule, stated for a peer that holds the cluster key and sends extreme values:
/// 1. A node stores, for another member, only an incarnation that some message about that
///    member carried. It never computes one: there is no arithmetic on another member's
///    incarnation anywhere in the core.
/// 2. The one computed incarnation is a refutation, `max(own, observed) + 1`, and a node only
///    ever applies it to itself. That is what "only a member raises its incarnation beyond what
///    others observed" means in code.
/// 3. Incarnations are bounded by `WireLimits.maxIncarnation` (2⁶²) in every message, alive and
///    accusation alike (`WireLimits.isValid(incarnation:)`, the one check; the decoders refuse
///    larger values as malformed and these handlers refuse them again, counted in
///    `messagesRejected`, for callers that build messages in memory). A node builds accusations
///    (probe failure, suspicion expiry, leave) at the incarnation it holds, which is always
///    within the bound, so a member at any incarnation can be suspected, declared dead and leave.
///    The refutation saturates at the bound, so nothing traps: a member at the bound that is
///    accused at the bound can no longer out-number the accusation; it is declared dead and is
///    learnt again after it is reaped.
/// 4. A message may not move a member's incarnation more than `WireLimits.maxIncarnationStep`
///    above the one the node holds for it (for the node itself: above its own). Honest members
///    move by one per refutation; a larger jump is a forgery that would take the member to the
///    bound, from where it could not win back its own address or metadata. Refused and counted
///    in `messagesRejected`. Below the bound a member always wins back its own entry: an `alive`
///    about it that differs from what it is (another address, metadata of a newer version, or
///    other metadata at its own version) makes it refute with a higher incarnation, and a higher
///    incarnation replaces address and metadata whatever their version. A copy whose metadata
///    is only older (a capacity advert overtaken by the next) is no threat, since peers apply
///    only newer metadata within an incarnation: refuting it made a node that adverts its free
///    slots often refute hundreds of times a run, and the flood of refutations delayed the
///    detection of real deaths past the simulator's bound (`swarm-crash`).
/// 5. About the node itself, a message too far ahead is counted in `messagesRejected` but not
///    ignored: ignoring it let a key holder walk a peer's view of the node up two steps (each
///    within the step of what that peer held) and lock the node out of its own entry for good,
///    and kept a restarted node (incarnation 0) that had been pushed past the step from ever
///    rejoining. The node refutes at `min(claimed + 1, own + step)`: it climbs at most one step
///    per message it hears about itself and overtakes the claim; the bound still costs a forger
///    2⁶² / 2²⁴ = 2³⁸ messages to push a member to it.
/// 6. A peer that missed every step of such a climb refuses the member's newest `alive` under
///    rule 4 (the gossip queue keeps one update per member, so the steps in between may never
///    go out). It asks the member for a push-pull, and a member that finds a push-pull's other
///    side holding it more than a step behind sends that side a chain of its own `alive`s, each
///    within the step of the last, up to its own incarnation (CatchUp.swift). The chain is the
///    only other incarnation a node computes, and it is its own, never above what it holds.
extension Membership {
    /// Whether a message may claim `claimed` for a member held at `known` (rule 4 above).
    static func isPlausible(_ claimed: UInt64, after known: UInt64?) -> Bool {
        guard let known else { return true }   // a member we do not know: any valid incarnation
        return claimed <= known || claimed - known <= WireLimits.maxIncarnationStep
    }

    /// Whether an `alive` about this node at its own incarnation says something it is not:
    /// another address, or metadata that is newer than or as new as its own and different.
    func differsFromMe(_ a: MembershipMessage.Alive) -> Bool {
        a.address != myAddress || a.metadata.version > metadata.version
            || (a.metadata.version == metadata.version && a.metadata != metadata)
    }

    mutating func handleAlive(_ a: MembershipMessage.Alive, now: Instant, into out: inout [MembershipDirective]) {
        guard WireLimits.isValid(incarnation: a.incarnation), a.metadata.invalidReason == nil else {
            stats.messagesRejected += 1
            return
        }
        if a.name == myName {
            // Someone holds a different or newer view of us (often from our previous life, or a
            // forgery too far ahead: we still answer it, one step at a time, see `refute`).
            // Under another identity key it is our previous life under another key, or another
            // node using our name: counted (Identity.swift), and refuted all the same.
            if let mine = metadata.identityKey, !Self.identityMatches(held: mine, claimed: a.metadata.identityKey) {
                noteIdentityConflict(a, held: mine, aboutMe: true)
            }
            if !Self.isPlausible(a.incarnation, after: incarnation) { stats.messagesRejected += 1 }
            if !isLeaving, a.incarnation > incarnation || (a.incarnation == incarnation && differsFromMe(a)) {
                refute(observed: a.incarnation, now: now)
            } else {
                stats.messagesIgnored += 1
            }
            return
        }
        guard let slot = members.slot(of: a.name) else {
            guard members.count < WireLimits.maxMembers else {
                stats.membersRejected += 1
                return
            }
            let slot = members.insert(Member(name: a.name, address: a.address, incarnation: a.incarnation, status: .alive,
                                              metadata: a.metadata, statusSince: now))
            schedule.insert(slot, using: &rng)
            broadcasts.enqueue(.alive(a))
            out.append(.changed(MemberChange(name: a.name, address: a.address, from: nil, to: .alive, incarnation: a.incarnation)))
            return
        }
        let m = members.member(at: slot)
        if let held = m.metadata.identityKey, !Self.identityMatches(held: held, claimed: a.metadata.identityKey) {
            // The identity rule (Identity.swift): the name is pinned to the key held for it.
            // A newer life under another key means the pinned one may be gone: suspect it at the
            // claim's incarnation, so that it refutes with its key if it is alive.
            noteIdentityConflict(a, held: held, aboutMe: false)
            if m.status == .alive, a.incarnation > m.incarnation, Self.isPlausible(a.incarnation, after: m.incarnation) {
                handleSuspect(name: a.name, incarnation: a.incarnation, from: myName, now: now, into: &out)
            }
            return
        }
        guard Self.isPlausible(a.incarnation, after: m.incarnation) else {
            stats.messagesRejected += 1
            askToCatchUp(slot, now: now, into: &out)
            return
        }
        if a.incarnation < m.incarnation {
            stats.messagesIgnored += 1
            return
        }
        if a.incarnation == m.incarnation {
            // Same life: liveness stays (suspect and dead win ties); only newer metadata applies.
            if m.status.isActive, a.metadata.version > m.metadata.version {
                members.update(slot) { $0.metadata = a.metadata }
                broadcasts.enqueue(.alive(a))
            } else {
                stats.messagesIgnored += 1
            }
            return
        }
        // A newer incarnation: its metadata is the member's current one, whatever the version.
        members.update(slot) {
            $0.incarnation = a.incarnation
            $0.address = a.address
            $0.metadata = a.metadata
        }
        suspicions[a.name] = nil
        setStatus(slot, .alive, now: now, into: &out)
        broadcasts.enqueue(.alive(a))
    }

    mutating func handleSuspect(name: String, incarnation inc: UInt64, from: String, now: Instant,
                                into out: inout [MembershipDirective]) {
        guard WireLimits.isValid(incarnation: inc) else {
            stats.messagesRejected += 1
            return
        }
        if name == myName {
            // An accusation too far ahead is counted as rejected but still refuted (see `refute`).
            if !Self.isPlausible(inc, after: incarnation) { stats.messagesRejected += 1 }
            if !isLeaving, inc >= incarnation { refute(observed: inc, now: now) } else { stats.messagesIgnored += 1 }
            return
        }
        guard Self.isPlausible(inc, after: incarnation(of: name)) else {
            stats.messagesRejected += 1
            if let slot = members.slot(of: name) { askToCatchUp(slot, now: now, into: &out) }
            return
        }
        guard let slot = members.slot(of: name), case let m = members.member(at: slot), m.status.isActive,
              inc >= m.incarnation else {
            stats.messagesIgnored += 1
            return
        }
        if m.status == .suspect, inc == m.incarnation, let at = suspicions.index(forKey: name) {
            // Lifeguard: an independent confirmation shortens the timeout; pass it on. (In place:
            // copying the suspicion out and back would copy its set of confirmers.)
            if settings.lifeguard, suspicions.values[at].confirm(from: from) {
                suspicionTimers.push(SuspicionTimer(deadline: suspicions.values[at].deadline, name: name))
                broadcasts.enqueue(.suspect(name: name, incarnation: inc, from: from))
            } else {
                stats.messagesIgnored += 1
            }
            return
        }
        let n = members.active.count + 1
        let bounds = settings.suspicionTimeouts(members: n)
        let k = settings.expectedConfirmations(members: n)
        let suspicion = Suspicion(incarnation: inc, from: from, startedAt: now, minimum: bounds.min,
                                  maximum: bounds.max, expectedConfirmations: k)
        suspicions[name] = suspicion
        suspicionTimers.push(SuspicionTimer(deadline: suspicion.deadline, name: name))
        members.update(slot) { $0.incarnation = inc }
        if m.status != .suspect {
            setStatus(slot, .suspect, now: now, into: &out)
            if settings.probeOrder == .suspectsFirst, from != myName, probe?.target != name,
               urgentProbedAt[name].map({ now - $0 >= Self.urgentProbeCooldown(settings) }) ?? true {
                urgentProbes.removeAll { $0 == name }
                if urgentProbes.count >= Self.maxUrgentProbes { urgentProbes.removeFirst() }
                urgentProbes.append(name)
                assert(urgentProbes.count <= Self.maxUrgentProbes)
            }
        }
        broadcasts.enqueue(.suspect(name: name, incarnation: inc, from: from))
    }

    mutating func handleDead(name: String, incarnation inc: UInt64, from: String, now: Instant,
                             into out: inout [MembershipDirective]) {
        let isLeave = from == name
        guard WireLimits.isValid(incarnation: inc) else {
            stats.messagesRejected += 1
            return
        }
        if name == myName {
            // An accusation too far ahead is counted as rejected but still refuted (see `refute`).
            if !Self.isPlausible(inc, after: incarnation) { stats.messagesRejected += 1 }
            if !isLeaving, inc >= incarnation { refute(observed: inc, now: now) } else { stats.messagesIgnored += 1 }
            return
        }
        guard Self.isPlausible(inc, after: incarnation(of: name)) else {
            stats.messagesRejected += 1
            if let slot = members.slot(of: name) { askToCatchUp(slot, now: now, into: &out) }
            return
        }
        guard let slot = members.slot(of: name), case let m = members.member(at: slot), inc >= m.incarnation else {
            stats.messagesIgnored += 1
            return
        }
        // A leave may upgrade dead to left; nothing else moves a member that is already down.
        if m.status == .left || (m.status == .dead && !isLeave) {
            stats.messagesIgnored += 1
            return
        }
        members.update(slot) { $0.incarnation = inc }
        suspicions[name] = nil
        setStatus(slot, isLeave ? .left : .dead, now: now, into: &out)
        broadcasts.enqueue(.dead(name: name, incarnation: inc, from: from))
    }

    /// The incarnation this node holds for `name` (its own for itself), or nil if unknown.
    func incarnation(of name: String) -> UInt64? {
        name == myName ? incarnation : members[name]?.incarnation
    }

    /// Raises our incarnation above `observed` and gossips that we are alive. Saturates at
    /// `WireLimits.maxIncarnation` (see rule 3).
    ///
    /// A refutation moves by at most `WireLimits.maxIncarnationStep` (rule 5): `min(observed + 1,
    /// own + step)`. A claim about us too far ahead (a forgery walked up a peer one step at a
    /// time, or our previous life) is answered with the highest step we may take; each further
    /// message we hear about us climbs another step, until we pass the claim and every peer,
    /// which holds the claim, takes our alive back. Every refutation is within the step of the
    /// previous one, so a peer that took one takes the next.
    mutating func refute(observed: UInt64, now: Instant) {
        let top = WireLimits.maxIncarnation
        let target = observed < top ? observed + 1 : top
        let reach = incarnation <= top - WireLimits.maxIncarnationStep ? incarnation + WireLimits.maxIncarnationStep : top
        incarnation = max(incarnation, min(target, reach))
        members.update(0) { [incarnation] in $0.incarnation = incarnation }
        stats.refutations += 1
        // Lifeguard: being suspected is a sign that we are the slow one.
        if settings.lifeguard { awareness.apply(delta: 1) }
        broadcasts.enqueue(.alive(selfAlive))
    }

    mutating func expireSuspicions(now: Instant, into out: inout [MembershipDirective]) {
        while let due = suspicionTimers.min, due.deadline <= now {
            suspicionTimers.pop()
            // Skip a timer whose suspicion ended, or was replaced by one that is not yet due.
            guard var s = suspicions[due.name], s.deadline <= now else { continue }
            guard let m = members[due.name], m.status == .suspect, m.incarnation == s.incarnation else {
                suspicions[due.name] = nil
                continue
            }
            // `tellAccused`: a suspicion nobody confirmed (others may well hold the member alive
            // at a newer incarnation whose gossip this node missed) first asks the member
            // itself, one probe interval before it declares the death: a live member answers
            // with its `alive` straight back.
            if settings.tellAccused, !s.isConfirmed, !s.lastWordAsked {
                s.lastWordWait = settings.probeInterval
                suspicions[due.name] = s
                suspicionTimers.push(SuspicionTimer(deadline: s.deadline, name: due.name))
                stats.accusationsTold += 1
                send([.suspect(name: due.name, incarnation: s.incarnation, from: myName)], to: m.address, into: &out)
                continue
            }
            suspicions[due.name] = nil
            stats.deathsDeclared += 1
            handleDead(name: due.name, incarnation: s.incarnation, from: myName, now: now, into: &out)
            // `tellAccused`: the member that declares a death tells the member itself, once, at
            // once: if it is alive after all, it refutes now rather than when gossip finds it.
            if settings.tellAccused, members[due.name]?.status == .dead {
                let first = DeclaredDeath(at: now, nextTellAt: now + settings.probeInterval, gap: settings.probeInterval)
                declaredDeaths[due.name] = first
                nextRetellAt = min(nextRetellAt ?? first.nextTellAt, first.nextTellAt)
                told[due.name] = nil
                tellIfAccused(due.name, now: now, into: &out)
            }
        }
    }

    /// `tellAccused`: retells each member whose death this node declared, with doubling gaps
    /// (see `declaredDeaths`), for `gossipToTheDead` or until it is alive again here.
    mutating func retellDeclaredDeaths(now: Instant, into out: inout [MembershipDirective]) {
        guard let due = nextRetellAt, now >= due else { return }
        nextRetellAt = nil
        // Sorted: dictionary order differs between processes, and the simulator must not.
        for name in declaredDeaths.keys.sorted() {
            guard var d = declaredDeaths[name], members[name]?.status == .dead, now - d.at < settings.gossipToTheDead else {
                declaredDeaths[name] = nil
                continue
            }
            if now >= d.nextTellAt {
                tellIfAccused(name, now: now, into: &out)
                d.gap = d.gap * 2
                d.nextTellAt = now + d.gap
                declaredDeaths[name] = d
            }
            nextRetellAt = min(nextRetellAt ?? d.nextTellAt, d.nextTellAt)
        }
        assert(declaredDeaths.count <= members.count, "declared deaths outside the member table")
    }

    /// Drops dead and left members whose last change is older than `reapAfter`.
    mutating func reap(now: Instant, into out: inout [MembershipDirective]) {
        // Oldest slots first, so that the order of the changes never depends on earlier swaps.
        for slot in members.inactive.sorted() {
            let m = members.member(at: slot)
            guard now - m.statusSince >= settings.reapAfter else { continue }
            members.remove(slot)
            schedule.remove(slot)
            suspicions[m.name] = nil
            told[m.name] = nil
            declaredDeaths[m.name] = nil
            urgentProbedAt[m.name] = nil
            stats.reaped += 1
            out.append(.changed(MemberChange(name: m.name, address: m.address, from: m.status, to: nil, incarnation: m.incarnation)))
        }
    }

    /// The one place a member's status changes: keeps the indexes and emits the change.
    mutating func setStatus(_ slot: MemberTable.Slot, _ status: MemberStatus, now: Instant, into out: inout [MembershipDirective]) {
        guard slot != 0 else { return }
        let old = members.member(at: slot).status
        guard old != status else { return }
        members.update(slot) {
            $0.status = status
            $0.statusSince = now
        }
        if status.isActive { schedule.insert(slot, using: &rng) }
        if status == .alive {
            told[members.name(at: slot)] = nil
            declaredDeaths[members.name(at: slot)] = nil
            if old == .dead { memberCameBack(now: now) }
        }
        assert(members.active.count + members.inactive.count + 1 == members.count, "member indexes out of step")
        let m = members.member(at: slot)
        out.append(.changed(MemberChange(name: m.name, address: m.address, from: old, to: status, incarnation: m.incarnation)))
    }
}
