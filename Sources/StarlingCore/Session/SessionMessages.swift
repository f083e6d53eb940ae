/// Bounds of the session protocol. Every count and size that comes off the wire is checked
/// against one of these before anything is allocated.
public enum SessionLimits {
    /// Replicas per session, owner included (issue #11: R = 3).
    public static let replicas = 3
    /// Bytes of an id: `[A-Za-z0-9._-]`, 1 to 64.
    public static let maxIDBytes = 64
    /// Bytes of an effect key: printable ASCII, 1 to 128.
    public static let maxKeyBytes = 128
    /// Bytes of one checkpoint's state (the agent's JSON): 1 MiB.
    public static let maxStateBytes = 1 << 20
    /// Bytes of an effect's task, of its recorded result, and of a session's creation options.
    public static let maxEffectBytes = 16 << 10
    /// Records a session holds at once. A checkpoint compacts a session that holds
    /// `compactAfterRecords` (SessionCompaction.swift); one that never checkpoints is refused
    /// writes here.
    public static let maxRecords = 2_048
    /// The highest seq a record may carry (2^62): far more than any session writes, and far
    /// enough from `UInt64.max` that no seq arithmetic (`seq + 1`, `first.seq + i`) can
    /// overflow. A record from the wire above it is refused at decoding; an image in `verify`.
    public static let maxSeq: UInt64 = 1 << 62
    /// How far above the epoch held here an epoch from a peer may be (2^32). Each takeover,
    /// refill or handoff raises a session's epoch by one, so no honest peer is this far ahead.
    /// A member naming `UInt64.max` left the session unled here for good (`prepare` cannot go
    /// above it): now reaching it takes 2^32 such messages (review6 F2).
    public static let maxEpochStep: UInt64 = 1 << 32
    /// A session holding this many records is compacted after its next checkpoint.
    public static let compactAfterRecords = 1_024
    /// A session whose image is this large is compacted after its next checkpoint.
    public static let compactAfterBytes = 2 << 20
    /// Effect keys a session ever started. A key is never forgotten (its effect never runs
    /// twice), so past this a new key is refused.
    public static let maxEffectKeys = 4_096
    /// The last keys of `maxEffectKeys` are kept for keys starting with `hostKeyPrefix` (the
    /// node's own: an agent's end and starts), so that a session whose clients used up their
    /// keys can still be ended.
    public static let hostKeyPrefix = "starling."
    public static let hostKeyReserve = 16
    /// Effect results kept in a session's records (the most recent); an older key whose result
    /// was dropped answers "expired".
    public static let maxResultsKept = 64
    /// Effect results a base record carries on (the most recent).
    public static let maxBaseResults = 32
    /// Bytes of a whole image: one message's bound less room for what a message adds around it.
    public static let maxImageBytes = maxMessageBytes - (8 << 10)
    /// Sessions this node creates as owner; past it a create is refused.
    public static let maxOwnedSessions = 1_024
    /// Sessions this node holds at all (owner or replica); past it installs are refused.
    public static let maxHeldSessions = 4_096
    /// Releases a node remembers (`SessionRelease`), the oldest forgotten first; once it has
    /// forgotten one, it refuses to promise any session it holds nothing of (fail closed).
    public static let maxReleasesRemembered = 65_536
    /// Sessions one lead check asks about (`SessionMessage.leads`); a holder with more held
    /// under one owner sends several.
    public static let maxLeadCheck = 256
    /// Commands waiting behind a write in flight, per session.
    public static let maxQueuedPerSession = 32
    /// Journal entries in one read of a session (`?since=SEQ` pages on).
    public static let maxJournalPage = 256
    /// Bytes of a peer name on the wire.
    public static let maxNameBytes = 255
    /// Bytes of a refusal's reason on the wire.
    public static let maxReasonBytes = 1_024
    /// Bytes of one encoded message, under the link frame bound (4 MiB). An owner refuses a
    /// write that would make the session's image larger than `maxImageBytes`.
    public static let maxMessageBytes = (4 << 20) - (64 << 10)

