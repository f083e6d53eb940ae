import Foundation
import HTTPTypes
import Hummingbird
import Logging
import MCP
import Metrics
import NIOCore
import StarlingSandbox
import Synchronization

/// The Model Context Protocol at `/mcp` on the API port (Streamable HTTP transport).
///
/// The SDK's `StatefulHTTPServerTransport` is framework-agnostic: it takes its own `HTTPRequest`
/// and answers an `HTTPResponse` (JSON, or an SSE stream of bytes), one transport and one
/// `Server` per MCP session. Its own HTTP app is a bare NIO server on a port of its own; the node
/// already has an API port with connection limits, idle timeouts and HEAD handling, so this
/// bridges Hummingbird requests to the transport instead: the route collects the body (bounded),
/// finds the session by `Mcp-Session-Id` (or makes one for an `initialize`), and turns the
/// transport's answer into a Hummingbird response, streaming its SSE bytes.
///
/// GET (the optional stream of server-initiated messages) is not served: this server never
/// starts a message of its own, and the spec lets a server answer 405. A GET stream would only
/// hold a connection open for nothing.
public final class MCPEndpoint: Sendable {
    public struct Limits: Sendable {
        /// MCP sessions held at once; an `initialize` past it is 503 until one ends or expires.
        public var maxSessions: Int
        /// A session with no request for this long (and no tool call running) is closed.
        public var idleTimeout: Duration
        /// Bytes of one request body; past it 413. A `spawn_swarm` carries a whole SwarmSpec
        /// (`SwarmRoutes.maxBodyBytes`, the bound of `POST /v1/swarms`).
        public var maxBodyBytes: Int
        /// Tool calls of one session running at once.
        public var maxCallsPerSession: Int
        /// Bytes one session's answers may add up to. The SDK's transport keeps every event it
        /// sent for the session's life (for `Last-Event-ID` replay); past this the session is
        /// closed after the answer that crossed it, and the client starts a new one.
        public var maxBytesPerSession: Int

        public init(maxSessions: Int = 64, idleTimeout: Duration = .seconds(600), maxBodyBytes: Int = SwarmLimits.maxInputBytes + (32 << 20),
                    maxCallsPerSession: Int = 16, maxBytesPerSession: Int = 64 << 20) {
            self.maxSessions = maxSessions
            self.idleTimeout = idleTimeout
            self.maxBodyBytes = maxBodyBytes
            self.maxCallsPerSession = maxCallsPerSession
            self.maxBytesPerSession = maxBytesPerSession
        }
    }

    let limits: Limits
    let dispatch: MCPDispatch
    let nodeName: String
    let logger: Logger
    let sessions: MCPSessionTable

    init(limits: Limits, dispatch: MCPDispatch, nodeName: String, logger: Logger) {
        self.limits = limits
        self.dispatch = dispatch
        self.nodeName = nodeName
        self.logger = logger
        sessions = MCPSessionTable(limits: limits)
    }

    static let path = "/mcp"

    func register(on router: Router<BasicRequestContext>) {
        router.post("/mcp") { request, _ in try await self.serve(request) }
        router.delete("/mcp") { request, _ in try await self.serve(request) }
    }

    func serve(_ request: Hummingbird.Request) async throws -> Hummingbird.Response {
        let body: ByteBuffer
        do { body = try await request.body.collect(upTo: limits.maxBodyBytes) } catch {
            throw HTTPError(.contentTooLarge, message: "an MCP message may have at most \(limits.maxBodyBytes) bytes")
        }
        var headers: [String: String] = [:]
        for field in request.headers {
            headers[field.name.canonicalName] = headers[field.name.canonicalName].map { "\($0), \(field.value)" } ?? field.value
        }
        let message = MCP.HTTPRequest(method: request.method.rawValue, headers: headers,
                                      body: body.readableBytes == 0 ? nil : Data(buffer: body), path: Self.path)
        let (answer, session) = await sessions.handle(message, make: makeSession)
        return response(answer, session: session)
    }

