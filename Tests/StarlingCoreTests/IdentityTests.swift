import Testing
@testable import StarlingCore

/// Issue #11 item 1: each node's Ed25519 public key travels in its membership metadata, and a
/// name is pinned to its key while the member is in the table (Identity.swift).
@Suite("Identity keys in membership")
struct IdentityTests {
    static let keyA = Array(repeating: UInt8(0xa1), count: 32)
    static let keyB = Array(repeating: UInt8(0xb2), count: 32)

    static func meta(_ key: [UInt8]?, version: UInt64 = 0) -> MemberMetadata {
        MemberMetadata(version: version, api: "127.0.0.1:9000", slots: 2, free: 2, identityKey: key)
    }

    /// "me" knowing p1 (key A, incarnation 1) and p2, p3 (no key).
    static func node(settings: MembershipSettings = .lan) -> Membership {
        var m = nodeWithPeers(3, settings: settings)
        _ = m.receive(Packet([alive("p1", 1001, inc: 2, meta: meta(keyA))]), from: addr(1001), now: .zero)
        return m
    }

    // MARK: Wire

    @Test func theKeyRoundTripsInGossipAndPushPullAndIsCountedInTheBounds() throws {
        let longest = MemberMetadata(version: .max, api: String(repeating: "a", count: MemberMetadata.maxApiBytes),
                                     slots: .max, free: .max, memoryMB: .max, freeMemoryMB: .max, identityKey: Self.keyA)
        #expect(longest.invalidReason == nil)
        #expect(longest.encodedSize == MemberMetadata.maxEncodedBytes)
        #expect(Self.meta(nil).encodedSize + 32 == Self.meta(Self.keyA).encodedSize)
        let packet = Packet([alive("p1", 1001, inc: 3, meta: longest), alive("p2", 1002, inc: 1, meta: Self.meta(nil))])
        let bytes = packet.encoded()
        #expect(bytes.count == packet.encodedSize)
        #expect(try Packet.decode(bytes) == packet)
        let state = PushPullState(join: false, source: "a", entries: [
            .init(name: "p1", address: addr(1), incarnation: 1, status: .alive, metadata: longest),
            .init(name: "p2", address: addr(2), incarnation: 1, status: .dead, metadata: Self.meta(nil)),
            .init(name: "p3", address: addr(3), incarnation: 1, status: .alive, metadata: Self.meta(Self.keyB)),
        ])
        #expect(try PushPullState.decode(state.encoded()) == state)
    }

    @Test func aKeyOfAnyOtherLengthIsRefused() throws {
        #expect(Self.meta([1, 2, 3]).invalidReason?.contains("identity key is 3 bytes") == true)
        #expect(Self.meta(Array(repeating: 1, count: 33)).invalidReason != nil)
        #expect(Self.meta([]).invalidReason != nil)
        // On the wire: the length byte says 31 (with 31 bytes after it, then the sessions u32).
        // A datagram is dropped whole; a push-pull skips that entry, counted, and applies the rest.
        var bytes = Packet([alive("p1", 1001, inc: 3, meta: Self.meta(Self.keyA))]).encoded()
        let lengthAt = bytes.count - 37
        #expect(bytes[lengthAt] == 32)
        bytes[lengthAt] = 31
        bytes.remove(at: lengthAt + 1)
        let length = UInt16(bytes[3]) << 8 | UInt16(bytes[4]) - 1  // the message's u16 length (type at 2)
        bytes[3] = UInt8(length >> 8)
        bytes[4] = UInt8(truncatingIfNeeded: length)
        #expect(throws: WireError.self) { try Packet.decode(bytes) }
        let state = PushPullState(join: false, source: "a", entries: [
            .init(name: "p1", address: addr(1), incarnation: 1, status: .alive, metadata: Self.meta(Self.keyA)),
            .init(name: "p2", address: addr(2), incarnation: 1, status: .alive, metadata: Self.meta(Self.keyB)),
        ])
        var pp = state.encoded()
        // The first entry's key length byte: 32 followed by key A.
        let at = (0..<pp.count - 32).first { pp[$0] == 32 && Array(pp[($0 + 1)...($0 + 32)]) == Self.keyA }
        guard let at else { Issue.record("key not found"); return }
        pp[at] = 31
        pp.remove(at: at + 1)
        let decoded = try PushPullState.decode(pp)
        #expect(decoded.skippedEntries == 1)
        #expect(decoded.entries == [state.entries[1]])
    }

