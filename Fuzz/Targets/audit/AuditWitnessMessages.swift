import FuzzSupport
import StarlingCore

/// The audit witness protocol's decoder (channel 4, issue #11 item 7): arbitrary bytes either
/// decode or throw, never trap; what decodes re-encodes to the same bytes (one encoding per
/// message) within the channel's bound; and a decoded message fed to a witness node as a peer's
/// message, request or answer yields only effects within its bounds.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzAuditWitness(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let input = bytes(data, size)
    guard let message = try? AuditWitness.decode(input) else { return 0 }
    let encoded = AuditWitness.encode(message)
    invariant(encoded == input, "a decoded audit message does not re-encode to its bytes")
    invariant(encoded.count <= AuditWitness.maxMessageBytes, "an audit message over the channel's bound")
    var node = AuditWitnessSeeds.node()
    let now = Instant(nanoseconds: 1_000_000_000)
    var effects = node.receive(message, from: "node-b", now: now)
    effects += node.request(message, from: "node-b", token: RequestToken(rawValue: 1), now: now)
    effects += node.response(message, to: RequestID(rawValue: 1), now: now)
    invariant(effects.count <= 3, "one message drew \(effects.count) effects")
    return 0
}

@_cdecl("LLVMFuzzerInitialize")
public func initialize(_ argc: UnsafeMutableRawPointer?, _ argv: UnsafeMutableRawPointer?) -> Int32 {
    writeSeedsIfAsked(AuditWitnessSeeds.all)
    return 0
}

enum AuditWitnessSeeds {
    static let key = Array(repeating: UInt8(0x42), count: 32)
    static let head = AuditWitness.Head(seq: 7, hash: Array(repeating: 0x11, count: 32), signature: Array(repeating: 0x22, count: 64),
                                        publicKey: key)

    /// "node-a" witnessing "node-b" (gossiped key 0x42…), with a request in flight to it.
    static func node() -> AuditWitness {
        var w = AuditWitness(myName: "node-a", now: .zero)
        for name in ["node-a", "node-b"] {
            _ = w.membershipChanged(.updated(PeerView(name: name, address: NodeAddress(host: "127.0.0.1", port: 7000), status: .alive,
                                                      metadata: MemberMetadata(identityKey: key))), now: .zero)
        }
        _ = w.tick(now: w.nextDeadline)  // asks node-b (request 1)
        return w
    }

    static var all: [String: [UInt8]] {
        [
            "head": AuditWitness.encode(.head(head)),
            "ask": AuditWitness.encode(.ask),
            "witnessed-none": AuditWitness.encode(.witnessed(nil)),
            "witnessed-head": AuditWitness.encode(.witnessed(head)),
        ]
    }
}
