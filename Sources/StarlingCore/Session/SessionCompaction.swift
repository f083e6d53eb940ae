/// Compaction of a session's journal (issue #11): a session keeps recording past 2,048 records
/// and 64 effects.
///
/// - **The base record** (kind 6). Right after a checkpoint C is acknowledged, once the session
///   holds `SessionLimits.compactAfterRecords` records (or its image `compactAfterBytes`), its
///   owner writes a signed, chained `base` record B at seq c+1. B's content (`SessionBase`) is
///   what the records before C meant: the creation options and the effect table (every key ever
///   started, with its start and result seqs, and the results of the most recent effects).
///   A holder that stores B drops every record before C in the same step (in memory, and in the
///   store in the same transaction). An image then starts at C: `verify` accepts a first record
///   of seq > 1 only if it is a checkpoint followed by a base that names it as its cut; the
///   chain is verified from C on (C's signature anchors it, B is chained to C).
/// - **Why a holder drops at once** rather than after learning that a majority stored B: B is
///   self-sufficient. A compacted image [C, B] holds every fact of the full one (C's state, the
///   options, every key and the recent results), so whichever image a takeover adopts, nothing
///   acknowledged is lost; a B that no majority stored is replaced by the next owner's install,
///   like any unacknowledged record.
/// - **A replica checks the table**: a replica holding the records before the cut computes the
///   base itself (`makeBase`, deterministic) and refuses one that differs, even correctly
///   signed (an owner cannot make a replica forget a key).
/// - **Effects are never forgotten**: a key's start and result seqs stay in every later base.
///   Only the most recent results are kept (`maxResultsKept` in records, `maxBaseResults` in a
///   base); an older key answers 409 `outcome: "expired"` and is never run again.
public struct SessionBase: Sendable, Equatable {
    public struct Effect: Sendable, Equatable {
        public var key: String
        public var startedSeq: UInt64
        /// 0: no result was recorded (the outcome is unknown, or the effect still runs).
        public var resultSeq: UInt64
        /// Nil once dropped: only the most recent results are kept.
        public var result: [UInt8]?

        public init(key: String, startedSeq: UInt64, resultSeq: UInt64, result: [UInt8]?) {
            self.key = key
            self.startedSeq = startedSeq
            self.resultSeq = resultSeq
            self.result = result
        }
    }

    /// The seq of the checkpoint the base follows: the first record kept.
    public var cutSeq: UInt64
    /// The session's creation options (the create record's content).
    public var options: [UInt8]
    /// Every key started before the cut, in the order of their starts.
    public var effects: [Effect]

    public init(cutSeq: UInt64, options: [UInt8], effects: [Effect]) {
        self.cutSeq = cutSeq
        self.options = options
        self.effects = effects
    }

    static let magic = Array("starling-base-v1".utf8) + [0]

    /// Bytes of one table entry without its result: key (≤ 128 + 2), two seqs, a flag.
    static let maxEntryBytes = 2 + SessionLimits.maxKeyBytes + 8 + 8 + 1
    /// The largest encoded base: options, every key, `maxBaseResults` results.
    public static let maxBytes = magic.count + 8 + 4 + SessionLimits.maxEffectBytes + 4
        + SessionLimits.maxEffectKeys * maxEntryBytes + SessionLimits.maxBaseResults * (4 + SessionLimits.maxEffectBytes)

    /// `magic | cutSeq:u64 | len:u32 options | count:u32 | (key | startedSeq:u64 | resultSeq:u64 |
    /// hasResult:u8 [len:u32 result]) × count`.
    public var encoded: [UInt8] {
        var w = ByteWriter(capacity: 64 + options.count + effects.count * 40)
        w.write(bytes: Self.magic)
        w.write(cutSeq)
        w.write(UInt32(options.count))
        w.write(bytes: options)
        w.write(UInt32(effects.count))
        for effect in effects {
            w.write(effect.key)
            w.write(effect.startedSeq)
            w.write(effect.resultSeq)
            if let result = effect.result {
                w.write(true)
                w.write(UInt32(result.count))
                w.write(bytes: result)
            } else {
                w.write(false)
            }
        }
        return w.bytes
    }

