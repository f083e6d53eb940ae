#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// One running suspicion with Lifeguard's dynamic timeout (the paper's section 4.2; memberlist's
/// suspicion.go).
///
/// It starts at `maximum` and shrinks logarithmically towards `minimum` as independent members
/// confirm it: `timeout = max − (max − min) × log(c + 1) / log(k + 1)` after `c` of the `k`
/// expected confirmations.
public struct Suspicion: Sendable, Equatable {
    public let incarnation: UInt64
    public let startedAt: Instant
    public let minimum: Duration
    public let maximum: Duration
    /// Confirmations that would bring the timeout down to `minimum`.
    public let expectedConfirmations: Int
    /// Members whose suspicion already counted (the first suspector included).
    public private(set) var confirmers: Set<String>

    public init(incarnation: UInt64, from: String, startedAt: Instant, minimum: Duration, maximum: Duration,
                expectedConfirmations: Int) {
        precondition(minimum <= maximum)
        self.incarnation = incarnation
        self.startedAt = startedAt
        self.minimum = minimum
        self.maximum = maximum
        self.expectedConfirmations = max(0, expectedConfirmations)
        confirmers = [from]
    }

    public var confirmations: Int { confirmers.count - 1 }

    /// Counts `from` if it is new; returns whether it was.
    @discardableResult
    public mutating func confirm(from: String) -> Bool {
        guard confirmations < expectedConfirmations else { return false }
        return confirmers.insert(from).inserted
    }

    public var timeout: Duration {
        guard expectedConfirmations > 0, minimum < maximum else { return minimum }
        let fraction = log(Double(confirmations + 1)) / log(Double(expectedConfirmations + 1))
        let span = Double((maximum - minimum).nanoseconds)
        let t = maximum - .nanoseconds(Int64(span * fraction))
        return Swift.max(t, minimum)
    }

    /// `tellAccused`: an unconfirmed suspicion that comes due first asks the member itself (its
    /// "last word") and waits this much longer; see `Membership.expireSuspicions`.
    public var lastWordWait: Duration = .zero
    public var lastWordAsked: Bool { lastWordWait > .zero }
    public var isConfirmed: Bool { confirmations >= expectedConfirmations }

    public var deadline: Instant { startedAt + timeout + lastWordWait }
}


/// When a suspicion of `name` comes due; ordered by deadline, then name, so that expiry order
/// never depends on anything but the inputs.
struct SuspicionTimer: Comparable, Sendable {
    var deadline: Instant
    var name: String

    static func < (a: SuspicionTimer, b: SuspicionTimer) -> Bool {
        a.deadline != b.deadline ? a.deadline < b.deadline : a.name < b.name
    }
}
