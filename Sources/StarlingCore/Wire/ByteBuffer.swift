/// Why a message could not be read. Every decoder in Starling reports one of these instead of
/// trapping; the shells count them by `reason` and drop the input.
public enum WireError: Error, Equatable, Sendable {
    case truncated
    case unsupportedVersion(UInt8)
    case unknownMessageType(UInt8)
    case tooLarge(field: String, size: Int, limit: Int)
    case invalidValue(String)
    case trailingBytes(Int)

    /// A short, stable label for metrics.
    public var reason: String {
        switch self {
        case .truncated: "truncated"
        case .unsupportedVersion: "version"
        case .unknownMessageType: "unknown_type"
        case .tooLarge: "too_large"
        case .invalidValue: "invalid"
        case .trailingBytes: "trailing"
        }
    }
}

/// Appends big-endian integers and length-prefixed strings to a byte array.
public struct ByteWriter: Sendable {
    public private(set) var bytes: [UInt8]

    public init(capacity: Int = 256) {
        bytes = []
        bytes.reserveCapacity(capacity)
    }

    public mutating func write(_ v: UInt8) { bytes.append(v) }
    public mutating func write(_ v: UInt16) { bytes.append(UInt8(v >> 8)); bytes.append(UInt8(truncatingIfNeeded: v)) }
    public mutating func write(_ v: UInt32) {
        for shift in stride(from: 24, through: 0, by: -8) { bytes.append(UInt8(truncatingIfNeeded: v >> UInt32(shift))) }
    }
    public mutating func write(_ v: UInt64) {
        for shift in stride(from: 56, through: 0, by: -8) { bytes.append(UInt8(truncatingIfNeeded: v >> UInt64(shift))) }
    }
    public mutating func write(_ v: Bool) { bytes.append(v ? 1 : 0) }

    /// A UTF-8 string with a 16-bit length. Callers bound strings before writing them.
    public mutating func write(_ s: String) {
        let utf8 = Array(s.utf8)
        precondition(utf8.count <= Int(UInt16.max), "string too long for the wire")
        write(UInt16(utf8.count))
        bytes.append(contentsOf: utf8)
    }

    public mutating func write(bytes other: [UInt8]) { bytes.append(contentsOf: other) }

    /// Overwrites a previously written 16-bit value (used for length back-patching).
    public mutating func patch(_ v: UInt16, at offset: Int) {
        bytes[offset] = UInt8(v >> 8)
        bytes[offset + 1] = UInt8(truncatingIfNeeded: v)
    }

    public var count: Int { bytes.count }
}

/// Reads what `ByteWriter` wrote. Every read is bounds-checked and throws `WireError`.
public struct ByteReader {
    private let bytes: [UInt8]
    public private(set) var offset: Int
    private let end: Int

    public init(_ bytes: [UInt8]) {
        self.bytes = bytes
        offset = 0
        end = bytes.count
    }

    private init(bytes: [UInt8], offset: Int, end: Int) {
        self.bytes = bytes
        self.offset = offset
        self.end = end
    }

    public var remaining: Int { end - offset }
    public var isAtEnd: Bool { offset == end }

    private mutating func take(_ n: Int) throws -> Int {
        guard n >= 0, remaining >= n else { throw WireError.truncated }
        let start = offset
        offset += n
        return start
    }

    public mutating func readUInt8() throws -> UInt8 { bytes[try take(1)] }

    public mutating func readUInt16() throws -> UInt16 {
        let i = try take(2)
        return UInt16(bytes[i]) << 8 | UInt16(bytes[i + 1])
    }

    public mutating func readUInt32() throws -> UInt32 {
        let i = try take(4)
        var v: UInt32 = 0
        for k in 0..<4 { v = v << 8 | UInt32(bytes[i + k]) }
        return v
    }

    public mutating func readUInt64() throws -> UInt64 {
        let i = try take(8)
        var v: UInt64 = 0
        for k in 0..<8 { v = v << 8 | UInt64(bytes[i + k]) }
        return v
    }

    public mutating func readBool() throws -> Bool {
        switch try readUInt8() {
        case 0: return false
        case 1: return true
        case let b: throw WireError.invalidValue("bool \(b)")
        }
    }

    public mutating func readString(field: String, maxBytes: Int) throws -> String {
        let n = Int(try readUInt16())
        guard n <= maxBytes else { throw WireError.tooLarge(field: field, size: n, limit: maxBytes) }
        let i = try take(n)
        guard let s = String(validating: bytes[i..<i + n], as: UTF8.self) else {
            throw WireError.invalidValue("\(field) is not UTF-8")
        }
        return s
    }

    public mutating func readBytes(_ n: Int) throws -> ArraySlice<UInt8> {
        let i = try take(n)
        return bytes[i..<i + n]
    }

    /// A sub-reader over the next `n` bytes; this reader skips past them.
    public mutating func subReader(length n: Int) throws -> ByteReader {
        let i = try take(n)
        return ByteReader(bytes: bytes, offset: i, end: i + n)
    }

    public func expectEnd() throws {
        if remaining != 0 { throw WireError.trailingBytes(remaining) }
    }
}
