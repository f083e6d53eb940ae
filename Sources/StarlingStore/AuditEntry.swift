import Foundation
import StarlingCrypto

/// One entry of a node's audit log: what happened (`kind`, `body`), when, its place in the chain
/// (`seq`, `previousHash`), and the node's proof that it wrote it (`hash`, `signature`).
///
/// **What is hashed and signed.** The entry's message is a length-prefixed byte string, so that
/// no two different entries share one (big-endian integers):
///
///     "starling-audit-v1" 0x00 | seq:u64 | timeMs:u64 | len(kind):u32 kind | len(body):u32 body | previousHash[32]
///
/// `hash` = BLAKE2b-256(message) (libsodium `crypto_generichash`). `signature` = Ed25519, by the
/// node's identity key (`DATA/node.key`), of
///
///     "starling-audit-sig-v1" 0x00 | seq:u64 | hash[32]
///
/// The seq is signed beside the hash so that a head (seq, hash, signature) proves its position
/// to a witness that never sees the entry's content. `body` is canonical JSON
/// (`JSONValue.canonicalBytes`), so an exported entry parsed back hashes to the same value. The
/// first entry's `previousHash` is 32 zero bytes. The domain string keeps an audit signature from
/// being valid for any other message the node signs.
public struct AuditEntry: Sendable, Equatable {
    public var seq: UInt64
    public var timeMs: UInt64
    public var kind: String
    /// Canonical JSON bytes.
    public var body: [UInt8]
    public var previousHash: [UInt8]
    public var hash: [UInt8]
    public var signature: [UInt8]

    public static let domain = Array("starling-audit-v1".utf8) + [0]
    public static let signatureDomain = Array("starling-audit-sig-v1".utf8) + [0]
    public static let hashBytes = 32
    public static let genesisHash = [UInt8](repeating: 0, count: hashBytes)
    /// Most bytes of a body's canonical JSON. Bodies carry names and numbers, never outputs.
    public static let maxBodyBytes = 64 << 10
    public static let maxKindBytes = 64

    public init(seq: UInt64, timeMs: UInt64, kind: String, body: [UInt8], previousHash: [UInt8], hash: [UInt8], signature: [UInt8]) {
        self.seq = seq
        self.timeMs = timeMs
        self.kind = kind
        self.body = body
        self.previousHash = previousHash
        self.hash = hash
        self.signature = signature
    }

    /// A new entry after `previous` (nil for the first), hashed and signed by `identity`.
    public static func make(after previous: AuditHead?, timeMs: UInt64, kind: String, body: JSONValue,
                            identity: NodeIdentity) throws(AuditError) -> AuditEntry {
        try validate(kind: kind)
        return sealed(after: previous, timeMs: timeMs, kind: kind, body: try checkedBody(body), identity: identity)
    }

    /// The body's canonical bytes, refused past `maxBodyBytes`.
    public static func checkedBody(_ body: JSONValue) throws(AuditError) -> [UInt8] {
        let bytes = body.canonicalBytes
        guard bytes.count <= maxBodyBytes else {
            throw AuditError("an audit body of \(bytes.count) bytes is over the \(maxBodyBytes)-byte bound")
        }
        return bytes
    }

    /// Chains, hashes and signs an entry whose kind and body were already checked.
    static func sealed(after previous: AuditHead?, timeMs: UInt64, kind: String, body: [UInt8], identity: NodeIdentity) -> AuditEntry {
        let seq = (previous?.seq ?? 0) + 1
        let previousHash = previous?.hash ?? genesisHash
        let hash = blake2b(message(seq: seq, timeMs: timeMs, kind: kind, body: body, previousHash: previousHash), outputBytes: hashBytes)
        return AuditEntry(seq: seq, timeMs: timeMs, kind: kind, body: body, previousHash: previousHash, hash: hash,
                          signature: identity.sign(signedBytes(seq: seq, hash: hash)))
    }

    /// Kinds are short lowercase names such as `task.start`: 1 to 64 bytes of a-z, 0-9, `.`, `_`, `-`.
    public static func validate(kind: String) throws(AuditError) {
        guard !kind.isEmpty, kind.utf8.count <= maxKindBytes,
              kind.utf8.allSatisfy({ (0x61...0x7A).contains($0) || (0x30...0x39).contains($0) || $0 == 0x2E || $0 == 0x5F || $0 == 0x2D })
        else { throw AuditError("bad audit kind \(kind.debugDescription)") }
    }

