import Hummingbird
import Logging
import NIOCore
import Prometheus
import StarlingCore

/// The HTTP API (Hummingbird). Every handler reads the mesh through its published snapshot, so
/// no request ever blocks the loop thread.
public struct APIServer: Sendable {
    let node: MeshNode
    let registry: PrometheusCollectorRegistry
    let host: String
    let port: Int
    let logger: Logger

    public init(node: MeshNode, registry: PrometheusCollectorRegistry, host: String, port: Int, logger: Logger) {
        self.node = node
        self.registry = registry
        self.host = host
        self.port = port
        self.logger = logger
    }

    func makeRouter() -> Router<BasicRequestContext> {
        let router = Router()
        let node = self.node
        let registry = self.registry
        router.get("/v1/health") { _, _ in
            HealthJSON(node: node.configuration.name, status: "ok")
        }
        router.get("/v1/members") { _, _ in
            MembersJSON(members: node.snapshot().members.map(MemberJSON.init))
        }
        router.get("/metrics") { _, _ in
            Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4"],
                     body: .init(byteBuffer: ByteBuffer(bytes: registry.emitToBuffer())))
        }
        return router
    }

    /// Serves until the process exits. Signals are the mesh loop's to handle, not Hummingbird's.
    public func run() async throws {
        let app = Application(router: makeRouter(),
                              configuration: .init(address: .hostname(host, port: port), serverName: "starling"),
                              logger: logger)
        try await app.runService(gracefulShutdownSignals: [])
    }
}
