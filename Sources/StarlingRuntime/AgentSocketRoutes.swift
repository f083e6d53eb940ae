import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import StarlingCore
import StarlingSandbox

/// The HTTP API as an agent's brain sees it through its socket (`$STARLING_SOCKET`): the public
/// routes' shapes, restricted to its own session and agent (`$STARLING_SESSION` =
/// `$STARLING_AGENT`), the swarms it spawned, and the model.
///
/// - `GET /v1/health`
/// - `GET /v1/agents/ID`
/// - `GET /v1/sessions/ID[?since=SEQ]`, `POST /v1/sessions/ID/checkpoint`, `POST /v1/sessions/ID/actions`
///   (an effect's key may not start with `model/`, `swarm/` or `starling.`: the node's own keys)
/// - `POST /v1/model/chat/completions`: forwarded to the agent's model with the node's key
///   added, journaled under the `Idempotency-Key` header or a hash of the body
/// - `POST /v1/swarms` (journaled the same way, so a resumed brain gets the same swarm back, not
///   a second one), `GET /v1/swarms/ID`, `GET /v1/swarms/ID/events`, `DELETE /v1/swarms/ID` for
///   the swarms it spawned
///
/// Everything else is 404, with no 405 to tell the brain which other paths the node serves.
struct AgentSocketRoutes: Sendable {
    let agent: String
    let service: AgentService

    func makeRouter() -> Router<TaskSocketContext> {
        let router = Router(context: TaskSocketContext.self)
        router.add(middleware: JSONErrorMiddleware())
        let routes = self
        let node = service.nodeName
        router.get("/v1/health") { _, _ in HealthJSON(node: node, status: "ok") }
        router.get("/v1/agents/{id}") { _, context in
            try routes.own(context)
            let view = try await routes.view(since: 0)
            guard let agent = routes.service.agentJSON(routes.agent, view) else { throw HTTPError(.notFound, message: "no agent \(routes.agent)") }
            return try SessionRoutes.object(.ok, agent)
        }
        router.get("/v1/sessions/{id}") { request, context in
            try routes.own(context)
            let since = try SwarmRoutes.integer(request, "since", in: 0...Int(Int64.max)).map { UInt64($0) } ?? 0
            return try SessionRoutes.object(.ok, SessionRoutes.sessionJSON(try await routes.view(since: since)))
        }
        router.post("/v1/sessions/{id}/checkpoint") { request, context in
            try routes.own(context)
            return try await routes.checkpoint(request, context)
        }
        router.post("/v1/sessions/{id}/actions") { request, context in
            try routes.own(context)
            return try await routes.act(request, context)
        }
        router.post("/v1/model/chat/completions") { request, context in
            try await routes.call(.model, request, context)
        }
        router.post("/v1/swarms") { request, context in
            try await routes.call(.swarm, request, context)
        }
        router.get("/v1/swarms/{id}") { request, context in
            try await routes.ownSwarm(context)
            guard let reads = routes.service.swarmRoutes else { throw SwarmRoutes.unavailable("this node does not run swarms") }
            return try await reads.status(request, context)
        }
        router.get("/v1/swarms/{id}/events") { request, context in
            try await routes.ownSwarm(context)
            guard let reads = routes.service.swarmRoutes else { throw SwarmRoutes.unavailable("this node does not run swarms") }
            return try await reads.follow(request, context)
        }
        router.delete("/v1/swarms/{id}") { _, context in
            let id = try await routes.ownSwarm(context)
            guard let swarms = routes.service.swarms else { throw SwarmRoutes.unavailable("this node does not run swarms") }
            switch try? await swarms.cancel(id) {
            case .cancelled?, .submitted?: return try SwarmRoutes.json(.accepted, SwarmCreatedJSON(id: id, owner: nil))
            case .notFound?: throw HTTPError(.notFound, message: "no swarm \(id)")
            default: throw SwarmRoutes.unavailable("the cancel did not reach the swarm's owner")
            }
        }
        return router
    }

    /// 404 unless `{id}` is this brain's own agent and session: the same answer whether the other exists or not.
    func own(_ context: TaskSocketContext) throws {
        guard context.parameters.get("id") == agent else {
            throw HTTPError(.notFound, message: "no session \(String((context.parameters.get("id") ?? "").prefix(64))) for this brain")
        }
    }

    /// 404 unless `{id}` is a swarm this agent's journal says it spawned.
    @discardableResult
    func ownSwarm(_ context: TaskSocketContext) async throws -> String {
        let id = context.parameters.get("id") ?? ""
        guard SwarmRoutes.isSwarmID(Substring(id)), await service.ownSwarms(agent).contains(id) else {
            throw HTTPError(.notFound, message: "no swarm \(id.prefix(64)) among this agent's swarms")
        }
        return id
    }

    func view(since: UInt64) async throws -> SessionView {
        let reply = try await send(.show(id: agent, since: since))
        guard case .view(let view) = reply else { throw try Self.refusal(reply) }
        return view
    }