    /// Total and bounded: any bytes give a base or a thrown error.
    public static func decode(_ bytes: [UInt8]) throws -> SessionBase {
        guard bytes.count <= maxBytes else { throw SessionDecodingError("a base over its bound") }
        var r = ByteReader(bytes)
        guard Array(try r.readBytes(magic.count)) == magic else { throw SessionDecodingError("not a base") }
        let cutSeq = try r.readUInt64()
        guard cutSeq >= 1, cutSeq <= SessionLimits.maxSeq else { throw SessionDecodingError("a base cut at seq 0, or over its bound") }
        let optionCount = Int(try r.readUInt32())
        guard optionCount <= SessionLimits.maxEffectBytes else { throw SessionDecodingError("options over their bound") }
        let options = Array(try r.readBytes(optionCount))
        let count = Int(try r.readUInt32())
        // An entry is at least 20 bytes: a count the bytes left cannot hold is a lie.
        guard count <= SessionLimits.maxEffectKeys, count * 20 <= r.remaining else { throw SessionDecodingError("bad effect count") }
        var effects: [Effect] = []
        effects.reserveCapacity(count)
        var keys = Set<String>()
        var results = 0
        for _ in 0..<count {
            let key = try r.readString(field: "key", maxBytes: SessionLimits.maxKeyBytes)
            guard SessionLimits.validKey(key), keys.insert(key).inserted else { throw SessionDecodingError("a bad or repeated key in a base") }
            let started = try r.readUInt64()
            let resulted = try r.readUInt64()
            guard started >= 1, started < cutSeq, resulted == 0 || (resulted > started && resulted < cutSeq) else {
                throw SessionDecodingError("an effect's seqs out of place in a base")
            }
            var result: [UInt8]?
            if try r.readBool() {
                let n = Int(try r.readUInt32())
                results += 1
                guard resulted != 0, n <= SessionLimits.maxEffectBytes, results <= SessionLimits.maxBaseResults else {
                    throw SessionDecodingError("a result over its bound in a base")
                }
                result = Array(try r.readBytes(n))
            }
            effects.append(Effect(key: key, startedSeq: started, resultSeq: resulted, result: result))
        }
        try r.expectEnd()
        return SessionBase(cutSeq: cutSeq, options: options, effects: effects)
    }
}

// MARK: The holder's side

extension Sessions.Held {
    /// The seq of the first record held (1, or a compacted session's cut).
    var firstSeq: UInt64 { records.first?.seq ?? 1 }

    /// The hash of the record at `seq`, if it is held.
    func hash(at seq: UInt64) -> [UInt8]? {
        guard seq >= firstSeq, seq <= lastSeq else { return nil }
        let i = Int(seq - firstSeq)
        return i < hashes.count ? hashes[i] : nil
    }

    /// The creation options: the create record's content, or the base's.
    var options: [UInt8] {
        if let base { return base.options }
        return records.first { $0.kind == .create }?.content ?? []
    }

    /// Keys ever started in the session (the base's and those after it).
    var keyCount: Int {
        (base?.effects.count ?? 0) + records.filter { $0.kind == .effectStarted }.count
    }

    /// The base that compacting the session at the checkpoint `cutSeq` (its latest record)
    /// gives: deterministic, so a replica holding the same records computes the same bytes.
    func makeBase(cutSeq: UInt64) -> SessionBase {
        var effects = base?.effects ?? []
        var index: [String: Int] = [:]
        for (i, e) in effects.enumerated() { index[e.key] = i }
        for record in records where record.seq < cutSeq {
            switch record.kind {
            case .effectStarted where index[record.key] == nil:
                index[record.key] = effects.count
                effects.append(SessionBase.Effect(key: record.key, startedSeq: record.seq, resultSeq: 0, result: nil))
            case .effectResult:
                if let i = index[record.key], effects[i].resultSeq == 0 {
                    effects[i].resultSeq = record.seq
                    effects[i].result = record.content
                }
            default:
                break
            }
        }
        // Only the most recent results go on (a base is bounded, and so is an image).
        let kept = Set(effects.indices.filter { effects[$0].result != nil }
            .sorted { effects[$0].resultSeq > effects[$1].resultSeq }
            .prefix(SessionLimits.maxBaseResults))
        for i in effects.indices where !kept.contains(i) { effects[i].result = nil }
        return SessionBase(cutSeq: cutSeq, options: options, effects: effects)
    }

    /// Drops every record before the latest base's cut, and applies the content rules. Returns
    /// the seq of the first record kept when records were dropped.
    @discardableResult
    mutating func compact() -> UInt64? {
        defer { applyContentRules() }
        guard let i = records.lastIndex(where: { $0.kind == .base }), i >= 1,
              let content = records[i].content, let parsed = try? SessionBase.decode(content),
              parsed.cutSeq == records[i - 1].seq else {
            base = nil
            return nil
        }
        base = parsed
        guard i > 1 else { return nil }
        records.removeFirst(i - 1)
        hashes.removeFirst(min(i - 1, hashes.count))
        return records.first?.seq
    }

    /// What a holder keeps of record contents, so an image stays bounded whatever the history:
    /// the latest checkpoint's state (as before); an effect's start until its result is
    /// recorded (nothing reads a task after its start); the `maxResultsKept` most recent results.
    mutating func applyContentRules() {
        var finished = Set<String>()
        var results = 0
        var latestCheckpoint = true
        for i in records.indices.reversed() {
            switch records[i].kind {
            case .checkpoint:
                if !latestCheckpoint { records[i].content = nil }
                latestCheckpoint = false
            case .effectResult:
                finished.insert(records[i].key)
                if records[i].content != nil {
                    results += 1
                    if results > SessionLimits.maxResultsKept { records[i].content = nil }
                }
            case .effectStarted:
                if finished.contains(records[i].key) { records[i].content = nil }
            case .create, .delete, .base:
                break
            }
        }
    }

