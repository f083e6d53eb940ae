import CSodium

/// Authenticated encryption of every packet and stream frame between nodes
/// (XChaCha20-Poly1305, IETF construction).
///
/// ```
/// sealed    := kind:u8 keyId:u32 nonce[24] ciphertext
/// plaintext := sentAtMs:u64 payload
/// ```
/// `kind` and `keyId` are authenticated as associated data, so a UDP packet cannot be replayed
/// as a stream frame, nor a reply as a request. `sentAtMs` (wall clock) lets the receiver refuse
/// replays older than its window.
public enum Envelope {
    public enum Kind: UInt8, Sendable {
        case gossip = 1
        case pushPullRequest = 2
        case pushPullReply = 3
        /// The first frame of an inbound stream: small, so that a connection proves it holds the
        /// key before the node buffers a large frame for it.
        case streamHello = 4
        /// One frame on a persistent peer link (after its hello): a message of a hosted
        /// protocol. Its own kind, so that a gossip packet or a push-pull frame never opens as one.
        case linkFrame = 5
    }

    public static let headerBytes = 1 + 4 + 24

    /// The nonce of a sealed envelope (its bytes 5..<29), or nil if it is too short to have one.
    /// Authenticated: an envelope whose nonce was altered does not open.
    public static func nonce(of sealed: [UInt8]) -> [UInt8]? {
        sealed.count >= headerBytes ? Array(sealed[(1 + 4)..<headerBytes]) : nil
    }
    public static let overheadBytes = headerBytes + 8 + 16

    public enum OpenError: Error, Equatable, Sendable {
        case malformed
        case wrongKind
        case unknownKey
        case authenticationFailed
        case stale(ageMs: Int64)

        public var reason: String {
            switch self {
            case .malformed: "malformed"
            case .wrongKind: "wrong_kind"
            case .unknownKey: "unknown_key"
            case .authenticationFailed: "auth_failed"
            case .stale: "replay_window"
            }
        }
    }

    public static func seal(_ payload: [UInt8], kind: Kind, key: ClusterKey, sentAtMs: UInt64) -> [UInt8] {
        Sodium.ensureReady()
        var header = [UInt8](repeating: 0, count: headerBytes)
        header[0] = kind.rawValue
        for i in 0..<4 { header[1 + i] = UInt8(truncatingIfNeeded: key.id >> UInt32(24 - 8 * i)) }
        header.withUnsafeMutableBufferPointer { randombytes_buf($0.baseAddress! + 5, 24) }
        var plaintext = [UInt8](repeating: 0, count: 8)
        for i in 0..<8 { plaintext[i] = UInt8(truncatingIfNeeded: sentAtMs >> UInt64(56 - 8 * i)) }
        plaintext += payload
        var out = header + [UInt8](repeating: 0, count: plaintext.count + 16)
        var clen: UInt64 = 0
        let rc = out.withUnsafeMutableBufferPointer { o in
            plaintext.withUnsafeBufferPointer { p in
                key.bytes.withUnsafeBufferPointer { k in
                    crypto_aead_xchacha20poly1305_ietf_encrypt(
                        o.baseAddress! + headerBytes, &clen, p.baseAddress, UInt64(p.count),
                        o.baseAddress, 5, nil, o.baseAddress! + 5, k.baseAddress!)
                }
            }
        }
        precondition(rc == 0 && Int(clen) == plaintext.count + 16)
        return out
    }

    /// Whether `sentAtMs` is within `maxAgeMs` of `nowMs` either way. Computed on unsigned
    /// distances: both timestamps are arbitrary 64-bit values (the sender's is peer data), so a
    /// signed difference overflows and `abs(Int64.min)` traps.
    public static func isFresh(sentAtMs: UInt64, nowMs: UInt64, maxAgeMs: Int64) -> Bool {
        guard maxAgeMs >= 0 else { return false }
        let distance = nowMs >= sentAtMs ? nowMs - sentAtMs : sentAtMs - nowMs
        return distance <= UInt64(maxAgeMs)
    }

    /// Opens a sealed message, checking kind, key, tag and age (`maxAgeMs` either way, to allow
    /// for clock skew).
    public static func open(_ sealed: [UInt8], kind: Kind, keyring: Keyring, nowMs: UInt64,
                            maxAgeMs: Int64) throws(OpenError) -> [UInt8] {
        Sodium.ensureReady()
        guard sealed.count >= overheadBytes else { throw .malformed }
        guard sealed[0] == kind.rawValue else { throw .wrongKind }
        let id = sealed[1..<5].reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
        guard let key = keyring.key(id: id) else { throw .unknownKey }
        let clen = sealed.count - headerBytes
        var plaintext = [UInt8](repeating: 0, count: clen - 16)
        var mlen: UInt64 = 0
        let rc = plaintext.withUnsafeMutableBufferPointer { m in
            sealed.withUnsafeBufferPointer { s in
                key.bytes.withUnsafeBufferPointer { k in
                    crypto_aead_xchacha20poly1305_ietf_decrypt(
                        m.baseAddress, &mlen, nil, s.baseAddress! + headerBytes, UInt64(clen),
                        s.baseAddress, 5, s.baseAddress! + 5, k.baseAddress!)
                }
            }
        }
        guard rc == 0, Int(mlen) == clen - 16 else { throw .authenticationFailed }
        let sentAt = plaintext[0..<8].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        guard isFresh(sentAtMs: sentAt, nowMs: nowMs, maxAgeMs: maxAgeMs) else {
            // The age as reported, clamped: a sender's timestamp is any 64-bit value.
            let age = nowMs >= sentAt ? Int64(clamping: nowMs - sentAt) : -Int64(clamping: sentAt - nowMs)
            throw .stale(ageMs: age)
        }
        return Array(plaintext[8...])
    }
}
