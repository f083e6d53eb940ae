/// FNV-1a (64-bit) over the event trace: two runs with one seed must print the same value.
public struct TraceHash: Sendable {
    public private(set) var value: UInt64 = 0xcbf2_9ce4_8422_2325

    public init() {}

    public mutating func mix(_ x: UInt64) {
        var v = x
        for _ in 0..<8 {
            value ^= v & 0xff
            value = value &* 0x100_0000_01b3
            v >>= 8
        }
    }

    public mutating func mix(_ x: Int) { mix(UInt64(bitPattern: Int64(x))) }

    public mutating func mix(_ s: String) {
        for b in s.utf8 {
            value ^= UInt64(b)
            value = value &* 0x100_0000_01b3
        }
    }

    public var hex: String {
        let s = String(value, radix: 16)
        return String(repeating: "0", count: 16 - s.count) + s
    }
}
