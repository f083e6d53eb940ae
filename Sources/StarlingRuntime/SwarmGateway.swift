import StarlingCore
import StarlingStore

/// What the swarm routes need of the mesh: submit and cancel through the `Swarm` protocol, the
/// node's store for reads, and where else a swarm may be held.
///
/// The routes never reach into the mesh loop themselves; the node implements this (commands go
/// to the protocol through the loop's inbox and come back as replies), and tests may implement
/// it over a real store alone for input validation and paging.
public protocol SwarmGateway: Sendable {
    /// Hands a new swarm to the protocol; replied once its owner has stored it.
    func submit(_ draft: SwarmDraft) async throws -> SwarmReply
    /// Cancels a swarm wherever it is owned.
    func cancel(_ id: SwarmID) async throws -> SwarmReply
    /// This node's store: the swarms it owns or replicates. Nil when the node has none (then
    /// every read is forwarded).
    var store: SwarmStore? { get }
    /// API addresses (HOST:PORT) of the other live nodes that may hold swarm `id` (its owner and
    /// replicas on the ring, best candidate first), this node excluded. Reads of a swarm this
    /// node does not hold are forwarded there.
    func holders(of id: SwarmID) -> [String]
    /// This node's name, for the hop header of forwarded requests and in logs.
    var nodeName: String { get }
    /// API addresses (HOST:PORT) of every other live node, for the mesh-wide swarm list.
    func otherNodes() -> [String]
    /// Tells the worker what this node's other work (hosted agents' brains) holds now, so that
    /// swarm tasks start only in the slots and memory left and the node advertises only those.
    func occupy(slots: Int, memoryMB: Int)
}

extension SwarmGateway {
    /// A gateway that knows no other node lists its own store only.
    public func otherNodes() -> [String] { [] }
    /// A gateway without a worker has nothing to leave room in.
    public func occupy(slots: Int, memoryMB: Int) {}
}
