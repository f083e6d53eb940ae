/// The lead check: a holder asks the owner it defers to whether it leads the session.
///
/// Holders defer to an owner while it is present in their view (alive or suspect): they do not
/// take the session over (`considerTakeovers`) and they refuse other preparers (`promise`'s
/// stickiness). Presence is not leadership. A node named owner by a refused takeover's hint, or
/// by a promise whose takeover then failed, may lead nothing and defer in turn, and the session
/// stays unled while all of them live (`starling-sim --scenario session-partition --nodes 20
/// --sessions 40 --seed 2`: n4 deferred to n12, n12 to n4, n1 to n12). So every
/// `leadCheckInterval` a holder asks each owner it defers to, in one message per owner and
/// `SessionLimits.maxLeadCheck` sessions, which of them it does not lead; for those, the owner
/// counts as gone until this holder's promise changes. Safety does not rest on it: epochs and
/// majorities fence every write whoever prepares. A hostile owner can only give up its own
/// sessions this way, which it could do by not serving them.
extension Sessions {
    /// Asks the owners this node defers to whether they lead the sessions concerned.
    mutating func checkLeads(now: Instant) -> [ProtocolEffect<Sessions>] {
        if let next = nextLeadCheck, now < next { return [] }
        nextLeadCheck = now + settings.leadCheckInterval
        // Denials whose promise is no longer held here are void: drop them.
        ownerDenied = ownerDenied.filter { sid, denied in held[sid].map { Takeover.Promise(epoch: $0.epoch, owner: $0.owner) == denied } == true }
        var asked: [PeerName: [String: Takeover.Promise]] = [:]
        for (sid, h) in held where h.lead == nil && !h.deleted && h.owner != myName && present.contains(h.owner) && incoming[sid] == nil {
            asked[h.owner, default: [:]][sid] = Takeover.Promise(epoch: h.epoch, owner: h.owner)
        }
        var effects: [ProtocolEffect<Sessions>] = []
        for owner in asked.keys.sorted() {
            guard let promises = asked[owner] else { continue }
            let sids = promises.keys.sorted()
            for start in stride(from: 0, to: sids.count, by: SessionLimits.maxLeadCheck) {
                let batch = Array(sids[start..<min(start + SessionLimits.maxLeadCheck, sids.count)])
                var purpose: [String: Takeover.Promise] = [:]
                for sid in batch { purpose[sid] = promises[sid] }
                effects.append(request(.leads(sessions: batch), to: owner, session: "", purpose: .leadCheck(purpose)))
            }
        }
        return effects
    }

    /// Whether this node leads `sid`, or is on its way to: taking it over, retaking it after a
    /// handoff it gave up, or handed it and waiting for the commit.
    func leadsOrTakes(_ sid: String) -> Bool {
        if incoming[sid] != nil || retakeAfterAbortedHandoff.contains(sid) { return true }
        guard let h = held[sid] else { return false }
        return h.lead != nil && h.owner == myName
    }

    /// An owner's answer to a lead check: a denial counts for a session asked about whose
    /// promise here is still the one held when asked, and is not led here meanwhile.
    mutating func leadCheckAnswered(_ asked: [String: Takeover.Promise], by peer: PeerName, _ message: SessionMessage?) -> [ProtocolEffect<Sessions>] {
        guard case .notLeading(let sids)? = message else { return [] }
        for sid in sids {
            guard let promise = asked[sid], promise.owner == peer, let h = held[sid], h.lead == nil,
                  Takeover.Promise(epoch: h.epoch, owner: h.owner) == promise else { continue }
            if ownerDenied[sid] != promise { counters.ownersDenied += 1 }
            ownerDenied[sid] = promise
        }
        return []
    }

    /// Whether `h`'s owner said it does not lead the session, under the promise held now.
    func ownerSaidItDoesNotLead(_ sid: String, _ h: Held) -> Bool {
        ownerDenied[sid] == Takeover.Promise(epoch: h.epoch, owner: h.owner)
    }
}
