/// Which owner numbered a swarm's finishes (`TaskRecord.finishSeq`, the events stream's ids):
/// one reign per takeover, named by its epoch and by the owner's place in the replica set (two
/// sides of a partition can each take the same epoch, never with the same owner).
public struct Reign: Sendable, Hashable, CustomStringConvertible {
    public var epoch: UInt32
    /// The owner's index in `SwarmDefinition.replicas`.
    public var owner: UInt8

    public init(epoch: UInt32, owner: UInt8) {
        self.epoch = epoch
        self.owner = owner
    }

    public var description: String { "\(epoch).\(owner)" }
}

/// The reigns a swarm's numbering went through, oldest first, each with the finish counter it
/// began at: a reign keeps every number up to `from` as its predecessor gave them (it copied
/// the predecessor's state, see `Swarm.completeTakeover`) and numbers new finishes above it.
///
/// A client's events cursor names the reign whose stream it read (`EventCursor`), so a node
/// can tell where a cursor from another reign is still exact. Under a partition both sides
/// number finishes; after the heal one side's lineage wins and the other's numbers above its
/// fork point name other tasks. A cursor of the losing side resumes from the fork point (the
/// client may see tasks again, and misses none); a cursor of a reign this lineage does not
/// hold resumes from the start.
public struct FinishLineage: Sendable, Equatable {
    public struct Mark: Sendable, Equatable {
        public var reign: Reign
        /// The finish counter when the reign began: numbers up to it are its predecessor's.
        public var from: UInt32

        public init(reign: Reign, from: UInt32) {
            self.reign = reign
            self.from = from
        }
    }

    /// A reign of another lineage that a takeover heard of (a replica's copy it did not take):
    /// its numbers up to `cap` are those of `ancestor`, a reign of this lineage.
    public struct Alias: Sendable, Equatable {
        public var reign: Reign
        public var ancestor: Reign
        public var cap: UInt32

        public init(reign: Reign, ancestor: Reign, cap: UInt32) {
            self.reign = reign
            self.ancestor = ancestor
            self.cap = cap
        }
    }

    /// Marks and aliases kept: the oldest are dropped past it (a cursor of a dropped reign
    /// resumes from the start, which repeats tasks and loses none).
    public static let maxMarks = 64

    public private(set) var marks: [Mark]
    public private(set) var aliases: [Alias]

    public init(marks: [Mark] = [], aliases: [Alias] = []) {
        self.marks = Array(marks.suffix(Self.maxMarks))
        self.aliases = Array(aliases.suffix(Self.maxMarks))
    }

    /// The lineage of a new swarm: its first owner (the replica set's first) at epoch 1.
    public static let created = FinishLineage(marks: [Mark(reign: Reign(epoch: 1, owner: 0), from: 0)])

    /// The reign numbering finishes now; nil for a swarm stored before lineages were kept.
    public var tip: Reign? { marks.last?.reign }

    /// A new reign begins at finish counter `from`.
    public mutating func begin(_ reign: Reign, from: UInt32) {
        if marks.last?.reign == reign { return }
        marks.append(Mark(reign: reign, from: from))
        if marks.count > Self.maxMarks { marks.removeFirst(marks.count - Self.maxMarks) }
    }

    /// Takes note of another copy's lineage (a replica a takeover asked and did not copy): each
    /// of its reigns past the last one the two share becomes an alias of that shared reign,
    /// capped at the lowest point its numbering left it. A copy sharing no reign adds nothing.
    public mutating func learn(_ other: FinishLineage) {
        var k = 0
        while k < marks.count && k < other.marks.count && marks[k] == other.marks[k] { k += 1 }
        guard k > 0 else { return }
        let ancestor = marks[k - 1].reign
        var cap = UInt32.max
        for m in other.marks[k...] {
            cap = min(cap, m.from)
            guard !marks.contains(where: { $0.reign == m.reign }), !aliases.contains(where: { $0.reign == m.reign }) else { continue }
            aliases.append(Alias(reign: m.reign, ancestor: ancestor, cap: cap))
        }
        if aliases.count > Self.maxMarks { aliases.removeFirst(aliases.count - Self.maxMarks) }
    }

    /// Where a stream resumes for a client whose last event was `cursor`: its number where the
    /// numbering since its reign agrees with it, else the lowest point where this lineage's
    /// numbering left it (through an alias for a reign of a copy not taken; 0 for a reign
    /// unknown here). A cursor without a reign (`Last-Event-ID: N`, or a swarm without a
    /// lineage) is taken as it is.
    ///
    /// Nil for a cursor of a reign newer than this lineage's tip that it does not know: this
    /// copy is behind the one the client read (a replica the new owner has not reached yet),
    /// and the stream waits for it rather than replaying.
    public func resumePoint(after cursor: EventCursor) -> UInt32? {
        guard let reign = cursor.reign, let tip, !marks.isEmpty else { return cursor.seq }
        if let point = pointOnMarks(reign, cursor.seq) { return point }
        if let alias = aliases.last(where: { $0.reign == reign }) {
            return pointOnMarks(alias.ancestor, min(cursor.seq, alias.cap)) ?? 0
        }
        return reign.epoch > tip.epoch ? nil : 0
    }

    private func pointOnMarks(_ reign: Reign, _ seq: UInt32) -> UInt32? {
        guard let i = marks.lastIndex(where: { $0.reign == reign }) else { return nil }
        var point = seq
        for mark in marks[(i + 1)...] { point = min(point, mark.from) }
        return point
    }
}

/// A position in a swarm's events stream: the last finish number a client saw, and the reign
/// that numbered it. Its text (the SSE id, and `Last-Event-ID`) is `EPOCH.OWNER.SEQ`, or `SEQ`
/// alone for a stream of a swarm without a lineage.
public struct EventCursor: Sendable, Hashable, CustomStringConvertible {
    public var reign: Reign?
    public var seq: UInt32

    public init(reign: Reign?, seq: UInt32) {
        self.reign = reign
        self.seq = seq
    }

    public static let start = EventCursor(reign: nil, seq: 0)

    public var description: String { reign.map { "\($0.epoch).\($0.owner).\(seq)" } ?? "\(seq)" }

    /// Parses an id this stream sent; nil for anything else (at most 40 bytes, digits and dots).
    public init?(text: String) {
        guard text.utf8.count <= 40 else { return nil }
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.allSatisfy({ !$0.isEmpty && $0.utf8.allSatisfy { $0 >= 0x30 && $0 <= 0x39 } }) else { return nil }
        switch parts.count {
        case 1:
            guard let seq = UInt32(parts[0]) else { return nil }
            self.init(reign: nil, seq: seq)
        case 3:
            guard let epoch = UInt32(parts[0]), let owner = UInt8(parts[1]), let seq = UInt32(parts[2]) else { return nil }
            self.init(reign: Reign(epoch: epoch, owner: owner), seq: seq)
        default:
            return nil
        }
    }

    /// The cursor moved onto `lineage`'s tip: unchanged where the tip is its own reign (or the
    /// lineage is unknown), else re-based to where the tip's numbering agrees with it. Nil while
    /// the lineage is behind the cursor's reign (`FinishLineage.resumePoint`): show nothing yet.
    public func rebased(onto lineage: FinishLineage) -> EventCursor? {
        // A copy without a lineage numbers in no reign: its ids are plain numbers.
        guard let tip = lineage.tip else { return EventCursor(reign: nil, seq: seq) }
        guard tip != reign else { return self }
        return lineage.resumePoint(after: self).map { EventCursor(reign: tip, seq: $0) }
    }
}
