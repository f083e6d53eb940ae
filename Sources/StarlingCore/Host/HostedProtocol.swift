/// The seam between a deterministic protocol and the shell that runs it.
///
/// A protocol (membership's anti-entropy, swarm scheduling, session replication) is a value type
/// in StarlingCore with no I/O, no clock and no hidden randomness. A *host* (the libuv node in
/// StarlingRuntime, or a simulated node in Simulations/) owns the clock, the node-to-node
/// connections and the membership view, feeds the protocol its inputs and carries out the
/// `ProtocolEffect`s it returns. Adding a protocol means a folder in StarlingCore and one
/// registration line in each shell; no other protocol's code changes.
///
/// Inputs, each a method carrying `now`:
/// - `tick(now:)` at or after `nextDeadline`;
/// - `receive(_:from:now:)`: a one-way message on the protocol's own channel;
/// - `request(_:from:token:now:)`: a message that wants one answer (`.respond(_, to: token)`);
/// - `response(_:to:now:)`: the answer to one of our `.request`s, or nil when the peer could not
///   be reached, the connection broke, or the timeout passed (exactly one call per request);
/// - `membershipChanged(_:now:)`: a member appeared, changed status or metadata, or was reaped;
/// - `command(_:id:now:)`: work from an HTTP handler, answered by one `.reply(_, to: id)`;
/// - `performed(_:now:)`: the outcome of a protocol-specific `.perform` action (run a sandbox...).
///
/// Delivery: messages to one peer arrive in the order sent, at most once, over one persistent
/// sealed connection per peer pair; a broken connection loses what was in flight (protocols
/// retry on their own timers). Effects are carried out in order; a `.perform` that persists
/// completes before any later effect of the same list is carried out (persist, then acknowledge).
public protocol HostedProtocol: Sendable {
    associatedtype Message: Sendable
    associatedtype Command: Sendable
    associatedtype Reply: Sendable
    associatedtype Action: Sendable
    associatedtype ActionOutcome: Sendable

    /// The stream channel this protocol's messages travel on.
    static var channel: Channel { get }
    /// Bound on one encoded message; a larger frame on this channel is dropped and counted.
    static var maxMessageBytes: Int { get }
    static func encode(_ message: Message) -> [UInt8]
    /// Total over any bytes: a malformed message throws, it never traps.
    static func decode(_ bytes: [UInt8]) throws -> Message

    /// When the host must call `tick` next (`.distantFuture` when nothing is scheduled).
    var nextDeadline: Instant { get }

    mutating func tick(now: Instant) -> [ProtocolEffect<Self>]
    mutating func receive(_ message: Message, from peer: PeerName, now: Instant) -> [ProtocolEffect<Self>]
    mutating func request(_ message: Message, from peer: PeerName, token: RequestToken, now: Instant) -> [ProtocolEffect<Self>]
    mutating func response(_ message: Message?, to request: RequestID, now: Instant) -> [ProtocolEffect<Self>]
    mutating func membershipChanged(_ event: MembershipEvent, now: Instant) -> [ProtocolEffect<Self>]
    mutating func command(_ command: Command, id: CommandID, now: Instant) -> [ProtocolEffect<Self>]
    mutating func performed(_ outcome: ActionOutcome, now: Instant) -> [ProtocolEffect<Self>]
}

/// What a protocol asks its host to do.
public enum ProtocolEffect<P: HostedProtocol>: Sendable {
    /// One-way, on the protocol's channel, to a member by name.
    case send(P.Message, to: PeerName)
    /// A message that wants one answer; `response(_:to: id)` follows exactly once.
    case request(P.Message, to: PeerName, id: RequestID, timeout: Duration)
    /// The answer to a peer's request.
    case respond(P.Message, to: RequestToken)
    /// The answer to an HTTP handler's command.
    case reply(P.Reply, to: CommandID)
    /// Protocol-specific local work: run or kill a sandbox, persist a record, advertise capacity.
    case perform(P.Action)
}

/// A member's name, unique in the mesh: how protocols address peers. The host maps it to the
/// member's gossip address through its membership table.
public typealias PeerName = String

/// Which protocol a stream frame belongs to.
public struct Channel: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    /// Membership's push-pull (anti-entropy and joins).
    public static let membership = Channel(rawValue: 1)
    public static let swarm = Channel(rawValue: 2)
    public static let session = Channel(rawValue: 3)
    public static let audit = Channel(rawValue: 4)

    public var description: String {
        switch self {
        case .membership: "membership"
        case .swarm: "swarm"
        case .session: "session"
        default: "channel-\(rawValue)"
        }
    }
}

/// Names one of our own requests; unique per protocol instance (protocols number them).
public struct RequestID: RawRepresentable, Hashable, Sendable {
    public let rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }
}

/// Names a peer's request we owe an answer to; opaque to the protocol, made by the host.
public struct RequestToken: RawRepresentable, Hashable, Sendable {
    public let rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }
}

/// Names a command from an HTTP handler; made by the host.
public struct CommandID: RawRepresentable, Hashable, Sendable {
    public let rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }
}

/// What a protocol sees of one member: the host derives it from the membership table.
public struct PeerView: Sendable, Equatable {
    public var name: PeerName
    public var address: NodeAddress
    public var status: MemberStatus
    public var metadata: MemberMetadata

    public init(name: PeerName, address: NodeAddress, status: MemberStatus, metadata: MemberMetadata) {
        self.name = name
        self.address = address
        self.status = status
        self.metadata = metadata
    }

    /// May be given new work: alive (not suspect, dead, or left/leaving).
    public var takesWork: Bool { status == .alive }
}

/// A change in the membership table, as the host reports it to every protocol. The host sends
/// `.joined` for every member it knows (itself included) before any other input of a new
/// protocol instance.
public enum MembershipEvent: Sendable, Equatable {
    /// A member the protocol has not heard of, or one whose status or metadata changed.
    case updated(PeerView)
    /// A member forgotten by the table (reaped after dead or left).
    case removed(PeerName)
}
