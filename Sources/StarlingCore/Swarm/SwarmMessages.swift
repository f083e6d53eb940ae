/// The messages of the swarm channel. Who sends what (R: a request that wants one answer;
/// O: one-way):
///
/// | message          | from → to                 | kind | answer                        |
/// |------------------|---------------------------|------|-------------------------------|
/// | `create`         | entry → owner             | R    | `created` / `refused`         |
/// | `replicate`      | owner → replica           | R    | `replicated`                  |
/// | `sync`           | new owner → replica       | R    | `syncPage`                    |
/// | `reserve`        | owner → worker            | O    |                               |
/// | `fetch`          | worker → owner            | R    | `assign` / `noTask`           |
/// | `result`         | worker → acting owner     | R    | `resultAck`                   |
/// | `kill`           | owner → worker            | O    |                               |
/// | `adopt`          | new owner → worker        | R    | `adopted`                     |
/// | `cancel`         | entry → owner (or parent owner → child owner) | R | `cancelAnswer` |
/// | `childCreated`   | entry → parent's owner    | R    | `childAnswer` / `childRefused` |
///
/// Every message from an owner carries its owner epoch: workers and replicas refuse a lower
/// epoch than they have seen for that swarm (a deposed owner is fenced off).
public enum SwarmMessage: Sendable, Equatable {
    case create(SwarmDefinition)
    case created(SwarmID, owner: PeerName)
    case refused(String)

    case replicate(ReplicaUpdate)
    case replicated(SwarmID, version: UInt64, status: ReplicaStatus)

    case sync(SwarmID, from: UInt32)
    case syncPage(SyncPage)

    case reserve(SwarmID, epoch: UInt32, replicas: [PeerName], needs: [TaskNeeds])
    case fetch(SwarmID, epoch: UInt32, maxMemoryMB: UInt32)
    case assign(TaskRun, epoch: UInt32, replicas: [PeerName])
    case noTask(SwarmID)

    case result(SwarmID, index: UInt32, attempt: UInt16, outcome: RunOutcome, result: [UInt8])
    case resultAck(SwarmID, index: UInt32, attempt: UInt16, verdict: ResultVerdict)

    case kill(SwarmID, index: UInt32, attempt: UInt16, epoch: UInt32)
    case adopt(SwarmID, epoch: UInt32, replicas: [PeerName], runs: [RunRef])
    case adopted(SwarmID, runs: [RunRef])

    case cancel(SwarmID)
    case cancelAnswer(SwarmID, CancelAnswer)

    /// The child's options and task count travel with the notice, so that the parent's owner
    /// checks the child against the parent's spawn budget and depth (`Swarm.childRule`), counting
    /// every child it holds, wherever those were submitted.
    case childCreated(parent: TaskRef, child: SwarmID, replicas: [PeerName], options: [UInt8], tasks: UInt32)
    case childAnswer(SwarmID, parentCancelled: Bool)
    /// The parent's owner refuses the child (its budget or depth): the entry cancels the child.
    case childRefused(SwarmID, reason: String)
}

/// One attempt of one task, as owners and workers name it.
public struct RunRef: Sendable, Equatable, Hashable {
    public var index: UInt32
    public var attempt: UInt16
    public init(index: UInt32, attempt: UInt16) {
        self.index = index
        self.attempt = attempt
    }
}

/// How an owner answered a result.
public enum ResultVerdict: UInt8, Sendable, Equatable {
    /// Recorded (now or before) and stored on a majority of the replica set: forget it.
    case recorded = 0
    /// Not the attempt the owner expects from this node (it was moved, or is final): forget it,
    /// nothing was recorded.
    case stale = 1
    /// This node is not the swarm's acting owner: try the next of the replica set.
    case notOwner = 2
}

public enum ReplicaStatus: Sendable, Equatable {
    /// Applied; the replica is at `version`.
    case applied
    /// The update does not follow what this replica holds: send the whole swarm.
    case needFull
    /// This replica follows a newer owner (epoch given): the sender is deposed.
    case staleEpoch(UInt32)
}

public enum CancelAnswer: Sendable, Equatable {
    case cancelled
    case notFound
    /// This node knows the swarm but is not its acting owner; ask this one.
    case redirect(PeerName)
}