    // MARK: The rule

    @Test func aNameIsPinnedToItsKeyANewerLifeUnderAnotherKeyIsRefusedAndCounted() {
        var m = Self.node()
        #expect(m.members["p1"]?.metadata.identityKey == Self.keyA)
        // p1 "restarted" with a fresh data directory: a higher incarnation under key B.
        let d = m.receive(Packet([alive("p1", 1001, inc: 3, meta: Self.meta(Self.keyB, version: 1))]), from: addr(1001), now: at(ms: 10))
        #expect(m.members["p1"]?.metadata.identityKey == Self.keyA, "the pinned key stays")
        #expect(m.stats.identityConflicts == 1)
        #expect(m.lastIdentityConflict == IdentityConflict(name: "p1", address: addr(1001), incarnation: 3, heldKey: Self.keyA,
                                                           claimedKey: Self.keyB, aboutMe: false))
        // Not gossiped on; the member under key A is suspected at the claim's incarnation, so
        // that it refutes with its own key if it is alive.
        #expect(!d.messages.contains { if case .alive(let a) = $0 { a.name == "p1" } else { false } })
        #expect(m.status(of: "p1") == .suspect)
        #expect(m.members["p1"]?.incarnation == 3)
        #expect(m.broadcasts.contains(subject: "p1"))
        // It does: its alive under key A at a higher incarnation is taken.
        _ = m.receive(Packet([alive("p1", 1001, inc: 4, meta: Self.meta(Self.keyA, version: 1))]), from: addr(1001), now: at(ms: 20))
        #expect(m.status(of: "p1") == .alive)
        #expect(m.members["p1"]?.incarnation == 4)
        #expect(m.stats.identityConflicts == 1)
    }

    @Test func noKeyIsAnotherKeyAndEveryRefusalIsCounted() {
        var m = Self.node()
        for (i, claim) in [Self.meta(nil, version: 5), Self.meta(Self.keyB, version: 5)].enumerated() {
            // Same incarnation, newer metadata: refused, no suspicion (not a newer life).
            _ = m.receive(Packet([alive("p1", 1001, inc: 2, meta: claim)]), from: addr(1001), now: .zero)
            #expect(m.stats.identityConflicts == i + 1)
            #expect(m.members["p1"]?.metadata == Self.meta(Self.keyA))
            #expect(m.status(of: "p1") == .alive)
        }
        // An older incarnation under another key: stale anyway, still counted.
        _ = m.receive(Packet([alive("p1", 1001, inc: 1, meta: Self.meta(Self.keyB))]), from: addr(1001), now: .zero)
        #expect(m.stats.identityConflicts == 3)
        #expect(m.status(of: "p1") == .alive)
        // The same key at a higher incarnation is an ordinary refutation or restart.
        _ = m.receive(Packet([alive("p1", 1005, inc: 3, meta: Self.meta(Self.keyA))]), from: addr(1005), now: .zero)
        #expect(m.members["p1"]?.address == addr(1005))
        #expect(m.stats.identityConflicts == 3)
    }

    @Test func aMemberWithoutAKeyTakesTheFirstKeyThatArrives() {
        var m = Self.node()
        #expect(m.members["p2"]?.metadata.identityKey == nil)
        _ = m.receive(Packet([alive("p2", 1002, inc: 2, meta: Self.meta(Self.keyB))]), from: addr(1002), now: .zero)
        #expect(m.members["p2"]?.metadata.identityKey == Self.keyB)
        #expect(m.stats.identityConflicts == 0)
        _ = m.receive(Packet([alive("p2", 1002, inc: 3, meta: Self.meta(Self.keyA))]), from: addr(1002), now: .zero)
        #expect(m.members["p2"]?.metadata.identityKey == Self.keyB)
        #expect(m.stats.identityConflicts == 1)
    }

    /// A dead member is not revived under another key; the pin lasts until the member is reaped,
    /// and then the name is free for the next key.
    @Test func thePinLastsUntilTheMemberIsReaped() {
        var s = MembershipSettings.lan
        s.reapAfter = .seconds(60)
        var m = Self.node(settings: s)
        _ = m.receive(Packet([.dead(name: "p1", incarnation: 2, from: "p2")]), from: addr(1002), now: .zero)
        #expect(m.status(of: "p1") == .dead)
        _ = m.receive(Packet([alive("p1", 1001, inc: 3, meta: Self.meta(Self.keyB))]), from: addr(1001), now: at(ms: 1_000))
        #expect(m.status(of: "p1") == .dead)
        #expect(m.members["p1"]?.incarnation == 2, "a dead member is not suspected")
        #expect(m.stats.identityConflicts == 1)
        // Through push-pull just the same.
        let remote = PushPullState(join: true, source: "p1", entries: [
            .init(name: "p1", address: addr(1001), incarnation: 4, status: .alive, metadata: Self.meta(Self.keyB)),
        ])
        _ = m.servePushPull(remote, now: at(ms: 2_000))
        #expect(m.status(of: "p1") == .dead)
        #expect(m.stats.identityConflicts == 2)
        _ = m.tick(now: at(ms: 61_000))
        #expect(m.members["p1"] == nil)
        _ = m.receive(Packet([alive("p1", 1001, inc: 5, meta: Self.meta(Self.keyB))]), from: addr(1001), now: at(ms: 62_000))
        #expect(m.status(of: "p1") == .alive)
        #expect(m.members["p1"]?.metadata.identityKey == Self.keyB)
        #expect(m.stats.identityConflicts == 2)
    }

    /// A suspected member's running suspicion is left alone: a refused member that keeps
    /// refuting must not keep restarting it, or it would never run out.
    @Test func refusedRefutationsDoNotRestartASuspicion() {
        var m = Self.node()
        _ = m.receive(Packet([alive("p1", 1001, inc: 3, meta: Self.meta(Self.keyB))]), from: addr(1001), now: .zero)
        let first = m.suspicions["p1"]
        #expect(first != nil)
        for inc in UInt64(4)...10 {
            _ = m.receive(Packet([alive("p1", 1001, inc: inc, meta: Self.meta(Self.keyB))]), from: addr(1001), now: at(ms: Int64(inc) * 100))
        }
        #expect(m.suspicions["p1"] == first)
        #expect(m.members["p1"]?.incarnation == 3)
        #expect(m.stats.identityConflicts == 8)
        // It runs out: p1 is declared dead, still under key A.
        var now = at(ms: 1_000)
        while m.status(of: "p1") == .suspect, now < at(ms: 600_000) {
            now = now + .milliseconds(100)
            _ = m.tick(now: now)
        }
        #expect(m.status(of: "p1") == .dead)
        #expect(m.members["p1"]?.metadata.identityKey == Self.keyA)
    }

    @Test func anotherKeyUnderOurOwnNameIsCountedAndRefuted() {
        var m = Membership(settings: .lan, name: "me", address: addr(1000), metadata: Self.meta(Self.keyA), seed: 1, now: .zero)
        _ = m.receive(Packet([alive("me", 1000, inc: 0, meta: Self.meta(Self.keyB))]), from: addr(1001), now: .zero)
        #expect(m.stats.identityConflicts == 1)
        #expect(m.lastIdentityConflict?.aboutMe == true)
        #expect(m.incarnation == 1, "refuted, under our own key")
        #expect(m.metadata.identityKey == Self.keyA)
        // Our own key echoed back is no conflict.
        _ = m.receive(Packet([alive("me", 1000, inc: 1, meta: Self.meta(Self.keyA))]), from: addr(1001), now: .zero)
        #expect(m.stats.identityConflicts == 1)
    }

    /// Three nodes: n3 restarts under its name with a fresh key; n1 and n2, which hold n3 under
    /// its first key, refuse it and count it, and the old entry dies instead of living on
    /// (the new process answers probes at the same address).
    @Test func aRestartUnderAnotherKeyIsRefusedByTheOthers() throws {
        var s = MembershipSettings.lan
        s.reapAfter = .seconds(3600)
        let keys = [Self.keyA, Self.keyB, Array(repeating: UInt8(0xc3), count: 32)]
        func make(_ i: Int, key: [UInt8], seed: UInt64) -> Membership {
            Membership(settings: s, name: "n\(i + 1)", address: addr(UInt16(2001 + i)), metadata: Self.meta(key), seed: seed, now: .zero)
        }
        var nodes = (0..<3).map { make($0, key: keys[$0], seed: UInt64($0 + 1)) }
        // Everyone knows everyone (incarnation 0, their first keys).
        for i in 0..<3 {
            for j in 0..<3 where i != j {
                _ = nodes[i].receive(Packet([alive("n\(j + 1)", UInt16(2001 + j), inc: 0, meta: Self.meta(keys[j]))]), from: addr(1), now: .zero)
            }
        }
        // n3 restarts with a fresh key and joins through n1: push-pull both ways.
        let fresh = Array(repeating: UInt8(0xd4), count: 32)
        nodes[2] = make(2, key: fresh, seed: 99)
        let (reply, _) = nodes[0].servePushPull(nodes[2].localState(join: true), now: at(ms: 1_000))
        _ = nodes[2].completePushPull(reply, now: at(ms: 1_000))
        #expect(nodes[0].stats.identityConflicts == 1)
        #expect(nodes[0].members["n3"]?.metadata.identityKey == keys[2])
        // n3 heard itself under another key: counted there too, and it refutes (its refutation
        // is refused everywhere the old key is pinned).
        #expect(nodes[2].stats.identityConflicts >= 1)
        #expect(nodes[2].lastIdentityConflict?.aboutMe == true)
        let refutation = nodes[2].selfAlive
        _ = nodes[1].receive(Packet([.alive(refutation)]), from: addr(2003), now: at(ms: 1_100))
        #expect(nodes[1].stats.identityConflicts == 1)
        #expect(nodes[1].members["n3"]?.metadata.identityKey == keys[2])
        #expect(nodes[1].status(of: "n3") == .suspect)
    }

    /// The usual real case: n1 already suspects the old n3 when the new one joins, so its reply
    /// carries n3 suspect, an accusation without a key. The new n3 still learns that the cluster
    /// holds its name under another key (counted, for its log line), and n1 counts n3's entry.
    @Test func aRestartedNodeLearnsItIsRefusedFromAnAccusation() {
        var n1 = Membership(settings: .lan, name: "n1", address: addr(2001), metadata: Self.meta(Self.keyA), seed: 1, now: .zero)
        _ = n1.receive(Packet([alive("n3", 2003, inc: 0, meta: Self.meta(Self.keyB))]), from: addr(2003), now: .zero)
        _ = n1.receive(Packet([.suspect(name: "n3", incarnation: 0, from: "n2")]), from: addr(2002), now: .zero)
        #expect(n1.status(of: "n3") == .suspect)
        var n3 = Membership(settings: .lan, name: "n3", address: addr(2003), metadata: Self.meta(Array(repeating: 0xd4, count: 32)),
                            seed: 3, now: .zero)
        let (reply, _) = n1.servePushPull(n3.localState(join: true), now: at(ms: 100))
        #expect(n1.stats.identityConflicts == 1)
        _ = n3.completePushPull(reply, now: at(ms: 100))
        #expect(n3.stats.identityConflicts == 1)
        #expect(n3.lastIdentityConflict?.aboutMe == true)
        #expect(n3.lastIdentityConflict?.heldKey == Array(repeating: 0xd4, count: 32))
        #expect(n3.lastIdentityConflict?.claimedKey == Self.keyB)
    }
}
