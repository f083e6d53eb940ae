/// A point on a monotonic timeline, in nanoseconds since an arbitrary origin.
///
/// The protocols never read a clock: every input carries the `Instant` at which it happens.
/// The runtime derives it from `uv_hrtime`, the simulator from its virtual clock.
public struct Instant: Comparable, Hashable, Sendable, CustomStringConvertible {
    public var nanoseconds: Int64

    public init(nanoseconds: Int64) { self.nanoseconds = nanoseconds }

    public static let zero = Instant(nanoseconds: 0)
    /// Later than any deadline a protocol will set ("nothing scheduled"); far enough from
    /// `Int64.max` that adding a duration to it does not wrap.
    public static let distantFuture = Instant(nanoseconds: Int64.max / 2)

    public static func < (lhs: Instant, rhs: Instant) -> Bool { lhs.nanoseconds < rhs.nanoseconds }

    public static func + (lhs: Instant, rhs: Duration) -> Instant {
        Instant(nanoseconds: lhs.nanoseconds &+ rhs.nanoseconds)
    }

    public static func - (lhs: Instant, rhs: Instant) -> Duration {
        .nanoseconds(lhs.nanoseconds &- rhs.nanoseconds)
    }

    public var milliseconds: Int64 { nanoseconds / 1_000_000 }

    public var description: String { "t+\(Double(nanoseconds) / 1e9)s" }
}

extension Duration {
    /// The whole duration in nanoseconds (saturating at Int64 bounds, which is ~292 years).
    public var nanoseconds: Int64 {
        let (seconds, attoseconds) = components
        let (ns, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
        if overflow { return seconds < 0 ? .min : .max }
        return ns &+ attoseconds / 1_000_000_000
    }

    public var milliseconds: Double { Double(nanoseconds) / 1e6 }

    /// Multiplies by a real factor (used for scaled timeouts).
    public func scaled(by factor: Double) -> Duration {
        .nanoseconds(Int64((Double(nanoseconds) * factor).rounded()))
    }
}
