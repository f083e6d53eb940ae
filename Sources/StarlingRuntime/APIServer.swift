import Foundation
import Hummingbird
import HummingbirdCore
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
    let limits: Limits
    let logger: Logger
    /// The mesh's swarms, for the swarm routes; nil until the node wires it (then submits and
    /// cancels answer 503 and reads find nothing).
    let swarms: (any SwarmGateway)?
    let swarmEvents: SwarmEventSettings
    /// The mesh's sessions, for the session routes; nil: they answer 503.
    let sessions: (any SessionGateway)?
    /// Hosted agents, for the agent routes; nil: they answer 503.
    let agents: AgentService?
    /// Bounds of the MCP endpoint at `/mcp` (`MCPEndpoint`).
    public var mcpLimits = MCPEndpoint.Limits()

    /// Bounds on what clients may hold open: without them a stranger could keep thousands of idle
    /// connections (each a descriptor the mesh's own sockets also need) for as long as it likes.
    public struct Limits: Sendable {
        /// A connection with no request in flight for this long is closed.
        public var idleTimeout: Duration
        /// Past this many open connections the server stops accepting until one closes.
        public var maxConnections: Int
        /// Connections one source (an IPv4 address, an IPv6 /64) may hold at once; a new one past
        /// it is closed at once, so no single client can hold `maxConnections`.
        public var maxConnectionsPerSource: Int

        public init(idleTimeout: Duration = .seconds(60), maxConnections: Int = 8192, maxConnectionsPerSource: Int = 128) {
            self.idleTimeout = idleTimeout
            self.maxConnections = maxConnections
            self.maxConnectionsPerSource = maxConnectionsPerSource
        }
    }

    public init(node: MeshNode, registry: PrometheusCollectorRegistry, host: String, port: Int,
                limits: Limits = Limits(), swarms: (any SwarmGateway)? = nil,
                swarmEvents: SwarmEventSettings = SwarmEventSettings(), sessions: (any SessionGateway)? = nil, agents: AgentService? = nil, logger: Logger) {
        self.node = node
        self.agents = agents
        self.sessions = sessions
        self.swarms = swarms
        self.swarmEvents = swarmEvents
        self.registry = registry
        self.host = host
        self.port = port
        self.limits = limits
        self.logger = logger
    }

    func makeRouter() -> Router<BasicRequestContext> {
        let router = Router()
        router.add(middleware: JSONErrorMiddleware())
        router.add(middleware: MethodNotAllowedMiddleware())
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
        router.get("/v1/openapi.json") { _, _ in
            Response(status: .ok, headers: [.contentType: "application/json"],
                     body: .init(byteBuffer: ByteBuffer(string: OpenAPIDocument.json)))
        }
        SwarmRoutes(gateway: swarms, forwarder: SwarmForwarder(logger: logger), events: swarmEvents, logger: logger)
            .register(on: router)
        SessionRoutes(gateway: sessions, logger: logger).register(on: router)
        AgentRoutes(agents: agents, logger: logger).register(on: router)
        MCPEndpoint(limits: mcpLimits,
                    dispatch: MCPDispatch(node: node, swarms: swarms, sessions: sessions, swarmEvents: swarmEvents, logger: logger),
                    nodeName: node.configuration.name, logger: logger)
            .register(on: router)
        return router
    }

    /// Serves until the process exits. Signals are the mesh loop's to handle, not Hummingbird's.
    public func run() async throws {
        let counter = APIConnectionCounter(perSource: limits.maxConnectionsPerSource)
        let idle = TimeAmount.nanoseconds(Int64(clamping: limits.idleTimeout.components.seconds) * 1_000_000_000
                                          + limits.idleTimeout.components.attoseconds / 1_000_000_000)
        let app = Application(responder: HeadAsGetResponder(inner: makeRouter().buildResponder()),
                              server: .http1(configuration: .init(additionalChannelHandlers: [APIConnectionLimitHandler(counter: counter)],
                                                                  idleTimeout: idle)),
                              configuration: .init(address: .hostname(host, port: port), serverName: "starling",
                                                   availableConnectionsDelegate: MaximumAvailableConnections(limits.maxConnections)),
                              logger: logger)
        try await app.runService(gracefulShutdownSignals: [])
    }
}

/// Every error answer is `{"error": "..."}` with its 4xx status (interface.md); anything that is
/// not an HTTP error is the server's fault and says so without leaking internals.
struct JSONErrorMiddleware<Context: RequestContext>: RouterMiddleware {
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as HTTPError {
            var response = Self.json(error.status, error.body ?? error.status.reasonPhrase)
            // Keep what the error adds (Retry-After on a 503, say); the body is ours.
            for field in error.headers where field.name != .contentType && field.name != .contentLength { response.headers.append(field) }
            return response
        } catch {
            return Self.json(.internalServerError, "internal error")
        }
    }

    static func json(_ status: HTTPResponse.Status, _ message: String) -> Response {
        let body = (try? JSONEncoder().encode(ErrorJSON(error: message))) ?? Data(#"{"error": "error"}"#.utf8)
        return Response(status: status, headers: [.contentType: "application/json"],
                        body: .init(byteBuffer: ByteBuffer(bytes: body)))
    }
}

/// HEAD is GET without the body (RFC 9110 asks every general-purpose server to serve both), so
/// every GET route answers HEAD without a second route list to keep in step with the document.
/// It wraps the router's responder rather than being a middleware: Hummingbird resolves the route
/// (by method) before a router's middleware runs.
struct HeadAsGetResponder<Inner: HTTPResponder>: HTTPResponder {
    let inner: Inner

    @Sendable func respond(to request: Request, context: Inner.Context) async throws -> Response {
        guard request.method == .head else { return try await inner.respond(to: request, context: context) }
        var head = request.head
        head.method = .get
        let response = try await inner.respond(to: Request(head: head, body: request.body), context: context)
        return Response(status: response.status, headers: response.headers, body: .init())
    }
}

/// A known path asked with a method it does not serve is 405 with `Allow` (RFC 9110), not 404.
/// The methods come from the OpenAPI document, which tests hold equal to the router's routes.
struct MethodNotAllowedMiddleware<Context: RequestContext>: RouterMiddleware {
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as HTTPError where error.status == .notFound {
            guard let methods = OpenAPIDocument.methods(forPath: request.uri.path),
                  !methods.contains(request.method.rawValue) else { throw error }
            var response = JSONErrorMiddleware<Context>.json(.methodNotAllowed, "\(request.method) is not allowed here; use \(methods.joined(separator: ", "))")
            response.headers[.allow] = methods.joined(separator: ", ")
            return response
        }
    }
}
