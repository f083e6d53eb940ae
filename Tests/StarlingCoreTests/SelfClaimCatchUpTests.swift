import Testing
@testable import StarlingCore

/// Second review, item 1: a key holder walked a peer's view of a member up two steps (each within
/// `WireLimits.maxIncarnationStep` of what that peer held); the member heard only the newest claim,
/// more than a step above its own incarnation, ignored every message about itself and never won
/// its entry back. Rule 5 in StateRules.swift: it refutes one step at a time and overtakes.
@Suite("Self claims too far ahead")
struct SelfClaimCatchUpTests {
    static let step = WireLimits.maxIncarnationStep
    static let evil = NodeAddress(host: "10.6.6.6", port: 9)
    static let md = MemberMetadata(api: "127.0.0.1:8402", slots: 4, free: 4)

    /// A few Membership values that exchange datagrams and push-pulls through the real codec,
    /// routed by address; packets to any other address (the forged one) are lost.
    struct Net {
        var nodes: [Membership]
        var now = Instant.zero

        mutating func deliver(_ directives: [MembershipDirective], from source: NodeAddress) throws {
            for d in directives {
                switch d {
                case .send(let packet, let to):
                    guard let i = nodes.firstIndex(where: { $0.myAddress == to }) else { continue }
                    let out = nodes[i].receive(try Packet.decode(packet.encoded()), from: source, now: now)
                    try deliver(out, from: to)
                case .pushPull(let state, let to):
                    guard let i = nodes.firstIndex(where: { $0.myAddress == to }),
                          let j = nodes.firstIndex(where: { $0.myAddress == source }) else { continue }
                    let (reply, out) = nodes[i].servePushPull(state, now: now)
                    try deliver(out, from: to)
                    try deliver(nodes[j].completePushPull(reply, now: now), from: source)
                case .changed:
                    continue
                }
            }
        }

        /// Ticks every node every 50 ms until `done` holds or `limit` passes.
        mutating func run(for limit: Duration, until done: (Net) -> Bool) throws -> Bool {
            let end = now + limit
            while now < end {
                if done(self) { return true }
                now = now + .milliseconds(50)
                for i in nodes.indices {
                    let out = nodes[i].tick(now: now)
                    try deliver(out, from: nodes[i].myAddress)
                }
            }
            return done(self)
        }
    }

    static func node(_ name: String, _ port: UInt16, seed: UInt64) -> Membership {
        Membership(settings: .lan, name: name, address: addr(port), metadata: Self.md, seed: seed, now: .zero)
    }

    /// r1, r2, r3 all know each other at incarnation 0.
    static func cluster() throws -> Net {
        var net = Net(nodes: [node("r1", 3001, seed: 1), node("r2", 3002, seed: 2), node("r3", 3003, seed: 3)])
        for i in net.nodes.indices {
            for j in net.nodes.indices where i != j {
                _ = net.nodes[i].receive(Packet([.alive(net.nodes[j].selfAlive)]), from: net.nodes[j].myAddress, now: .zero)
            }
        }
        return net
    }

    static func forged(_ incarnation: UInt64) -> MembershipMessage {
        .alive(.init(name: "r2", address: evil, incarnation: incarnation,
                     metadata: MemberMetadata(version: .max, api: "10.6.6.6:80", slots: 4, free: 4)))
    }

    /// Whether every other node lists r2 alive at its own address and metadata.
    static func r2WonBack(_ net: Net) -> Bool {
        [0, 2].allSatisfy { i in
            let m = net.nodes[i].members["r2"]
            return m?.status == .alive && m?.address == addr(3002) && m?.metadata == Self.md
        }
    }

    @Test func theTwoStepForgeryIsWonBackEverywhere() throws {
        var net = try Self.cluster()
        // One sealed packet to r1: both steps are within the step of what r1 holds.
        _ = net.nodes[0].receive(Packet([Self.forged(Self.step), Self.forged(2 * Self.step)]), from: Self.evil, now: .zero)
        #expect(net.nodes[0].members["r2"]?.incarnation == 2 * Self.step, "r1 took the forgery")
        #expect(net.nodes[0].members["r2"]?.address == Self.evil)
        // r2 hears only the newest claim, two steps above its own incarnation.
        let out = net.nodes[1].receive(Packet([Self.forged(2 * Self.step)]), from: addr(3001), now: .zero)
        #expect(net.nodes[1].incarnation == Self.step, "r2 climbs one step, not to the claim")
        try net.deliver(out, from: addr(3002))
        let won = try net.run(for: .seconds(120), until: Self.r2WonBack)
        #expect(won, "r1: \(String(describing: net.nodes[0].members["r2"])), r3: \(String(describing: net.nodes[2].members["r2"]))")
        #expect(net.nodes[1].incarnation > 2 * Self.step)
        #expect(net.nodes[1].incarnation <= 2 * Self.step + 2 * Self.step, "no more than a step per refutation")
    }

