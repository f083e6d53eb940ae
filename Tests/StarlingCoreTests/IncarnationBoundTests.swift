import Testing
@testable import StarlingCore

/// The incarnation bound and the step rule (StateRules.swift, rules 3 and 4): a member at any
/// incarnation a message can reach stays mortal, and a member can always take back its own
/// address and metadata from an impostor.
@Suite("Incarnation bound and step")
struct IncarnationBoundTests {
    static let top = WireLimits.maxIncarnation
    static let md = MemberMetadata(api: "127.0.0.1:8402", slots: 4, free: 4)

    /// Delivers every datagram in `directives` to `receiver` through the real codec (a peer's
    /// decoder refuses what it would refuse on the wire: that throws here).
    static func deliver(_ directives: [MembershipDirective], from source: NodeAddress, to receiver: inout Membership,
                        now: Instant) throws {
        for (packet, _) in directives.sends {
            _ = receiver.receive(try Packet.decode(packet.encoded()), from: source, now: now)
        }
    }

    @Test func aSilentMemberAtTheBoundIsSuspectedAndDeclaredDead() throws {
        var a = nodeWithPeers(2, settings: .loopback)
        _ = a.receive(Packet([.alive(.init(name: "b", address: addr(1100), incarnation: Self.top, metadata: Self.md))]),
                      from: addr(1100), now: .zero)
        #expect(a.status(of: "b") == .alive)
        var now = Instant.zero
        var sawDead = false
        // Peers p1, p2 answer nothing either, but b is the one we watch. Every accusation a node
        // builds must also decode at a peer.
        for _ in 0..<12_000 where !sawDead {
            now = now + .milliseconds(10)
            let out = a.tick(now: now)
            for (packet, _) in out.sends { _ = try Packet.decode(packet.encoded()) }
            sawDead = a.status(of: "b") == .dead
        }
        #expect(sawDead, "b at \(Self.top) must die when silent, not stay \(a.status(of: "b").map(\.description) ?? "gone")")
        #expect(a.members["b"]?.incarnation == Self.top)
        #expect(a.stats.messagesRejected == 0)
    }

    @Test func aMemberAtTheBoundCanLeave() throws {
        var v = Membership(settings: .lan, name: "v", address: addr(2000), metadata: Self.md, seed: 2, now: .zero)
        v.setOwnIncarnationForTesting(Self.top)
        var a = nodeWithPeers(0)
        _ = a.receive(Packet([.alive(v.selfAlive)]), from: addr(2000), now: .zero)
        _ = v.receive(Packet([alive("me", 1000, inc: 1)]), from: addr(1000), now: .zero)
        let leave = v.leave(now: .zero)
        #expect(!leave.sends.isEmpty)
        try Self.deliver(leave, from: addr(2000), to: &a, now: .zero)
        #expect(a.status(of: "v") == .left)
        #expect(a.stats.messagesRejected == 0)
    }

    @Test func aJumpFarAboveTheKnownIncarnationIsRefused() {
        var a = nodeWithPeers(1)
        let forged = MembershipMessage.alive(.init(name: "p1", address: NodeAddress(host: "10.6.6.6", port: 9),
                                                   incarnation: Self.top, metadata: MemberMetadata(version: .max, api: "10.6.6.6:80")))
        let oneTooFar = alive("p1", 9999, inc: 1 + WireLimits.maxIncarnationStep + 1)
        _ = a.receive(Packet([forged, oneTooFar, .suspect(name: "p1", incarnation: Self.top, from: "x"),
                              .dead(name: "p1", incarnation: Self.top, from: "x")]), from: addr(9999), now: .zero)
        #expect(a.members["p1"]?.address == addr(1001))
        #expect(a.members["p1"]?.incarnation == 1)
        #expect(a.status(of: "p1") == .alive)
        #expect(a.stats.messagesRejected == 4)
        // A jump of exactly the step is still taken (a long partition, a restart).
        _ = a.receive(Packet([alive("p1", 1001, inc: 1 + WireLimits.maxIncarnationStep)]), from: addr(1001), now: .zero)
        #expect(a.members["p1"]?.incarnation == 1 + WireLimits.maxIncarnationStep)
        // The same rule for a node about itself: it does not follow a forgery to the bound, it
        // refutes one step up (rule 5).
        _ = a.receive(Packet([.alive(.init(name: "me", address: addr(9999), incarnation: Self.top, metadata: MemberMetadata()))]),
                      from: addr(9999), now: .zero)
        #expect(a.incarnation == WireLimits.maxIncarnationStep)
        #expect(a.stats.messagesRejected == 5)
    }

