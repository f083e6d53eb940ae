/// Lifeguard's Local Health Multiplier (LHM, the paper's section 4.3; memberlist's awareness.go).
///
/// A node that misses acks or nacks, or has to refute suspicions about itself, is probably the
/// slow one. It raises its score and so waits longer before suspecting others, which keeps a
/// stalled node from spreading false suspicions.
public struct Awareness: Sendable, Equatable {
    public private(set) var score: Int = 0
    public let max: Int

    public init(max: Int) {
        precondition(max >= 1)
        self.max = max
    }

    public mutating func apply(delta: Int) {
        score = Swift.min(Swift.max(score + delta, 0), max - 1)
        assert(score >= 0 && score < max)
    }

    /// A timeout scaled by (score + 1).
    public func scale(_ d: Duration) -> Duration { d * (score + 1) }
}
