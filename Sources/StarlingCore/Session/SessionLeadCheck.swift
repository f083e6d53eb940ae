/// The lead check: a holder asks the owner it defers to whether it leads the session.
///
/// Holders defer to an owner while it is present in their view (alive or suspect): they do not
/// take the session over (`considerTakeovers`) and they refuse other preparers (`promise`'s
/// stickiness). Presence is not leadership. A node named owner by a refused takeover's hint, or
/// by a promise whose takeover then failed, may lead nothing and defer in turn, and the session
/// stays unled while all of them live (`starling-sim --scenario session-partition --nodes 20
/// --sessions 40 --seed 2`: n4 deferred to n12, n12 to n4, n1 to n12). So every
/// `leadCheckInterval` a holder asks each owner it defers to, in one message per owner and
/// `SessionLimits.maxLeadCheck` sessions, which of them it does not lead, and what it knows of
/// each (`leadCheckAnswered` says what the holder does with it: raise its promise to a newer
/// one, or count the owner as gone while nothing changed). A denial only counts where the
/// answerer's copy holds an older configuration than the holder's, or the same one with the
/// same set (or a head behind): stickiness also keeps copies of a superseded set from electing
/// anyone (review5 F1). A hostile member asked as owner can give
/// up the sessions it is asked about. It cannot raise a holder's promise further than half of
/// `SessionLimits.maxEpochStep` above the holder's records and configuration (`raiseLimit`;
/// review6 F2, review7 F5), so no one is left unable to prepare above it.
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
    /// handoff it gave up, or handed it and waiting for the commit while the commit is due.
    /// After that an offer counts only while this node's takeover of it is in flight: between
    /// attempts it leads nothing, and the members that defer to it must be able to find out. A
    /// commit lost to a next owner outside the old set, with a member of that set dead, left the
    /// session unled for good: the old owner never promises the next owner's takeover (it is
    /// outside its set), so that takeover failed for ever, and its offer kept every lead check
    /// quiet (review8).
    func leadsOrTakes(_ sid: String, now: Instant) -> Bool {
        if retakeAfterAbortedHandoff.contains(sid) { return true }
        if let offer = incoming[sid], now < offer.deadline { return true }
        guard let h = held[sid] else { return false }
        return h.lead != nil && h.owner == myName
    }

    /// What this node knows of `sid` for a lead check's answer: its promise and its copy's set,
    /// or the release it remembers, or nothing.
    func leadAnswer(_ sid: String) -> LeadAnswer {
        if let h = held[sid] {
            return LeadAnswer(session: sid, epoch: h.epoch, owner: h.owner, replicas: h.replicas, headEpoch: h.records.last?.epoch ?? 0, seq: h.lastSeq,
                              configEpoch: h.configEpoch)
        }
        if let r = releases[sid] { return LeadAnswer(session: sid, epoch: r.epoch, owner: r.owner) }
        return LeadAnswer(session: sid)
    }

    /// An owner's answer to a lead check, for each session asked whose promise here is still
    /// the one held when asked and which is not led here meanwhile:
    /// - not named: the owner leads it (or is taking it): a denial of it is over;
    /// - named with a newer promise than this node's: this node raises its own promise to it
    ///   (an acceptor may always promise a higher epoch) and defers to that owner from then on.
    ///   A copy that missed a move or a takeover learns where the session went, instead of
    ///   counting its old owner as gone and voting for a stale member with a superseded set
    ///   (review5 F1: a stale ex-owner and such a copy elected a second owner);
    /// - named with this epoch or an older one, from a copy (not a release) with an older
    ///   configuration than this node's (`configEpoch`), or the same one with the same replica
    ///   set or a head behind this node's (ranked as takeovers rank copies: the last record's
    ///   epoch, then its seq; it knows less, so its other set is an older one): a denial. (With
    ///   the set compared only, a next owner whose copy missed the set change a takeover made
    ///   meanwhile was deferred to for good: review8's lost commit.)
    ///   The answerer made no change of the set that this node missed, so a majority of this
    ///   node's set is still the session's (session-churn, 20 nodes, seed 16: the owner named
    ///   held a copy of seq 7 with a set two changes old, deferring to a third node, and the
    ///   holder, at seq 29, waited on it for good);
    /// - anything else (another set on a copy as far on as this one or further; a release, which
    ///   says the session went elsewhere, not that it is unled (review6 F3: every release at or
    ///   below the holder's epoch counted as "a copy behind"); nothing known): no denial.
    mutating func leadCheckAnswered(_ asked: [String: Takeover.Promise], by peer: PeerName, _ message: SessionMessage?) -> [ProtocolEffect<Sessions>] {
        guard case .notLeading(let answers)? = message else { return [] }
        var named: [String: LeadAnswer] = [:]
        for answer in answers where asked[answer.session] != nil { named[answer.session] = answer }
        var effects: [ProtocolEffect<Sessions>] = []
        for sid in asked.keys.sorted() {
            guard let promise = asked[sid], promise.owner == peer, var h = held[sid], h.lead == nil,
                  Takeover.Promise(epoch: h.epoch, owner: h.owner) == promise else { continue }
            guard let answer = named[sid], !answer.owner.isEmpty else {
                ownerDenied[sid] = nil
                continue
            }
            if answer.epoch > h.epoch, answer.epoch > raiseLimit(of: h) {
                counters.forged += 1
                ownerDenied[sid] = nil
            } else if answer.epoch > h.epoch {
                h.epoch = answer.epoch
                h.owner = answer.owner
                held[sid] = h
                ownerDenied[sid] = nil
                counters.promisesRaised += 1
                effects.append(.perform(.persist(.promise(session: sid, epoch: answer.epoch, owner: answer.owner), then: .nothing)))
            } else if !answer.replicas.isEmpty, answer.configEpoch < h.configEpoch || (answer.configEpoch == h.configEpoch &&
                      (answer.replicas == h.replicas || (answer.headEpoch, answer.seq) < (h.records.last?.epoch ?? 0, h.lastSeq))) {
                if ownerDenied[sid] != promise { counters.ownersDenied += 1 }
                ownerDenied[sid] = promise
            } else {
                ownerDenied[sid] = nil
            }
        }
        return effects
    }

    /// A request about `sid` from its owner (a prepare, an install, a record) shows it leads or
    /// takes the session: a denial of it is over (review5 F3).
    mutating func heardFromOwner(_ message: SessionMessage, _ peer: PeerName) {
        let sid: String
        switch message {
        case .prepare(let s, _): sid = s
        case .install(let image): sid = image.id
        case .append(let record), .appendChunks(let record, _, _): sid = record.session
        default: return
        }
        if ownerDenied[sid]?.owner == peer { ownerDenied[sid] = nil }
    }

    /// Whether `h`'s owner said it does not lead the session, under the promise held now.
    func ownerSaidItDoesNotLead(_ sid: String, _ h: Held) -> Bool {
        ownerDenied[sid] == Takeover.Promise(epoch: h.epoch, owner: h.owner)
    }
}