    /// Whether `id` may name a session.
    public static func validID(_ id: String) -> Bool {
        let bytes = Array(id.utf8)
        return !bytes.isEmpty && bytes.count <= maxIDBytes && bytes.allSatisfy { b in
            (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5A) || (b >= 0x61 && b <= 0x7A) || b == 0x2E || b == 0x5F || b == 0x2D
        }
    }

    /// Whether `key` may name an effect.
    public static func validKey(_ key: String) -> Bool {
        let bytes = Array(key.utf8)
        return !bytes.isEmpty && bytes.count <= maxKeyBytes && bytes.allSatisfy { $0 >= 0x21 && $0 <= 0x7E }
    }

    /// The largest content a record of `kind` may carry.
    public static func maxContent(_ kind: SessionRecord.Kind) -> Int {
        switch kind {
        case .checkpoint: maxStateBytes
        case .create, .effectStarted, .effectResult: maxEffectBytes
        case .delete: 0
        case .base: SessionBase.maxBytes
        }
    }
}

/// What session nodes say to each other on `Channel.session`. All but the answers are requests.
public enum SessionMessage: Sendable, Equatable {
    /// Owner → replica: store this record (the next of the chain, in the owner's epoch).
    case append(SessionRecord)
    /// Owner → replica: replace what you hold of the session with this image (a replica behind
    /// or off the chain, or a new member of the replica set).
    case install(SessionImage)
    /// A would-be owner → holders: promise me `epoch` for the session, and send what you hold.
    case prepare(session: String, epoch: UInt64)
    /// Answer to `prepare`: promised, with the image held (nil: the session is not held here).
    case promised(session: String, image: SessionImage?)
    /// Answer to `append` / `install`: the session is stored durably here up to `seq`.
    case stored(session: String, seq: UInt64)
    /// Answer to `append`: the record does not continue the chain held here (which ends at `seq`).
    case behind(session: String, seq: UInt64)
    /// Answer to anything: a higher epoch was promised here; the sender is fenced.
    case stale(session: String, epoch: UInt64)
    /// Answer to anything: refused, with the reason (forged, altered, malformed).
    case invalid(reason: String)
    /// Answer to `prepare`: refused, because the session's owner is alive in the answerer's
    /// view (a node back from a partition must not depose a live owner).
    case ownedBy(session: String, epoch: UInt64, owner: PeerName)

    // Migration (issue #11 item 6, SessionHandoff.swift): kinds 15–18.

    /// Owner → the session's next owner: hold this image (the old owner's epoch); you will own
    /// `epoch` with `replicas` (you first). Answered `stored` once verified and durable.
    case handoff(SessionImage, epoch: UInt64, replicas: [PeerName])
    /// Owner → its replica set: promise `epoch` of the session to `to` (the owner of the epoch
    /// promised here hands the session on; no one else may). Answered `promised`.
    case transfer(session: String, epoch: UInt64, to: PeerName)
    /// Owner → next owner: a majority of the old replica set promised you `epoch`; serve it with
    /// `replicas`. Answered `stored` once the new replica set stored the image in that epoch.
    case commit(session: String, epoch: UInt64, replicas: [PeerName])
    /// New owner → a member the new replica set left out: the new set stored `epoch`; drop your
    /// copy. Answered `stored` (seq 0).
    case release(session: String, epoch: UInt64)
    /// Owner → replica (kind 10): the next record, a checkpoint, without its state: the state's
    /// manifest (`StateManifest`, whose digest the record carries) and the chunks of it that the
    /// replica's latest state does not have. A replica missing a chunk answers `behind` and gets
    /// the image (`SessionChunks.swift`).
    case appendChunks(SessionRecord, manifest: [UInt8], chunks: [[UInt8]])
    /// A holder → the owner it defers to (kind 19): do you lead these sessions? Holders defer to
    /// an owner that is present in their view; the owner's own word keeps a session from staying
    /// unled while each holder defers to a node that leads nothing (`Sessions.checkLeads`).
    case leads(sessions: [String])
    /// Answer to `leads` (kind 20): of the sessions asked, those the answerer neither leads nor
    /// is taking over or being handed, each with the newest promise the answerer knows of it.
    case notLeading(sessions: [LeadAnswer])
    /// Owner → the members of its new replica set (kind 21): the configuration this epoch
    /// installed is established (a majority of each set it needed stored it), so the copy drops
    /// the set it replaced (`SessionImage.jointOld`). Without it, a session idle after a change
    /// kept its copies joint, and once the old set's members were gone (a scale-down after the
    /// moves) no takeover could form. Answered `stored`.
    case established(session: String, epoch: UInt64)
}

