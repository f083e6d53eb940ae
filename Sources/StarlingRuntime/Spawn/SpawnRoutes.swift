import Foundation
import Hummingbird
import NIOCore
import StarlingCore
import StarlingSandbox
import StarlingStore
import Synchronization

/// The HTTP API as one task sees it through its socket: the public routes' shapes, restricted to
/// the task's own child swarms.
///
/// - `GET /v1/health`
/// - `POST /v1/swarms`: a child swarm of this task, within its swarm's policy, budget and depth
/// - `GET /v1/swarms/ID`, `GET /v1/swarms/ID/events`, `DELETE /v1/swarms/ID`: only a swarm whose
///   parent is this task (any attempt of it); anything else is 404, whether it exists or not
///
/// Everything else (members, metrics, the OpenAPI document, sessions, the swarm list, other
/// swarms, the task's own swarm) is 404: there is no route to it, and no 405 that would tell a
/// task which other paths the node serves.
public struct SpawnRoutes: Sendable {
    /// The task the socket belongs to, and the options of the swarm it is in.
    public let task: TaskRef
    public let options: SwarmOptions
    public let nodeName: String
    let gateway: any SpawnGateway
    let ledger: SpawnLedger
    let rate: RequestRate

    public init(task: TaskRef, options: SwarmOptions, nodeName: String, gateway: any SpawnGateway, ledger: SpawnLedger,
                rate: RequestRate) {
        self.task = task
        self.options = options
        self.nodeName = nodeName
        self.gateway = gateway
        self.ledger = ledger
        self.rate = rate
    }

    func makeRouter() -> Router<TaskSocketContext> {
        let router = Router(context: TaskSocketContext.self)
        router.add(middleware: JSONErrorMiddleware())
        let routes = self
        router.get("/v1/health") { _, _ in
            HealthJSON(node: routes.nodeName, status: "ok")
        }
        router.post("/v1/swarms") { request, context in
            try await routes.create(request, context)
        }
        router.get("/v1/swarms/{id}") { request, context in
            _ = try await routes.ownChild(context)
            return try await routes.gateway.status(request: request, context: context)
        }
        router.get("/v1/swarms/{id}/events") { request, context in
            _ = try await routes.ownChild(context)
            return try await routes.gateway.events(request: request, context: context)
        }
        router.delete("/v1/swarms/{id}") { _, context in
            let id = try await routes.ownChild(context)
            switch await routes.gateway.cancel(id) {
            // As the public route answers.
            case .cancelled, .submitted: return try SwarmRoutes.json(.accepted, SwarmCreatedJSON(id: id, owner: nil))
            case .notFound: throw HTTPError(.notFound, message: "no swarm \(id)")
            case .refused(let reason), .rejected(let reason), .forbidden(let reason): throw HTTPError(.serviceUnavailable, message: reason)
            }
        }
        return router
    }

    /// The `{id}` of the request when it names a child of this task; 404 otherwise, the same
    /// answer for a swarm that exists and one that does not.
    func ownChild(_ context: TaskSocketContext) async throws -> SwarmID {
        let id = context.parameters.get("id") ?? ""
        guard SwarmRoutes.isSwarmID(Substring(id)) else { throw HTTPError(.notFound, message: "no swarm \(id.prefix(64)) among this task's children") }
        // Submitted from here by this task (its owner may not have it readable yet), or stored
        // with this task as its parent (an earlier attempt's, from wherever it ran).
        if await ledger.submitted(id, by: task) { return id }
        guard await gateway.parent(of: id) == task else {
            throw HTTPError(.notFound, message: "no swarm \(id.prefix(64)) among this task's children")
        }
        return id
    }