/// A task's record with its index, as replication carries it.
public struct IndexedRecord: Sendable, Equatable {
    public var index: UInt32
    public var record: TaskRecord
    public init(index: UInt32, record: TaskRecord) {
        self.index = index
        self.record = record
    }
}

/// A child swarm of a swarm (created from inside one of its tasks): where to send its cancel,
/// and what it costs the parent's spawn budget (as the parent's owner admitted it).
public struct ChildLink: Sendable, Hashable {
    public var child: SwarmID
    public var replicas: [PeerName]
    /// The child's tasks plus the spawn budget handed down to it (`ChildAdmission.admit`).
    public var cost: UInt64
    public init(child: SwarmID, replicas: [PeerName], cost: UInt64 = 0) {
        self.child = child
        self.replicas = replicas
        self.cost = cost
    }
}

/// Owner → replica: either a delta (the records changed since `baseVersion`) or, when
/// `definition` is set, the first message of the whole swarm, whose later chunks follow with
/// `baseVersion == version`. `last` marks the end of a whole-swarm transfer (always true on a
/// delta).
public struct ReplicaUpdate: Sendable, Equatable {
    public var id: SwarmID
    public var epoch: UInt32
    public var baseVersion: UInt64
    public var version: UInt64
    public var state: SwarmState
    public var definition: SwarmDefinition?
    public var records: [IndexedRecord]
    public var children: [ChildLink]
    public var last: Bool
    /// With the definition (a whole-swarm transfer): the reigns that numbered the finishes.
    public var lineage: FinishLineage

    public init(id: SwarmID, epoch: UInt32, baseVersion: UInt64, version: UInt64, state: SwarmState,
                definition: SwarmDefinition?, records: [IndexedRecord], children: [ChildLink], last: Bool,
                lineage: FinishLineage = FinishLineage()) {
        self.id = id
        self.epoch = epoch
        self.baseVersion = baseVersion
        self.version = version
        self.state = state
        self.definition = definition
        self.records = records
        self.children = children
        self.last = last
        self.lineage = lineage
    }
}

/// Replica → new owner: one page of what the replica holds (`known == false`: nothing).
public struct SyncPage: Sendable, Equatable {
    public var id: SwarmID
    public var known: Bool
    public var epoch: UInt32
    public var version: UInt64
    public var state: SwarmState
    public var children: [ChildLink]
    /// Records of tasks `from ..< from + records.count`.
    public var from: UInt32
    public var records: [TaskRecord]
    /// Where the next page starts, nil when this was the last.
    public var next: UInt32?
    /// On the first page: the reigns that numbered the finishes.
    public var lineage: FinishLineage

    public init(id: SwarmID, known: Bool, epoch: UInt32, version: UInt64, state: SwarmState,
                children: [ChildLink], from: UInt32, records: [TaskRecord], next: UInt32?,
                lineage: FinishLineage = FinishLineage()) {
        self.id = id
        self.known = known
        self.epoch = epoch
        self.version = version
        self.state = state
        self.children = children
        self.from = from
        self.records = records
        self.next = next
        self.lineage = lineage
    }
}

/// The bounds of the swarm protocol. Each is checked by the decoder (a message over one is
/// dropped with `WireError.tooLarge`) and by the sender (a draft over one is refused at submit).
public enum SwarmLimits {
    /// Tasks in one swarm.
    public static let maxTasks = 100_000
    /// A task's id, a peer name, a reason: UTF-8 bytes.
    public static let maxTaskIDBytes = 256
    public static let maxReasonBytes = 1024
    /// A task's payload (the runtime's TaskSpec JSON) and a swarm's options.
    public static let maxPayloadBytes = 1 << 20
    public static let maxOptionsBytes = 1 << 20
    /// A result (the runtime's TaskResult JSON; the sandbox caps captured output well below).
    public static let maxResultBytes = 8 << 20
    /// Replica set size (R).
    public static let maxReplicas = 16
    /// Children recorded per swarm (a spawn budget is far below this).
    public static let maxChildren = 100_000
    /// Entries of one `reserve`, `adopt` or `adopted`.
    public static let maxRunsPerMessage = 100_000
    /// Records of one replication or sync message, and the byte budget a sender fills a page to.
    public static let maxRecordsPerMessage = 100_000
    public static let pageBytes = 4 << 20
    /// The whole encoded message (the channel's frame bound). The runtime's link frame bound
    /// (`MeshConfiguration.maxLinkFrameBytes`) must be at least this, or the largest messages
    /// would be dropped on the wire: a test holds the two together.
    public static let maxMessageBytes = 24 << 20
    /// A swarm's replication version. It grows by one per replicated change, so no honest node
    /// comes near; a peer's version above it is refused, which leaves every `version + 1` on a
    /// copied version far from overflow.
    public static let maxVersion: UInt64 = 1 << 62
}

