import Testing
@testable import StarlingCore

/// A peer that holds the cluster key sends extreme numbers: nothing may trap, and each case has
/// a defined outcome (issue #8, item 6). See the incarnation rule in `StateRules.swift`.
@Suite("Wire hardening: extreme values from peers")
struct WireHardeningTests {
    static let top = WireLimits.maxIncarnation

    @Test func anAccusationAboutUsAtUInt64MaxIsRejectedWithoutTrapping() {
        for message: MembershipMessage in [.suspect(name: "me", incarnation: .max, from: "p1"),
                                           .dead(name: "me", incarnation: .max, from: "p1"),
                                           .suspect(name: "me", incarnation: Self.top, from: "p1"),
                                           .dead(name: "me", incarnation: Self.top, from: "me")] {
            var m = nodeWithPeers(1)
            _ = m.receive(Packet([message]), from: addr(1001), now: .zero)
            #expect(m.stats.messagesRejected == 1)
            if case .suspect(_, .max, _) = message {
                #expect(m.incarnation == 0)
            } else if case .dead(_, .max, _) = message {
                #expect(m.incarnation == 0, "\(message): an incarnation over the bound is refused")
                #expect(m.stats.refutations == 0)
            } else {
                // Valid but too far ahead: refuted one step up, not followed (StateRules rule 5).
                #expect(m.incarnation == WireLimits.maxIncarnationStep, "\(message)")
                #expect(m.stats.refutations == 1)
            }
        }
    }

    @Test func anAccusationJustBelowTheBoundIsRefutedAtTheBound() {
        var m = nodeWithPeers(1)
        m.setOwnIncarnationForTesting(Self.top - 2)
        _ = m.receive(Packet([.suspect(name: "me", incarnation: Self.top - 1, from: "p1")]), from: addr(1001), now: .zero)
        #expect(m.incarnation == Self.top)
        #expect(m.members["me"]?.incarnation == Self.top)
        #expect(m.stats.refutations == 1)
        // At the bound an accusation at the bound is valid; the refutation saturates.
        _ = m.receive(Packet([.dead(name: "me", incarnation: Self.top, from: "p1")]), from: addr(1001), now: .zero)
        #expect(m.incarnation == Self.top)
        #expect(m.stats.refutations == 2)
        #expect(m.stats.messagesRejected == 0)
    }

    @Test func anAliveAboutUsAtTheBoundSaturatesTheRefutation() {
        var m = nodeWithPeers(1)
        m.setOwnIncarnationForTesting(Self.top - 1)
        let impostor = MembershipMessage.alive(.init(name: "me", address: addr(9999), incarnation: Self.top, metadata: MemberMetadata()))
        _ = m.receive(Packet([impostor]), from: addr(1001), now: .zero)
        #expect(m.incarnation == Self.top, "saturates instead of overflowing")
        _ = m.receive(Packet([impostor]), from: addr(1001), now: .zero)
        #expect(m.incarnation == Self.top)
        _ = m.receive(Packet([.alive(.init(name: "me", address: addr(9999), incarnation: .max, metadata: MemberMetadata()))]),
                      from: addr(1001), now: .zero)
        #expect(m.incarnation == Self.top)
        #expect(m.stats.messagesRejected == 1)
    }

    @Test func incarnationsAboutOthersOverTheBoundAreRejected() {
        var m = nodeWithPeers(2)
        _ = m.receive(Packet([alive("p1", 1001, inc: .max), .suspect(name: "p2", incarnation: Self.top, from: "p1"),
                              alive("p9", 1009, inc: Self.top + 1)]), from: addr(1001), now: .zero)
        #expect(m.members["p1"]?.incarnation == 1)
        #expect(m.status(of: "p2") == .alive)
        #expect(m.members["p9"] == nil)
        #expect(m.stats.messagesRejected == 3)
    }

