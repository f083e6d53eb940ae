import Foundation
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

/// Every error answer is `{"error": "..."}` with its 4xx status (interface.md); anything that is
/// not an HTTP error is the server's fault and says so without leaking internals.
struct JSONErrorMiddleware<Context: RequestContext>: RouterMiddleware {
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as HTTPError {
            return Self.json(error.status, error.body ?? error.status.reasonPhrase)
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