    /// A new MCP server for one session, its tools bound to this node's routes.
    @Sendable func makeSession(_ id: String) async throws -> MCPSession {
        let transport = StatefulHTTPServerTransport(sessionIDGenerator: FixedSessionID(id: id),
                                                    validationPipeline: Self.validation, logger: logger)
        let server = Server(name: "starling", version: "1", title: "Starling mesh (\(nodeName))",
                            instructions: """
                            The tools run commands in sandboxes on a mesh of machines (run, spawn_swarm, swarm_status, cancel_swarm), \
                            keep durable agent sessions with effects that run once per key (session_create, session_checkpoint, session_get, act), \
                            and list the mesh's members. The node's policy decides what may run; a refusal is a tool error with its reason.
                            """,
                            capabilities: .init(tools: .init(listChanged: false)))
        let gate = MCPCallGate(limit: limits.maxCallsPerSession)
        let tools = MCPTools(dispatch: dispatch, calls: gate)
        await server.withMethodHandler(ListTools.self) { _ in ListTools.Result(tools: MCPTools.catalogue) }
        await server.withMethodHandler(CallTool.self) { params in await tools.call(params.name, params.arguments ?? [:]) }
        try await server.start(transport: transport)
        return MCPSession(id: id, server: server, transport: transport, calls: gate)
    }

    /// The transport's answer as a Hummingbird response; an SSE body is streamed as it comes and
    /// counted against the session's byte budget.
    func response(_ answer: MCP.HTTPResponse, session: MCPSession?) -> Hummingbird.Response {
        var fields = HTTPFields()
        for (name, value) in answer.headers {
            if let field = HTTPField.Name(name) { fields[field] = value }
        }
        let status = HTTPTypes.HTTPResponse.Status(code: answer.statusCode)
        switch answer {
        case .stream(let stream, _):
            return Hummingbird.Response(status: status, headers: fields, body: ResponseBody { writer in
                for try await chunk in stream {
                    session?.sent(chunk.count)
                    try await writer.write(ByteBuffer(bytes: chunk))
                }
                try await writer.finish(nil)
            })
        default:
            let bytes = answer.bodyData ?? Data()
            session?.sent(bytes.count)
            return Hummingbird.Response(status: status, headers: fields, body: .init(byteBuffer: ByteBuffer(bytes: bytes)))
        }
    }

    /// The SDK's checks but for the `Host` header: the API may be bound to any address, and a
    /// client that is not a browser sends no `Origin`. A browser's request (it sends `Origin`) is
    /// allowed only from a page on this machine, against DNS rebinding.
    static let validation = StandardValidationPipeline(validators: [
        OriginValidator(allowedHosts: [], allowedOrigins: [
            "http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*",
            "https://127.0.0.1:*", "https://localhost:*", "https://[::1]:*",
        ]).hostAgnostic,
        AcceptHeaderValidator(mode: .sseRequired),
        ContentTypeValidator(),
        ProtocolVersionValidator(),
        SessionValidator(),
    ])
}

extension OriginValidator {
    /// This validator's `Origin` rule without its `Host` rule.
    var hostAgnostic: some HTTPRequestValidator { OriginOnlyValidator(inner: self) }
}

/// Checks only `Origin` (through the SDK's validator, given a request without `Host`).
struct OriginOnlyValidator: HTTPRequestValidator {
    let inner: OriginValidator

    func validate(_ request: MCP.HTTPRequest, context: HTTPValidationContext) -> MCP.HTTPResponse? {
        let withoutHost = request.headers.filter { $0.key.lowercased() != "host" }
        return inner.validate(MCP.HTTPRequest(method: request.method, headers: withoutHost, body: request.body, path: request.path), context: context)
    }
}

/// The id the session table chose, given to the transport that announces it.
struct FixedSessionID: SessionIDGenerator {
    let id: String
    func generateSessionID() -> String { id }
}

/// One MCP session: its server, its transport and what it has used.
final class MCPSession: Sendable {
    let id: String
    let server: Server
    let transport: StatefulHTTPServerTransport
    let calls: MCPCallGate
    private let bytes = Mutex(0)
    private let used = Mutex(ContinuousClock.now)

