/// Peers witness each other's audit-log heads, so that a node cannot quietly cut or rewrite the
/// tail of its log (issue #11, item 7).
///
/// - Every `interval`, a node sends its log's signed head (seq, hash, signature over both, and
///   its public key) to its `witnesses` successors on the ring of alive members. A witness takes
///   a head only under the key membership gossips for its sender (`SignerKeys`: another key, or
///   none known, is refused and counted), then the shell's store checks the signature and keeps
///   the latest head per node, refusing one that goes back (see `AuditLog.witness`).
/// - When a node starts, it asks every alive peer (each once, a few at a time) which head of its
///   log that peer witnessed, and checks that its own log holds that entry with that hash. A log
///   that does not is one whose tail was cut or rewritten since: the shell stops the log, records
///   the stop beside the database (`AuditContradiction`, so that the node refuses to start again
///   until an operator acts), and the node leaves. The node does not wait for the answers before
///   it takes work: after the first such start it runs tasks until its peers' answers come back.
///
/// Pure: no I/O, no clock; the shell reads and stores heads through `Action`s.
public struct AuditWitness: HostedProtocol {
    public struct Head: Sendable, Equatable {
        public var seq: UInt64
        public var hash: [UInt8]        // 32 bytes
        public var signature: [UInt8]   // 64 bytes
        public var publicKey: [UInt8]   // 32 bytes

        public init(seq: UInt64, hash: [UInt8], signature: [UInt8], publicKey: [UInt8]) {
            self.seq = seq
            self.hash = hash
            self.signature = signature
            self.publicKey = publicKey
        }
    }

    public enum Message: Sendable, Equatable {
        /// One-way: this is my log's head.
        case head(Head)
        /// Request: which head of my log have you witnessed?
        case ask
        /// The answer to `ask`: nil when the peer witnessed none.
        case witnessed(Head?)
    }

    /// No commands: the protocol runs on its own timer.
    public enum Command: Sendable {}
    public enum Reply: Sendable {}

    public enum Action: Sendable, Equatable {
        /// Read this node's current head; answer `.ownHead`.
        case readOwnHead
        /// Check and keep `head` as the latest witnessed of `peer`.
        case store(Head, from: PeerName)
        /// Read the head witnessed of `peer`; answer `.witnessedHead(_, for: token)`.
        case lookUp(PeerName, token: RequestToken)
        /// `peer` witnessed `head` of this node's log: the log must hold it.
        case check(Head, from: PeerName)
        /// A head from `peer` refused before the store: count and log it.
        case refuse(Head, from: PeerName, reason: String)
    }

    public enum ActionOutcome: Sendable, Equatable {
        case ownHead(Head?)
        case witnessedHead(Head?, for: RequestToken)
    }

    public struct Settings: Sendable, Equatable {
        /// How often a node sends its head to its witnesses.
        public var interval: Duration
        /// How many ring successors witness each node.
        public var witnesses: Int
        /// Peers asked at once for their witnessed head after a start.
        public var asksPerTick: Int
        /// Times a peer that did not answer is asked again.
        public var maxAskRetries: Int
        public var askTimeout: Duration

        public init(interval: Duration = .seconds(10), witnesses: Int = 2, asksPerTick: Int = 8, maxAskRetries: Int = 3,
                    askTimeout: Duration = .seconds(5)) {
            precondition(witnesses >= 1 && witnesses <= 16 && asksPerTick >= 1 && maxAskRetries >= 0)
            self.interval = interval
            self.witnesses = witnesses
            self.asksPerTick = asksPerTick
            self.maxAskRetries = maxAskRetries
            self.askTimeout = askTimeout
        }
    }

    public static let channel = Channel.audit
    public static let maxMessageBytes = 256