    @Test func theDecoderRefusesIncarnationsOverTheBound() throws {
        func roundTrip(_ m: MembershipMessage) throws -> Packet { try Packet.decode(Packet([m]).encoded()) }
        #expect(try roundTrip(alive("p1", 1, inc: Self.top)).messages.count == 1)
        #expect(try roundTrip(.suspect(name: "p1", incarnation: Self.top, from: "p2")).messages.count == 1)
        #expect(try roundTrip(.dead(name: "p1", incarnation: Self.top, from: "p1")).messages.count == 1)
        for bad: MembershipMessage in [alive("p1", 1, inc: Self.top + 1), alive("p1", 1, inc: .max),
                                       .suspect(name: "p1", incarnation: Self.top + 1, from: "p2"),
                                       .dead(name: "p1", incarnation: .max, from: "p2")] {
            #expect(throws: WireError.self) { try roundTrip(bad) }
        }
    }

    /// The rule, checked over many random message sequences with extreme incarnations: a node
    /// holds for another member only an incarnation some message about it carried, and its own
    /// incarnation is 0 or one more than something it observed, never over the bound.
    @Test func aNodeNeverInventsAnIncarnationForAnotherMember() {
        let extremes: [UInt64] = [0, 1, 2, 7, Self.top - 2, Self.top - 1, Self.top, Self.top + 1, .max - 1, .max]
        var rng = DeterministicRNG(seed: 42)
        for _ in 0..<200 {
            var m = nodeWithPeers(3)
            var carried: [String: Set<UInt64>] = ["p1": [1], "p2": [1], "p3": [1]]
            var observedAboutMe: Set<UInt64> = []
            for _ in 0..<30 {
                let subject = ["me", "p1", "p2", "p3"].randomElement(using: &rng)!
                let inc = extremes.randomElement(using: &rng)!
                let message: MembershipMessage
                switch Int.random(in: 0..<3, using: &rng) {
                case 0: message = .alive(.init(name: subject, address: addr(1001), incarnation: inc, metadata: MemberMetadata()))
                case 1: message = .suspect(name: subject, incarnation: inc, from: "p1")
                default: message = .dead(name: subject, incarnation: inc, from: Bool.random(using: &rng) ? subject : "p2")
                }
                if subject == "me" { observedAboutMe.insert(inc) } else { carried[subject, default: []].insert(inc) }
                let before = m.incarnation
                _ = m.receive(Packet([message]), from: addr(1001), now: .zero)
                #expect(m.incarnation <= Self.top)
                // Unchanged, one above a claim, at most one step up (rule 5), or saturated.
                #expect(m.incarnation == before || observedAboutMe.contains(m.incarnation - 1)
                        || m.incarnation - before <= WireLimits.maxIncarnationStep || m.incarnation == Self.top)
                for (name, seen) in carried {
                    if let held = m.members[name]?.incarnation { #expect(seen.contains(held), "\(name) at \(held)") }
                }
            }
        }
    }

    // MARK: Metadata: one limit for the decoder and for a node's own metadata