// MARK: - Codec

extension SwarmMessage {
    /// Format version, the first byte of every message. 2: whole transfers and sync pages carry
    /// the finish lineage (a node of version 1 refuses these messages, and is refused).
    static let formatVersion: UInt8 = 2

    private var typeCode: UInt8 {
        switch self {
        case .create: 1
        case .created: 2
        case .refused: 3
        case .replicate: 4
        case .replicated: 5
        case .sync: 6
        case .syncPage: 7
        case .reserve: 8
        case .fetch: 9
        case .assign: 10
        case .noTask: 11
        case .result: 12
        case .resultAck: 13
        case .kill: 14
        case .adopt: 15
        case .adopted: 16
        case .cancel: 17
        case .cancelAnswer: 18
        case .childCreated: 19
        case .childAnswer: 20
        case .childRefused: 21
        }
    }

    /// The message's bytes. Callers keep every field within `SwarmLimits` (the protocol refuses
    /// drafts and results over them before they get here).
    public func encoded() -> [UInt8] {
        var w = ByteWriter(capacity: 128)
        w.write(Self.formatVersion)
        w.write(typeCode)
        switch self {
        case .create(let definition):
            w.write(definition)
        case .created(let id, let owner):
            w.write(id); w.write(owner)
        case .refused(let reason):
            w.write(reason)
        case .replicate(let u):
            w.write(u.id); w.write(u.epoch); w.write(u.baseVersion); w.write(u.version); w.write(u.state.rawValue)
            w.write(u.definition != nil)
            if let d = u.definition { w.write(d) }
            w.write(UInt32(u.records.count))
            for r in u.records { w.write(r.index); w.write(r.record) }
            w.write(u.children)
            w.write(u.last)
            w.write(u.lineage)
        case .replicated(let id, let version, let status):
            w.write(id); w.write(version)
            switch status {
            case .applied: w.write(UInt8(0))
            case .needFull: w.write(UInt8(1))
            case .staleEpoch(let e): w.write(UInt8(2)); w.write(e)
            }
        case .sync(let id, let from):
            w.write(id); w.write(from)
        case .syncPage(let p):
            w.write(p.id); w.write(p.known); w.write(p.epoch); w.write(p.version); w.write(p.state.rawValue)
            w.write(p.children)
            w.write(p.from)
            w.write(UInt32(p.records.count))
            for r in p.records { w.write(r) }
            w.write(p.next != nil)
            if let n = p.next { w.write(n) }
            w.write(p.lineage)
        case .reserve(let id, let epoch, let replicas, let needs):
            w.write(id); w.write(epoch); w.write(names: replicas)
            w.write(UInt32(needs.count))
            for n in needs { w.write(n) }
        case .fetch(let id, let epoch, let maxMemoryMB):
            w.write(id); w.write(epoch); w.write(maxMemoryMB)
        case .assign(let run, let epoch, let replicas):
            w.write(run.swarm); w.write(run.index); w.write(run.attempt); w.write(run.task)
            w.write(blob: run.options); w.write(run.maxAttempts)
            w.write(epoch); w.write(names: replicas)
        case .noTask(let id):
            w.write(id)
        case .result(let id, let index, let attempt, let outcome, let result):
            w.write(id); w.write(index); w.write(attempt); w.write(outcome.rawValue); w.write(blob: result)
        case .resultAck(let id, let index, let attempt, let verdict):
            w.write(id); w.write(index); w.write(attempt); w.write(verdict.rawValue)
        case .kill(let id, let index, let attempt, let epoch):
            w.write(id); w.write(index); w.write(attempt); w.write(epoch)
        case .adopt(let id, let epoch, let replicas, let runs):
            w.write(id); w.write(epoch); w.write(names: replicas); w.write(runs)
        case .adopted(let id, let runs):
            w.write(id); w.write(runs)
        case .cancel(let id):
            w.write(id)
        case .cancelAnswer(let id, let answer):
            w.write(id)
            switch answer {
            case .cancelled: w.write(UInt8(0))
            case .notFound: w.write(UInt8(1))
            case .redirect(let owner): w.write(UInt8(2)); w.write(owner)
            }
        case .childCreated(let parent, let child, let replicas, let options, let tasks):
            w.write(parent.swarm); w.write(parent.task); w.write(child); w.write(names: replicas)
            w.write(blob: options); w.write(tasks)
        case .childAnswer(let id, let parentCancelled):
            w.write(id); w.write(parentCancelled)
        case .childRefused(let id, let reason):
            w.write(id); w.write(reason)
        }
        return w.bytes
    }

