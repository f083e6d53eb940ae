import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import StarlingCore
import StarlingSandbox
import StarlingStore

/// The swarm routes of the HTTP API (interface.md): submit, read, list, cancel and follow.
///
/// Every route answers on every node. Reads and cancels of a swarm this node does not hold are
/// forwarded to the nodes that may (`SwarmGateway.holders`), once: a forwarded request carries
/// `SwarmForwarder.hopHeader` and is never forwarded again, so two nodes that each think the
/// other holds a swarm cannot bounce a request between them.
struct SwarmRoutes: Sendable {
    let gateway: (any SwarmGateway)?
    let forwarder: SwarmForwarder
    let events: SwarmEventSettings
    let logger: Logger
    /// How `GET /v1/swarms` asks the other nodes for their lists.
    var meshList = SwarmMeshList()

    /// Bytes a `POST /v1/swarms` body may have: the tasks' inputs (64 MiB) plus room for JSON
    /// escaping and the other fields. Past it: 413.
    static let maxBodyBytes = SwarmLimits.maxInputBytes + (32 << 20)

    /// Generic over the context: the MCP endpoint dispatches its tools through these same routes
    /// in-process (`MCPDispatch`).
    func register<Context: RequestContext>(on router: Router<Context>) {
        router.post("/v1/swarms") { request, context in try await submit(request, context) }
        router.get("/v1/swarms") { request, _ in try await list(request) }
        router.get("/v1/swarms/{id}") { request, context in try await status(request, context) }
        router.delete("/v1/swarms/{id}") { request, context in try await cancel(request, context) }
        router.get("/v1/swarms/{id}/events") { request, context in try await follow(request, context) }
    }

    // MARK: Routes

    func submit<Context: RequestContext>(_ request: Request, _ context: Context) async throws -> Response {
        let body: ByteBuffer
        do {
            body = try await request.body.collect(upTo: Self.maxBodyBytes)
        } catch {
            throw HTTPError(.contentTooLarge, message: "a swarm's body may have at most \(Self.maxBodyBytes) bytes")
        }
        let spec: SwarmSpec
        do {
            spec = try JSONDecoder().decode(SwarmSpec.self, from: Data(buffer: body))
        } catch {
            throw HTTPError(.badRequest, message: "the body is not a SwarmSpec: \(Self.describe(error))")
        }
        // Ids first: two tasks under one id is a conflict between valid tasks (409), which a
        // schema cannot express, not a malformed body.
        if let clash = Self.duplicateTaskID(spec) {
            throw HTTPError(.conflict, message: "task id \(clash.debugDescription) is used twice (a task without an id is named t<index>)")
        }
        do { try SwarmLimits.validate(spec) } catch { throw HTTPError(.badRequest, message: error.description) }
        let draft: SwarmDraft
        do {
            draft = try SwarmDrafting.draft(spec, nowMs: Self.wallClockMs())
        } catch {
            throw HTTPError(.badRequest, message: "the swarm cannot be encoded: \(error)")
        }
        let gateway = try requireGateway()
        let reply: SwarmReply
        do { reply = try await gateway.submit(draft) } catch { throw Self.unavailable("the swarm was not accepted: \(error)") }
        switch reply {
        case .submitted(let id, let owner):
            return try Self.json(.accepted, SwarmCreatedJSON(id: id, owner: owner))
        case .refused(let reason):
            throw Self.unavailable(reason)
        case .rejected(let reason):
            // 409: the swarm is well formed but conflicts with the mesh as it is (no member
            // offers what a task needs, or it is too large to travel between nodes).
            throw HTTPError(.conflict, message: reason)
        case .forbidden(let reason):
            throw HTTPError(.forbidden, message: reason)
        case .cancelled, .notFound:
            logger.error("swarm submit got an unexpected reply", metadata: ["reply": "\(reply)"])
            throw Self.unavailable("the swarm was not accepted")
        }
    }

    /// The mesh's swarms: this node's store merged with every other live node's
    /// (`SwarmMeshList`). A request forwarded by another node gets this node's store only.
    func list(_ request: Request) async throws -> SwarmListJSON {
        let limit = try Self.integer(request, "limit", in: 1...SwarmStore.maxListSize) ?? 100
        var local: [SwarmSummaryJSON] = []
        if let store = gateway?.store {
            let rows: [SwarmSummary]
            do { rows = try store.list(limit: limit) } catch { throw Self.unavailable("\(error)") }
            local = rows.map {
                SwarmSummaryJSON(id: $0.id, state: $0.state.name, total: $0.total, succeeded: $0.succeeded, failed: $0.failed, createdAtMs: $0.createdAtMs)
            }
        }
        guard request.headers[SwarmForwarder.hopHeader] == nil, let gateway else { return SwarmListJSON(swarms: local) }
        return await meshList.gather(local: local, peers: gateway.otherNodes(), limit: limit, from: gateway.nodeName)
    }

