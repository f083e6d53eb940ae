import AsyncHTTPClient
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import NIOHTTP1
import StarlingCore
import StarlingCrypto
import StarlingSandbox

/// The session routes of the HTTP API (interface.md): create, checkpoint, act, show, delete.
///
/// Every route answers on every node. A node that does not serve the session (its protocol says
/// `notHere`) forwards the request, body included, to the nodes that may (`holders`), once: a
/// forwarded request carries `SwarmForwarder.hopHeader` and is never forwarded again.
struct SessionRoutes: Sendable {
    let gateway: (any SessionGateway)?
    let logger: Logger

    /// A checkpoint's body: a 1 MiB state, escaped, plus the envelope.
    static let maxBodyBytes = 3 * SessionLimits.maxStateBytes + 4_096

    /// Generic over the context: the MCP endpoint dispatches its tools through these same routes
    /// in-process (`MCPDispatch`).
    func register<Context: RequestContext>(on router: Router<Context>) {
        router.post("/v1/sessions") { request, context in try await create(request, context) }
        router.get("/v1/sessions/{id}") { request, context in try await show(request, context) }
        router.post("/v1/sessions/{id}/checkpoint") { request, context in try await checkpoint(request, context) }
        router.post("/v1/sessions/{id}/actions") { request, context in try await act(request, context) }
        router.delete("/v1/sessions/{id}") { request, context in try await delete(request, context) }
    }

    struct CreateBody: Codable {
        var id: String?
        var policy: Policy?
    }

    func create<Context: RequestContext>(_ request: Request, _ context: Context) async throws -> Response {
        let body = try await Self.collect(request)
        let spec: CreateBody
        do {
            spec = body.readableBytes == 0 ? CreateBody() : try JSONDecoder().decode(CreateBody.self, from: Data(buffer: body))
        } catch {
            throw HTTPError(.badRequest, message: "the body is not {\"id\"?, \"policy\"?}: \(SwarmRoutes.describe(error))")
        }
        let id = spec.id ?? secureRandomBytes(8).map { String(format: "%02x", $0) }.joined()
        guard SessionLimits.validID(id) else { throw HTTPError(.badRequest, message: "id: a session id is 1 to 64 of [A-Za-z0-9._-]") }
        if let policy = spec.policy {
            do throws(PolicyDenial) { try policy.validate() } catch { throw HTTPError(.badRequest, message: "policy: \(error.description)") }
        }
        let options = try JSONEncoder().encode(SessionOptions(policy: spec.policy))
        let forwarded = request.headers[SwarmForwarder.hopHeader] != nil
        let reply = try await send(.create(id: id, options: [UInt8](options), forwarded: forwarded))
        if case .notHere = reply {
            // The body goes on with the id fixed here, so every node tried creates the same one.
            let fixed = ByteBuffer(bytes: try JSONEncoder().encode(CreateBody(id: id, policy: spec.policy)))
            return try await forward(request, body: fixed, id: id, probeSuspects: false)
        }
        return try answer(reply, id: id)
    }

    func show<Context: RequestContext>(_ request: Request, _ context: Context) async throws -> Response {
        let id = try Self.sessionID(context)
        let since = try SwarmRoutes.integer(request, "since", in: 0...Int(Int64.max)).map { UInt64($0) } ?? 0
        let reply = try await send(.show(id: id, since: since))
        if Self.forwards(reply, request) { return try await forward(request, body: nil, id: id) }
        return try answer(reply, id: id)
    }

    func checkpoint<Context: RequestContext>(_ request: Request, _ context: Context) async throws -> Response {
        let id = try Self.sessionID(context)
        let body = try await Self.collect(request)
        let reply = try await send(.checkpoint(id: id, state: try Self.checkpointState(body)))
        if Self.forwards(reply, request) { return try await forward(request, body: body, id: id) }
        return try answer(reply, id: id)
    }

    struct ActBody: Codable {
        var key: String
    }