    /// The reviewer's hijack: alive(v, higher incarnation, another address, metadata version
    /// UInt64.max). v's refutation must win it back at every peer.
    @Test(arguments: [UInt64(1), 0])
    func aMemberTakesBackItsOwnAddressAndMetadata(_ step: UInt64) throws {
        let vAddr = addr(2000), evil = NodeAddress(host: "10.6.6.6", port: 9)
        var v = Membership(settings: .lan, name: "v", address: vAddr, metadata: Self.md, seed: 2, now: .zero)
        var a = nodeWithPeers(0)
        _ = a.receive(Packet([.alive(v.selfAlive)]), from: vAddr, now: .zero)
        _ = v.receive(Packet([alive("me", 1000, inc: 0)]), from: addr(1000), now: .zero)
        let forged = MembershipMessage.alive(.init(name: "v", address: evil, incarnation: v.incarnation + step,
                                                   metadata: MemberMetadata(version: .max, api: "10.6.6.6:80", slots: 4, free: 4)))
        _ = a.receive(Packet([forged]), from: evil, now: .zero)
        #expect(a.members["v"]?.metadata.api == "10.6.6.6:80", "the forgery took (same incarnation: metadata only)")
        _ = v.receive(Packet([forged]), from: evil, now: .zero)
        #expect(v.incarnation == step + 1, "v refutes above the forgery")
        var now = Instant.zero
        for _ in 0..<20 {
            now = now + .milliseconds(200)
            try Self.deliver(v.tick(now: now), from: vAddr, to: &a, now: now)
        }
        #expect(a.members["v"]?.address == vAddr)
        #expect(a.members["v"]?.metadata == Self.md)
        #expect(a.members["v"]?.incarnation == v.incarnation)
    }
}

/// One push-pull of invented members filled the table (issue #8 review, item 4).
@Suite("New members per push-pull")
struct NewMembersPerPushPullTests {
    static func state(_ count: Int, from source: String = "p1") -> PushPullState {
        PushPullState(join: false, source: source, entries: (0..<count).map {
            .init(name: "fake-\($0)", address: NodeAddress(host: "10.0.\($0 / 256).\($0 % 256)", port: 7946),
                  incarnation: 1, status: .alive, metadata: MemberMetadata())
        })
    }

    @Test func anInboundPushPullAddsAtMostTheCap() {
        var m = nodeWithPeers(1)
        var remote = Self.state(1_000)
        remote.entries.append(.init(name: "p1", address: addr(1001), incarnation: 5, status: .alive, metadata: MemberMetadata()))
        _ = m.servePushPull(remote, now: .zero)
        #expect(m.members.count == 2 + WireLimits.maxNewMembersPerInboundPushPull)
        #expect(m.stats.membersRejected == 1_000 - WireLimits.maxNewMembersPerInboundPushPull)
        #expect(m.members["p1"]?.incarnation == 5, "members we know are still updated past the cap")
    }

    @Test func aJoinerLearnsAWholeClusterFromTheReplyToItsOwnRequest() {
        var joiner = Membership(settings: .lan, name: "me", address: addr(1000), metadata: MemberMetadata(), seed: 1, now: .zero)
        _ = joiner.join(seeds: [addr(1001)], now: .zero)
        _ = joiner.completePushPull(Self.state(10_000), now: .zero)
        #expect(joiner.members.count == 10_001)
        #expect(joiner.stats.membersRejected == 0)
    }
}