    @Test func theApiLimitIsTheSameForTheDecoderAndForANodesOwnMetadata() throws {
        let key = Array(repeating: UInt8(7), count: MemberMetadata.identityKeyBytes)
        let atLimit = MemberMetadata(api: String(repeating: "a", count: MemberMetadata.maxApiBytes), slots: 1, free: 1, identityKey: key)
        let overLimit = MemberMetadata(api: String(repeating: "a", count: MemberMetadata.maxApiBytes + 1), slots: 1, free: 1, identityKey: key)
        #expect(atLimit.invalidReason == nil)
        #expect(overLimit.invalidReason != nil)
        #expect(atLimit.encodedSize == MemberMetadata.maxEncodedBytes)
        // A node may start with the longest accepted metadata, and what it gossips decodes.
        let node = Membership(settings: .lan, name: "me", address: addr(1000), metadata: atLimit, seed: 1, now: .zero)
        let decoded = try Packet.decode(Packet([.alive(node.selfAlive)]).encoded())
        #expect(decoded.messages == [.alive(node.selfAlive)])
        // One byte more and the decoder refuses it, so a node must refuse it for itself too.
        let over = MembershipMessage.alive(.init(name: "me", address: addr(1000), incarnation: 0, metadata: overLimit))
        #expect(throws: WireError.tooLarge(field: "api", size: MemberMetadata.maxApiBytes + 1, limit: MemberMetadata.maxApiBytes)) {
            try Packet.decode(Packet([over]).encoded())
        }
        #expect(overLimit.encodedSize > MemberMetadata.maxEncodedBytes)
    }

    // MARK: Push-pull: one bad entry is skipped, the rest applies

    /// Writes a push-pull state by hand so that single entries can be malformed.
    static func pushPullBytes(_ entries: [(name: String, host: String, inc: UInt64, status: UInt8, api: String, slots: UInt32, free: UInt32)]) -> [UInt8] {
        var w = ByteWriter()
        w.write(PushPullState.version)
        w.write(false)
        w.write("p2")
        w.write(UInt32(entries.count))
        for e in entries {
            w.write(e.name); w.write(e.host); w.write(UInt16(7000)); w.write(e.inc); w.write(e.status)
            w.write(UInt64(1)); w.write(e.api); w.write(e.slots); w.write(e.free); w.write(UInt32(0)); w.write(UInt32(0))
            w.write(UInt8(0))  // no identity key
            w.write(UInt32(0))  // sessions owned
        }
        return w.bytes
    }

    @Test(arguments: [
        ("empty name", "", "127.0.0.1", UInt64(1), UInt8(0), "", UInt32(0), UInt32(0)),
        ("long name", String(repeating: "n", count: 65), "127.0.0.1", 1, 0, "", 0, 0),
        ("bad status", "bad", "127.0.0.1", 1, 9, "", 0, 0),
        ("oversize api", "bad", "127.0.0.1", 1, 0, String(repeating: "a", count: MemberMetadata.maxApiBytes + 1), 0, 0),
        ("free over slots", "bad", "127.0.0.1", 1, 0, "", 1, 2),
        ("empty host", "bad", "", 1, 0, "", 0, 0),
        ("incarnation over the bound", "bad", "127.0.0.1", UInt64.max, 0, "", 0, 0),
        ("accusation over the bound", "bad", "127.0.0.1", WireLimits.maxIncarnation + 1, 2, "", 0, 0),
    ])
    func oneBadEntryIsSkippedAndTheRestApplies(_ bad: (String, String, String, UInt64, UInt8, String, UInt32, UInt32)) throws {
        let bytes = Self.pushPullBytes([
            ("p1", "127.0.0.1", 3, 0, "127.0.0.1:8401", 2, 1),
            (bad.1, bad.2, bad.3, bad.4, bad.5, bad.6, bad.7),
            ("p3", "127.0.0.1", 4, 0, "", 0, 0),
        ])
        let state = try PushPullState.decode(bytes)
        #expect(state.entries.map(\.name) == ["p1", "p3"], "\(bad.0)")
        #expect(state.skippedEntries == 1)
        var m = nodeWithPeers(0)
        _ = m.servePushPull(state, now: .zero)
        #expect(m.members["p1"]?.incarnation == 3)
        #expect(m.members["p3"]?.incarnation == 4)
        #expect(m.stats.pushPullEntriesSkipped == 1)
    }

    @Test func aTruncatedPushPullIsStillRefusedWhole() {
        let bytes = Self.pushPullBytes([("p1", "127.0.0.1", 3, 0, "", 0, 0), ("p3", "127.0.0.1", 4, 0, "", 0, 0)])
        #expect(throws: WireError.truncated) { try PushPullState.decode(Array(bytes.dropLast())) }
        // A string length that runs past the end is structural too.
        var lying = Self.pushPullBytes([("p1", "127.0.0.1", 3, 0, "", 0, 0)])
        lying[10] = 0xFF  // high byte of the first entry's name length
        #expect(throws: WireError.truncated) { try PushPullState.decode(lying) }
    }

    @Test func metadataVersionSaturates() {
        var m = Membership(settings: .lan, name: "me", address: addr(1000),
                           metadata: MemberMetadata(version: .max, api: "", slots: 2, free: 2), seed: 1, now: .zero)
        m.updateMetadata(now: .zero) { $0.free = 1 }
        #expect(m.metadata.version == .max)
        #expect(m.metadata.free == 1)
    }
}

