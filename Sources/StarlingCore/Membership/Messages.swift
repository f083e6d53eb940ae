/// The membership protocol's messages. One UDP packet carries one or more (a compound packet).
///
/// Binary layout, all integers big-endian:
/// ```
/// packet  := version:u8 (=1) count:u8 message*
/// message := type:u8 length:u16 body[length]
/// ```
/// The explicit length lets a reader skip a message type it does not know (forward
/// compatibility) while still checking every byte it does read.
public enum MembershipMessage: Equatable, Sendable {
    /// Direct probe: `target` must answer `ack(seq)` to `replyTo`.
    case ping(seq: UInt32, target: String, source: String, replyTo: NodeAddress)
    /// Answer to a ping (or a relayed answer from a ping-req intermediary).
    case ack(seq: UInt32, source: String)
    /// Lifeguard: the intermediary of a ping-req did not hear from the target in time.
    case nack(seq: UInt32, source: String)
    /// Indirect probe: probe `target` at `targetAddress` and relay the ack to `replyTo`.
    case pingReq(seq: UInt32, target: String, targetAddress: NodeAddress, source: String, replyTo: NodeAddress)
    /// Gossip: the member is alive at this incarnation (also carries its metadata).
    case alive(Alive)
    /// Gossip: `from` suspects `name` at `incarnation`.
    case suspect(name: String, incarnation: UInt64, from: String)
    /// Gossip: `from` declares `name` dead; `from == name` means a graceful leave.
    case dead(name: String, incarnation: UInt64, from: String)

    public struct Alive: Equatable, Sendable {
        public var name: String
        public var address: NodeAddress
        public var incarnation: UInt64
        public var metadata: MemberMetadata

        public init(name: String, address: NodeAddress, incarnation: UInt64, metadata: MemberMetadata) {
            self.name = name
            self.address = address
            self.incarnation = incarnation
            self.metadata = metadata
        }
    }

    /// The member a gossip message is about (gossip about one member replaces older gossip).
    public var subject: String? {
        switch self {
        case .alive(let a): a.name
        case .suspect(let name, _, _), .dead(let name, _, _): name
        default: nil
        }
    }

    fileprivate var typeCode: UInt8 {
        switch self {
        case .ping: 1
        case .ack: 2
        case .nack: 3
        case .pingReq: 4
        case .alive: 5
        case .suspect: 6
        case .dead: 7
        }
    }

    /// Bytes this message takes in a packet, header included, computed without encoding.
    public var encodedSize: Int {
        func s(_ x: String) -> Int { 2 + x.utf8.count }
        func a(_ x: NodeAddress) -> Int { s(x.host) + 2 }
        let body: Int
        switch self {
        case .ping(_, let target, let source, let replyTo): body = 4 + s(target) + s(source) + a(replyTo)
        case .ack(_, let source), .nack(_, let source): body = 4 + s(source)
        case .pingReq(_, let target, let ta, let source, let replyTo): body = 4 + s(target) + a(ta) + s(source) + a(replyTo)
        case .alive(let x): body = s(x.name) + a(x.address) + 8 + x.metadata.encodedSize
        case .suspect(let name, _, let from), .dead(let name, _, let from): body = s(name) + 8 + s(from)
        }
        return 3 + body
    }
}

/// Limits every decoder enforces.
public enum WireLimits {
    public static let maxNameBytes = 64
    public static let maxMessagesPerPacket = 255
    /// Members in one push-pull exchange; the member table is bounded by the same figure.
    public static let maxMembers = 16_384
    /// New members one push-pull that a peer started may add to our table (a reply to one we
    /// started may add any number: we chose that peer, and a joining node must learn a whole
    /// cluster from its seed). Without it one exchange of 16,384 invented members filled the
    /// table and locked real newcomers out until they were reaped. An honest inbound exchange
    /// carries few new members: a joiner sends its own small table; after a partition the
    /// members on the other side are known (dead), not new; whatever is over the cap still
    /// arrives through our own push-pulls and through gossip.
    public static let maxNewMembersPerInboundPushPull = 256
    /// The highest incarnation any message (alive or accusation) may carry. Incarnations only
    /// grow by one per refutation, so no honest member gets near 2⁶²; a larger value is
    /// malformed. The same bound for every kind of message, so that whatever incarnation a
    /// member reached, it can still be suspected, declared dead and leave (see `StateRules.swift`).
    public static let maxIncarnation: UInt64 = 1 << 62
    /// How far above the incarnation a node holds for a member a message about it may claim.
    /// Honest incarnations grow by one per refutation, so even a long partition or a restart
    /// after a long life stays far below 2²⁴; a larger jump is a forgery that would push the
    /// member towards `maxIncarnation`, where it could no longer out-number an impostor.
    public static let maxIncarnationStep: UInt64 = 1 << 24