    /// Decodes one message. Total: any bytes either decode to a message whose every field is
    /// within `SwarmLimits`, or throw `WireError`.
    public static func decode(_ bytes: [UInt8]) throws -> SwarmMessage {
        guard bytes.count <= SwarmLimits.maxMessageBytes else {
            throw WireError.tooLarge(field: "message", size: bytes.count, limit: SwarmLimits.maxMessageBytes)
        }
        var r = ByteReader(bytes)
        let version = try r.readUInt8()
        guard version == formatVersion else { throw WireError.unsupportedVersion(version) }
        let type = try r.readUInt8()
        let message: SwarmMessage
        switch type {
        case 1:
            message = .create(try r.readDefinition())
        case 2:
            message = .created(try r.readSwarmID(), owner: try r.readName("owner"))
        case 3:
            message = .refused(try r.readText("reason", maxBytes: SwarmLimits.maxReasonBytes))
        case 4:
            let id = try r.readSwarmID()
            let epoch = try r.readUInt32()
            let base = try r.readVersion()
            let version = try r.readVersion()
            let state = try r.readSwarmState()
            let definition = try r.readBool() ? try r.readDefinition() : nil
            if let d = definition, d.id != id { throw WireError.invalidValue("definition of another swarm") }
            let count = try r.readCount("records", limit: SwarmLimits.maxRecordsPerMessage)
            var records: [IndexedRecord] = []
            records.reserveCapacity(min(count, 1024))
            for _ in 0..<count {
                let index = try r.readUInt32()
                guard index < SwarmLimits.maxTasks else { throw WireError.invalidValue("task index \(index)") }
                records.append(IndexedRecord(index: index, record: try r.readTaskRecord()))
            }
            let children = try r.readChildren()
            let last = try r.readBool()
            let lineage = try r.readLineage()
            message = .replicate(ReplicaUpdate(id: id, epoch: epoch, baseVersion: base, version: version, state: state,
                                               definition: definition, records: records, children: children, last: last,
                                               lineage: lineage))
        case 5:
            let id = try r.readSwarmID()
            let version = try r.readVersion()
            let status: ReplicaStatus
            switch try r.readUInt8() {
            case 0: status = .applied
            case 1: status = .needFull
            case 2: status = .staleEpoch(try r.readUInt32())
            case let b: throw WireError.invalidValue("replica status \(b)")
            }
            message = .replicated(id, version: version, status: status)
        case 6:
            message = .sync(try r.readSwarmID(), from: try r.readUInt32())
        case 7:
            let id = try r.readSwarmID()
            let known = try r.readBool()
            let epoch = try r.readUInt32()
            let version = try r.readVersion()
            let state = try r.readSwarmState()
            let children = try r.readChildren()
            let from = try r.readUInt32()
            let count = try r.readCount("records", limit: SwarmLimits.maxRecordsPerMessage)
            guard Int(from) + count <= SwarmLimits.maxTasks else { throw WireError.invalidValue("page past the last task") }
            var records: [TaskRecord] = []
            records.reserveCapacity(min(count, 1024))
            for _ in 0..<count { records.append(try r.readTaskRecord()) }
            let next = try r.readBool() ? try r.readUInt32() : nil
            let lineage = try r.readLineage()
            message = .syncPage(SyncPage(id: id, known: known, epoch: epoch, version: version, state: state,
                                         children: children, from: from, records: records, next: next, lineage: lineage))
        case 8:
            let id = try r.readSwarmID()
            let epoch = try r.readUInt32()
            let replicas = try r.readNames()
            let count = try r.readCount("needs", limit: SwarmLimits.maxRunsPerMessage)
            var needs: [TaskNeeds] = []
            needs.reserveCapacity(min(count, 1024))
            for _ in 0..<count { needs.append(try r.readNeeds()) }
            message = .reserve(id, epoch: epoch, replicas: replicas, needs: needs)
        case 9:
            message = .fetch(try r.readSwarmID(), epoch: try r.readUInt32(), maxMemoryMB: try r.readUInt32())
        case 10:
            let id = try r.readSwarmID()
            let index = try r.readUInt32()
            guard index < SwarmLimits.maxTasks else { throw WireError.invalidValue("task index \(index)") }
            let attempt = try r.readUInt16()
            let task = try r.readTask()
            let options = try r.readBlob("options", limit: SwarmLimits.maxOptionsBytes)
            let maxAttempts = try r.readUInt8()
            let epoch = try r.readUInt32()
            let replicas = try r.readNames()
            message = .assign(TaskRun(swarm: id, index: index, attempt: attempt, task: task, options: options,
                                      maxAttempts: maxAttempts), epoch: epoch, replicas: replicas)
        case 11:
            message = .noTask(try r.readSwarmID())
        case 12:
            let id = try r.readSwarmID()
            let index = try r.readUInt32()
            let attempt = try r.readUInt16()
            guard let outcome = RunOutcome(rawValue: try r.readUInt8()) else { throw WireError.invalidValue("outcome") }
            message = .result(id, index: index, attempt: attempt, outcome: outcome,
                              result: try r.readBlob("result", limit: SwarmLimits.maxResultBytes))
        case 13:
            let id = try r.readSwarmID()
            let index = try r.readUInt32()
            let attempt = try r.readUInt16()
            guard let verdict = ResultVerdict(rawValue: try r.readUInt8()) else { throw WireError.invalidValue("verdict") }
            message = .resultAck(id, index: index, attempt: attempt, verdict: verdict)
        case 14:
            message = .kill(try r.readSwarmID(), index: try r.readUInt32(), attempt: try r.readUInt16(), epoch: try r.readUInt32())
        case 15:
            message = .adopt(try r.readSwarmID(), epoch: try r.readUInt32(), replicas: try r.readNames(), runs: try r.readRuns())
        case 16:
            message = .adopted(try r.readSwarmID(), runs: try r.readRuns())
        case 17:
            message = .cancel(try r.readSwarmID())
        case 18:
            let id = try r.readSwarmID()
            let answer: CancelAnswer
            switch try r.readUInt8() {
            case 0: answer = .cancelled
            case 1: answer = .notFound
            case 2: answer = .redirect(try r.readName("owner"))
            case let b: throw WireError.invalidValue("cancel answer \(b)")
            }
            message = .cancelAnswer(id, answer)
        case 19:
            let parent = TaskRef(swarm: try r.readSwarmID(), task: try r.readUInt32())
            let child = try r.readSwarmID()
            let replicas = try r.readNames()
            let options = try r.readBlob("options", limit: SwarmLimits.maxOptionsBytes)
            let tasks = try r.readUInt32()
            guard tasks <= SwarmLimits.maxTasks else { throw WireError.tooLarge(field: "tasks", size: Int(tasks), limit: SwarmLimits.maxTasks) }
            message = .childCreated(parent: parent, child: child, replicas: replicas, options: options, tasks: tasks)
        case 20:
            message = .childAnswer(try r.readSwarmID(), parentCancelled: try r.readBool())
        case 21:
            message = .childRefused(try r.readSwarmID(), reason: try r.readText("reason", maxBytes: SwarmLimits.maxReasonBytes))
        default:
            throw WireError.unknownMessageType(type)
        }
        try r.expectEnd()
        return message
    }
}