    func create(_ request: Request, _ context: TaskSocketContext) async throws -> Response {
        let body: ByteBuffer
        do {
            body = try await request.body.collect(upTo: context.maxUploadSize)
        } catch {
            throw HTTPError(.contentTooLarge, message: "a child swarm's body may have at most \(context.maxUploadSize) bytes")
        }
        let spec: SwarmSpec
        do {
            spec = try JSONDecoder().decode(SwarmSpec.self, from: Data(buffer: body))
        } catch {
            throw HTTPError(.badRequest, message: "the body is not a SwarmSpec: \(error)")
        }
        // The public route's checks, in its order, with its answers.
        if let clash = SwarmRoutes.duplicateTaskID(spec) {
            throw HTTPError(.conflict, message: "task id \(clash.debugDescription) is used twice (a task without an id is named t<index>)")
        }
        do { try SwarmLimits.validate(spec) } catch { throw HTTPError(.badRequest, message: error.description) }
        let routes = self
        let outcome: Result<SwarmID, HTTPError> = await ledger.exclusively(task.swarm) {
            await routes.admitAndSubmit(spec)
        }
        switch outcome {
        case .success(let id):
            let json = try JSONEncoder().encode(["id": id])
            return Response(status: .accepted, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: json)))
        case .failure(let error):
            throw error
        }
    }

    /// Under the ledger's per-parent exclusion: the budget used so far, the rules, the submit.
    func admitAndSubmit(_ spec: SwarmSpec) async -> Result<SwarmID, HTTPError> {
        var costs = await ledger.recent(task.swarm)
        let children: [ChildSwarmRecord]
        do { children = try await gateway.children(of: task.swarm) } catch {
            return .failure(HTTPError(.serviceUnavailable, message: "spawn budget unknown: the swarm's children cannot be read: \(error)"))
        }
        for child in children where child.parent.swarm == task.swarm {
            // A child whose options cannot be read makes the budget unknown: fail closed.
            guard let options = try? JSONDecoder().decode(SwarmOptions.self, from: Data(child.options)) else {
                return .failure(HTTPError(.forbidden, message: "spawn budget unknown: child swarm \(child.id) is unreadable"))
            }
            costs[child.id] = SpawnRules.cost(of: options, tasks: child.taskCount)
        }
        let used = SpawnRules.used(costs.values)
        let child: (options: SwarmOptions, cost: Int)
        switch SpawnRules.admit(spec, parent: options, used: used) {
        case .failure(let refusal): return .failure(HTTPError(.forbidden, message: refusal.message))
        case .success(let admitted): child = admitted
        }
        let draft: SwarmDraft
        do {
            draft = try SwarmDrafting.draft(spec, parent: task, options: child.options, nowMs: UInt64(max(0, Date().timeIntervalSince1970 * 1000)))
        } catch {
            return .failure(HTTPError(.badRequest, message: "\(error)"))
        }
        switch await gateway.submit(draft) {
        case .submitted(let id, _):
            await ledger.record(id, by: task, cost: child.cost)
            return .success(id)
        case .refused(let reason):
            return .failure(HTTPError(.forbidden, message: reason))
        case .rejected(let reason):
            return .failure(HTTPError(.badRequest, message: reason))
        case .forbidden(let reason):
            // The parent's owner re-checked the child against every child it holds.
            return .failure(HTTPError(.forbidden, message: reason))
        case .notFound(let id):
            return .failure(HTTPError(.notFound, message: "no swarm \(id)"))
        case .cancelled:
            return .failure(HTTPError(.conflict, message: "the swarm was cancelled"))
        }
    }
}

/// A task socket's request context: a smaller body limit than the public API's.
public struct TaskSocketContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    public init(source: Source) { coreContext = .init(source: source) }
    /// A child swarm's spec, files included.
    public var maxUploadSize: Int { TaskSocketServer.Limits.maxBodyBytes }
}

/// Requests per socket: a token bucket (`burst`, refilled at `perSecond`) and a total, both
/// answered 429 past their limit. A task cannot keep the node's gateway busy.
public final class RequestRate: Sendable {
    let burst: Double
    let perSecond: Double
    let total: Int
    private struct State { var tokens: Double; var last: ContinuousClock.Instant; var served: Int }
    private let state: Mutex<State>

    public init(burst: Int, perSecond: Double, total: Int) {
        self.burst = Double(burst)
        self.perSecond = perSecond
        self.total = total
        state = Mutex(State(tokens: Double(burst), last: .now, served: 0))
    }

    /// Takes one request's token, or says why not.
    func take() -> String? {
        state.withLock { s in
            let now = ContinuousClock.now
            let elapsed = s.last.duration(to: now)
            let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
            s.tokens = min(burst, s.tokens + seconds * perSecond)
            s.last = now
            guard s.served < total else { return "this socket has served its \(total) requests" }
            guard s.tokens >= 1 else { return "too many requests: at most \(Int(perSecond)) a second" }
            s.tokens -= 1
            s.served += 1
            return nil
        }
    }
}

/// Counts every request against the socket's rate, routed or not, and answers every error (a
/// path with no route included) as `{"error": ...}`. A responder rather than a router middleware:
/// the router resolves the route before its middleware runs.
struct TaskSocketResponder<Inner: HTTPResponder>: HTTPResponder where Inner.Context == TaskSocketContext {
    let inner: Inner
    let rate: RequestRate

    @Sendable func respond(to request: Request, context: TaskSocketContext) async throws -> Response {
        if let refusal = rate.take() { return JSONErrorMiddleware<TaskSocketContext>.json(.tooManyRequests, refusal) }
        do {
            return try await inner.respond(to: request, context: context)
        } catch let error as HTTPError {
            return JSONErrorMiddleware<TaskSocketContext>.json(error.status, error.body ?? error.status.reasonPhrase)
        } catch {
            return JSONErrorMiddleware<TaskSocketContext>.json(.internalServerError, "internal error")
        }
    }
}
