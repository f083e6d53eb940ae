import Testing
@testable import StarlingCore

@Suite("Audit witness protocol (pure)")
struct AuditWitnessTests {
    static let head = AuditWitness.Head(seq: 0x0102_0304_0506_0708, hash: Array(repeating: 1, count: 32),
                                        signature: Array(repeating: 2, count: 64), publicKey: Array(repeating: 3, count: 32))

    static func view(_ name: String, _ status: MemberStatus = .alive) -> PeerView {
        PeerView(name: name, address: NodeAddress(host: "127.0.0.1", port: 1), status: status,
                 metadata: MemberMetadata(identityKey: head.publicKey))
    }

    /// A node "n1" that knows `peers` alive.
    static func node(peers: [String], settings: AuditWitness.Settings = .init()) -> AuditWitness {
        var w = AuditWitness(myName: "n1", settings: settings, now: Instant(nanoseconds: 0))
        for p in ["n1"] + peers { _ = w.membershipChanged(.updated(view(p)), now: Instant(nanoseconds: 0)) }
        return w
    }

    @Test func everyMessageRoundTripsAndBadBytesThrow() throws {
        for m: AuditWitness.Message in [.head(Self.head), .ask, .witnessed(nil), .witnessed(Self.head)] {
            let bytes = AuditWitness.encode(m)
            #expect(bytes.count <= AuditWitness.maxMessageBytes)
            #expect(try AuditWitness.decode(bytes) == m)
            for cut in 0..<bytes.count where cut != 1 || m != .ask {
                #expect(throws: (any Error).self) { try AuditWitness.decode(Array(bytes.prefix(cut))) }
            }
            #expect(throws: (any Error).self) { try AuditWitness.decode(bytes + [0]) }
        }
        #expect(throws: (any Error).self) { try AuditWitness.decode([9]) }
        #expect(throws: (any Error).self) { try AuditWitness.decode([3, 2]) }
        var rng = DeterministicRNG(seed: 7)
        for _ in 0..<5_000 {
            let bytes = (0..<Int(rng.next() % 300)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            _ = try? AuditWitness.decode(bytes)  // must not trap
        }
    }

    @Test func theHeadGoesToTwoRingSuccessorsOnATimer() {
        var w = Self.node(peers: ["n2", "n3", "n4", "n5"])
        #expect(w.tick(now: Instant(nanoseconds: 0)).isEmpty)  // not due yet
        let first = w.tick(now: w.nextDeadline)
        guard case .perform(.readOwnHead)? = first.first else { Issue.record("\(first)"); return }
        let witnesses = w.witnesses
        #expect(witnesses.count == 2)
        #expect(!witnesses.contains("n1"))
        #expect(witnesses == SwarmRing(members: ["n1", "n2", "n3", "n4", "n5"]).preferenceList("n1", count: 3).filter { $0 != "n1" })
        let sends = w.performed(.ownHead(Self.head), now: w.nextDeadline)
        #expect(sends.count == 2)
        for case .send(let m, let to) in sends {
            #expect(m == .head(Self.head))
            #expect(witnesses.contains(to))
        }
        // An empty log has no head to send.
        #expect(w.performed(.ownHead(nil), now: w.nextDeadline).isEmpty)
        // Next send one interval later.
        let before = w.nextDeadline
        _ = w.tick(now: before)
        #expect(w.nextDeadline == before + .seconds(10))
    }

    /// The witness keeps one ring of its alive members and rebuilds it after they change: the
    /// witnesses it computes always equal those of a ring built afresh from the members alive now.
    @Test func witnessesFollowTheAliveMembersAsTheyChange() {
        var w = Self.node(peers: ["n2", "n3", "n4", "n5"])
        func expected(_ alive: [String], _ peer: String) -> [String] {
            Array(SwarmRing(members: alive).preferenceList(peer, count: 3).filter { $0 != peer }.prefix(2))
        }
        var alive = ["n1", "n2", "n3", "n4", "n5"]
        for peer in alive { #expect(w.witnesses(of: peer) == expected(alive, peer)) }
        for extra in (6...40).map({ "n\($0)" }) {
            _ = w.membershipChanged(.updated(Self.view(extra)), now: Instant(nanoseconds: 0))
            alive.append(extra)
        }
        for peer in alive { #expect(w.witnesses(of: peer) == expected(alive, peer)) }
        #expect(w.witnesses == expected(alive, "n1"))
        for gone in ["n2", "n7", "n13"] {
            _ = w.membershipChanged(.updated(Self.view(gone, .dead)), now: Instant(nanoseconds: 0))
            alive.removeAll { $0 == gone }
        }
        _ = w.membershipChanged(.removed("n20"), now: Instant(nanoseconds: 0))
        alive.removeAll { $0 == "n20" }
        for peer in alive { #expect(w.witnesses(of: peer) == expected(alive, peer)) }
        #expect(w.witnesses == expected(alive, "n1"))
        // A peer not alive here is placed on the ring with the alive members, as before.
        #expect(w.witnesses(of: "n2") == expected(alive + ["n2"], "n2"))
    }

    @Test func afterAStartEveryAlivePeerIsAskedOnceAndItsAnswerChecked() {
        var w = Self.node(peers: ["n2", "n3", "n4"], settings: .init(asksPerTick: 2, maxAskRetries: 1))
        _ = w.membershipChanged(.updated(Self.view("dead", .dead)), now: Instant(nanoseconds: 0))
        func asks(_ effects: [ProtocolEffect<AuditWitness>]) -> [(PeerName, RequestID)] {
            effects.compactMap { if case .request(.ask, let to, let id, _) = $0 { (to, id) } else { nil } }
        }
        var now = w.nextDeadline
        let round1 = asks(w.tick(now: now))
        #expect(round1.map(\.0) == ["n2", "n3"])  // bounded per tick, in name order; never the dead
        // n2 answers with a head: check it. n3 does not answer: asked again later.
        let checked = w.response(.witnessed(Self.head), to: round1[0].1, now: now)
        #expect(checked.count == 1)
        if case .perform(.check(let h, let from))? = checked.first { #expect(h == Self.head && from == "n2") } else { Issue.record("\(checked)") }
        #expect(w.response(nil, to: round1[1].1, now: now).isEmpty)
        now = w.nextDeadline
        let round2 = asks(w.tick(now: now))
        #expect(round2.map(\.0) == ["n3", "n4"])
        #expect(w.response(.witnessed(nil), to: round2[1].1, now: now).isEmpty)  // n4 witnessed nothing
        _ = w.response(nil, to: round2[0].1, now: now)
        // n3 has had its retry; nobody is asked again.
        now = w.nextDeadline
        #expect(asks(w.tick(now: now)).isEmpty)
        // A late or unknown response is ignored.
        #expect(w.response(.witnessed(Self.head), to: round2[0].1, now: now).isEmpty)
    }

    /// A head is taken only from an alive peer whose witness this node is, at most once per half
    /// interval, and not again when unchanged: each costs a signature check and a durable write
    /// on the loop thread, so a flood of heads must not reach the store.
    @Test func aFloodOfHeadsReachesTheStoreOnlyWhereAndWhenItIsDue() {
        let peers = (2...12).map { "n\($0)" }
        var w = Self.node(peers: peers)
        let t0 = Instant(nanoseconds: 1_000_000_000)
        let witnessed = peers.filter { w.witnesses(of: $0).contains("n1") }
        let others = peers.filter { !witnessed.contains($0) }
        #expect(!witnessed.isEmpty && !others.isEmpty)
        for peer in others { #expect(w.receive(.head(Self.head), from: peer, now: t0).isEmpty, "n1 does not witness \(peer)") }
        #expect(w.receive(.head(Self.head), from: "stranger", now: t0).isEmpty, "not a member")
        let peer = witnessed[0]
        #expect(w.receive(.head(Self.head), from: peer, now: t0) == [.perform(.store(Self.head, from: peer))])
        var newer = Self.head
        newer.seq += 1
        // A thousand more at once: none reaches the store before half an interval has passed.
        for _ in 0..<1_000 { #expect(w.receive(.head(newer), from: peer, now: t0 + .seconds(1)).isEmpty) }
        // The same head again later: nothing to write.
        #expect(w.receive(.head(Self.head), from: peer, now: t0 + .seconds(20)).isEmpty)
        #expect(w.receive(.head(newer), from: peer, now: t0 + .seconds(20)) == [.perform(.store(newer, from: peer))])
        // A peer that is no longer alive is forgotten.
        _ = w.membershipChanged(.removed(peer), now: t0)
        #expect(w.lastTaken[peer] == nil)
        #expect(w.receive(.head(newer), from: peer, now: t0 + .seconds(40)).isEmpty)
    }

    @Test func headsFromPeersAreStoredAndAsksAnsweredThroughTheShell() {
        var w = Self.node(peers: ["n2"])
        #expect(w.receive(.head(Self.head), from: "n2", now: Instant(nanoseconds: 0)) == [.perform(.store(Self.head, from: "n2"))])
        let token = RequestToken(rawValue: 9)
        #expect(w.request(.ask, from: "n2", token: token, now: Instant(nanoseconds: 0)) == [.perform(.lookUp("n2", token: token))])
        let answer = w.performed(.witnessedHead(Self.head, for: token), now: Instant(nanoseconds: 0))
        guard case .respond(.witnessed(let h), let t)? = answer.first else { Issue.record("\(answer)"); return }
        #expect(h == Self.head && t == token)
        // Its own head looped back is ignored; a head sent as a request is not answered.
        #expect(w.receive(.head(Self.head), from: "n1", now: Instant(nanoseconds: 0)).isEmpty)
        #expect(w.request(.head(Self.head), from: "n2", token: token, now: Instant(nanoseconds: 0)).isEmpty)
    }

    /// Issue #11 item 1: a head is taken only under the identity key membership gossips for its
    /// sender. A head under another key, or from a peer whose key membership does not give, is
    /// refused before the store (fail closed) and goes to the shell to be counted.
    @Test func aHeadIsTakenOnlyUnderItsSendersGossipedKey() {
        var w = Self.node(peers: ["n2"])
        let t0 = Instant(nanoseconds: 0)
        var forged = Self.head
        forged.publicKey = Array(repeating: 9, count: 32)
        guard case .perform(.refuse(let h, let from, let reason))? = w.receive(.head(forged), from: "n2", now: t0).first else {
            Issue.record("a head under another key was not refused"); return
        }
        #expect(h == forged && from == "n2" && reason.contains("not the identity key"))
        // The same peer under its gossiped key, half an interval later: stored.
        #expect(w.receive(.head(Self.head), from: "n2", now: t0 + .seconds(5)) == [.perform(.store(Self.head, from: "n2"))])

        // A peer whose membership entry carries no key: an unknown signer, refused.
        var keyless = Self.node(peers: [])
        _ = keyless.membershipChanged(.updated(PeerView(name: "n2", address: NodeAddress(host: "127.0.0.1", port: 1), status: .alive,
                                                        metadata: MemberMetadata())), now: t0)
        guard case .perform(.refuse(_, _, let why))? = keyless.receive(.head(Self.head), from: "n2", now: t0).first else {
            Issue.record("a head from a peer without a gossiped key was not refused"); return
        }
        #expect(why.contains("no identity key"))
    }

    @Test func signerKeysFollowMembership() {
        var keys = SignerKeys()
        let key = Array(repeating: UInt8(5), count: 32)
        #expect(keys.verdict(signer: "a", publicKey: key) == .unknownSigner)
        keys.apply(.updated(PeerView(name: "a", address: NodeAddress(host: "h", port: 1), status: .alive,
                                     metadata: MemberMetadata(identityKey: key))))
        #expect(keys.expectedKey(of: "a") == key)
        #expect(keys.verdict(signer: "a", publicKey: key) == .matches)
        #expect(keys.verdict(signer: "a", publicKey: Array(repeating: 6, count: 32)) == .keyMismatch)
        // A dead member still signs under its key (its records may still arrive); a reaped one is unknown.
        keys.apply(.updated(PeerView(name: "a", address: NodeAddress(host: "h", port: 1), status: .dead,
                                     metadata: MemberMetadata(identityKey: key))))
        #expect(keys.verdict(signer: "a", publicKey: key) == .matches)
        keys.apply(.removed("a"))
        #expect(keys.verdict(signer: "a", publicKey: key) == .unknownSigner)
        // A key of the wrong size is no key.
        let short = PeerView(name: "b", address: NodeAddress(host: "h", port: 1), status: .alive,
                             metadata: MemberMetadata(identityKey: [1, 2, 3]))
        #expect(expectedIdentityKey(of: short) == nil)
    }
}

extension ProtocolEffect: Equatable where P == AuditWitness {
    public static func == (a: Self, b: Self) -> Bool {
        switch (a, b) {
        case (.send(let m1, let t1), .send(let m2, let t2)): m1 == m2 && t1 == t2
        case (.request(let m1, let t1, let i1, let d1), .request(let m2, let t2, let i2, let d2)): m1 == m2 && t1 == t2 && i1 == i2 && d1 == d2
        case (.respond(let m1, let t1), .respond(let m2, let t2)): m1 == m2 && t1 == t2
        case (.perform(let x), .perform(let y)): x == y
        default: false
        }
    }
}