/// Whether a string is a swarm id: exactly 16 lowercase hex digits.
public func isSwarmID(_ s: String) -> Bool {
    s.utf8.count == 16 && s.utf8.allSatisfy { ($0 >= 48 && $0 <= 57) || ($0 >= 97 && $0 <= 102) }
}

extension ByteWriter {
    /// Bytes with a 32-bit length.
    mutating func write(blob: [UInt8]) {
        precondition(blob.count <= Int(UInt32.max))
        write(UInt32(blob.count))
        write(bytes: blob)
    }

    mutating func write(names: [PeerName]) {
        write(UInt8(clamping: names.count))
        for n in names.prefix(Int(UInt8.max)) { write(n) }
    }

    mutating func write(_ n: TaskNeeds) { write(n.memoryMB); write(n.milliCPUs) }

    mutating func write(_ t: SwarmTask) { write(t.id); write(t.needs); write(blob: t.payload) }

    mutating func write(_ d: SwarmDefinition) {
        write(d.id)
        write(UInt32(d.draft.tasks.count))
        for t in d.draft.tasks { write(t) }
        write(d.draft.maxAttempts)
        write(blob: d.draft.options)
        write(d.draft.parent != nil)
        if let p = d.draft.parent { write(p.swarm); write(p.task) }
        write(d.draft.createdAtMs)
        write(names: d.replicas)
    }

