/// One entry of a session's hash-chained, signed journal (issue #11 item 4).
///
/// Every checkpoint, effect start, effect result, creation and deletion of a session is one
/// record. A record names the record before it by hash, so a replica can tell a record that
/// continues its chain from one that does not; the owner of the epoch signs it with its Ed25519
/// key, so a peer with only the cluster key cannot forge or alter one.
///
/// What is hashed: `"starling-session-v1" 0x00 | len(session):u16 session | seq:u64 |
/// previousHash[32] | epoch:u64 | kind:u8 | len(key):u16 key | contentDigest[32] |
/// len(signer):u16 signer | signerKey[32]`, where `contentDigest` is BLAKE2b-256 of the content
/// (of a checkpoint: of its state's manifest, `StateManifest`, so the state travels as chunks).
/// Hashing the digest rather than the content lets a node drop the content of a superseded
/// checkpoint and still verify the chain through it. What is signed: the record's hash.
public struct SessionRecord: Sendable, Equatable {
    public enum Kind: UInt8, Sendable, Equatable, CaseIterable {
        case create = 1
        case checkpoint = 2
        case effectStarted = 3
        case effectResult = 4
        case delete = 5
        /// What the records before a checkpoint meant, after which they are dropped
        /// (`SessionBase`, SessionCompaction.swift).
        case base = 6
    }

    public var session: String
    public var seq: UInt64
    public var previousHash: [UInt8]
    public var epoch: UInt64
    public var kind: Kind
    /// The effect's idempotency key; empty for other kinds.
    public var key: String
    public var contentDigest: [UInt8]
    /// Nil once dropped: a checkpoint superseded by a later one keeps only its digest.
    public var content: [UInt8]?
    public var signer: PeerName
    public var signerKey: [UInt8]
    public var signature: [UInt8]

    public init(session: String, seq: UInt64, previousHash: [UInt8], epoch: UInt64, kind: Kind, key: String,
                contentDigest: [UInt8], content: [UInt8]?, signer: PeerName, signerKey: [UInt8], signature: [UInt8]) {
        self.session = session
        self.seq = seq
        self.previousHash = previousHash
        self.epoch = epoch
        self.kind = kind
        self.key = key
        self.contentDigest = contentDigest
        self.content = content
        self.signer = signer
        self.signerKey = signerKey
        self.signature = signature
    }

    public static let zeroHash = [UInt8](repeating: 0, count: 32)
    static let domain = Array("starling-session-v1".utf8) + [0]

    /// The bytes the record's hash is taken over (everything but the signature and the content).
    public var hashedBytes: [UInt8] {
        var w = ByteWriter(capacity: 256)
        w.write(bytes: Self.domain)
        w.write(session)
        w.write(seq)
        w.write(bytes: previousHash)
        w.write(epoch)
        w.write(kind.rawValue)
        w.write(key)
        w.write(bytes: contentDigest)
        w.write(signer)
        w.write(bytes: signerKey)
        return w.bytes
    }
}

/// The signing, verifying and hashing a session node needs, handed to the pure protocol as a
/// value: the runtime passes libsodium's BLAKE2b and the node's Ed25519 key (`StarlingCrypto`),
/// which are deterministic functions, so the protocol stays deterministic.
public struct SessionCrypto: Sendable {
    public var publicKey: [UInt8]
    public var hash: @Sendable ([UInt8]) -> [UInt8]
    public var sign: @Sendable ([UInt8]) -> [UInt8]
    public var verify: @Sendable (_ signature: [UInt8], _ message: [UInt8], _ publicKey: [UInt8]) -> Bool

    public init(publicKey: [UInt8], hash: @escaping @Sendable ([UInt8]) -> [UInt8], sign: @escaping @Sendable ([UInt8]) -> [UInt8],
                verify: @escaping @Sendable ([UInt8], [UInt8], [UInt8]) -> Bool) {
        self.publicKey = publicKey
        self.hash = hash
        self.sign = sign
        self.verify = verify
    }

    /// The record's hash (BLAKE2b-256 of `hashedBytes`).
    public func hash(of record: SessionRecord) -> [UInt8] { hash(record.hashedBytes) }

