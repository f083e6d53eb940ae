import StarlingCore

/// Identity of one simulated stream connection between two nodes. A frame carries the identity
/// of the connection it was sent on; when the connection breaks (a crash, a partition, a cut),
/// the identity changes and every frame still in flight on the old one is lost on arrival.
struct ConnectionID: Equatable, Sendable {
    var generation: UInt64
    var lowerNodeLife: UInt64
    var upperNodeLife: UInt64
}

/// The simulated node-to-node stream transport shared by every hosted protocol: one connection
/// per node pair, frames in order and at most once within a connection, never duplicated.
struct StreamLinks: Sendable {
    private let nodeCount: Int
    /// Per unordered pair (lower * n + upper): the generation of its current connection.
    private var generation: [Int: UInt64] = [:]
    /// Per ordered pair (from * n + to): when the last frame sent that way arrives; a later frame
    /// never arrives before it (in-order delivery on top of the network's jittered latency).
    private var lastArrival: [Int: Instant] = [:]
    private var generationCounter: UInt64 = 0
    /// Bumped when a node crashes: every connection it had is gone.
    private var nodeLife: [UInt64]

    init(nodes: Int) {
        nodeCount = nodes
        nodeLife = Array(repeating: 0, count: nodes)
    }

    func connection(_ a: Int, _ b: Int) -> ConnectionID {
        let (x, y) = a <= b ? (a, b) : (b, a)
        return ConnectionID(generation: generation[x * nodeCount + y] ?? 0, lowerNodeLife: nodeLife[x], upperNodeLife: nodeLife[y])
    }

    /// When a frame sent now from `a` to `b` arrives, given the network's latency for it.
    mutating func arrival(from a: Int, to b: Int, earliest: Instant) -> Instant {
        let key = a * nodeCount + b
        let t = max(earliest, lastArrival[key] ?? earliest)
        lastArrival[key] = t
        return t
    }

    mutating func breakConnection(_ a: Int, _ b: Int) {
        let (x, y) = a <= b ? (a, b) : (b, a)
        generationCounter += 1
        generation[x * nodeCount + y] = generationCounter
    }

    mutating func breakConnections(of node: Int) {
        nodeLife[node] += 1
    }
}