    /// Whether a name, host or api address is safe to print: no control characters (a newline
    /// would forge a log line, ESC would drive a terminal), no format, separator, private-use,
    /// surrogate or unassigned code points. Decoders refuse anything else, and a node refuses
    /// such a value in its own configuration.
    public static func isPrintable(_ text: String) -> Bool {
        text.unicodeScalars.allSatisfy { scalar in
            switch scalar.properties.generalCategory {
            case .control, .format, .lineSeparator, .paragraphSeparator, .privateUse, .surrogate, .unassigned: false
            default: true
            }
        }
    }

    /// The one check of an incarnation's range, for the decoders and the state rules alike.
    public static func isValid(incarnation: UInt64) -> Bool { incarnation <= maxIncarnation }
}

/// A compound UDP packet: what the runtime seals and sends in one datagram.
public struct Packet: Equatable, Sendable {
    public static let version: UInt8 = 1
    public var messages: [MembershipMessage]

    public init(_ messages: [MembershipMessage]) { self.messages = messages }

    public var encodedSize: Int { 2 + messages.reduce(0) { $0 + $1.encodedSize } }

    public func encoded() -> [UInt8] {
        precondition(messages.count <= WireLimits.maxMessagesPerPacket)
        var w = ByteWriter(capacity: encodedSize)
        w.write(Packet.version)
        w.write(UInt8(messages.count))
        for m in messages { m.encode(into: &w) }
        assert(w.count == encodedSize, "encodedSize disagrees with the encoder")
        return w.bytes
    }

    /// Decodes a packet, skipping message types it does not know.
    public static func decode(_ bytes: [UInt8]) throws -> Packet {
        var r = ByteReader(bytes)
        let version = try r.readUInt8()
        guard version == Packet.version else { throw WireError.unsupportedVersion(version) }
        let count = Int(try r.readUInt8())
        var messages: [MembershipMessage] = []
        messages.reserveCapacity(count)
        for _ in 0..<count {
            if let m = try MembershipMessage.decode(from: &r) { messages.append(m) }
        }
        try r.expectEnd()
        return Packet(messages)
    }
}

extension ByteWriter {
    mutating func write(_ a: NodeAddress) { write(a.host); write(a.port) }
    mutating func write(_ m: MemberMetadata) {
        write(m.version); write(m.api); write(m.slots); write(m.free); write(m.memoryMB); write(m.freeMemoryMB)
        // The identity key: its length (0: none, else 32) and its bytes.
        let key = m.identityKey ?? []
        precondition(key.count <= Int(UInt8.max), "identity key over its bound")
        write(UInt8(key.count))
        write(bytes: key)
        write(m.sessions)
    }
}

extension ByteReader {
    /// A string that must be printable (`WireLimits.isPrintable`): it ends up in logs and APIs.
    mutating func readText(_ field: String, maxBytes: Int) throws -> String {
        let s = try readString(field: field, maxBytes: maxBytes)
        guard WireLimits.isPrintable(s) else { throw WireError.invalidValue("\(field) has an unprintable character") }
        return s
    }

    mutating func readName(_ field: String) throws -> String {
        let s = try readText(field, maxBytes: WireLimits.maxNameBytes)
        guard !s.isEmpty else { throw WireError.invalidValue("empty \(field)") }
        return s
    }

    mutating func readAddress() throws -> NodeAddress {
        let host = try readText("host", maxBytes: NodeAddress.maxHostBytes)
        guard !host.isEmpty else { throw WireError.invalidValue("empty host") }
        return NodeAddress(host: host, port: try readUInt16())
    }

    /// An incarnation, at most `WireLimits.maxIncarnation` whatever the message.
    mutating func readIncarnation() throws -> UInt64 {
        let inc = try readUInt64()
        guard WireLimits.isValid(incarnation: inc) else {
            throw WireError.invalidValue("incarnation \(inc) over \(WireLimits.maxIncarnation)")
        }
        return inc
    }

