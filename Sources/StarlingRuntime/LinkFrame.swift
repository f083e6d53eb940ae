import StarlingCore

/// One message on a peer link, as it travels inside a sealed envelope of kind `linkFrame`:
/// ```
/// connection:u64 sequence:u64 direction:u8 channel:u8 kind:u8 requestId:u64 payload
/// ```
/// `connection` names the link (taken from its hello's nonce), `direction` says which end sent
/// it and `sequence` counts the frames of that direction from 0. The hello is already addressed
/// and replay-protected, so binding every frame to (connection, direction, sequence) refuses a
/// frame replayed on the same link, on another link, or reflected back to its sender.
struct LinkFrame: Equatable, Sendable {
    enum Kind: UInt8, Sendable {
        case oneway = 0
        case request = 1
        case response = 2
    }

    enum Direction: UInt8, Sendable {
        /// From the end that dialled the connection.
        case fromDialer = 0
        case fromAcceptor = 1
    }

    var connection: UInt64
    var sequence: UInt64
    var direction: Direction
    var channel: Channel
    var kind: Kind
    /// The dialler's request number for `.request` and `.response`; 0 for `.oneway`.
    var requestId: UInt64
    var payload: [UInt8]

    static let headerBytes = 8 + 8 + 1 + 1 + 1 + 8

    func encoded() -> [UInt8] {
        var out = [UInt8]()
        out.reserveCapacity(Self.headerBytes + payload.count)
        Self.append(connection, to: &out)
        Self.append(sequence, to: &out)
        out.append(direction.rawValue)
        out.append(channel.rawValue)
        out.append(kind.rawValue)
        Self.append(requestId, to: &out)
        out += payload
        return out
    }

    /// Total over any bytes: a short header, an unknown kind or direction throws.
    static func decode(_ bytes: [UInt8]) throws(WireError) -> LinkFrame {
        guard bytes.count >= headerBytes else { throw .truncated }
        let connection = readUInt64(bytes, at: 0)
        let sequence = readUInt64(bytes, at: 8)
        guard let direction = Direction(rawValue: bytes[16]) else { throw .invalidValue("direction") }
        let channel = Channel(rawValue: bytes[17])
        guard let kind = Kind(rawValue: bytes[18]) else { throw .invalidValue("kind") }
        let requestId = readUInt64(bytes, at: 19)
        return LinkFrame(connection: connection, sequence: sequence, direction: direction, channel: channel, kind: kind,
                         requestId: requestId, payload: Array(bytes[headerBytes...]))
    }

    private static func append(_ x: UInt64, to out: inout [UInt8]) {
        for i in 0..<8 { out.append(UInt8(truncatingIfNeeded: x >> UInt64(56 - 8 * i))) }
    }

    private static func readUInt64(_ bytes: [UInt8], at offset: Int) -> UInt64 {
        bytes[offset..<offset + 8].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
    }
}