/// What a node that does not lead a session knows of it (`SessionMessage.notLeading`): the
/// promise it holds (epoch, owner, the replica set of its copy and its copy's head: the epoch
/// and seq of its last record, the order takeovers rank copies by), or the release it remembers
/// (epoch and owner, no set, head 0), or nothing (`owner` empty).
public struct LeadAnswer: Sendable, Equatable {
    public var session: String
    public var epoch: UInt64
    public var owner: PeerName
    public var replicas: [PeerName]
    public var headEpoch: UInt64
    public var seq: UInt64
    /// The copy's `SessionImage.configEpoch`: which of two sets is the newer.
    public var configEpoch: UInt64
    public init(session: String, epoch: UInt64 = 0, owner: PeerName = "", replicas: [PeerName] = [], headEpoch: UInt64 = 0, seq: UInt64 = 0,
                configEpoch: UInt64 = 0) {
        self.session = session
        self.epoch = epoch
        self.owner = owner
        self.replicas = replicas
        self.headEpoch = headEpoch
        self.seq = seq
        self.configEpoch = configEpoch
    }
}

public struct SessionDecodingError: Error, CustomStringConvertible {
    public var description: String
    init(_ d: String) { description = d }
}

extension SessionMessage {
    public static func encode(_ message: SessionMessage) -> [UInt8] {
        var w = ByteWriter(capacity: 512)
        switch message {
        case .append(let r):
            w.write(UInt8(1)); write(r, to: &w)
        case .install(let image):
            w.write(UInt8(2)); write(image, to: &w)
        case .prepare(let s, let e):
            w.write(UInt8(3)); w.write(s); w.write(e)
        case .promised(let s, let image):
            w.write(UInt8(4)); w.write(s)
            if let image { w.write(true); write(image, to: &w) } else { w.write(false) }
        case .stored(let s, let seq):
            w.write(UInt8(5)); w.write(s); w.write(seq)
        case .behind(let s, let seq):
            w.write(UInt8(6)); w.write(s); w.write(seq)
        case .stale(let s, let e):
            w.write(UInt8(7)); w.write(s); w.write(e)
        case .invalid(let reason):
            w.write(UInt8(8)); w.write(String(reason.utf8.prefix(SessionLimits.maxReasonBytes)) ?? "invalid")
        case .ownedBy(let s, let e, let owner):
            w.write(UInt8(9)); w.write(s); w.write(e); w.write(owner)
        case .handoff(let image, let e, let replicas):
            w.write(UInt8(15)); write(image, to: &w); w.write(e); write(replicas, to: &w)
        case .transfer(let s, let e, let to):
            w.write(UInt8(16)); w.write(s); w.write(e); w.write(to)
        case .commit(let s, let e, let replicas):
            w.write(UInt8(17)); w.write(s); w.write(e); write(replicas, to: &w)
        case .release(let s, let e):
            w.write(UInt8(18)); w.write(s); w.write(e)
        case .appendChunks(let record, let manifest, let chunks):
            w.write(UInt8(10)); writeChunked(record, manifest: manifest, chunks: chunks, to: &w)
        case .leads(let ids):
            w.write(UInt8(19)); writeIDs(ids, to: &w)
        case .established(let s, let e):
            w.write(UInt8(21)); w.write(s); w.write(e)
        case .notLeading(let answers):
            precondition(answers.count <= SessionLimits.maxLeadCheck, "a lead check over its bound")
            w.write(UInt8(20))
            w.write(UInt16(answers.count))
            for a in answers {
                w.write(a.session); w.write(a.epoch); w.write(a.owner); w.write(a.headEpoch); w.write(a.seq); w.write(a.configEpoch)
                write(a.replicas, to: &w)
            }
        }
        return w.bytes
    }