    func checkpoint(_ request: Request, _ context: TaskSocketContext) async throws -> Response {
        let body = try await collect(request, upTo: SessionRoutes.maxBodyBytes)
        let reply = try await send(.checkpoint(id: agent, state: try SessionRoutes.checkpointState(body)))
        guard case .recorded = reply else { throw try Self.refusal(reply) }
        return try SessionRoutes(gateway: nil, logger: service.logger).answer(reply, id: agent)
    }

    func act(_ request: Request, _ context: TaskSocketContext) async throws -> Response {
        let body = try await collect(request, upTo: TaskSocketServer.Limits.maxBodyBytes)
        let action = try SessionRoutes.parseAction(body)
        if let refusal = service.spec(of: agent)?.spec.refusal(ofBrainTaskSecrets: action.task.secrets) {
            throw HTTPError(.forbidden, message: refusal)
        }
        let reply = try await send(.act(id: agent, key: action.key, task: action.encoded))
        switch reply {
        case .acted, .outcomeUnknown, .outcomeExpired, .running: return try SessionRoutes(gateway: nil, logger: service.logger).answer(reply, id: agent)
        default: throw try Self.refusal(reply)
        }
    }

    /// A model call or a swarm spawn: journaled, keyed by `Idempotency-Key` or the body's hash.
    func call(_ kind: BuiltinEffect.Kind, _ request: Request, _ context: TaskSocketContext) async throws -> Response {
        let limit = kind == .model ? AgentLimits.maxModelRequestBytes : TaskSocketServer.Limits.maxBodyBytes
        let body = try await collect(request, upTo: limit)
        var idempotencyKey: String?
        if let header = HTTPField.Name("Idempotency-Key"), let value = request.headers[header] {
            guard AgentKeys.validIdempotencyKey(value) else {
                throw HTTPError(.badRequest, message: "Idempotency-Key: 1 to \(AgentLimits.maxIdempotencyKeyBytes) printable ASCII characters, no spaces")
            }
            idempotencyKey = value
        }
        let bytes = [UInt8](buffer: body)
        guard let object = (try? JSONSerialization.jsonObject(with: Data(bytes))) as? [String: Any] else {
            throw HTTPError(.badRequest, message: "the body is not a JSON object")
        }
        if kind == .swarm, let spec = service.spec(of: agent)?.spec {
            for task in object["tasks"] as? [Any] ?? [] {
                let secrets = (task as? [String: Any])?["secrets"] as? [Any]
                if let refusal = spec.refusal(ofBrainTaskSecrets: secrets?.compactMap { $0 as? String }) {
                    throw HTTPError(.forbidden, message: refusal)
                }
            }
        }
        if kind == .model, object["stream"] as? Bool == true {
            throw HTTPError(.badRequest, message: "stream: a model call's answer is journaled whole; ask without streaming")
        }
        let outcome: CallOutcome
        if kind == .model {
            guard service.spec(of: agent)?.spec.model != nil else { throw HTTPError(.notFound, message: "this agent has no model") }
            outcome = await service.whileWaiting(agent) { await service.modelCall(agent: agent, body: bytes, idempotencyKey: idempotencyKey) }
        } else {
            let key = AgentKeys.callKey(prefix: AgentKeys.swarm, idempotencyKey: idempotencyKey, body: bytes)
            outcome = await service.journaledCall(agent: agent, kind: .swarm, key: key, body: bytes).0
        }
        var headers: HTTPFields = [.contentType: "application/json"]
        if outcome.answerStatus == 503 { headers[.retryAfter] = "1" }
        return Response(status: HTTPResponse.Status(code: outcome.answerStatus), headers: headers,
                        body: .init(byteBuffer: ByteBuffer(string: outcome.body)))
    }

    func send(_ command: SessionCommand) async throws -> SessionReply {
        do { return try await service.sessions.command(command) } catch {
            throw SwarmRoutes.unavailable("the session's protocol did not answer: \(error)")
        }
    }

    func collect(_ request: Request, upTo limit: Int) async throws -> ByteBuffer {
        do { return try await request.body.collect(upTo: limit) } catch {
            throw HTTPError(.contentTooLarge, message: "a request's body may have at most \(limit) bytes here")
        }
    }

    /// A reply that is not the answer asked for, as the brain's error: its session is not served
    /// here (503: the node is handing it over, and stops this brain), or the protocol's refusal.
    static func refusal(_ reply: SessionReply) throws -> HTTPError {
        switch reply {
        case .notHere, .moved: return SwarmRoutes.unavailable("this node no longer serves the agent's session")
        case .notFound: return HTTPError(.notFound, message: "the agent's session was deleted")
        case .unavailable(let reason): return SwarmRoutes.unavailable(reason)
        case .rejected(let reason): return HTTPError(.badRequest, message: reason)
        case .conflict(let reason): return HTTPError(.conflict, message: reason)
        default: return SwarmRoutes.unavailable("the session protocol answered something else")
        }
    }
}
