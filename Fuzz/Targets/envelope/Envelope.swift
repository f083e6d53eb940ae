import FuzzSupport
import StarlingCore
import StarlingCrypto

/// Envelope opening, in two modes chosen by the input's first byte:
///
/// - even, "from the network": the rest is a sealed datagram or stream frame as a stranger
///   could send it, opened with a fixed keyring. The AEAD refuses nearly everything, so this
///   exercises the header checks; seeds sealed with the ring's key (and their mutations) reach
///   the age check and the payload decoders.
/// - odd, "from a peer holding the key" (the threat model of a compromised or buggy member):
///   `sentAtMs:u64 kind:u8 payload`. The target seals the payload with the key, opens it, and
///   decodes what opens as the kind's payload. This reaches the age arithmetic and the
///   decoders behind authentication with any bytes.
///
/// Invariants: what the ring's key sealed opens to exactly its payload when its age is within
/// the window, and is refused as stale otherwise.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzEnvelope(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let input = bytes(data, size)
    guard let mode = input.first else { return 0 }
    if mode & 1 == 0 {
        let kind = EnvelopeFixture.kind(mode >> 1)
        if let payload = try? Envelope.open(Array(input.dropFirst()), kind: kind, keyring: EnvelopeFixture.keyring,
                                            nowMs: EnvelopeFixture.nowMs, maxAgeMs: EnvelopeFixture.windowMs) {
            EnvelopeFixture.decode(payload, kind: kind)
        }
        return 0
    }
    guard input.count >= 10 else { return 0 }
    let sentAtMs = input[1..<9].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
    let kind = EnvelopeFixture.kind(input[9])
    let payload = Array(input[10...])
    let sealed = Envelope.seal(payload, kind: kind, key: EnvelopeFixture.key, sentAtMs: sentAtMs)
    invariant(sealed.count == payload.count + Envelope.overheadBytes, "sealed size")
    let now = EnvelopeFixture.nowMs
    let ageInWindow = (now >= sentAtMs ? now - sentAtMs : sentAtMs - now) <= UInt64(EnvelopeFixture.windowMs)
    do {
        let opened = try Envelope.open(sealed, kind: kind, keyring: EnvelopeFixture.keyring,
                                       nowMs: EnvelopeFixture.nowMs, maxAgeMs: EnvelopeFixture.windowMs)
        invariant(ageInWindow, "a message \(sentAtMs) outside the window opened")
        invariant(opened == payload, "opened payload differs from the sealed one")
        EnvelopeFixture.decode(opened, kind: kind)
    } catch {
        invariant(!ageInWindow, "a fresh message sealed with the key did not open: \(error)")
        if case .stale = error {} else { invariant(false, "refused for \(error), not its age") }
    }
    return 0
}

@_cdecl("LLVMFuzzerInitialize")
public func initialize(_ argc: UnsafeMutableRawPointer?, _ argv: UnsafeMutableRawPointer?) -> Int32 {
    writeSeedsIfAsked(EnvelopeFixture.seeds)
    return 0
}

enum EnvelopeFixture {
    /// Fixed so that every run opens the same seeds: a fuzz key, never a cluster's.
    static let key = try! ClusterKey(bytes: (0..<32).map { UInt8($0) })
    static let otherKey = try! ClusterKey(bytes: (0..<32).map { UInt8(255 - $0) })
    static let keyring = try! Keyring(keys: [otherKey, key])
    /// 2027-01-15, a fixed "now" so that the seeds stay fresh.
    static let nowMs: UInt64 = 1_800_000_000_000
    static let windowMs: Int64 = 30_000

    static func kind(_ byte: UInt8) -> Envelope.Kind {
        [.gossip, .pushPullRequest, .pushPullReply][Int(byte % 3)]
    }

    /// What a node does with an opened payload: decode it as its kind says (errors are drops).
    static func decode(_ payload: [UInt8], kind: Envelope.Kind) {
        if kind == .gossip {
            _ = try? Packet.decode(payload)
        } else if kind == .pushPullRequest || kind == .pushPullReply {
            _ = try? PushPullState.decode(payload)
        }
    }

    static var seeds: [String: [UInt8]] {
        let packet = Packet([.ping(seq: 1, target: "node-b", source: "node-a",
                                   replyTo: NodeAddress(host: "127.0.0.1", port: 7946))]).encoded()
        let state = PushPullState(join: true, source: "node-a", entries: []).encoded()
        func wire(_ payload: [UInt8], _ kind: Envelope.Kind, _ modeKind: UInt8, at: UInt64 = nowMs) -> [UInt8] {
            [modeKind << 1] + Envelope.seal(payload, kind: kind, key: key, sentAtMs: at)
        }
        func peer(_ payload: [UInt8], _ kindByte: UInt8, at: UInt64 = nowMs) -> [UInt8] {
            [1] + (0..<8).map { UInt8(truncatingIfNeeded: at >> UInt64(56 - 8 * $0)) } + [kindByte] + payload
        }
        return [
            "sealed-gossip": wire(packet, .gossip, 0),
            "sealed-push-pull": wire(state, .pushPullRequest, 1),
            "sealed-stale": wire(packet, .gossip, 0, at: nowMs - 60_000),
            "sealed-other-key": [0] + Envelope.seal(packet, kind: .gossip, key: otherKey, sentAtMs: nowMs),
            "sealed-wrong-kind": wire(packet, .pushPullReply, 0),
            "peer-gossip": peer(packet, 0),
            "peer-push-pull": peer(state, 2),
            "peer-future": peer(packet, 0, at: nowMs + 29_000),
        ]
    }
}