    public let myName: PeerName
    public let settings: Settings
    public private(set) var nextDeadline: Instant
    /// Alive members other than this node.
    private(set) var alive: Set<PeerName> = []
    /// Peers that answered `ask` in this life (never asked again), and the asks sent to each.
    private(set) var answered: Set<PeerName> = []
    private(set) var attempts: [PeerName: Int] = [:]
    private var outstanding: [RequestID: PeerName] = [:]
    private var nextRequest: UInt64 = 1
    /// The last head taken from each alive peer this node witnesses, and when: a head is taken
    /// only from a peer whose witness this node is, at most once per half interval, and only when
    /// it differs from the last one. Each taken head costs the shell a signature check and a
    /// durable write on the loop thread; without these bounds a peer with the cluster key could
    /// keep the loop in fsyncs with a flood of heads (review of the #11 first steps). Pruned when
    /// a peer stops being alive.
    private(set) var lastTaken: [PeerName: (head: Head, at: Instant)] = [:]
    /// The identity keys membership gossips: a head is taken only under its sender's.
    private(set) var signerKeys = SignerKeys()
    /// The ring of `alive` and this node, rebuilt when next used after `alive` changed: every
    /// received head asks it who witnesses the sender, and building a ring per head (64 points a
    /// member, sorted) cost a 1,000-member mesh 64,000 points a head.
    private var ring = SwarmRing(members: [])
    private var ringIsStale = true

    private mutating func currentRing() -> SwarmRing {
        if ringIsStale {
            ring = SwarmRing(members: alive.union([myName]))
            ringIsStale = false
        }
        return ring
    }

    public init(myName: PeerName, settings: Settings = Settings(), now: Instant) {
        self.myName = myName
        self.settings = settings
        // The first head goes out soon after start, not a whole interval later.
        nextDeadline = now + .milliseconds(500)
    }

    /// The ring successors that witness this node's head.
    public var witnesses: [PeerName] {
        mutating get {
            Array(currentRing().preferenceList(myName, count: settings.witnesses + 1).filter { $0 != myName }.prefix(settings.witnesses))
        }
    }

    public mutating func tick(now: Instant) -> [ProtocolEffect<AuditWitness>] {
        guard now >= nextDeadline else { return [] }
        nextDeadline = now + settings.interval
        var effects: [ProtocolEffect<AuditWitness>] = [.perform(.readOwnHead)]
        // Ask the peers not yet asked in this life (bounded per tick), in name order.
        let due = alive.subtracting(answered).subtracting(outstanding.values)
            .filter { attempts[$0, default: 0] <= settings.maxAskRetries }.sorted().prefix(settings.asksPerTick)
        for peer in due {
            let id = RequestID(rawValue: nextRequest)
            nextRequest += 1
            outstanding[id] = peer
            attempts[peer, default: 0] += 1
            effects.append(.request(.ask, to: peer, id: id, timeout: settings.askTimeout))
        }
        return effects
    }

    public mutating func receive(_ message: Message, from peer: PeerName, now: Instant) -> [ProtocolEffect<AuditWitness>] {
        guard case .head(let head) = message, peer != myName, alive.contains(peer), witnesses(of: peer).contains(myName) else { return [] }
        if let last = lastTaken[peer], last.head == head || now < last.at + settings.interval / 2 { return [] }
        lastTaken[peer] = (head, now)
        // Under the key membership holds for the peer, or not at all (the refusal is bounded by
        // `lastTaken` like a store). The store still checks the signature under that same key.
        switch signerKeys.verdict(signer: peer, publicKey: head.publicKey) {
        case .matches:
            return [.perform(.store(head, from: peer))]
        case .unknownSigner:
            return [.perform(.refuse(head, from: peer, reason: "membership gives no identity key for \(peer)"))]
        case .keyMismatch:
            return [.perform(.refuse(head, from: peer, reason: "the head's key is not the identity key membership gossips for \(peer)"))]
        }
    }

    /// The ring successors that witness `peer`'s head, as this node sees the ring.
    mutating func witnesses(of peer: PeerName) -> [PeerName] {
        let ring = peer == myName || alive.contains(peer) ? currentRing() : SwarmRing(members: alive.union([myName, peer]))
        return Array(ring.preferenceList(peer, count: settings.witnesses + 1).filter { $0 != peer }.prefix(settings.witnesses))
    }