    /// An action's body, checked the same way on the public route and a brain's socket: a Task
    /// with a `key` that is valid, not one of the node's own journal keys (`AgentKeys`: a client
    /// could otherwise pre-empt an agent's end or plant a model answer its brain would replay),
    /// and whose encoding fits an effect record.
    static func parseAction(_ body: ByteBuffer) throws -> (key: String, task: TaskSpec, encoded: [UInt8]) {
        let key: String
        let task: TaskSpec
        do {
            key = try JSONDecoder().decode(ActBody.self, from: Data(buffer: body)).key
            task = try JSONDecoder().decode(TaskSpec.self, from: Data(buffer: body))
        } catch {
            throw HTTPError(.badRequest, message: "the body is not a Task with a \"key\": \(SwarmRoutes.describe(error))")
        }
        guard SessionLimits.validKey(key) else { throw HTTPError(.badRequest, message: "key: 1 to 128 printable ASCII characters") }
        guard !AgentKeys.isReserved(key) else {
            throw HTTPError(.badRequest, message: "key: keys starting with \(AgentKeys.reservedPrefixes.joined(separator: ", ")) are the node's")
        }
        do throws(InvalidTask) { try TaskLimits.validate(task) } catch { throw HTTPError(.badRequest, message: "\(error)") }
        let encoded = try JSONEncoder().encode(task)
        guard encoded.count <= SessionLimits.maxEffectBytes else {
            throw HTTPError(.contentTooLarge, message: "an effect's task is at most \(SessionLimits.maxEffectBytes) bytes")
        }
        return (key, task, [UInt8](encoded))
    }

    func act<Context: RequestContext>(_ request: Request, _ context: Context) async throws -> Response {
        let id = try Self.sessionID(context)
        let body = try await Self.collect(request)
        let action = try Self.parseAction(body)
        let reply = try await send(.act(id: id, key: action.key, task: action.encoded))
        if Self.forwards(reply, request) { return try await forward(request, body: body, id: id) }
        return try answer(reply, id: id)
    }

    func delete<Context: RequestContext>(_ request: Request, _ context: Context) async throws -> Response {
        let id = try Self.sessionID(context)
        let reply = try await send(.delete(id: id))
        if Self.forwards(reply, request) { return try await forward(request, body: nil, id: id) }
        return try answer(reply, id: id)
    }

    // MARK: Replies

    func answer(_ reply: SessionReply, id: String) throws -> Response {
        switch reply {
        case .created(let id, let owner):
            return try SwarmRoutes.json(.created, ["id": id, "owner": owner])
        case .recorded(let seq, let hash):
            return try Self.object(.ok, ["seq": seq, "hash": Self.hex(hash)])
        case .acted(let key, let replayed, let result):
            let parsed = (try? JSONSerialization.jsonObject(with: Data(result), options: [.fragmentsAllowed])) ?? NSNull()
            return try Self.object(.ok, ["key": key, "replayed": replayed, "outcome": "done", "result": parsed])
        case .outcomeUnknown(let key, let startedSeq):
            return try Self.object(.conflict, ["error": "effect \(key) was started (record \(startedSeq)) and its outcome is unknown: its owner stopped before its result was recorded. It is never run again; settle it with the service it called (STARLING_EFFECT_KEY = \(id)/\(key))",
                                               "key": key, "outcome": "unknown", "startedSeq": startedSeq])
        case .outcomeExpired(let key, let startedSeq, let resultSeq):
            return try Self.object(.conflict, ["error": "effect \(key) was done (result recorded at \(resultSeq)); its result was dropped when the session was compacted (only the most recent results are kept). It is never run again",
                                               "key": key, "outcome": "expired", "startedSeq": startedSeq, "resultSeq": resultSeq])
        case .running(let key):
            return try Self.object(.conflict, ["error": "effect \(key) is running; ask again for its result", "key": key, "outcome": "running"],
                                   retryAfter: true)
        case .view(let view):
            return try Self.object(.ok, Self.sessionJSON(view))
        case .deleted:
            return Response(status: .noContent)
        case .notHere:
            throw HolderForwarding.notHere("no session \(id)")
        case .notFound:
            // A tombstone: the session was deleted. An unmarked 404: a forwarder returns it as
            // the answer, over the 503s of copies that never heard of the delete.
            throw HTTPError(.notFound, message: "no session \(id) (deleted)")
        case .moved(let owner):
            throw SwarmRoutes.unavailable("session \(id) moved to \(owner) while this request waited here; try again")
        case .conflict(let reason):
            throw HTTPError(.conflict, message: reason)
        case .unavailable(let reason):
            throw SwarmRoutes.unavailable(reason)
        case .rejected(let reason):
            throw HTTPError(.badRequest, message: reason)
        case .stats:
            throw SwarmRoutes.unavailable("the session protocol answered something else")
        }
    }