    /// Whether r1 and r3 hold r2 alive at its own address, metadata and incarnation.
    static func r2CaughtUp(_ net: Net) -> Bool {
        r2WonBack(net) && [0, 2].allSatisfy { net.nodes[$0].members["r2"]?.incarnation == net.nodes[1].incarnation }
    }

    /// #8's real-process test failed when r3 never took a step of the forgery (it rejected r1's
    /// gossip of the second, more than a step above the 0 it held, which is the rule working)
    /// and r2 refuted three times within one gossip interval: its queue keeps one update per
    /// member, so only the last refutation, two steps above what r3 held, went out. r3 rejected
    /// it, and every later copy of it, for good: r2 alive at its real address but at
    /// incarnation 0 at r3 (so none of r2's later metadata reached r3), 2²⁵ + 1 at r1 and r2.
    @Test func aPeerThatMissedEveryStepCatchesUp() throws {
        var net = try Self.cluster()
        _ = net.nodes[0].receive(Packet([Self.forged(Self.step), Self.forged(2 * Self.step)]), from: Self.evil, now: .zero)
        // r2 hears the claim three times before its gossip goes out: step, 2·step, 2·step + 1.
        for _ in 0..<3 {
            _ = net.nodes[1].receive(Packet([Self.forged(2 * Self.step)]), from: addr(3001), now: .zero)
        }
        #expect(net.nodes[1].incarnation == 2 * Self.step + 1)
        #expect(net.nodes[2].members["r2"]?.incarnation == 0, "r3 heard nothing yet")
        let caughtUp = try net.run(for: .seconds(120), until: Self.r2CaughtUp)
        #expect(caughtUp, "r1: \(String(describing: net.nodes[0].members["r2"])), r3: \(String(describing: net.nodes[2].members["r2"]))")
        // The catch-up did not cost r2 further refutations.
        #expect(net.nodes[1].incarnation == 2 * Self.step + 1)
    }

    /// The same at 100 members: every member but r1 refuses the forgery and then r2's last
    /// refutation, asks r2, and catches up from its chain; r2 refutes no further.
    @Test func aPeerThatMissedEveryStepCatchesUpAtAHundredMembers() throws {
        var net = Net(nodes: (1...100).map { Self.node("r\($0)", UInt16(3000 + $0), seed: UInt64($0)) })
        for i in net.nodes.indices {
            for j in net.nodes.indices where i != j {
                _ = net.nodes[i].receive(Packet([.alive(net.nodes[j].selfAlive)]), from: net.nodes[j].myAddress, now: .zero)
            }
        }
        _ = net.nodes[0].receive(Packet([Self.forged(Self.step), Self.forged(2 * Self.step)]), from: Self.evil, now: .zero)
        for _ in 0..<3 {
            _ = net.nodes[1].receive(Packet([Self.forged(2 * Self.step)]), from: addr(3001), now: .zero)
        }
        let top = net.nodes[1].incarnation
        #expect(top == 2 * Self.step + 1)
        let caughtUp = try net.run(for: .seconds(120)) { net in
            net.nodes.indices.allSatisfy { i in
                i == 1 || net.nodes[i].members["r2"].map { $0.status == .alive && $0.address == addr(3002) && $0.incarnation == top } == true
            }
        }
        let behind = net.nodes.filter { $0.myName != "r2" && $0.members["r2"]?.incarnation != top }.map(\.myName)
        #expect(caughtUp, "still behind: \(behind)")
        #expect(net.nodes[1].incarnation == top)
        #expect(net.nodes.allSatisfy { $0.stats.catchUpsAsked <= 120 / 10 + 1 }, "at most one ask per reconnect interval")
    }

    /// The alives of the catch-up packets `directives` send to `to`, in order.
    static func chain(in directives: [MembershipDirective], to: NodeAddress) -> [MembershipMessage.Alive] {
        directives.flatMap { d -> [MembershipMessage.Alive] in
            guard case .send(let packet, let dest) = d, dest == to else { return [] }
            return packet.messages.compactMap { if case .alive(let a) = $0, a.name == "r2" { a } else { nil } }
        }
    }

