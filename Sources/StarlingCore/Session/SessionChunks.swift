/// Large states as content-addressed chunks (issue #11 item 4).
///
/// A checkpoint's state is cut into chunks where its content says so (content-defined
/// chunking with a gear rolling hash), and the record's `contentDigest` is the BLAKE2b-256 of
/// the state's *manifest* (its length and each chunk's size and digest), not of the state. So
/// the signed chain still binds every byte of the state, and a replica that holds the previous
/// checkpoint needs only the chunks the new one does not share with it: a checkpoint that
/// changes one field of a 1 MiB state sends and writes one chunk or two, not 1 MiB.
///
/// Why content-defined rather than fixed 64 KiB blocks: an agent's state is JSON with sorted
/// keys, and what changes most is a list that grows or a string that changes length. With fixed
/// blocks every block after such an edit shifts and differs; with content-defined cuts, the cuts
/// after the edit fall where they fell before, so only the chunk(s) around the edit are new.
public enum StateChunks {
    /// No cut before this many bytes of a chunk (bounds the chunk count of a state: ≤ 65 for 1 MiB).
    public static let minChunkBytes = 16 << 10
    /// A cut is forced here.
    public static let maxChunkBytes = 256 << 10
    /// Chunks of one state: a 1 MiB state has at most 1 MiB / 16 KiB (+1 for the last).
    public static let maxChunks = SessionLimits.maxStateBytes / minChunkBytes + 1
    /// A cut where the hash's top 16 bits are zero: about 64 KiB past the minimum on average.
    static let cutMask: UInt64 = 0xFFFF_0000_0000_0000

    /// The gear table: 256 pseudo-random words from a fixed seed (SplitMix64), the same on
    /// every node, so every node cuts the same state at the same places.
    static let gear: [UInt64] = {
        var x: UInt64 = 0x5354_4152_4C49_4E47 // "STARLING"
        return (0..<256).map { _ in
            x &+= 0x9E37_79B9_7F4A_7C15
            var z = x
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
    }()

    /// Where the state is cut: consecutive ranges covering `bytes` (none for an empty state).
    public static func boundaries(_ bytes: [UInt8]) -> [Range<Int>] {
        var ranges: [Range<Int>] = []
        var start = 0
        let count = bytes.count
        bytes.withUnsafeBufferPointer { buffer in
            gear.withUnsafeBufferPointer { table in
                while start < count {
                    let hardEnd = min(start + maxChunkBytes, count)
                    var end = hardEnd
                    var i = start + minChunkBytes
                    var hash: UInt64 = 0
                    // The hash covers the 64 bytes before `i` (a shift per byte): warm it up
                    // over the window before the first place a cut may fall.
                    var j = max(start, i - 64)
                    while j < min(i, hardEnd) { hash = (hash << 1) &+ table[Int(buffer[j])]; j += 1 }
                    while i < hardEnd {
                        hash = (hash << 1) &+ table[Int(buffer[i])]
                        i += 1
                        if hash & cutMask == 0 { end = i; break }
                    }
                    ranges.append(start..<end)
                    start = end
                }
            }
        }
        return ranges
    }
}

/// One chunk of a state as its manifest names it.
public struct StateChunkRef: Sendable, Equatable, Hashable {
    public var size: Int
    public var digest: [UInt8]
}

/// What a checkpoint record's digest is taken over: the state's length and its chunks, in order.
///
/// Bytes: `"starling-state-v1" 0x00 | length:u32 | count:u16 | (size:u32 | digest[32]) × count`.
public struct StateManifest: Sendable, Equatable {
    public var length: Int
    public var chunks: [StateChunkRef]

    static let domain = Array("starling-state-v1".utf8) + [0]

    /// The manifest of `state` and its chunks (each chunk's digest by `hash`).
    public static func of(_ state: [UInt8], hash: ([UInt8]) -> [UInt8]) -> (manifest: StateManifest, chunks: [[UInt8]]) {
        var refs: [StateChunkRef] = []
        var chunks: [[UInt8]] = []
        for range in StateChunks.boundaries(state) {
            let chunk = Array(state[range])
            refs.append(StateChunkRef(size: chunk.count, digest: hash(chunk)))
            chunks.append(chunk)
        }
        return (StateManifest(length: state.count, chunks: refs), chunks)
    }

    public var encoded: [UInt8] {
        var w = ByteWriter(capacity: Self.domain.count + 6 + chunks.count * 36)
        w.write(bytes: Self.domain)
        w.write(UInt32(length))
        w.write(UInt16(chunks.count))
        for chunk in chunks {
            w.write(UInt32(chunk.size))
            w.write(bytes: chunk.digest)
        }
        return w.bytes
    }