    /// A record of this node, signed.
    public func seal(session: String, seq: UInt64, previousHash: [UInt8], epoch: UInt64, kind: SessionRecord.Kind, key: String,
                     content: [UInt8], signer: PeerName) -> SessionRecord {
        seal(session: session, seq: seq, previousHash: previousHash, epoch: epoch, kind: kind, key: key, content: content,
             contentDigest: contentDigest(kind: kind, content: content), signer: signer)
    }

    /// A record of this node, signed, whose content digest the caller computed (a checkpoint's
    /// manifest digest, computed once with its chunks).
    public func seal(session: String, seq: UInt64, previousHash: [UInt8], epoch: UInt64, kind: SessionRecord.Kind, key: String,
                     content: [UInt8], contentDigest: [UInt8], signer: PeerName) -> SessionRecord {
        var record = SessionRecord(session: session, seq: seq, previousHash: previousHash, epoch: epoch, kind: kind, key: key,
                                   contentDigest: contentDigest, content: content, signer: signer, signerKey: publicKey, signature: [])
        record.signature = sign(hash(of: record))
        return record
    }

    /// Why the record does not hold on its own (nil when it does): its content must match its
    /// digest, and its signature must verify under `expectedKey`.
    public func check(_ record: SessionRecord, expectedKey: [UInt8]) -> String? {
        guard record.previousHash.count == 32, record.contentDigest.count == 32, record.signerKey.count == 32,
              record.signature.count == 64 else { return "malformed record" }
        guard record.signerKey == expectedKey else { return "record \(record.seq) is signed under another key than \(record.signer)'s" }
        if let content = record.content, !contentMatches(content, digest: record.contentDigest, kind: record.kind) {
            return "record \(record.seq): content altered"
        }
        guard verify(record.signature, hash(of: record), expectedKey) else { return "record \(record.seq): bad signature" }
        return nil
    }
}

/// A whole session as one holder has it: what a new owner fetches at a takeover, and what an
/// owner installs on a replica that missed records. Every record is there (headers; content kept
/// for the latest checkpoint, the creation and every effect record), so a receiver verifies the
/// chain from the first record to the last.
public struct SessionImage: Sendable, Equatable {
    public var id: String
    /// The epoch the sender holds (its promise).
    public var epoch: UInt64
    /// Who that epoch was promised to: the owner of the epoch.
    public var owner: PeerName
    /// The replica set, owner first.
    public var replicas: [PeerName]
    /// The epoch whose owner installed `replicas` (0: the creation's set, or a copy stored
    /// before configurations were numbered). Each epoch's owner installs at most one set, so the
    /// greatest `configEpoch` a takeover hears of is the newest configuration (`Sessions.Takeover`).
    public var configEpoch: UInt64
    /// The set `replicas` replaced, while the change is not known to be established (a joint
    /// configuration): a takeover from this copy needs a majority of both sets. Emptied once the
    /// owner of `configEpoch` says its install reached a majority of each (`established`, kind
    /// 21), or records on the new set; a takeover also drops it when a member of the new set
    /// answers with the same configuration established.
    public var jointOld: [PeerName]
    public var records: [SessionRecord]

    public init(id: String, epoch: UInt64, owner: PeerName, replicas: [PeerName], configEpoch: UInt64 = 0, jointOld: [PeerName] = [],
                records: [SessionRecord]) {
        self.id = id
        self.epoch = epoch
        self.owner = owner
        self.replicas = replicas
        self.configEpoch = configEpoch
        self.jointOld = jointOld
        self.records = records
    }

    /// The sets a takeover from this copy needs a majority of: the replica set, and the set it
    /// replaced while the change is joint.
    public var quorums: [[PeerName]] { jointOld.isEmpty ? [replicas] : [replicas, jointOld] }

    /// (epoch of the last record, seq of the last record): the image a new owner adopts is the
    /// greatest of a majority's, so it holds every record a majority stored.
    public var headRank: (UInt64, UInt64) { (records.last?.epoch ?? 0, records.last?.seq ?? 0) }
}
