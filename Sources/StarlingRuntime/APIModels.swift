import Hummingbird
import StarlingCore

/// JSON shapes of the public interface (../shared/interface.md).
public struct MemberJSON: Codable, Sendable, Equatable, ResponseEncodable {
    public struct Capacity: Codable, Sendable, Equatable {
        public var slots: Int
        public var free: Int
    }

    public var name: String
    public var gossip: String
    public var api: String
    public var status: String
    public var incarnation: UInt64
    public var capacity: Capacity
    /// The member's Ed25519 public key as 64 hex digits, when it gossips one (issue #11 item 1).
    public var identityKey: String?

    public init(_ m: Member) {
        name = m.name
        gossip = m.address.description
        api = m.metadata.api
        status = m.status.description
        incarnation = m.incarnation
        capacity = Capacity(slots: Int(m.metadata.slots), free: Int(m.metadata.free))
        identityKey = m.metadata.identityKeyHex
    }
}

public struct MembersJSON: Codable, Sendable, ResponseEncodable {
    public var members: [MemberJSON]
    public init(members: [MemberJSON]) { self.members = members }
}

public struct HealthJSON: Codable, Sendable, ResponseEncodable {
    public var node: String
    public var status: String
}

public struct ErrorJSON: Codable, Sendable, ResponseEncodable {
    public var error: String
    public init(error: String) { self.error = error }
}