    /// Total: the sizes must add up to the length, which is within a state's bound, and no
    /// chunk is empty or over the chunk bound.
    public static func decode(_ bytes: [UInt8]) throws -> StateManifest {
        var r = ByteReader(bytes)
        guard Array(try r.readBytes(domain.count)) == domain else { throw SessionDecodingError("not a state manifest") }
        let length = Int(try r.readUInt32())
        let count = Int(try r.readUInt16())
        guard length <= SessionLimits.maxStateBytes, count <= StateChunks.maxChunks, count * 36 == r.remaining else {
            throw SessionDecodingError("a state manifest over its bounds")
        }
        var chunks: [StateChunkRef] = []
        chunks.reserveCapacity(count)
        var total = 0
        for _ in 0..<count {
            let size = Int(try r.readUInt32())
            guard size >= 1, size <= StateChunks.maxChunkBytes else { throw SessionDecodingError("a chunk size over its bound") }
            total += size
            chunks.append(StateChunkRef(size: size, digest: Array(try r.readBytes(32))))
        }
        guard total == length else { throw SessionDecodingError("a manifest's chunks do not add up to its length") }
        return StateManifest(length: length, chunks: chunks)
    }

    /// The state from its chunks, found by digest in `have`; nil when one is missing.
    public func assemble(from have: [[UInt8]: [UInt8]]) -> [UInt8]? {
        var state: [UInt8] = []
        state.reserveCapacity(length)
        for ref in chunks {
            guard let chunk = have[ref.digest], chunk.count == ref.size else { return nil }
            state.append(contentsOf: chunk)
        }
        return state
    }
}

extension SessionCrypto {
    /// The digest a record of `kind` carries for `content`: a checkpoint's is its manifest's.
    public func contentDigest(kind: SessionRecord.Kind, content: [UInt8]) -> [UInt8] {
        kind == .checkpoint ? hash(StateManifest.of(content, hash: hash).manifest.encoded) : hash(content)
    }

    /// Whether `content` is the content `digest` names for a record of `kind`. A checkpoint
    /// written before states were chunked (its digest is the state's own) still holds.
    public func contentMatches(_ content: [UInt8], digest: [UInt8], kind: SessionRecord.Kind) -> Bool {
        if kind == .checkpoint, hash(StateManifest.of(content, hash: hash).manifest.encoded) == digest { return true }
        return hash(content) == digest
    }
}

extension SessionMessage {
    /// `appendChunks`: the record (no content), `len:u16 manifest`, `count:u16`, then each
    /// chunk as `len:u32 bytes`.
    static func writeChunked(_ record: SessionRecord, manifest: [UInt8], chunks: [[UInt8]], to w: inout ByteWriter) {
        precondition(record.content == nil && manifest.count <= Int(UInt16.max) && chunks.count <= StateChunks.maxChunks,
                     "a chunked record carries its state as chunks")
        write(record, to: &w)
        w.write(UInt16(manifest.count))
        w.write(bytes: manifest)
        w.write(UInt16(chunks.count))
        for chunk in chunks {
            w.write(UInt32(chunk.count))
            w.write(bytes: chunk)
        }
    }

    /// Every count and size is checked against its bound and the bytes left before anything is
    /// allocated; the manifest is parsed (bounded) here, its digest checked by the protocol.
    static func readChunked(_ r: inout ByteReader) throws -> SessionMessage {
        let record = try readRecord(&r)
        guard record.kind == .checkpoint, record.content == nil else { throw SessionDecodingError("a chunked record is a checkpoint without its content") }
        let manifestBytes = Int(try r.readUInt16())
        guard manifestBytes <= StateManifest.domain.count + 6 + StateChunks.maxChunks * 36 else { throw SessionDecodingError("a manifest over its bound") }
        let manifest = Array(try r.readBytes(manifestBytes))
        _ = try StateManifest.decode(manifest)
        let count = Int(try r.readUInt16())
        guard count <= StateChunks.maxChunks, count * 5 <= r.remaining else { throw SessionDecodingError("bad chunk count") }
        var chunks: [[UInt8]] = []
        chunks.reserveCapacity(count)
        var total = 0
        for _ in 0..<count {
            let n = Int(try r.readUInt32())
            total += n
            guard n >= 1, n <= StateChunks.maxChunkBytes, total <= SessionLimits.maxStateBytes else {
                throw SessionDecodingError("a chunk over its bound")
            }
            chunks.append(Array(try r.readBytes(n)))
        }
        return .appendChunks(record, manifest: manifest, chunks: chunks)
    }
}

// MARK: The protocol's side: the owner sends new chunks, a replica assembles the state

extension Sessions {
    /// Where each chunk of a session's latest state lies in that state's bytes, so a replica
    /// finds the chunks a new checkpoint shares with it, and an owner knows which to send.
    struct StateIndex: Sendable {
        /// The checkpoint indexed: its seq and its content digest (which pins its state, so an
        /// index is never used over another branch's state of the same seq).
        var seq: UInt64
        var contentDigest: [UInt8]
        var ranges: [[UInt8]: Range<Int>]

