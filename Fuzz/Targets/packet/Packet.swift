import FuzzSupport
import StarlingCore

/// The UDP packet decoder: arbitrary bytes either decode or throw a `WireError`, and what
/// decodes re-encodes to a packet that decodes to the same messages, with its size computed
/// exactly.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzPacket(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    guard let packet = try? Packet.decode(bytes(data, size)) else { return 0 }
    let encoded = packet.encoded()
    invariant(encoded.count == packet.encodedSize, "encodedSize \(packet.encodedSize) != \(encoded.count)")
    invariant((try? Packet.decode(encoded)) == packet, "a decoded packet does not round-trip")
    return 0
}

@_cdecl("LLVMFuzzerInitialize")
public func initialize(_ argc: UnsafeMutableRawPointer?, _ argv: UnsafeMutableRawPointer?) -> Int32 {
    writeSeedsIfAsked(PacketSeeds.all)
    return 0
}

/// One packet of each message type, and a compound packet of all of them.
enum PacketSeeds {
    static let address = NodeAddress(host: "127.0.0.1", port: 7946)
    static let metadata = MemberMetadata(version: 3, api: "127.0.0.1:8400", slots: 8, free: 2,
                                         identityKey: Array(repeating: 0x5a, count: MemberMetadata.identityKeyBytes))
    static let messages: [(String, MembershipMessage)] = [
        ("ping", .ping(seq: 7, target: "node-b", source: "node-a", replyTo: address)),
        ("ack", .ack(seq: 7, source: "node-b")),
        ("nack", .nack(seq: 9, source: "node-c")),
        ("ping-req", .pingReq(seq: 3, target: "node-b", targetAddress: NodeAddress(host: "::1", port: 7947),
                              source: "node-a", replyTo: address)),
        ("alive", .alive(.init(name: "node-x", address: address, incarnation: 4, metadata: metadata))),
        ("suspect", .suspect(name: "node-x", incarnation: 4, from: "node-a")),
        ("dead", .dead(name: "node-x", incarnation: 5, from: "node-x")),
    ]

    static var all: [String: [UInt8]] {
        var seeds: [String: [UInt8]] = [:]
        for (name, message) in messages { seeds[name] = Packet([message]).encoded() }
        seeds["compound"] = Packet(messages.map(\.1)).encoded()
        // An unknown message type (99) between known ones: a reader skips it whole.
        var unknown = Packet([messages[1].1]).encoded()
        unknown[1] = 2
        unknown += [99, 0, 3, 1, 2, 3]
        seeds["unknown-type"] = unknown
        return seeds
    }
}
