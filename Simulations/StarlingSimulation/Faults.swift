import StarlingCore

/// What a scenario can do to the nodes and the network.
public enum Fault: Sendable, Equatable, CustomStringConvertible {
    /// Stop these nodes at once (their pending traffic is lost).
    case crash([Int])
    /// Start crashed nodes again with their data (same name and address), joining through a live node.
    case restart([Int])
    /// Stall a node's process: nothing it receives is handled, no timer fires, until `resume`.
    case pause(Int)
    case resume(Int)
    /// Delay everything a node sends and receives (a slow, overloaded process).
    case slow(Int, Duration)
    case unslow(Int)
    /// Split the nodes into groups that cannot talk to each other.
    case partition([[Int]])
    case heal
    /// Cut or restore one direction of one link.
    case cut(from: Int, to: Int)
    case uncut(from: Int, to: Int)
    /// Cut or restore every link of one node, both ways.
    case isolate(Int)
    case reconnect(Int)
    case setLoss(Double)
    /// Crash whichever node owns the k-th submitted swarm at that moment (swarm scenarios).
    case crashSwarmOwner(Int)
    /// Crash the node that owns the k-th submitted swarm the moment it next records a finished
    /// task, before anything it sends after that write leaves it: the result is on the owner
    /// only (its events stream may have shown it), which is when an owner's death tests
    /// whether event ids stay stable (issue #10).
    case crashSwarmOwnerAtAFinish(Int)

    public var description: String {
        switch self {
        case .crash(let n): "crash \(n.map { "n\($0)" }.joined(separator: ","))"
        case .restart(let n): "restart \(n.map { "n\($0)" }.joined(separator: ","))"
        case .pause(let n): "pause n\(n)"
        case .resume(let n): "resume n\(n)"
        case .slow(let n, let d): "slow n\(n) +\(Int(d.milliseconds))ms"
        case .unslow(let n): "unslow n\(n)"
        case .partition(let g): "partition \(g.map { "\($0.count)" }.joined(separator: "/"))"
        case .heal: "heal"
        case .cut(let f, let t): "cut n\(f)->n\(t)"
        case .uncut(let f, let t): "uncut n\(f)->n\(t)"
        case .isolate(let n): "isolate n\(n)"
        case .reconnect(let n): "reconnect n\(n)"
        case .setLoss(let p): "loss \(Int(p * 100))%"
        case .crashSwarmOwner(let k): "crash the owner of swarm \(k)"
        case .crashSwarmOwnerAtAFinish(let k): "crash the owner of swarm \(k) at its next finish"
        }
    }
}

/// A fault at a point in the run, in protocol periods from the start.
public struct ScheduledFault: Sendable, Equatable {
    public var period: Double
    public var fault: Fault

    public init(_ period: Double, _ fault: Fault) {
        self.period = period
        self.fault = fault
    }
}
