import FuzzSupport
import StarlingCore

/// The membership state machine fed with what peers send: every decoded packet and push-pull
/// state goes into a `Membership`, as the runtime hands them over, between timer ticks. Traps
/// anywhere (overflow on an incarnation, a bad index, an encoder precondition on what the node
/// then sends) are findings; so is a packet the node builds that it could not send or decode.
///
/// Input: a sequence of events `op:u8 length:u16 bytes[length]`:
/// - op % 4 == 0: the bytes are a UDP packet from a peer;
/// - op % 4 == 1: a push-pull request the node serves;
/// - op % 4 == 2: the reply to a push-pull the node started;
/// - op % 4 == 3: time passes by `length` milliseconds, then the node runs its timers.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzMembership(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let input = bytes(data, size)
    var node = MembershipFixture.node()
    var now = Instant.zero
    var at = 0
    var events = 0
    while at + 3 <= input.count, events < 64 {
        let op = input[at] % 4
        let length = Int(input[at + 1]) << 8 | Int(input[at + 2])
        at += 3
        events += 1
        if op == 3 {
            now = now + .milliseconds(length)
            check(node.tick(now: now), node)
            continue
        }
        let body = Array(input[at..<min(at + length, input.count)])
        at += body.count
        switch op {
        case 0:
            if let packet = try? Packet.decode(body) { check(node.receive(packet, from: MembershipFixture.peer, now: now), node) }
        case 1:
            if let state = try? PushPullState.decode(body) {
                let (reply, directives) = node.servePushPull(state, now: now)
                checkSendable(reply)
                check(directives, node)
            }
        default:
            if let state = try? PushPullState.decode(body) { check(node.completePushPull(state, now: now), node) }
        }
    }
    return 0
}

/// What the node asks to send must encode within its bounds and decode back.
func check(_ directives: [MembershipDirective], _ node: Membership) {
    for directive in directives {
        switch directive {
        case .send(let packet, _):
            invariant(packet.messages.count <= WireLimits.maxMessagesPerPacket, "a packet of \(packet.messages.count) messages")
            invariant(packet.encodedSize <= node.settings.maxPacketBytes, "a packet of \(packet.encodedSize) B")
            let bytes = packet.encoded()
            invariant((try? Packet.decode(bytes)) == packet, "a packet the node built does not decode")
        case .pushPull(let state, _):
            checkSendable(state)
        case .changed:
            break
        }
    }
    invariant(node.members.count <= WireLimits.maxMembers, "the member table outgrew its bound")
}

func checkSendable(_ state: PushPullState) {
    invariant(state.entries.count <= WireLimits.maxMembers, "a push-pull state over the member bound")
    let again = try? PushPullState.decode(state.encoded())
    invariant(again?.entries == state.entries, "a push-pull state the node built does not decode")
}

@_cdecl("LLVMFuzzerInitialize")
public func initialize(_ argc: UnsafeMutableRawPointer?, _ argv: UnsafeMutableRawPointer?) -> Int32 {
    writeSeedsIfAsked(MembershipFixture.seeds)
    return 0
}

enum MembershipFixture {
    static let peer = NodeAddress(host: "127.0.0.1", port: 7001)
    /// The peers' metadata carries an identity key, so that mutated `alive`s exercise the
    /// identity rule (another key, no key, a key of another length).
    static let meta = MemberMetadata(version: 1, api: "127.0.0.1:8400", slots: 4, free: 4,
                                     identityKey: Array(repeating: 0xaa, count: MemberMetadata.identityKeyBytes))
    static let myMeta = MemberMetadata(version: 1, api: "127.0.0.1:8400", slots: 4, free: 4,
                                       identityKey: Array(repeating: 0x55, count: MemberMetadata.identityKeyBytes))

    /// A node "node-self" that knows node-a and node-b, both alive.
    static func node() -> Membership {
        let known = ["node-a", "node-b"].enumerated().map { i, name in
            Member(name: name, address: NodeAddress(host: "127.0.0.1", port: UInt16(7001 + i)), incarnation: 1,
                   status: .alive, metadata: meta, statusSince: .zero)
        }
        return Membership(settings: .loopback, name: "node-self", address: NodeAddress(host: "127.0.0.1", port: 7000),
                          metadata: myMeta, seed: 1, now: .zero, knownMembers: known)
    }

    static func event(_ op: UInt8, _ body: [UInt8]) -> [UInt8] {
        [op, UInt8(body.count >> 8), UInt8(truncatingIfNeeded: body.count)] + body
    }

    static func tick(_ ms: Int) -> [UInt8] { [3, UInt8(ms >> 8), UInt8(truncatingIfNeeded: ms)] }

    static var seeds: [String: [UInt8]] {
        func packet(_ m: MembershipMessage) -> [UInt8] { event(0, Packet([m]).encoded()) }
        let addressC = NodeAddress(host: "127.0.0.1", port: 7003)
        let newcomer = PushPullState(join: true, source: "node-c", entries: [
            .init(name: "node-c", address: addressC, incarnation: 0, status: .alive, metadata: meta),
        ]).encoded()
        let table = PushPullState(join: false, source: "node-a", entries: [
            .init(name: "node-a", address: peer, incarnation: 2, status: .alive, metadata: meta),
            .init(name: "node-b", address: NodeAddress(host: "127.0.0.1", port: 7002), incarnation: 1, status: .dead, metadata: meta),
            .init(name: "node-self", address: NodeAddress(host: "127.0.0.1", port: 7000), incarnation: 3, status: .suspect, metadata: meta),
        ]).encoded()
        return [
            "ping-then-tick": packet(.ping(seq: 1, target: "node-self", source: "node-a", replyTo: peer)) + tick(150),
            "suspect-me": packet(.suspect(name: "node-self", incarnation: 0, from: "node-a")) + tick(50),
            "dead-other": packet(.dead(name: "node-b", incarnation: 1, from: "node-a")) + tick(500),
            "alive-newcomer": packet(.alive(.init(name: "node-c", address: addressC, incarnation: 5, metadata: meta))) + tick(300),
            "ping-req": packet(.pingReq(seq: 9, target: "node-b", targetAddress: NodeAddress(host: "127.0.0.1", port: 7002),
                                        source: "node-a", replyTo: peer)) + tick(200) + tick(200),
            "serve-join": event(1, newcomer) + tick(100),
            "complete-table": event(2, table) + tick(1000),
            "ticks": tick(100) + tick(100) + tick(1000) + tick(5000),
        ]
    }
}