    /// The bytes that are hashed (see the type's documentation).
    public static func message(seq: UInt64, timeMs: UInt64, kind: String, body: [UInt8], previousHash: [UInt8]) -> [UInt8] {
        var m = domain
        m.reserveCapacity(domain.count + 24 + kind.utf8.count + body.count + previousHash.count)
        func u64(_ v: UInt64) { for shift in stride(from: 56, through: 0, by: -8) { m.append(UInt8(truncatingIfNeeded: v >> UInt64(shift))) } }
        func u32(_ v: Int) { let v = UInt32(clamping: v); for shift in stride(from: 24, through: 0, by: -8) { m.append(UInt8(truncatingIfNeeded: v >> UInt32(shift))) } }
        u64(seq)
        u64(timeMs)
        u32(kind.utf8.count)
        m += Array(kind.utf8)
        u32(body.count)
        m += body
        m += previousHash
        return m
    }

    /// BLAKE2b-256 of this entry's message as stored (what `hash` should be).
    public var computedHash: [UInt8] {
        blake2b(Self.message(seq: seq, timeMs: timeMs, kind: kind, body: body, previousHash: previousHash), outputBytes: Self.hashBytes)
    }

    /// What the signature covers: the domain, the seq and the hash.
    public static func signedBytes(seq: UInt64, hash: [UInt8]) -> [UInt8] {
        var m = signatureDomain
        for shift in stride(from: 56, through: 0, by: -8) { m.append(UInt8(truncatingIfNeeded: seq >> UInt64(shift))) }
        return m + hash
    }

    /// Whether `signature` is the signer's over (seq, hash).
    public func signatureVerifies(publicKey: [UInt8]) -> Bool {
        NodeIdentity.verify(signature: signature, message: Self.signedBytes(seq: seq, hash: hash), publicKey: publicKey)
    }

    public var head: AuditHead { AuditHead(seq: seq, hash: hash, signature: signature) }
}

/// The last entry of a log, as a peer witnesses it: its seq, hash and the node's signature over
/// both (the entry's own signature, so a head needs no signing of its own). A witness that holds
/// a head of seq S can later prove that the log had at least S entries, entry S with that hash.
public struct AuditHead: Sendable, Equatable, Codable {
    public var seq: UInt64
    public var hash: [UInt8]
    public var signature: [UInt8]

    public init(seq: UInt64, hash: [UInt8], signature: [UInt8]) {
        self.seq = seq
        self.hash = hash
        self.signature = signature
    }

    public func signatureVerifies(publicKey: [UInt8]) -> Bool {
        hash.count == AuditEntry.hashBytes
            && NodeIdentity.verify(signature: signature, message: AuditEntry.signedBytes(seq: seq, hash: hash), publicKey: publicKey)
    }
}

/// A head in its portable form (`starling audit head`, `audit verify --witness FILE`): the node's
/// name and public key, and the head, all as hex.
public struct WitnessedHead: Sendable, Equatable, Codable {
    public var node: String
    public var publicKey: String
    public var seq: UInt64
    public var hash: String
    public var signature: String

    public init(node: String, publicKey: [UInt8], head: AuditHead) {
        self.node = node
        self.publicKey = Hex.encode(publicKey)
        seq = head.seq
        hash = Hex.encode(head.hash)
        signature = Hex.encode(head.signature)
    }

    /// The head, with its signature checked against its own public key; nil when anything is
    /// malformed or the signature does not verify.
    public func verifiedHead() -> (publicKey: [UInt8], head: AuditHead)? {
        guard let key = Hex.decode(publicKey), key.count == 32, let h = Hex.decode(hash), let s = Hex.decode(signature) else { return nil }
        let head = AuditHead(seq: seq, hash: h, signature: s)
        return head.signatureVerifies(publicKey: key) ? (key, head) : nil
    }
}

public struct AuditError: Error, CustomStringConvertible, Equatable {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// Hex text for keys, hashes and signatures in exports and heads.
public enum Hex {
    public static func encode(_ bytes: [UInt8]) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var out = [UInt8]()
        out.reserveCapacity(bytes.count * 2)
        for b in bytes { out += [digits[Int(b >> 4)], digits[Int(b & 0xF)]] }
        return String(decoding: out, as: UTF8.self)
    }

    /// Lowercase or uppercase hex to bytes; nil for an odd length or a non-hex character.
    public static func decode(_ text: String) -> [UInt8]? {
        let chars = Array(text.utf8)
        guard chars.count % 2 == 0 else { return nil }
        func nibble(_ c: UInt8) -> UInt8? {
            switch c {
            case 0x30...0x39: c - 0x30
            case 0x61...0x66: c - 0x61 + 10
            case 0x41...0x46: c - 0x41 + 10
            default: nil
            }
        }
        var out = [UInt8]()
        out.reserveCapacity(chars.count / 2)
        var i = 0
        while i < chars.count {
            guard let hi = nibble(chars[i]), let lo = nibble(chars[i + 1]) else { return nil }
            out.append(hi << 4 | lo)
            i += 2
        }
        return out
    }
}
