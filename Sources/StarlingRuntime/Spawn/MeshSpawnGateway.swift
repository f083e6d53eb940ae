import AsyncHTTPClient
import Foundation
import Hummingbird
import NIOCore
import StarlingCore
import StarlingStore

/// A task socket's way into the mesh: the node's `SwarmGateway` for submits and cancels, its
/// store for what it holds, and the public swarm routes (with their forwarding) for reads. A
/// swarm this node does not hold is asked of its holders, once, like any forwarded read.
public struct MeshSpawnGateway: SpawnGateway {
    let swarms: any SwarmGateway
    let routes: SwarmRoutes
    /// How long a holder has to say who a swarm's parent is.
    var timeout: Duration = .seconds(5)

    init(swarms: any SwarmGateway, routes: SwarmRoutes) {
        self.swarms = swarms
        self.routes = routes
    }

    public func submit(_ draft: SwarmDraft) async -> SwarmReply {
        do { return try await swarms.submit(draft) } catch { return .refused("the swarm was not accepted: \(error)") }
    }

    public func cancel(_ id: SwarmID) async -> SwarmReply {
        do { return try await swarms.cancel(id) } catch { return .refused("the cancel did not reach the swarm's owner: \(error)") }
    }

    public func parent(of id: SwarmID) async -> TaskRef? {
        if let store = swarms.store, let record = try? store.status(id, includeTasks: false) { return record.parent }
        for holder in swarms.holders(of: id).prefix(3) where SocketAddressText.isHostPort(holder) {
            var request = HTTPClientRequest(url: "http://\(holder)/v1/swarms/\(id)?tasks=false")
            request.headers.add(name: SwarmForwarder.hopHeader.rawName, value: swarms.nodeName)
            guard let response = try? await HTTPClient.shared.execute(request, timeout: .seconds(Int64(timeout.components.seconds)), logger: nil),
                  response.status == .ok,
                  let body = try? await response.body.collect(upTo: 1 << 20),
                  let status = try? JSONDecoder().decode(SwarmStatusJSON.self, from: Data(buffer: body)) else { continue }
            return status.parent.map { TaskRef(swarm: $0.swarm, task: $0.task) }
        }
        return nil
    }

    /// The children this node holds. Children held only elsewhere are not counted here: see
    /// NOTES (the budget is exact when the parent swarm's owner also holds its children, as it
    /// does in a mesh of up to R nodes; otherwise the protocol must re-check on submit).
    public func children(of swarm: SwarmID) async throws -> [ChildSwarmRecord] {
        try swarms.store?.children(of: swarm) ?? []
    }

    public func status(request: Request, context: TaskSocketContext) async throws -> Response {
        try await routes.status(request, context)
    }

    public func events(request: Request, context: TaskSocketContext) async throws -> Response {
        try await routes.follow(request, context)
    }
}