    public mutating func request(_ message: Message, from peer: PeerName, token: RequestToken, now: Instant) -> [ProtocolEffect<AuditWitness>] {
        guard case .ask = message else { return [] }
        return [.perform(.lookUp(peer, token: token))]
    }

    public mutating func response(_ message: Message?, to request: RequestID, now: Instant) -> [ProtocolEffect<AuditWitness>] {
        guard let peer = outstanding.removeValue(forKey: request) else { return [] }
        switch message {
        case .witnessed(let head)?:
            answered.insert(peer)
            return head.map { [.perform(.check($0, from: peer))] } ?? []
        default:
            return []  // no answer: asked again at a later tick, up to maxAskRetries times
        }
    }

    public mutating func membershipChanged(_ event: MembershipEvent, now: Instant) -> [ProtocolEffect<AuditWitness>] {
        signerKeys.apply(event)
        switch event {
        case .updated(let view) where view.name != myName:
            if view.takesWork {
                if alive.insert(view.name).inserted { ringIsStale = true }
            } else {
                if alive.remove(view.name) != nil { ringIsStale = true }
                lastTaken[view.name] = nil
            }
        case .removed(let name):
            if alive.remove(name) != nil { ringIsStale = true }
            lastTaken[name] = nil
        default:
            break
        }
        return []
    }

    public mutating func command(_ command: Command, id: CommandID, now: Instant) -> [ProtocolEffect<AuditWitness>] {
        switch command {}
    }

    public mutating func performed(_ outcome: ActionOutcome, now: Instant) -> [ProtocolEffect<AuditWitness>] {
        switch outcome {
        case .ownHead(let head?):
            return witnesses.map { .send(.head(head), to: $0) }
        case .ownHead(nil):
            return []
        case .witnessedHead(let head, let token):
            return [.respond(.witnessed(head), to: token)]
        }
    }

    // MARK: Codec: kind:u8, then for a head seq:u64 hash[32] signature[64] publicKey[32].

    public static func encode(_ message: Message) -> [UInt8] {
        switch message {
        case .head(let h): [1] + bytes(h)
        case .ask: [2]
        case .witnessed(nil): [3, 0]
        case .witnessed(let h?): [3, 1] + bytes(h)
        }
    }

    public static func decode(_ input: [UInt8]) throws -> Message {
        guard let kind = input.first else { throw AuditWitnessDecodingError("empty message") }
        let rest = Array(input.dropFirst())
        switch kind {
        case 1: return .head(try head(rest))
        case 2:
            guard rest.isEmpty else { throw AuditWitnessDecodingError("trailing bytes") }
            return .ask
        case 3:
            guard let flag = rest.first else { throw AuditWitnessDecodingError("truncated") }
            switch flag {
            case 0:
                guard rest.count == 1 else { throw AuditWitnessDecodingError("trailing bytes") }
                return .witnessed(nil)
            case 1: return .witnessed(try head(Array(rest.dropFirst())))
            default: throw AuditWitnessDecodingError("bad flag")
            }
        default: throw AuditWitnessDecodingError("unknown kind \(kind)")
        }
    }

    static let headBytes = 8 + 32 + 64 + 32

    private static func bytes(_ h: Head) -> [UInt8] {
        precondition(h.hash.count == 32 && h.signature.count == 64 && h.publicKey.count == 32, "a malformed head")
        var out: [UInt8] = []
        out.reserveCapacity(headBytes)
        for shift in stride(from: 56, through: 0, by: -8) { out.append(UInt8(truncatingIfNeeded: h.seq >> UInt64(shift))) }
        return out + h.hash + h.signature + h.publicKey
    }

    private static func head(_ b: [UInt8]) throws -> Head {
        guard b.count == headBytes else { throw AuditWitnessDecodingError("a head is \(headBytes) bytes, not \(b.count)") }
        let seq = b[0..<8].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        return Head(seq: seq, hash: Array(b[8..<40]), signature: Array(b[40..<104]), publicKey: Array(b[104..<136]))
    }
}

public struct AuditWitnessDecodingError: Error, CustomStringConvertible {
    public var description: String
    init(_ d: String) { description = d }
}