    /// Total: any bytes give a message or a thrown error, never a trap.
    public static func decode(_ bytes: [UInt8]) throws -> SessionMessage {
        guard bytes.count <= SessionLimits.maxMessageBytes else { throw SessionDecodingError("message over its bound") }
        var r = ByteReader(bytes)
        let message: SessionMessage
        switch try r.readUInt8() {
        case 1: message = .append(try readRecord(&r))
        case 2: message = .install(try readImage(&r))
        case 3: message = .prepare(session: try readID(&r), epoch: try r.readUInt64())
        case 4:
            let s = try readID(&r)
            message = .promised(session: s, image: try r.readBool() ? try readImage(&r) : nil)
        case 5: message = .stored(session: try readID(&r), seq: try r.readUInt64())
        case 6: message = .behind(session: try readID(&r), seq: try r.readUInt64())
        case 7: message = .stale(session: try readID(&r), epoch: try r.readUInt64())
        case 8: message = .invalid(reason: try r.readString(field: "reason", maxBytes: SessionLimits.maxReasonBytes))
        case 9: message = .ownedBy(session: try readID(&r), epoch: try r.readUInt64(), owner: try readName(&r))
        case 15:
            let image = try readImage(&r)
            message = .handoff(image, epoch: try r.readUInt64(), replicas: try readReplicas(&r))
        case 16: message = .transfer(session: try readID(&r), epoch: try r.readUInt64(), to: try readName(&r))
        case 17: message = .commit(session: try readID(&r), epoch: try r.readUInt64(), replicas: try readReplicas(&r))
        case 18: message = .release(session: try readID(&r), epoch: try r.readUInt64())
        case 10: message = try readChunked(&r)
        case 19: message = .leads(sessions: try readIDs(&r))
        case 21: message = .established(session: try readID(&r), epoch: try r.readUInt64())
        case 20:
            let count = Int(try r.readUInt16())
            guard count <= SessionLimits.maxLeadCheck else { throw SessionDecodingError("a lead check over its bound") }
            var answers: [LeadAnswer] = []
            for _ in 0..<count {
                let id = try readID(&r)
                let epoch = try r.readUInt64()
                let owner = try r.readString(field: "owner", maxBytes: SessionLimits.maxNameBytes)
                let headEpoch = try r.readUInt64()
                let seq = try r.readUInt64()
                let configEpoch = try r.readUInt64()
                // A set of 0 (a release, or nothing known) to R distinct names.
                let replicas = try readReplicas(&r, orEmpty: true)
                answers.append(LeadAnswer(session: id, epoch: epoch, owner: owner, replicas: replicas, headEpoch: headEpoch, seq: seq,
                                          configEpoch: configEpoch))
            }
            message = .notLeading(sessions: answers)
        case let k: throw SessionDecodingError("unknown message kind \(k)")
        }
        try r.expectEnd()
        return message
    }

    static func write(_ r: SessionRecord, to w: inout ByteWriter) {
        precondition(r.previousHash.count == 32 && r.contentDigest.count == 32 && r.signerKey.count == 32 && r.signature.count == 64,
                     "a malformed record")
        w.write(r.session)
        w.write(r.seq)
        w.write(bytes: r.previousHash)
        w.write(r.epoch)
        w.write(r.kind.rawValue)
        w.write(r.key)
        w.write(bytes: r.contentDigest)
        if let content = r.content {
            w.write(true)
            w.write(UInt32(content.count))
            w.write(bytes: content)
        } else {
            w.write(false)
        }
        w.write(r.signer)
        w.write(bytes: r.signerKey)
        w.write(bytes: r.signature)
    }

    /// A lead check's session ids: at most `maxLeadCheck`.
    static func writeIDs(_ ids: [String], to w: inout ByteWriter) {
        precondition(ids.count <= SessionLimits.maxLeadCheck, "a lead check over its bound")
        w.write(UInt16(ids.count))
        for id in ids { w.write(id) }
    }

    static func readIDs(_ r: inout ByteReader) throws -> [String] {
        let count = Int(try r.readUInt16())
        guard count <= SessionLimits.maxLeadCheck else { throw SessionDecodingError("a lead check over its bound") }
        var ids: [String] = []
        ids.reserveCapacity(count)
        for _ in 0..<count { ids.append(try readID(&r)) }
        return ids
    }

