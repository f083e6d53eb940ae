/// Swarm scheduling as a deterministic state machine (see SwarmContract.swift for its inputs
/// and effects). PLACEHOLDER: the implementation lands on the `core` branch.
public struct Swarm: HostedProtocol {
    public typealias Message = SwarmMessage
    public typealias Command = SwarmCommand
    public typealias Reply = SwarmReply
    public typealias Action = SwarmAction
    public typealias ActionOutcome = SwarmActionOutcome

    public static let channel = Channel.swarm
    public static let maxMessageBytes = 80 << 20

    public let settings: SwarmSettings
    public let myName: PeerName

    public init(settings: SwarmSettings, myName: PeerName, seed: UInt64, now: Instant) {
        self.settings = settings
        self.myName = myName
    }

    /// Swarms loaded from the node's store after a restart, before any other input.
    public mutating func restore(_ swarms: [(SwarmDefinition, epoch: UInt32, state: SwarmState, tasks: [TaskRecord])], now: Instant) -> [ProtocolEffect<Swarm>] { [] }

    public var nextDeadline: Instant { .distantFuture }

    public static func encode(_ message: SwarmMessage) -> [UInt8] { [] }
    public static func decode(_ bytes: [UInt8]) throws -> SwarmMessage { throw WireError.truncated }

    public mutating func tick(now: Instant) -> [ProtocolEffect<Swarm>] { [] }
    public mutating func receive(_ message: SwarmMessage, from peer: PeerName, now: Instant) -> [ProtocolEffect<Swarm>] { [] }
    public mutating func request(_ message: SwarmMessage, from peer: PeerName, token: RequestToken, now: Instant) -> [ProtocolEffect<Swarm>] { [] }
    public mutating func response(_ message: SwarmMessage?, to request: RequestID, now: Instant) -> [ProtocolEffect<Swarm>] { [] }
    public mutating func membershipChanged(_ event: MembershipEvent, now: Instant) -> [ProtocolEffect<Swarm>] { [] }
    public mutating func command(_ command: SwarmCommand, id: CommandID, now: Instant) -> [ProtocolEffect<Swarm>] { [] }
    public mutating func performed(_ outcome: SwarmActionOutcome, now: Instant) -> [ProtocolEffect<Swarm>] { [] }
}

/// The messages of the swarm channel. PLACEHOLDER: defined on the `core` branch.
public enum SwarmMessage: Sendable, Equatable {
    case placeholder
}