        init(seq: UInt64, contentDigest: [UInt8], manifest: StateManifest) {
            self.seq = seq
            self.contentDigest = contentDigest
            var ranges: [[UInt8]: Range<Int>] = [:]
            var offset = 0
            for chunk in manifest.chunks {
                if ranges[chunk.digest] == nil { ranges[chunk.digest] = offset..<offset + chunk.size }
                offset += chunk.size
            }
            self.ranges = ranges
        }
    }

    /// A checkpoint's state cut into chunks, before its record is sealed.
    struct PreparedState: Sendable {
        var manifest: StateManifest
        var manifestBytes: [UInt8]
        var digest: [UInt8]
        /// The chunks the session's previous state does not have: all a replica that holds the
        /// previous checkpoint needs.
        var newChunks: [[UInt8]]
    }

    /// Cuts `state` and finds which of its chunks the latest state of `h` lacks.
    func prepareState(_ state: [UInt8], in h: inout Held) -> PreparedState {
        let previous = h.latestStateIndex(crypto: crypto)
        let (manifest, chunks) = StateManifest.of(state, hash: crypto.hash)
        var sent: Set<[UInt8]> = []
        var newChunks: [[UInt8]] = []
        for (ref, chunk) in zip(manifest.chunks, chunks) where previous?.ranges[ref.digest] == nil && sent.insert(ref.digest).inserted {
            newChunks.append(chunk)
        }
        let bytes = manifest.encoded
        return PreparedState(manifest: manifest, manifestBytes: bytes, digest: crypto.hash(bytes), newChunks: newChunks)
    }

    /// A replica's side of `appendChunks`: checks the manifest against the record's digest and
    /// every chunk sent against the manifest, assembles the state from those and the chunks of
    /// the latest state held here, and goes on as for a whole record. A chunk neither sent nor
    /// held here: `behind` (the owner installs the image).
    mutating func replicateChunks(_ record: SessionRecord, manifest bytes: [UInt8], chunks: [[UInt8]], from peer: PeerName,
                                  token: RequestToken) -> [ProtocolEffect<Sessions>] {
        let sid = record.session
        guard let manifest = try? StateManifest.decode(bytes), crypto.hash(bytes) == record.contentDigest else {
            counters.forged += 1
            return [.respond(.invalid(reason: "record \(record.seq): the manifest is not the one signed"), to: token)]
        }
        let named = Set(manifest.chunks.map(\.digest))
        var have: [[UInt8]: [UInt8]] = [:]
        for chunk in chunks {
            let digest = crypto.hash(chunk)
            guard named.contains(digest) else {
                counters.forged += 1
                return [.respond(.invalid(reason: "record \(record.seq): a chunk the manifest does not name"), to: token)]
            }
            have[digest] = chunk
        }
        guard var h = held[sid] else { return [.respond(.behind(session: sid, seq: 0), to: token)] }
        if let index = h.latestStateIndex(crypto: crypto),
           let content = h.records.last(where: { $0.kind == .checkpoint })?.content {
            for ref in manifest.chunks where have[ref.digest] == nil {
                if let range = index.ranges[ref.digest], range.count == ref.size, range.upperBound <= content.count {
                    have[ref.digest] = Array(content[range])
                }
            }
        }
        held[sid] = h
        guard let state = manifest.assemble(from: have) else {
            return [.respond(.behind(session: sid, seq: h.lastSeq), to: token)]
        }
        let effects = replicate(record, from: peer, token: token, verifiedContent: state)
        if var h = held[sid], h.lastSeq == record.seq, h.records.last?.kind == .checkpoint {
            h.stateIndex = StateIndex(seq: record.seq, contentDigest: record.contentDigest, manifest: manifest)
            held[sid] = h
        }
        return effects
    }
}

extension Sessions.Held {
    /// The index of the latest checkpoint's state, computed once per checkpoint (nil before
    /// the first checkpoint, or once the state was dropped).
    mutating func latestStateIndex(crypto: SessionCrypto) -> Sessions.StateIndex? {
        guard let last = records.last(where: { $0.kind == .checkpoint }), let content = last.content else { return nil }
        if let index = stateIndex, index.seq == last.seq, index.contentDigest == last.contentDigest { return index }
        let index = Sessions.StateIndex(seq: last.seq, contentDigest: last.contentDigest,
                                        manifest: StateManifest.of(content, hash: crypto.hash).manifest)
        stateIndex = index
        return index
    }
}
