import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore

/// The context of a request that never touched a socket: an MCP tool's call into the API.
public struct MCPRequestContext: RequestContext {
    public typealias Source = MCPRequestSource
    public var coreContext: CoreRequestContextStorage
    public init(source: MCPRequestSource) { coreContext = .init(source: source) }
}

/// What an in-process request starts from: only a logger (there is no channel).
public struct MCPRequestSource: RequestContextSource {
    public let logger: Logger
}

/// One answer of the in-process API: the status and the body, collected.
struct MCPAPIAnswer: Sendable {
    var status: Int
    var body: Data
    /// The caller's stop condition was met before the body ended.
    var stopped = false
    var ok: Bool { (200..<300).contains(status) }

    /// The `error` of a `{"error": "..."}` body, else the body as text.
    var errorMessage: String {
        if let object = try? JSONSerialization.jsonObject(with: body) as? [String: Any], let message = object["error"] as? String {
            return message
        }
        return String(decoding: body.prefix(4_096), as: UTF8.self)
    }
}

/// The MCP tools call the HTTP API's own route handlers (`SwarmRoutes`, `SessionRoutes`), in
/// process: a `Router` over `MCPRequestContext` with the same routes and the same error
/// middleware, asked directly through its responder. No HTTP to itself, no second copy of the
/// validation, forwarding and policy rules: a tool does exactly what its route does, and a
/// route's 4xx or 5xx becomes the tool's error with the route's message.
struct MCPDispatch: Sendable {
    let responder: RouterResponder<MCPRequestContext>
    let logger: Logger

    /// Bytes of a route's answer a tool reads (a swarm's status page holds at most
    /// `SwarmStore.maxPageSize` results, each with bounded output); past it the tool fails.
    static let maxAnswerBytes = 96 << 20

    init(node: MeshNode, swarms: (any SwarmGateway)?, sessions: (any SessionGateway)?, swarmEvents: SwarmEventSettings, logger: Logger) {
        let router = Router(context: MCPRequestContext.self)
        router.add(middleware: JSONErrorMiddleware())
        router.get("/v1/members") { _, _ in
            MembersJSON(members: node.snapshot().members.map(MemberJSON.init))
        }
        SwarmRoutes(gateway: swarms, forwarder: SwarmForwarder(logger: logger), events: swarmEvents, logger: logger)
            .register(on: router)
        SessionRoutes(gateway: sessions, logger: logger).register(on: router)
        responder = router.buildResponder()
        self.logger = logger
    }

    /// Asks the route at `path` and collects its whole answer.
    func call(_ method: HTTPRequest.Method, _ path: String, json body: Data? = nil) async -> MCPAPIAnswer {
        await call(method, path, json: body, keep: true, until: { _ in false })
    }

    /// Asks the route at `path` and reads its answer until `stop` says a part just written is
    /// enough (an event stream's `done`), the body ends, or it passes `maxAnswerBytes`.
    /// `keep: false` keeps only the first `errorBytes` (enough for an error's message; waiting on
    /// an event stream of thousands of results needs only its end), and then no size bound applies.
    func call(_ method: HTTPRequest.Method, _ path: String, json body: Data? = nil, keep: Bool,
              until stop: @escaping @Sendable (ByteBuffer) -> Bool) async -> MCPAPIAnswer {
        var head = HTTPRequest(method: method, scheme: "http", authority: "localhost", path: path)
        if body != nil { head.headerFields[.contentType] = "application/json" }
        let request = Request(head: head, body: RequestBody(buffer: ByteBuffer(bytes: body ?? Data())))
        let context = MCPRequestContext(source: MCPRequestSource(logger: logger))
        let response: Response
        do {
            response = try await responder.respond(to: request, context: context)
        } catch let error as HTTPError {
            // The error middleware answers these; a route outside it (none here) would land here.
            return MCPAPIAnswer(status: Int(error.status.code), body: Data((error.body ?? error.status.reasonPhrase).utf8))
        } catch {
            return MCPAPIAnswer(status: 500, body: Data(#"{"error": "internal error"}"#.utf8))
        }
        let sink = CollectedBody(limit: Self.maxAnswerBytes, keep: keep, stop: stop)
        do {
            try await response.body.write(CollectingWriter(sink: sink))
        } catch is CollectedBody.Enough {
            // The caller has what it asked for.
        } catch {
            return MCPAPIAnswer(status: 503, body: Data(#"{"error": "the answer was cut off: \#(error)"}"#.utf8))
        }
        if sink.overflowed {
            return MCPAPIAnswer(status: 503, body: Data(#"{"error": "the answer is larger than \#(Self.maxAnswerBytes) bytes"}"#.utf8))
        }
        return MCPAPIAnswer(status: Int(response.status.code), body: Data(buffer: sink.buffer), stopped: sink.stopped)
    }
}

/// The bytes a route wrote, bounded. Used by one task at a time (the one writing the body),
/// never shared across tasks, so it needs no lock; it is a class only so that the writer, which
/// `ResponseBody.write` consumes, can hand its bytes back.
final class CollectedBody {
    struct Enough: Error {}
    /// What an answer that is not kept still keeps: room for an error's message.
    static let errorBytes = 4_096
    let limit: Int
    let keep: Bool
    let stop: (ByteBuffer) -> Bool
    var buffer = ByteBuffer()
    var overflowed = false
    /// `stop` said a part was enough.
    var stopped = false

    init(limit: Int, keep: Bool, stop: @escaping (ByteBuffer) -> Bool) {
        self.limit = limit
        self.keep = keep
        self.stop = stop
    }

    func append(_ part: ByteBuffer) throws {
        if keep {
            guard buffer.readableBytes + part.readableBytes <= limit else {
                overflowed = true
                throw Enough()
            }
            var copy = part
            buffer.writeBuffer(&copy)
        } else if buffer.readableBytes < Self.errorBytes {
            buffer.writeBytes(part.readableBytesView.prefix(Self.errorBytes - buffer.readableBytes))
        }
        if stop(part) {
            stopped = true
            throw Enough()
        }
    }
}

struct CollectingWriter: ResponseBodyWriter {
    let sink: CollectedBody
    mutating func write(_ buffer: ByteBuffer) async throws { try sink.append(buffer) }
    consuming func finish(_ trailingHeaders: HTTPFields?) async throws {}
}
