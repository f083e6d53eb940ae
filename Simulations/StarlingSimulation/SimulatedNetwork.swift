#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import StarlingCore

/// A hostile network between simulated nodes: per-link latency from a distribution, loss,
/// duplication, reordering (through latency jitter), symmetric partitions and one-way cuts.
public struct SimulatedNetwork: Sendable {
    /// One-way latency is `minimum + exponential(mean: jitterMean)`, capped at `maximum`;
    /// the jitter reorders packets on the same link.
    public var minimumLatency: Duration = .microseconds(200)
    public var jitterMean: Duration = .milliseconds(1)
    public var maximumLatency: Duration = .milliseconds(50)
    /// Probability that a datagram is lost, and that it arrives twice.
    public var loss: Double = 0
    public var duplication: Double = 0

    /// Partition group of each node; nodes in different groups cannot talk. nil: no partition.
    var groups: [Int]?
    /// Directed links that are cut: (from, to).
    var cuts: Set<Link> = []

    struct Link: Hashable, Sendable {
        var from: Int
        var to: Int
    }

    public init() {}

    public func canDeliver(from: Int, to: Int) -> Bool {
        if let groups, groups[from] != groups[to] { return false }
        if !cuts.isEmpty, cuts.contains(Link(from: from, to: to)) { return false }
        return true
    }

    func latency(using rng: inout DeterministicRNG) -> Duration {
        let u = Double.random(in: Double.ulpOfOne..<1, using: &rng)
        let jitter = Duration.nanoseconds(Int64(-Double(jitterMean.nanoseconds) * log(u)))
        return min(minimumLatency + jitter, maximumLatency)
    }
}