    init(id: String, server: Server, transport: StatefulHTTPServerTransport, calls: MCPCallGate) {
        self.id = id
        self.server = server
        self.transport = transport
        self.calls = calls
    }

    func sent(_ count: Int) {
        bytes.withLock { $0 = $0.addingReportingOverflow(count).partialValue }
        touch()
    }

    var bytesSent: Int { bytes.withLock { $0 } }
    func touch() { used.withLock { $0 = .now } }
    var lastUsed: ContinuousClock.Instant { used.withLock { $0 } }

    func close() async {
        await server.stop()
        await transport.disconnect()
    }
}

/// The MCP sessions of this node: bounded in number, closed after their idle time or their byte
/// budget. Expired sessions are swept on every request (at most `maxSessions` of them to look
/// at), so there is no timer to run.
actor MCPSessionTable {
    let limits: MCPEndpoint.Limits
    private var sessions: [String: MCPSession] = [:]
    /// Sessions being made (counted against `maxSessions` while their server starts).
    private var starting = 0
    private let held = Gauge(label: "starling_mcp_sessions")
    private let opened = Counter(label: "starling_mcp_sessions_opened_total")
    private let refused = Counter(label: "starling_mcp_sessions_refused_total")

    init(limits: MCPEndpoint.Limits) {
        self.limits = limits
        held.record(0)
    }

    var count: Int { sessions.count }

    func handle(_ request: MCP.HTTPRequest,
                make: @Sendable (String) async throws -> MCPSession) async -> (MCP.HTTPResponse, MCPSession?) {
        await sweep()
        if let id = request.header(HTTPHeaderName.sessionID) {
            guard let session = sessions[id] else {
                return (.error(statusCode: 404, .invalidRequest("Not Found: no MCP session \(id) (it ended or expired; initialize a new one)")), nil)
            }
            session.touch()
            let answer = await session.transport.handleRequest(request)
            if request.method.uppercased() == "DELETE", answer.statusCode == 200 {
                sessions[id] = nil
                held.record(sessions.count)
                await session.close()
            }
            return (answer, session)
        }
        guard request.method.uppercased() == "POST", let body = request.body, Self.isInitialize(body) else {
            return (.error(statusCode: 400, .invalidRequest("Bad Request: no \(HTTPHeaderName.sessionID) header, and the message is not an initialize request")), nil)
        }
        guard sessions.count + starting < limits.maxSessions else {
            refused.increment()
            return (.error(statusCode: 503, .internalError("this node holds \(limits.maxSessions) MCP sessions; close one (DELETE /mcp) or retry later"),
                           extraHeaders: ["Retry-After": "5"]), nil)
        }
        let id = UUID().uuidString.lowercased()
        starting += 1
        let made: MCPSession
        do { made = try await make(id) } catch {
            starting -= 1
            return (.error(statusCode: 500, .internalError("the MCP session could not start: \(error)")), nil)
        }
        starting -= 1
        let answer = await made.transport.handleRequest(request)
        if case .error = answer {
            await made.close()
            return (answer, nil)
        }
        sessions[id] = made
        opened.increment()
        held.record(sessions.count)
        return (answer, made)
    }

    /// Closes the sessions idle past their time (none with a tool call running) and those past
    /// their byte budget.
    func sweep() async {
        let now = ContinuousClock.now
        let expired = sessions.values.filter { session in
            session.bytesSent > limits.maxBytesPerSession
                || (session.calls.inFlight == 0 && now - session.lastUsed > limits.idleTimeout)
        }
        for session in expired {
            sessions[session.id] = nil
            held.record(sessions.count)
            await session.close()
        }
    }

    /// Whether a POST body is an `initialize` request (a single message, not a batch).
    static func isInitialize(_ body: Data) -> Bool {
        guard let object = try? JSONSerialization.jsonObject(with: body) as? [String: Any] else { return false }
        return object["method"] as? String == "initialize" && object["id"] != nil
    }
}