/// Names, hosts and api addresses end up in every peer's log lines and API answers: a newline
/// forged a log line, ESC drove the reader's terminal. Decoders refuse unprintable text.
@Suite("Wire hardening: printable text only")
struct PrintableTextTests {
    @Test(arguments: ["a\nb", "a\rb", "a\u{1B}[31m", "a\u{7F}", "a\u{85}", "a\u{202E}b", "a\u{2028}", "a\u{200B}", "a\u{E000}"])
    func theDecodersRefuseUnprintableText(_ bad: String) throws {
        func roundTrip(_ m: MembershipMessage) throws -> Packet { try Packet.decode(Packet([m]).encoded()) }
        let meta = MemberMetadata(api: "127.0.0.1:8400", slots: 1, free: 1)
        #expect(throws: WireError.self) { try roundTrip(.alive(.init(name: bad, address: addr(1), incarnation: 1, metadata: meta))) }
        #expect(throws: WireError.self) {
            try roundTrip(.alive(.init(name: "ok", address: NodeAddress(host: bad, port: 1), incarnation: 1, metadata: meta)))
        }
        var badApi = meta
        badApi.api = bad
        #expect(throws: WireError.self) { try roundTrip(.alive(.init(name: "ok", address: addr(1), incarnation: 1, metadata: badApi))) }
        #expect(throws: WireError.self) { try roundTrip(.suspect(name: "ok", incarnation: 1, from: bad)) }
        #expect(badApi.invalidReason != nil, "a node's own metadata is held to the same rule")
        // In a push-pull the entry is skipped, the rest applies.
        let state = PushPullState(join: false, source: "p2", entries: [
            .init(name: bad, address: addr(1), incarnation: 1, status: .alive, metadata: meta),
            .init(name: "ok", address: addr(2), incarnation: 1, status: .alive, metadata: meta),
        ])
        let decoded = try PushPullState.decode(state.encoded())
        #expect(decoded.entries.map(\.name) == ["ok"])
    }

    @Test func ordinaryNamesStillPass() throws {
        for good in ["node-1", "n_2.example.com", "Zürich-3", "节点", "fe80::1", "127.0.0.1:8400", "a b"] {
            #expect(WireLimits.isPrintable(good), "\(good)")
        }
        let m = MembershipMessage.alive(.init(name: "Zürich-3", address: addr(1), incarnation: 1, metadata: MemberMetadata()))
        #expect(try Packet.decode(Packet([m]).encoded()).messages == [m])
    }
}

@Suite("Wire hardening: push-pull state equality")
struct PushPullEqualityTests {
    /// `skippedEntries` is a decoding statistic, not part of what goes on the wire.
    @Test func equalityIgnoresTheSkippedCount() throws {
        let entry = PushPullState.Entry(name: "p1", address: addr(1001), incarnation: 1, status: .alive, metadata: MemberMetadata())
        let built = PushPullState(join: true, source: "me", entries: [entry])
        let decoded = PushPullState(join: true, source: "me", entries: [entry], skippedEntries: 3)
        #expect(built == decoded)
        #expect(try PushPullState.decode(built.encoded()) == built)
        #expect(PushPullState(join: false, source: "me", entries: [entry]) != built)
    }
}
