@testable import StarlingCore

func addr(_ port: UInt16) -> NodeAddress { NodeAddress(host: "127.0.0.1", port: port) }

func at(ms: Int64) -> Instant { Instant(nanoseconds: ms * 1_000_000) }

extension Array where Element == MembershipDirective {
    var sends: [(packet: Packet, to: NodeAddress)] {
        compactMap { if case .send(let p, let to) = $0 { return (p, to) } else { return nil } }
    }
    var messages: [MembershipMessage] { sends.flatMap(\.packet.messages) }
    var changes: [MemberChange] {
        compactMap { if case .changed(let c) = $0 { return c } else { return nil } }
    }
    var pushPulls: [(PushPullState, NodeAddress)] {
        compactMap { if case .pushPull(let s, let to) = $0 { return (s, to) } else { return nil } }
    }
}

/// A node "me" at port 1000 that already knows `peers` (named p1, p2, ... at ports 1001, ...).
func nodeWithPeers(_ count: Int, settings: MembershipSettings = .lan, seed: UInt64 = 1) -> Membership {
    var m = Membership(settings: settings, name: "me", address: addr(1000), metadata: MemberMetadata(api: "127.0.0.1:8400", slots: 4, free: 4),
                       seed: seed, now: .zero)
    for i in 1...max(1, count) where count > 0 {
        _ = m.receive(Packet([.alive(.init(name: "p\(i)", address: addr(UInt16(1000 + i)), incarnation: 1, metadata: MemberMetadata()))]),
                      from: addr(UInt16(1000 + i)), now: .zero)
    }
    return m
}

func alive(_ name: String, _ port: UInt16, inc: UInt64, meta: MemberMetadata = MemberMetadata()) -> MembershipMessage {
    .alive(.init(name: name, address: addr(port), incarnation: inc, metadata: meta))
}

extension Membership {
    /// Puts this node at `incarnation` directly: reaching the bound through messages would take
    /// 2⁶² / `WireLimits.maxIncarnationStep` refutations.
    mutating func setOwnIncarnationForTesting(_ value: UInt64) {
        incarnation = value
        members.update(0) { $0.incarnation = value }
    }
}