    mutating func readMetadata() throws -> MemberMetadata {
        let version = try readUInt64()
        let api = try readText("api", maxBytes: MemberMetadata.maxApiBytes)
        let slots = try readUInt32()
        let free = try readUInt32()
        guard free <= slots else { throw WireError.invalidValue("free \(free) > slots \(slots)") }
        let memoryMB = try readUInt32()
        let freeMemoryMB = try readUInt32()
        let keyLength = Int(try readUInt8())
        var identityKey: [UInt8]?
        switch keyLength {
        case 0: identityKey = nil
        case MemberMetadata.identityKeyBytes: identityKey = Array(try readBytes(keyLength))
        default: throw WireError.invalidValue("identity key of \(keyLength) bytes")
        }
        let sessions = try readUInt32()
        return MemberMetadata(version: version, api: api, slots: slots, free: free,
                              memoryMB: memoryMB, freeMemoryMB: freeMemoryMB, identityKey: identityKey, sessions: sessions)
    }
}

extension MembershipMessage {
    func encode(into w: inout ByteWriter) {
        w.write(typeCode)
        let lengthAt = w.count
        w.write(UInt16(0))
        switch self {
        case .ping(let seq, let target, let source, let replyTo):
            w.write(seq); w.write(target); w.write(source); w.write(replyTo)
        case .ack(let seq, let source), .nack(let seq, let source):
            w.write(seq); w.write(source)
        case .pingReq(let seq, let target, let ta, let source, let replyTo):
            w.write(seq); w.write(target); w.write(ta); w.write(source); w.write(replyTo)
        case .alive(let a):
            w.write(a.name); w.write(a.address); w.write(a.incarnation); w.write(a.metadata)
        case .suspect(let name, let inc, let from), .dead(let name, let inc, let from):
            w.write(name); w.write(inc); w.write(from)
        }
        w.patch(UInt16(w.count - lengthAt - 2), at: lengthAt)
    }

    /// Reads one message; returns nil for an unknown type, which is skipped whole.
    static func decode(from r: inout ByteReader) throws -> MembershipMessage? {
        let type = try r.readUInt8()
        let length = Int(try r.readUInt16())
        var b = try r.subReader(length: length)
        let message: MembershipMessage
        switch type {
        case 1:
            message = .ping(seq: try b.readUInt32(), target: try b.readName("target"),
                            source: try b.readName("source"), replyTo: try b.readAddress())
        case 2: message = .ack(seq: try b.readUInt32(), source: try b.readName("source"))
        case 3: message = .nack(seq: try b.readUInt32(), source: try b.readName("source"))
        case 4:
            message = .pingReq(seq: try b.readUInt32(), target: try b.readName("target"),
                               targetAddress: try b.readAddress(), source: try b.readName("source"),
                               replyTo: try b.readAddress())
        case 5:
            message = .alive(Alive(name: try b.readName("name"), address: try b.readAddress(),
                                   incarnation: try b.readIncarnation(), metadata: try b.readMetadata()))
        case 6:
            message = .suspect(name: try b.readName("name"), incarnation: try b.readIncarnation(),
                               from: try b.readName("from"))
        case 7:
            message = .dead(name: try b.readName("name"), incarnation: try b.readIncarnation(),
                            from: try b.readName("from"))
        default:
            return nil
        }
        try b.expectEnd()
        return message
    }
}

/// The full state exchanged by push-pull anti-entropy over TCP.
public struct PushPullState: Equatable, Sendable {
    public static let version: UInt8 = 1

    public struct Entry: Equatable, Sendable {
        public var name: String
        public var address: NodeAddress
        public var incarnation: UInt64
        public var status: MemberStatus
        public var metadata: MemberMetadata

        public init(name: String, address: NodeAddress, incarnation: UInt64, status: MemberStatus, metadata: MemberMetadata) {
            self.name = name
            self.address = address
            self.incarnation = incarnation
            self.status = status
            self.metadata = metadata
        }
    }

    /// True when the sender is joining (the receiver answers with its full state either way).
    public var join: Bool
    public var source: String
    public var entries: [Entry]
    /// Entries the decoder skipped as malformed (not encoded; zero for a state built in memory).
    public var skippedEntries: Int

    /// Equal when what goes on the wire is equal: `skippedEntries` is a decoding statistic.
    public static func == (lhs: Self, rhs: Self) -> Bool {
        lhs.join == rhs.join && lhs.source == rhs.source && lhs.entries == rhs.entries
    }

    public init(join: Bool, source: String, entries: [Entry], skippedEntries: Int = 0) {
        self.join = join
        self.source = source
        self.entries = entries
        self.skippedEntries = skippedEntries
    }