    /// The image's encoded size (what `SessionMessage.write(image)` writes), to keep it within
    /// one link frame.
    var imageBytes: Int {
        var n = 2 + id.utf8.count + 8 + 2 + owner.utf8.count + 1 + 4
        for name in replicas { n += 2 + name.utf8.count }
        for record in records { n += SessionMessage.wireSize(record) }
        return n
    }
}

extension SessionMessage {
    /// Bytes `write(record)` writes.
    static func wireSize(_ r: SessionRecord) -> Int {
        2 + r.session.utf8.count + 8 + 32 + 8 + 1 + 2 + r.key.utf8.count + 32 + 1 + (r.content.map { 4 + $0.count } ?? 0)
            + 2 + r.signer.utf8.count + 32 + 64
    }
}

extension Sessions {
    /// After a checkpoint at `seq` is acknowledged: the base write, when the session is due.
    mutating func compactIfDue(_ sid: String, checkpointSeq seq: UInt64) -> [ProtocolEffect<Sessions>] {
        guard let h = held[sid], h.lead?.write == nil, h.lead?.phase == .serving, !h.deleted,
              let cut = h.records.last, cut.seq == seq, cut.kind == .checkpoint else { return [] }
        let byRecords = h.records.count >= settings.compactAfterRecords
        let imageBytes = h.imageBytes
        guard byRecords || imageBytes >= SessionLimits.compactAfterBytes else { return [] }
        let base = h.makeBase(cutSeq: seq)
        // By size only when it saves a good part: a session whose base itself is large (4,096
        // keys, 32 large results) would otherwise write a new base after every checkpoint.
        let after = SessionMessage.wireSize(cut) + 1_024 + base.encoded.count
        guard byRecords || imageBytes - after >= SessionLimits.compactAfterBytes / 4 else { return [] }
        return beginWrite(sid, kind: .base, key: "", content: base.encoded, then: .compacted)
    }

    /// Why a base record that continues the chain held here does not hold (nil when it does):
    /// it must follow a checkpoint, name it as its cut, and say what the records before it say.
    ///
    /// `exact`: the records are as they were when the base was made (a replica's chain ends at
    /// the cut), so the base must be byte for byte the one computed here. Otherwise (a base in
    /// the middle of an image, whose later results may have dropped older results' contents) the
    /// options, keys and seqs must match, and each result the base carries must be the one the
    /// records hold, where they still hold it.
    func checkBase(_ record: SessionRecord, in h: Held, exact: Bool = true) -> String? {
        guard let content = record.content, let base = try? SessionBase.decode(content) else { return "record \(record.seq): a malformed base" }
        guard let last = h.records.last, last.kind == .checkpoint, base.cutSeq == last.seq, record.seq == last.seq + 1 else {
            return "record \(record.seq): a base that does not follow the checkpoint it names"
        }
        let expected = h.makeBase(cutSeq: base.cutSeq)
        if exact {
            guard base == expected else { return "record \(record.seq): a base whose table is not the journal's" }
            return nil
        }
        let held = Dictionary(uniqueKeysWithValues: h.records.filter { $0.kind == .effectResult }.map { ($0.seq, $0.content) })
        let sameTable = base.options == expected.options && base.effects.count == expected.effects.count
            && zip(base.effects, expected.effects).allSatisfy { got, want in
                got.key == want.key && got.startedSeq == want.startedSeq && got.resultSeq == want.resultSeq
                    && (got.result == nil || (held[got.resultSeq] ?? nil).map { $0 == got.result } ?? (want.result.map { $0 == got.result } ?? true))
            }
        return sameTable ? nil : "record \(record.seq): a base whose table is not the journal's"
    }

    /// The image-size check of a write: what the image would be after it, with room for the
    /// results of the effects running (and of this one, for an effect), must fit one frame.
    func fitsAFrame(_ h: Held, adding record: Int, replacingState: Bool, newEffect: Bool) -> String? {
        var projected = h.imageBytes + record
        if replacingState, let state = h.records.last(where: { $0.kind == .checkpoint })?.content { projected -= state.count }
        let running = (h.lead?.running.count ?? 0) + (newEffect ? 1 : 0)
        projected += running * (SessionLimits.maxEffectBytes + 1_024)
        guard projected > SessionLimits.maxImageBytes else { return nil }
        return "the session's image would be \(projected) bytes, over one link frame (\(SessionLimits.maxImageBytes)): checkpoint a smaller state (a checkpoint compacts a long session)"
    }
}

extension SessionImage {
    /// The session's creation options: its create record's content, or, once compacted, its
    /// base's. Nil when the image holds neither.
    public var creationOptions: [UInt8]? {
        if let first = records.first, first.kind == .create { return first.content }
        guard records.count >= 2, records[1].kind == .base, let content = records[1].content else { return nil }
        return (try? SessionBase.decode(content))?.options
    }
}