    static func write(_ replicas: [PeerName], to w: inout ByteWriter) {
        precondition(replicas.count <= SessionLimits.replicas, "a replica set over its bound")
        w.write(UInt8(replicas.count))
        for name in replicas { w.write(name) }
    }

    /// A replica set: 1 to R distinct names (0 to R with `orEmpty`: a joint set, or a lead
    /// answer that knows no set). A name twice would count twice toward a majority.
    static func readReplicas(_ r: inout ByteReader, orEmpty: Bool = false) throws -> [PeerName] {
        let count = Int(try r.readUInt8())
        guard count >= (orEmpty ? 0 : 1) && count <= SessionLimits.replicas else { throw SessionDecodingError("bad replica count") }
        var names: [PeerName] = []
        for _ in 0..<count { names.append(try readName(&r)) }
        guard Set(names).count == names.count else { throw SessionDecodingError("a replica named twice") }
        return names
    }

    static func write(_ image: SessionImage, to w: inout ByteWriter) {
        w.write(image.id)
        w.write(image.epoch)
        w.write(image.owner)
        write(image.replicas, to: &w)
        w.write(image.configEpoch)
        write(image.jointOld, to: &w)
        w.write(UInt32(image.records.count))
        for record in image.records { write(record, to: &w) }
    }

    static func readID(_ r: inout ByteReader) throws -> String {
        let id = try r.readString(field: "session", maxBytes: SessionLimits.maxIDBytes)
        guard SessionLimits.validID(id) else { throw SessionDecodingError("bad session id") }
        return id
    }

    static func readName(_ r: inout ByteReader) throws -> PeerName {
        let name = try r.readString(field: "name", maxBytes: SessionLimits.maxNameBytes)
        guard !name.isEmpty else { throw SessionDecodingError("empty name") }
        return name
    }

    static func readRecord(_ r: inout ByteReader) throws -> SessionRecord {
        let session = try readID(&r)
        let seq = try r.readUInt64()
        let previous = Array(try r.readBytes(32))
        let epoch = try r.readUInt64()
        guard let kind = SessionRecord.Kind(rawValue: try r.readUInt8()) else { throw SessionDecodingError("unknown record kind") }
        let key = try r.readString(field: "key", maxBytes: SessionLimits.maxKeyBytes)
        guard key.isEmpty || SessionLimits.validKey(key) else { throw SessionDecodingError("bad effect key") }
        let digest = Array(try r.readBytes(32))
        var content: [UInt8]?
        if try r.readBool() {
            let n = Int(try r.readUInt32())
            guard n <= SessionLimits.maxContent(kind) else { throw SessionDecodingError("content over its bound") }
            content = Array(try r.readBytes(n))
        }
        let signer = try readName(&r)
        let signerKey = Array(try r.readBytes(32))
        let signature = Array(try r.readBytes(64))
        guard seq >= 1, seq <= SessionLimits.maxSeq else { throw SessionDecodingError("seq 0, or over its bound") }
        return SessionRecord(session: session, seq: seq, previousHash: previous, epoch: epoch, kind: kind, key: key,
                             contentDigest: digest, content: content, signer: signer, signerKey: signerKey, signature: signature)
    }

    static func readImage(_ r: inout ByteReader) throws -> SessionImage {
        let id = try readID(&r)
        let epoch = try r.readUInt64()
        let owner = try readName(&r)
        // Distinct names (review7 F3).
        let replicas = try readReplicas(&r)
        let configEpoch = try r.readUInt64()
        guard configEpoch <= epoch else { throw SessionDecodingError("a configuration newer than the image's epoch") }
        let jointOld = try readReplicas(&r, orEmpty: true)
        let count = Int(try r.readUInt32())
        // A record is at least 186 bytes on the wire: a count the bytes left cannot hold is a lie.
        guard count <= SessionLimits.maxRecords, count * 180 <= r.remaining else { throw SessionDecodingError("bad record count") }
        var records: [SessionRecord] = []
        records.reserveCapacity(count)
        for _ in 0..<count {
            let record = try readRecord(&r)
            guard record.session == id else { throw SessionDecodingError("a record of another session in an image") }
            records.append(record)
        }
        return SessionImage(id: id, epoch: epoch, owner: owner, replicas: replicas, configEpoch: configEpoch, jointOld: jointOld, records: records)
    }
}