    /// The Session JSON of interface.md, plus `epoch`, `stateSeq`, `journalMore` and, per
    /// journal entry, `outcome` and `startedSeq`.
    static func sessionJSON(_ v: SessionView) -> [String: Any] {
        let state: Any = v.state.flatMap { try? JSONSerialization.jsonObject(with: Data($0), options: [.fragmentsAllowed]) } ?? NSNull()
        let journal: [[String: Any]] = v.journal.map { entry in
            var e: [String: Any] = ["seq": entry.seq, "key": entry.key, "startedSeq": entry.startedSeq]
            switch entry.outcome {
            case .done(let result):
                e["outcome"] = "done"
                e["result"] = (try? JSONSerialization.jsonObject(with: Data(result), options: [.fragmentsAllowed])) ?? NSNull()
            case .running:
                e["outcome"] = "running"
                e["result"] = NSNull()
            case .unknown:
                e["outcome"] = "unknown"
                e["result"] = NSNull()
            case .expired:
                e["outcome"] = "expired"
                e["result"] = NSNull()
            }
            return e
        }
        return ["id": v.id, "owner": v.owner, "replicas": v.replicas, "epoch": v.epoch, "seq": v.seq, "hash": hex(v.hash),
                "signer": v.signer, "state": state, "stateSeq": v.stateSeq, "journal": journal, "journalMore": v.journalMore]
    }

    // MARK: Plumbing

    func send(_ command: SessionCommand) async throws -> SessionReply {
        guard let gateway else { throw SwarmRoutes.unavailable("this node does not run sessions") }
        do { return try await gateway.command(command) } catch {
            throw SwarmRoutes.unavailable("the session's protocol did not answer: \(error)")
        }
    }

    func forward(_ request: Request, body: ByteBuffer?, id: String, probeSuspects: Bool = true) async throws -> Response {
        guard let gateway else { throw HolderForwarding.notHere("no session \(id)") }
        return try await SessionForwarder(logger: logger).forward(request, body: body, id: id, gateway: gateway, notFound: "no session \(id)",
                                                                  probeSuspects: probeSuspects)
    }

    /// A checkpoint body's state, `{"state": any JSON}`, as the canonical JSON bytes a record
    /// carries (keys sorted), within the state bound.
    /// The state is kept as sent when the body is exactly `{"state": …}` (`CheckpointBody`:
    /// re-encoding 1 MiB cost most of a checkpoint's time); any other body is parsed and the
    /// state re-encoded.
    static func checkpointState(_ body: ByteBuffer) throws -> [UInt8] {
        let raw = CheckpointBody.state([UInt8](buffer: body))
        var bytes = raw.map { Data($0) } ?? Data()
        if raw == nil {
            guard let object = try? JSONSerialization.jsonObject(with: Data(buffer: body), options: [.fragmentsAllowed]) as? [String: Any],
                  let state = object["state"] else {
                throw HTTPError(.badRequest, message: "the body is not {\"state\": any JSON}")
            }
            bytes = try JSONSerialization.data(withJSONObject: state, options: [.fragmentsAllowed, .sortedKeys, .withoutEscapingSlashes])
        }
        guard bytes.count <= SessionLimits.maxStateBytes else {
            throw HTTPError(.contentTooLarge, message: "a state is at most \(SessionLimits.maxStateBytes) bytes of JSON")
        }
        return [UInt8](bytes)
    }

    static func collect(_ request: Request) async throws -> ByteBuffer {
        do { return try await request.body.collect(upTo: maxBodyBytes) } catch {
            throw HTTPError(.contentTooLarge, message: "a session request's body may have at most \(maxBodyBytes) bytes")
        }
    }

    /// Whether a reply sends the request on to the nodes that may serve the session: "not here",
    /// or "moved" on a request a client sent here. A request another node forwarded here is not
    /// forwarded again (`forward` answers it), and "moved" is 503 for it (`answer`).
    static func forwards(_ reply: SessionReply, _ request: Request) -> Bool {
        switch reply {
        case .notHere: true
        case .moved: request.headers[SwarmForwarder.hopHeader] == nil
        default: false
        }
    }

    static func sessionID<Context: RequestContext>(_ context: Context) throws -> String {
        guard let raw = context.parameters.get("id"), SessionLimits.validID(raw) else {
            throw HTTPError(.notFound, message: "no such session: a session id is 1 to 64 of [A-Za-z0-9._-]")
        }
        return raw
    }

