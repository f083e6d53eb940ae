import Foundation
import Hummingbird
import Logging
import NIOCore
import StarlingCore
import StarlingCrypto
import StarlingSandbox

/// The agent routes of the HTTP API (interface.md): create, show, stop, logs.
///
/// An agent is a session whose creation record carries the AgentSpec; its id is the session's.
/// Every route answers on every node: one that does not serve the session forwards the request
/// to the nodes that may, once, as the session routes do.
struct AgentRoutes: Sendable {
    let agents: AgentService?
    let logger: Logger

    func register(on router: Router<BasicRequestContext>) {
        router.post("/v1/agents") { request, context in try await create(request, context) }
        router.get("/v1/agents/{id}") { request, context in try await show(request, context) }
        router.delete("/v1/agents/{id}") { request, context in try await stop(request, context) }
        router.get("/v1/agents/{id}/logs") { request, context in try await logs(request, context) }
    }

    func create(_ request: Request, _ context: BasicRequestContext) async throws -> Response {
        let body = try await SessionRoutes.collect(request)
        var spec: AgentSpec
        do { spec = try JSONDecoder().decode(AgentSpec.self, from: Data(buffer: body)) } catch {
            throw HTTPError(.badRequest, message: "the body is not an AgentSpec {\"id\"?, \"brain\": Task, \"policy\"?, \"model\"?}: \(SwarmRoutes.describe(error))")
        }
        let id = spec.id ?? secureRandomBytes(8).map { String(format: "%02x", $0) }.joined()
        guard SessionLimits.validID(id) else { throw HTTPError(.badRequest, message: "id: an agent id is 1 to 64 of [A-Za-z0-9._-]") }
        spec.id = id
        if let refusal = spec.refusal() { throw HTTPError(.badRequest, message: refusal) }
        let options = try JSONEncoder().encode(SessionOptions(policy: spec.policy, agent: spec))
        guard options.count <= SessionLimits.maxEffectBytes else {
            throw HTTPError(.contentTooLarge, message: "an AgentSpec is at most about \(SessionLimits.maxEffectBytes) bytes (it is kept in its session's creation record)")
        }
        let service = try available()
        let forwarded = request.headers[SwarmForwarder.hopHeader] != nil
        let reply = try await send(service, .create(id: id, options: [UInt8](options), forwarded: forwarded))
        if case .notHere = reply {
            return try await forward(request, body: ByteBuffer(bytes: try JSONEncoder().encode(spec)), id: id, probeSuspects: false)
        }
        guard case .created(let created, let owner) = reply else { return try SessionRoutes(gateway: nil, logger: logger).answer(reply, id: id) }
        service.checkOwnershipSoon()
        return try SwarmRoutes.json(.created, ["id": created, "session": created, "owner": owner])
    }

    func show(_ request: Request, _ context: BasicRequestContext) async throws -> Response {
        let id = try Self.agentID(context)
        let service = try available()
        let reply = try await wholeView(service, id)
        guard case .view(let view) = reply else { return try await notServed(reply, request, id) }
        guard let agent = service.agentJSON(id, view) else { throw HTTPError(.notFound, message: "no agent \(id)") }
        return try SessionRoutes.object(.ok, agent)
    }

    func stop(_ request: Request, _ context: BasicRequestContext) async throws -> Response {
        let id = try Self.agentID(context)
        let service = try available()
        let reply = try await wholeView(service, id)
        guard case .view(let view) = reply else { return try await notServed(reply, request, id) }
        guard service.agentJSON(id, view) != nil else { throw HTTPError(.notFound, message: "no agent \(id)") }
        guard let end = await service.stop(id) else { throw SwarmRoutes.unavailable("the stop could not be recorded in the agent's session; retry") }
        return try SessionRoutes.object(.accepted, ["id": id, "state": end.state ?? AgentState.stopped.rawValue])
    }

    func logs(_ request: Request, _ context: BasicRequestContext) async throws -> Response {
        let id = try Self.agentID(context)
        let service = try available()
        let reply = try await wholeView(service, id)
        guard case .view(let view) = reply else { return try await notServed(reply, request, id) }
        guard service.spec(of: id) != nil else { throw HTTPError(.notFound, message: "no agent \(id)") }
        return Response(status: .ok, headers: [.contentType: "text/plain; charset=utf-8"],
                        body: .init(byteBuffer: ByteBuffer(string: service.logs(id, view))))
    }

    /// This node does not serve the agent's session: forward (notHere), or say why not.
    func notServed(_ reply: SessionReply, _ request: Request, _ id: String) async throws -> Response {
        switch reply {
        case _ where SessionRoutes.forwards(reply, request): return try await forward(request, body: nil, id: id)
        case .notFound: throw HTTPError(.notFound, message: "no agent \(id) (deleted)")
        default: return try SessionRoutes(gateway: nil, logger: logger).answer(reply, id: id)
        }
    }

    func available() throws -> AgentService {
        guard let agents else { throw SwarmRoutes.unavailable("this node does not run agents") }
        return agents
    }

    /// The agent's session with its whole journal (`AgentService.wholeView`).
    func wholeView(_ service: AgentService, _ id: String) async throws -> SessionReply {
        do { return try await service.wholeView(id) } catch {
            throw SwarmRoutes.unavailable("the session's protocol did not answer: \(error)")
        }
    }

    func send(_ service: AgentService, _ command: SessionCommand) async throws -> SessionReply {
        do { return try await service.sessions.command(command) } catch {
            throw SwarmRoutes.unavailable("the session's protocol did not answer: \(error)")
        }
    }

    func forward(_ request: Request, body: ByteBuffer?, id: String, probeSuspects: Bool = true) async throws -> Response {
        guard let agents else { throw HolderForwarding.notHere("no agent \(id)") }
        return try await SessionForwarder(logger: logger).forward(request, body: body, id: id, gateway: agents.sessions,
                                                                  notFound: "no agent \(id)", probeSuspects: probeSuspects)
    }

    static func agentID(_ context: BasicRequestContext) throws -> String {
        guard let raw = context.parameters.get("id"), SessionLimits.validID(raw) else {
            throw HTTPError(.notFound, message: "no such agent: an agent id is 1 to 64 of [A-Za-z0-9._-]")
        }
        return raw
    }
}