    /// Generic over the context: a task's socket (TaskSocketContext) serves its children's
    /// status and events through these same handlers.
    func status<Context: RequestContext>(_ request: Request, _ context: Context) async throws -> Response {
        let id = try Self.swarmID(context)
        let includeTasks = try Self.boolean(request, "tasks") ?? true
        let offset = try Self.integer(request, "offset", in: 0...Int(UInt32.max)) ?? 0
        let limit = try Self.integer(request, "limit", in: 1...SwarmStore.maxPageSize) ?? SwarmStore.maxPageSize
        guard let store = try heldLocally(id) else { return try await forward(request, id: id) }
        let found: SwarmStatusRecord?
        do { found = try store.status(id, includeTasks: includeTasks, offset: offset, limit: limit) } catch { throw Self.unavailable("\(error)") }
        guard let record = found else { return try await forward(request, id: id) }
        var undecodable = 0
        let tasks = record.tasks?.map { SwarmTaskJSON($0, undecodable: &undecodable) }
        if undecodable > 0 { logger.error("stored task results that do not decode", metadata: ["swarm": "\(id)", "count": "\(undecodable)"]) }
        var next: Int? = nil
        if let tasks, offset + tasks.count < record.counts.total { next = offset + tasks.count }
        let c = record.counts
        return try Self.json(.ok, SwarmStatusJSON(id: id, state: record.state.name, total: c.total, succeeded: c.succeeded, failed: c.failed,
                                                  running: c.running, pending: c.pending, cancelled: c.cancelled, tasks: tasks,
                                                  offset: tasks == nil ? nil : offset, nextOffset: next,
                                                  parent: record.parent.map { SwarmParentJSON(swarm: $0.swarm, task: $0.task) }))
    }

    func cancel<Context: RequestContext>(_ request: Request, _ context: Context) async throws -> Response {
        let id = try Self.swarmID(context)
        // A node that holds nothing of the swarm hands the cancel to one that does; the holder's
        // protocol then reaches the owner through the mesh.
        guard try heldLocally(id) != nil else { return try await forward(request, id: id) }
        let gateway = try requireGateway()
        let reply: SwarmReply
        do { reply = try await gateway.cancel(id) } catch { throw Self.unavailable("the cancel did not reach the swarm's owner: \(error)") }
        switch reply {
        case .cancelled:
            return try Self.json(.accepted, SwarmCreatedJSON(id: id, owner: nil))
        case .notFound:
            // Held in the store, unknown to the protocol here: a forwarder tries the next holder.
            throw HolderForwarding.notHere("no swarm \(id)")
        case .refused(let reason), .rejected(let reason), .forbidden(let reason):
            throw Self.unavailable(reason)
        case .submitted:
            throw Self.unavailable("the cancel was not carried out")
        }
    }

    func follow<Context: RequestContext>(_ request: Request, _ context: Context) async throws -> Response {
        let id = try Self.swarmID(context)
        let after = try Self.lastEventID(request)
        guard let store = try heldLocally(id) else { return try await forward(request, id: id) }
        guard let stream = SwarmEventStream(store: store, swarm: id, after: after, settings: events, logger: logger) else {
            throw HTTPError(.tooManyRequests, message: "too many event streams are open on this node; retry later")
        }
        var headers = HTTPFields()
        headers[.contentType] = "text/event-stream"
        headers[.cacheControl] = "no-store"
        return Response(status: .ok, headers: headers, body: ResponseBody { writer in try await stream.run(writer: &writer) })
    }

    // MARK: Forwarding

    /// The local store when it holds the swarm; nil when the request should go to another node.
    private func heldLocally(_ id: SwarmID) throws -> SwarmStore? {
        guard let store = gateway?.store else { return nil }
        do { return try store.has(id) ? store : nil } catch { throw Self.unavailable("\(error)") }
    }

    private func forward(_ request: Request, id: SwarmID) async throws -> Response {
        guard request.headers[SwarmForwarder.hopHeader] == nil, let gateway else {
            throw HolderForwarding.notHere("no swarm \(id)")
        }
        return try await forwarder.forward(request, to: gateway.holders(of: id), from: gateway.nodeName, notFound: "no swarm \(id)")
    }