    /// Rule 6.2: a chain longer than one packet is cut at the packet; each alive is r2's own, a
    /// step above the last; the exchanges that follow take the peer the rest of the way.
    @Test func aLongChainIsCutAtOnePacketAndTheNextExchangesFinishIt() throws {
        var net = try Self.cluster()
        let top = 40 * Self.step + 3
        net.nodes[1].setOwnIncarnationForTesting(top)
        var held: UInt64 = 0
        var exchanges = 0
        while held < top, exchanges < 10 {
            exchanges += 1
            let (_, out) = net.nodes[1].servePushPull(net.nodes[2].localState(join: false), now: .zero)
            let chain = Self.chain(in: out, to: addr(3003))
            #expect(!chain.isEmpty && chain.count <= Membership.maxCatchUpChain)
            for case .send(let packet, addr(3003)) in out {
                #expect(packet.encodedSize <= MembershipSettings.lan.maxPacketBytes)
            }
            var last = held
            for a in chain {
                #expect(a.incarnation > last && a.incarnation - last <= Self.step)
                #expect(a.address == addr(3002) && a.metadata == Self.md)
                last = a.incarnation
            }
            _ = net.nodes[2].receive(Packet(chain.map { .alive($0) }), from: addr(3002), now: .zero)
            held = net.nodes[2].members["r2"]?.incarnation ?? 0
            #expect(held == last, "r3 took the whole chain")
        }
        #expect(held == top)
        #expect(exchanges == 3, "40 steps at 16 a packet")
        // A peer within the step gets no chain.
        let (_, out) = net.nodes[1].servePushPull(net.nodes[2].localState(join: false), now: .zero)
        #expect(Self.chain(in: out, to: addr(3003)).isEmpty)
        #expect(net.nodes[1].stats.catchUpChainsSent == 3)
    }

    /// Rule 6.1: refusing a claim too far ahead asks the member for a push-pull, at most once
    /// per reconnect interval, however many such claims arrive.
    @Test func askingAMemberToCatchUpIsRateLimited() {
        var r3 = Self.node("r3", 3003, seed: 3)
        _ = r3.receive(Packet([.alive(.init(name: "r2", address: addr(3002), incarnation: 0, metadata: Self.md))]),
                       from: addr(3002), now: .zero)
        func asks(at t: Instant) -> [NodeAddress] {
            let claim = MembershipMessage.alive(.init(name: "r2", address: addr(3002), incarnation: 3 * Self.step, metadata: Self.md))
            return r3.receive(Packet([claim, .suspect(name: "r2", incarnation: 5 * Self.step, from: "r1")]), from: addr(3001), now: t)
                .compactMap { if case .pushPull(_, let to) = $0 { to } else { nil } }
        }
        #expect(asks(at: .zero) == [addr(3002)], "the member itself is asked, at the address held")
        #expect(asks(at: .zero + .milliseconds(10)).isEmpty)
        #expect(asks(at: .zero + MembershipSettings.lan.reconnectInterval) == [addr(3002)])
        #expect(r3.stats.catchUpsAsked == 2)
        #expect(r3.members["r2"]?.incarnation == 0, "nothing too far ahead was taken")
    }

    /// A restarted node (incarnation 0) whose previous life was pushed past the step rejoins.
    @Test func aRestartedNodePushedPastTheStepRejoins() throws {
        var net = try Self.cluster()
        for i in [0, 2] {
            for inc in [Self.step, Self.step + 5] {   // the previous life's refutations, each within the step
                _ = net.nodes[i].receive(Packet([.alive(.init(name: "r2", address: addr(3002), incarnation: inc, metadata: Self.md))]),
                                         from: addr(3002), now: .zero)
            }
            _ = net.nodes[i].receive(Packet([.dead(name: "r2", incarnation: Self.step + 5, from: "r1")]), from: addr(3001), now: .zero)
            #expect(net.nodes[i].status(of: "r2") == .dead)
        }
        net.nodes[1] = Self.node("r2", 3002, seed: 9)   // the new life, at incarnation 0
        try net.deliver(net.nodes[1].join(seeds: [addr(3001)], now: .zero), from: addr(3002))
        let won = try net.run(for: .seconds(120), until: Self.r2WonBack)
        #expect(won, "r1: \(String(describing: net.nodes[0].members["r2"])), r3: \(String(describing: net.nodes[2].members["r2"]))")
        #expect(net.nodes[1].incarnation > Self.step + 5)
    }

    @Test func aRefutationAtTheBoundSaturates() {
        var v = Self.node("v", 3009, seed: 4)
        v.setOwnIncarnationForTesting(WireLimits.maxIncarnation - 1)
        _ = v.receive(Packet([.suspect(name: "v", incarnation: WireLimits.maxIncarnation, from: "x")]), from: addr(3001), now: .zero)
        #expect(v.incarnation == WireLimits.maxIncarnation)
        _ = v.receive(Packet([.suspect(name: "v", incarnation: WireLimits.maxIncarnation, from: "x")]), from: addr(3001), now: .zero)
        #expect(v.incarnation == WireLimits.maxIncarnation)
    }
}