    mutating func write(_ r: TaskRecord) {
        write(r.state.rawValue); write(r.attempt)
        write(r.node != nil)
        if let n = r.node { write(n) }
        write(r.result != nil)
        if let b = r.result { write(blob: b) }
        write(r.finishSeq)
    }

    mutating func write(_ children: [ChildLink]) {
        write(UInt32(children.count))
        for c in children { write(c.child); write(names: c.replicas); write(c.cost) }
    }

    /// A lineage: a count byte, then (epoch, owner, from) per mark; a count byte, then
    /// (epoch, owner, ancestor's epoch, ancestor's owner, cap) per alias.
    public mutating func write(_ lineage: FinishLineage) {
        write(UInt8(clamping: lineage.marks.count))
        for m in lineage.marks.prefix(FinishLineage.maxMarks) { write(m.reign.epoch); write(m.reign.owner); write(m.from) }
        write(UInt8(clamping: lineage.aliases.count))
        for a in lineage.aliases.prefix(FinishLineage.maxMarks) {
            write(a.reign.epoch); write(a.reign.owner); write(a.ancestor.epoch); write(a.ancestor.owner); write(a.cap)
        }
    }

    mutating func write(_ runs: [RunRef]) {
        write(UInt32(runs.count))
        for r in runs { write(r.index); write(r.attempt) }
    }
}

extension ByteReader {
    mutating func readCount(_ field: String, limit: Int) throws -> Int {
        let n = Int(try readUInt32())
        guard n <= limit else { throw WireError.tooLarge(field: field, size: n, limit: limit) }
        // Every entry takes at least one byte: a count beyond what is left is a lie.
        guard n <= remaining else { throw WireError.truncated }
        return n
    }

    mutating func readBlob(_ field: String, limit: Int) throws -> [UInt8] {
        let n = Int(try readUInt32())
        guard n <= limit else { throw WireError.tooLarge(field: field, size: n, limit: limit) }
        return Array(try readBytes(n))
    }

    mutating func readSwarmID() throws -> SwarmID {
        let s = try readString(field: "swarm id", maxBytes: 16)
        guard isSwarmID(s) else { throw WireError.invalidValue("swarm id") }
        return s
    }

    mutating func readVersion() throws -> UInt64 {
        let v = try readUInt64()
        guard v <= SwarmLimits.maxVersion else { throw WireError.invalidValue("version \(v)") }
        return v
    }

    mutating func readSwarmState() throws -> SwarmState {
        let b = try readUInt8()
        guard let s = SwarmState(rawValue: b) else { throw WireError.invalidValue("swarm state \(b)") }
        return s
    }

    mutating func readNames() throws -> [PeerName] {
        let n = Int(try readUInt8())
        guard n <= SwarmLimits.maxReplicas else { throw WireError.tooLarge(field: "replicas", size: n, limit: SwarmLimits.maxReplicas) }
        var names: [PeerName] = []
        for _ in 0..<n {
            let name = try readName("replica")
            // A replica set names distinct members (a ring's preference list): a duplicate would
            // count one copy as several toward the majority that stores a swarm (review13 F8).
            guard !names.contains(name) else { throw WireError.invalidValue("replica \(name) named twice") }
            names.append(name)
        }
        return names
    }