    private func requireGateway() throws -> any SwarmGateway {
        guard let gateway else { throw Self.unavailable("this node does not run swarms") }
        return gateway
    }

    // MARK: Input

    /// The first task id used twice, counting the default "t<index>" of a task without one
    /// (a client's "t1" beside a second task without an id would otherwise share its id).
    static func duplicateTaskID(_ spec: SwarmSpec) -> String? {
        var seen = Set<String>()
        for (index, task) in spec.tasks.enumerated() where !seen.insert(task.id ?? "t\(index)").inserted {
            return task.id ?? "t\(index)"
        }
        return nil
    }

    /// A swarm id as the protocol makes them: 16 lowercase hex digits. Anything else names no
    /// swarm (404), and is never forwarded.
    static func isSwarmID(_ s: Substring) -> Bool {
        s.utf8.count == 16 && s.utf8.allSatisfy { (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) || (UInt8(ascii: "a")...UInt8(ascii: "f")).contains($0) }
    }

    static func swarmID<Context: RequestContext>(_ context: Context) throws -> SwarmID {
        guard let raw = context.parameters.get("id"), isSwarmID(Substring(raw)) else {
            throw HTTPError(.notFound, message: "no such swarm: a swarm id is 16 lowercase hex digits")
        }
        return raw
    }

    /// `?name=N` as an integer in `range`; nil when absent.
    static func integer(_ request: Request, _ name: String, in range: ClosedRange<Int>) throws -> Int? {
        let values = request.uri.queryParameters.getAll(name)
        guard let raw = values.first else { return nil }
        guard values.count == 1, let n = Int(raw), range.contains(n) else {
            throw HTTPError(.badRequest, message: "\(name) must be one integer from \(range.lowerBound) to \(range.upperBound)")
        }
        return n
    }

    /// `?name=true|false`; nil when absent.
    static func boolean(_ request: Request, _ name: String) throws -> Bool? {
        let values = request.uri.queryParameters.getAll(name)
        guard let raw = values.first else { return nil }
        guard values.count == 1, raw == "true" || raw == "false" else { throw HTTPError(.badRequest, message: "\(name) must be true or false") }
        return raw == "true"
    }

    /// The `Last-Event-ID` header (the id of the last event the client has: `EPOCH.OWNER.SEQ`,
    /// or a plain `SEQ`), the start when absent. RFC-wise any string is allowed; ours have
    /// these shapes, so others are 400.
    static func lastEventID(_ request: Request) throws -> EventCursor {
        guard let name = HTTPField.Name("Last-Event-ID"), let raw = request.headers[name] else { return .start }
        let trimmed = raw.trimmingCharacters(in: .whitespaces)
        if trimmed.isEmpty { return .start }
        guard let cursor = EventCursor(text: trimmed) else {
            throw HTTPError(.badRequest, message: "Last-Event-ID must be an event id this stream sent (EPOCH.OWNER.SEQ, or a number)")
        }
        return cursor
    }

    // MARK: Output

    static func json<T: Encodable>(_ status: HTTPResponse.Status, _ value: T) throws -> Response {
        Response(status: status, headers: [.contentType: "application/json"],
                 body: .init(byteBuffer: ByteBuffer(bytes: try JSONEncoder().encode(value))))
    }

    /// The mesh could not do it now (no owner reachable, a store write failed): 503, never a
    /// client's mistake, with a hint to retry.
    static func unavailable(_ message: String) -> HTTPError {
        HTTPError(.serviceUnavailable, headers: [.retryAfter: "1"], message: message)
    }

    /// A decoding error in words, without Swift type dumps.
    static func describe(_ error: any Error) -> String {
        guard let e = error as? DecodingError else { return "not valid JSON" }
        func path(_ keys: [any CodingKey]) -> String {
            keys.isEmpty ? "the body" : keys.map { $0.intValue.map { "[\($0)]" } ?? ".\($0.stringValue)" }.joined().trimmingCharacters(in: CharacterSet(charactersIn: "."))
        }
        switch e {
        case .typeMismatch(_, let c), .valueNotFound(_, let c): return "\(path(c.codingPath)): wrong type or null"
        case .keyNotFound(let key, let c): return "\(path(c.codingPath + [key])) is missing"
        case .dataCorrupted(let c): return c.codingPath.isEmpty ? "not valid JSON" : "\(path(c.codingPath)): \(c.debugDescription)"
        @unknown default: return "not a SwarmSpec"
        }
    }

    static func wallClockMs() -> UInt64 {
        UInt64(max(0, Date().timeIntervalSince1970 * 1000))
    }
}