    public func encoded() -> [UInt8] {
        precondition(entries.count <= WireLimits.maxMembers)
        var w = ByteWriter(capacity: 64 + entries.count * 64)
        w.write(PushPullState.version)
        w.write(join)
        w.write(source)
        w.write(UInt32(entries.count))
        for e in entries {
            w.write(e.name); w.write(e.address); w.write(e.incarnation); w.write(e.status.rawValue); w.write(e.metadata)
        }
        return w.bytes
    }

    public static func decode(_ bytes: [UInt8]) throws -> PushPullState {
        var r = ByteReader(bytes)
        let version = try r.readUInt8()
        guard version == PushPullState.version else { throw WireError.unsupportedVersion(version) }
        let join = try r.readBool()
        let source = try r.readName("source")
        let count = Int(try r.readUInt32())
        guard count <= WireLimits.maxMembers else {
            throw WireError.tooLarge(field: "members", size: count, limit: WireLimits.maxMembers)
        }
        var entries: [Entry] = []
        entries.reserveCapacity(min(count, 1024))
        var skipped = 0
        for _ in 0..<count {
            // Each entry is cut out by its length fields alone, then decoded strictly: a bad
            // value (a name that is empty, too long or not UTF-8, a bad status, an incarnation
            // over the bound, oversize metadata) skips that entry and the rest still apply. Only
            // a broken structure (truncation) loses the whole exchange, as it must.
            var entry = try r.subReader(length: try Entry.extent(in: r))
            do {
                entries.append(try Entry.decode(from: &entry))
            } catch {
                skipped += 1
            }
        }
        try r.expectEnd()
        return PushPullState(join: join, source: source, entries: entries, skippedEntries: skipped)
    }
}

extension PushPullState.Entry {
    /// The encoded size of the entry at the reader's position: the strict decoder's own
    /// structural pass (`readFields`), so the layout is written once and a new field cannot
    /// make the skipping rule disagree with the decoder.
    static func extent(in reader: ByteReader) throws -> Int {
        var r = reader
        let start = r.offset
        _ = try readFields(from: &r)
        return r.offset - start
    }

    /// The entry's layout: reads every field and checks only structure (lengths, truncation).
    /// A string field comes back as its bytes; values are checked in `decode`.
    private static func readFields(from r: inout ByteReader) throws
        -> (name: ByteReader, host: ByteReader, port: UInt16, incarnation: UInt64, status: UInt8, metadata: ByteReader) {
        /// Cuts out a u16-length-prefixed string plus `fixed` bytes of fixed-size fields after it.
        func field(_ r: inout ByteReader, before: Int = 0, fixed: Int = 0) throws -> ByteReader {
            var probe = r
            _ = try probe.readBytes(before)
            return try r.subReader(length: before + 2 + Int(try probe.readUInt16()) + fixed)
        }
        let name = try field(&r)
        let host = try field(&r)
        let port = try r.readUInt16()
        let incarnation = try r.readUInt64()
        let status = try r.readUInt8()
        // version, api, slots, free, memoryMB, freeMemoryMB, then the identity key's length
        // (u8) and its bytes, then sessions (u32): cut out as one piece whose extent both lengths give.
        var probe = r
        _ = try probe.readBytes(8)
        let apiBytes = Int(try probe.readUInt16())
        _ = try probe.readBytes(apiBytes + 4 + 4 + 4 + 4)
        let keyBytes = Int(try probe.readUInt8())
        let metadata = try r.subReader(length: 8 + 2 + apiBytes + 16 + 1 + keyBytes + 4)
        return (name, host, port, incarnation, status, metadata)
    }

    static func decode(from r: inout ByteReader) throws -> Self {
        var f = try readFields(from: &r)
        try r.expectEnd()
        let name = try f.name.readName("name")
        let host = try f.host.readText("host", maxBytes: NodeAddress.maxHostBytes)
        guard !host.isEmpty else { throw WireError.invalidValue("empty host") }
        guard WireLimits.isValid(incarnation: f.incarnation) else {
            throw WireError.invalidValue("incarnation \(f.incarnation) over \(WireLimits.maxIncarnation)")
        }
        guard let status = MemberStatus(rawValue: f.status) else { throw WireError.invalidValue("status \(f.status)") }
        let metadata = try f.metadata.readMetadata()
        try f.metadata.expectEnd()
        return Self(name: name, address: NodeAddress(host: host, port: f.port), incarnation: f.incarnation,
                    status: status, metadata: metadata)
    }
}