    static func object(_ status: HTTPResponse.Status, _ value: [String: Any], retryAfter: Bool = false) throws -> Response {
        let data = try JSONSerialization.data(withJSONObject: value, options: [.sortedKeys, .withoutEscapingSlashes])
        var headers: HTTPFields = [.contentType: "application/json"]
        if retryAfter { headers[.retryAfter] = "1" }
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }

    static func hex(_ bytes: [UInt8]) -> String { bytes.map { String(format: "%02x", $0) }.joined() }
}

/// Forwards a session request, with its body, to the nodes that may serve the session. The
/// first answer that is neither "not here" nor 503 wins; a 503 ("resuming", "not the owner
/// here") is kept and returned only if no node did better, so a replica that does not serve the
/// session does not hide the owner behind it.
struct SessionForwarder: Sendable {
    var timeout: Duration = .seconds(15)
    /// How long a suspect holder has to answer the probe that comes before the request
    /// (`HolderForwarding.Probe`): a live node answers a local read in milliseconds, a hung one
    /// never does, and every suspect is probed at once.
    var probeTimeout: Duration = .seconds(2)
    /// The recorded owner, then the room-first order, the plain preference list and the suspects
    /// that may hold the session, R + 2 each (`SessionService.holders`).
    var maxHolders = 1 + 3 * (SessionLimits.replicas + 2)
    var maxBodyBytes = 8 << 20
    var logger: Logger

    /// A request about session `id` that this node's protocol does not serve ("not here").
    ///
    /// A client's request is forwarded to the nodes that may serve the session
    /// (`SessionGateway.holders`), the suspects among them probed first. A request another node
    /// forwarded here is answered, never forwarded again: "not here" (a marked 404), unless this
    /// node holds a copy of the session. Then it is 503: the session exists, and whoever
    /// forwarded the request may not reach its owner (views differ for a moment; the owner
    /// changes: a next owner holding a handoff whose old owner died, the replicas naming it,
    /// SessionHandoffCrashTests), so "not here" from every copy would tell the client a live
    /// session is gone. The forwarder keeps a 503 and returns it only if nobody serves. The same
    /// holds for this node's own copy when no node reached serves the session: 503, not 404. A
    /// holder's own 404 (a tombstone; on an agent route, a served session that carries no agent)
    /// is its answer, returned as it is.
    ///
    /// `probeSuspects` is false for a create: a session being created is nowhere yet, so every
    /// suspect would answer its probe "not here" and never be sent the create.
    func forward(_ request: Request, body: ByteBuffer?, id: String, gateway: any SessionGateway,
                 notFound: String, probeSuspects: Bool = true) async throws -> Response {
        let owner = gateway.recordedOwner(of: id)
        let held = { (owner: String) in
            SwarmRoutes.unavailable("session \(id) is held here, its owner recorded as \(owner), and not served here now; try again")
        }
        guard request.headers[SwarmForwarder.hopHeader] == nil else {
            if let owner { throw held(owner) }
            throw HolderForwarding.notHere(notFound)
        }
        do {
            return try await forward(request, body: body, id: id, to: gateway.holders(of: id, recordedOwner: owner),
                                     suspects: probeSuspects ? gateway.suspectAddresses() : [], from: gateway.nodeName, notFound: notFound)
        } catch let error as HTTPError where error.status == .notFound {
            // Thrown by the walk only when every holder reached said "not here".
            if let owner { throw held(owner) }
            throw error
        }
    }

    /// Forwards a request about session `id` to `holders` in turn; the `suspects` among them are
    /// probed first with a read of the session.
    func forward(_ request: Request, body: ByteBuffer?, id: String, to holders: [String], suspects: Set<String>, from node: String,
                 notFound: String) async throws -> Response {
        var hop = HolderForwarding(maxHolders: maxHolders, maxBodyBytes: maxBodyBytes, passOverUnavailable: true,
                                   unreachable: "the nodes that may serve this session cannot be reached", logger: logger)
        hop.unreachableHolderMeansUnavailable = true
        // `since` past any record: the session's head and state without its records.
        hop.probe = .init(suspects: suspects, path: "/v1/sessions/\(id)?since=\(Int64.max)", deadline: probeTimeout)
        return try await hop.forward(request, body: body, to: holders, from: node, notFound: notFound, deadline: timeout, streams: false)
    }
}