    mutating func readNeeds() throws -> TaskNeeds {
        TaskNeeds(memoryMB: try readUInt32(), milliCPUs: try readUInt32())
    }

    mutating func readTask() throws -> SwarmTask {
        let id = try readText("task id", maxBytes: SwarmLimits.maxTaskIDBytes)
        let needs = try readNeeds()
        return SwarmTask(id: id, needs: needs, payload: try readBlob("payload", limit: SwarmLimits.maxPayloadBytes))
    }

    mutating func readDefinition() throws -> SwarmDefinition {
        let id = try readSwarmID()
        let count = try readCount("tasks", limit: SwarmLimits.maxTasks)
        guard count > 0 else { throw WireError.invalidValue("a swarm with no task") }
        var tasks: [SwarmTask] = []
        tasks.reserveCapacity(min(count, 1024))
        for _ in 0..<count { tasks.append(try readTask()) }
        let maxAttempts = try readUInt8()
        guard (1...10).contains(maxAttempts) else { throw WireError.invalidValue("maxAttempts \(maxAttempts)") }
        let options = try readBlob("options", limit: SwarmLimits.maxOptionsBytes)
        let parent = try readBool() ? TaskRef(swarm: try readSwarmID(), task: try readUInt32()) : nil
        let createdAtMs = try readUInt64()
        let replicas = try readNames()
        guard !replicas.isEmpty, Set(replicas).count == replicas.count else { throw WireError.invalidValue("replica set") }
        return SwarmDefinition(id: id, draft: SwarmDraft(tasks: tasks, maxAttempts: maxAttempts, options: options,
                                                         parent: parent, createdAtMs: createdAtMs),
                               replicas: replicas)
    }

    mutating func readTaskRecord() throws -> TaskRecord {
        let b = try readUInt8()
        guard let state = TaskState(rawValue: b) else { throw WireError.invalidValue("task state \(b)") }
        let attempt = try readUInt16()
        let node = try readBool() ? try readName("node") : nil
        let result = try readBool() ? try readBlob("result", limit: SwarmLimits.maxResultBytes) : nil
        return TaskRecord(state: state, attempt: attempt, node: node, result: result, finishSeq: try readUInt32())
    }

    mutating func readChildren() throws -> [ChildLink] {
        let n = try readCount("children", limit: SwarmLimits.maxChildren)
        var children: [ChildLink] = []
        children.reserveCapacity(min(n, 1024))
        for _ in 0..<n { children.append(ChildLink(child: try readSwarmID(), replicas: try readNames(), cost: try readUInt64())) }
        return children
    }

    /// A lineage (`write(_ lineage:)`).
    public mutating func readLineage() throws -> FinishLineage {
        let n = Int(try readUInt8())
        guard n <= FinishLineage.maxMarks else { throw WireError.tooLarge(field: "lineage", size: n, limit: FinishLineage.maxMarks) }
        var marks: [FinishLineage.Mark] = []
        for _ in 0..<n { marks.append(FinishLineage.Mark(reign: try readReign(), from: try readUInt32())) }
        let m = Int(try readUInt8())
        guard m <= FinishLineage.maxMarks else { throw WireError.tooLarge(field: "lineage aliases", size: m, limit: FinishLineage.maxMarks) }
        var aliases: [FinishLineage.Alias] = []
        for _ in 0..<m {
            let reign = try readReign()
            let ancestor = try readReign()
            aliases.append(FinishLineage.Alias(reign: reign, ancestor: ancestor, cap: try readUInt32()))
        }
        return FinishLineage(marks: marks, aliases: aliases)
    }

    public mutating func readReign() throws -> Reign {
        let epoch = try readUInt32()
        let owner = try readUInt8()
        guard Int(owner) < SwarmLimits.maxReplicas else { throw WireError.invalidValue("lineage owner \(owner)") }
        return Reign(epoch: epoch, owner: owner)
    }

    mutating func readRuns() throws -> [RunRef] {
        let n = try readCount("runs", limit: SwarmLimits.maxRunsPerMessage)
        var runs: [RunRef] = []
        runs.reserveCapacity(min(n, 1024))
        for _ in 0..<n { runs.append(RunRef(index: try readUInt32(), attempt: try readUInt16())) }
        return runs
    }
}
