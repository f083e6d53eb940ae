import Foundation
import MCP
import NIOCore
import StarlingCore
import StarlingStore
import Synchronization

/// The tools the MCP endpoint offers: the mesh as an agent's hands. Each tool is one or two calls
/// into the HTTP API's own routes (`MCPDispatch`), so the node's policy, its validation and its
/// forwarding apply exactly as they do over HTTP. A refusal (a 4xx or 5xx from the route, a task
/// the policy denies) comes back as a tool error with the route's reason: `isError: true` in a
/// normal result, so the MCP session goes on.
struct MCPTools: Sendable {
    let dispatch: MCPDispatch
    /// Tool calls of one MCP session running at once; past it a call is refused at once.
    let calls: MCPCallGate

    /// How long `run` waits past the task's own timeout for its result (placement, start-up, a
    /// retry on another node).
    static let runSlackSeconds = 120.0
    /// The longest `run` or `swarm_status` waits for a swarm to finish.
    static let maxWaitSeconds = 3_600.0

    // MARK: Catalogue

    static let catalogue: [Tool] = [
        Tool(name: "run",
             description: """
             Run one command in a sandbox on the mesh (bubblewrap, no network unless allowed, cgroup limits) and wait for it to finish. \
             Returns its TaskResult: exitCode, reason (exited, timeout, oom, killed, denied), stdout, stderr, outputs (files it wrote under /task/out), \
             node, durationMs. A non-zero exit is a normal result; a task the node's policy denies, or that the mesh cannot place, is a tool error.
             """,
             inputSchema: schema(taskSchema(extra: [:], required: ["argv"])),
             annotations: .init(title: "Run a sandboxed task", destructiveHint: false, openWorldHint: false)),
        Tool(name: "spawn_swarm",
             description: """
             Submit a swarm: many sandboxed tasks spread over the mesh's nodes, retried elsewhere when a node dies. Returns {id, owner} at once; \
             follow it with swarm_status (waitSeconds waits for the end) and stop it with cancel_swarm.
             """,
             inputSchema: schema(#"""
             {"type": "object", "required": ["tasks"], "additionalProperties": false, "properties": {
               "tasks": {"type": "array", "minItems": 1, "description": "The tasks; each runs once, in its own sandbox.", "items": \#(taskJSON)},
               "maxAttempts": {"type": "integer", "minimum": 1, "description": "Attempts per task when its node dies (default: the mesh's)."},
               "policy": \#(policyJSON),
               "spawn": {"type": "object", "description": "Lets each task create child swarms through $STARLING_SOCKET within this budget.",
                         "properties": {"maxTasks": {"type": "integer", "minimum": 0}, "maxDepth": {"type": "integer", "minimum": 0}}}}}
             """#)),
        Tool(name: "swarm_status",
             description: """
             A swarm's state (running, done, cancelled), its counts, and one page of its tasks with their TaskResults. \
             waitSeconds > 0 first waits, up to that long, until the swarm is no longer running.
             """,
             inputSchema: schema(#"""
             {"type": "object", "required": ["id"], "additionalProperties": false, "properties": {
               "id": {"type": "string", "description": "The swarm id spawn_swarm returned (16 hex digits)."},
               "waitSeconds": {"type": "number", "minimum": 0, "maximum": 3600, "description": "Wait until the swarm ends, at most this long (default 0)."},
               "tasks": {"type": "boolean", "description": "false: counts only, no task list (default true)."},
               "offset": {"type": "integer", "minimum": 0, "description": "First task of the page (default 0)."},
               "limit": {"type": "integer", "minimum": 1, "description": "Tasks in the page (default and maximum: the node's page size)."}}}
             """#),
             annotations: .init(title: "Read a swarm", readOnlyHint: true)),
        Tool(name: "cancel_swarm",
             description: "Cancel a swarm: its running tasks are killed and its pending ones never start.",
             inputSchema: schema(#"""
             {"type": "object", "required": ["id"], "additionalProperties": false, "properties": {
               "id": {"type": "string", "description": "The swarm id (16 hex digits)."}}}
             """#),
             annotations: .init(title: "Cancel a swarm", destructiveHint: true, idempotentHint: true)),
        Tool(name: "session_create",
             description: """
             Create a durable agent session: a replicated state (checkpoints) and a journal of effects with keys, owned by one node and moved \
             to another when it dies. Returns {id, owner}.
             """,
             inputSchema: schema(#"""
             {"type": "object", "additionalProperties": false, "properties": {
               "id": {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}$", "description": "The session's id (default: a random one)."},
               "policy": \#(policyJSON)}}
             """#)),
        Tool(name: "session_checkpoint",
             description: "Replace a session's state with any JSON value; returns {seq, hash} once a majority of its replicas stored it.",
             inputSchema: schema(#"""
             {"type": "object", "required": ["id", "state"], "additionalProperties": false, "properties": {
               "id": {"type": "string", "description": "The session id."},
               "state": {"description": "The new state: any JSON value, at most 1 MiB."}}}
             """#),
             annotations: .init(title: "Checkpoint a session", idempotentHint: true)),
        Tool(name: "session_get",
             description: "A session: its owner, replicas, seq, state and the journal of its effects (after `since`).",
             inputSchema: schema(#"""
             {"type": "object", "required": ["id"], "additionalProperties": false, "properties": {
               "id": {"type": "string", "description": "The session id."},
               "since": {"type": "integer", "minimum": 0, "description": "Only journal entries after this seq (default 0: all)."}}}
             """#),
             annotations: .init(title: "Read a session", readOnlyHint: true)),
        Tool(name: "act",
             description: """
             Run an effect of a session: a sandboxed task recorded in the session's journal under `key`. The first call with a key runs it; \
             every later call with the same key returns the recorded result without running it again (replayed: true). \
             The task sees STARLING_EFFECT_KEY. Returns {key, replayed, result}.
             """,
             inputSchema: schema(taskSchema(extra: [
                 "session": #"{"type": "string", "description": "The session id."}"#,
                 "key": #"{"type": "string", "minLength": 1, "maxLength": 128, "description": "The effect's key: the same key never runs twice."}"#,
             ], required: ["session", "key", "argv"])),
             annotations: .init(title: "Run an effect once", idempotentHint: true)),
        Tool(name: "members",
             description: "The mesh's members as this node sees them: name, status (alive, suspect, dead, left), API address and free slots.",
             inputSchema: schema(#"{"type": "object", "additionalProperties": false, "properties": {}}"#),
             annotations: .init(title: "List the mesh's members", readOnlyHint: true)),
    ]

    static let taskJSON = taskSchema(extra: [:], required: ["argv"])

    /// A Task of interface.md, with `extra` properties beside it.
    static func taskSchema(extra: [String: String], required: [String]) -> String {
        var properties: [(String, String)] = [
            ("argv", #"{"type": "array", "minItems": 1, "items": {"type": "string"}, "description": "The command and its arguments, e.g. [\"python3\", \"-c\", \"print(6*7)\"]."}"#),
            ("stdin", #"{"type": "string", "description": "Text on the command's standard input."}"#),
            ("files", #"{"type": "object", "additionalProperties": {"type": "string"}, "description": "Files put in /task (the working directory): name to content."}"#),
            ("env", #"{"type": "object", "additionalProperties": {"type": "string"}, "description": "Environment variables."}"#),
            ("secrets", #"{"type": "array", "items": {"type": "string"}, "description": "Names of node secrets passed in as environment variables, where the policy allows."}"#),
            ("timeoutSeconds", #"{"type": "number", "exclusiveMinimum": 0, "description": "Killed after this long (reason timeout)."}"#),
            ("memoryMB", #"{"type": "integer", "minimum": 1, "description": "Memory limit (reason oom past it)."}"#),
            ("cpus", #"{"type": "number", "exclusiveMinimum": 0, "description": "CPU limit in cores."}"#),
            ("net", #"{"type": "string", "enum": ["none", "host"], "description": "Network: none (default) or the host's, where the policy allows."}"#),
            ("id", #"{"type": "string", "description": "The task's id (default t<index>)."}"#),
        ]
        properties += extra.sorted { $0.key < $1.key }
        let body = properties.map { "\"\($0.0)\": \($0.1)" }.joined(separator: ", ")
        let names = required.map { "\"\($0)\"" }.joined(separator: ", ")
        return #"{"type": "object", "additionalProperties": false, "required": [\#(names)], "properties": {\#(body)}}"#
    }

    static let policyJSON = #"""
    {"type": "object", "description": "Narrows the node's policy for this request (it can never widen it).", "additionalProperties": false, "properties": {
      "allow": {"type": "array", "items": {"type": "string"}, "description": "Programs that may run."},
      "net": {"type": "string", "enum": ["none", "host"]}, "maxMemoryMB": {"type": "integer", "minimum": 1},
      "maxCpus": {"type": "number", "exclusiveMinimum": 0}, "maxTimeoutSeconds": {"type": "number", "exclusiveMinimum": 0},
      "maxPids": {"type": "integer", "minimum": 1}, "secrets": {"type": "array", "items": {"type": "string"}}}}
    """#

    /// A JSON schema written in this file. A constant that does not parse is a programming
    /// error, caught by every test that lists the tools.
    static func schema(_ json: String) -> Value {
        guard let value = try? JSONDecoder().decode(Value.self, from: Data(json.utf8)) else {
            preconditionFailure("an MCP tool's input schema does not parse: \(json.prefix(200))")
        }
        return value
    }

    // MARK: Calls

    func call(_ name: String, _ arguments: [String: Value]) async -> CallTool.Result {
        guard calls.enter() else {
            return Self.failure("this MCP session already has \(calls.limit) tool calls running; wait for one to finish")
        }
        defer { calls.leave() }
        do {
            switch name {
            case "run": return try await run(arguments)
            case "spawn_swarm": return try await answer(dispatch.call(.post, "/v1/swarms", json: Self.json(.object(arguments))))
            case "swarm_status": return try await swarmStatus(arguments)
            case "cancel_swarm": return try await answer(dispatch.call(.delete, "/v1/swarms/\(Self.swarmID(arguments))"))
            case "session_create": return try await answer(dispatch.call(.post, "/v1/sessions", json: Self.json(.object(arguments))))
            case "session_checkpoint":
                let id = try Self.sessionID(arguments, "id")
                guard let state = arguments["state"] else { throw ToolRefusal("state is required (any JSON value)") }
                return try await answer(dispatch.call(.post, "/v1/sessions/\(id)/checkpoint", json: Self.json(.object(["state": state]))))
            case "session_get":
                let id = try Self.sessionID(arguments, "id")
                let since = try Self.integer(arguments, "since").map { "?since=\($0)" } ?? ""
                return try await answer(dispatch.call(.get, "/v1/sessions/\(id)\(since)"))
            case "act":
                let id = try Self.sessionID(arguments, "session")
                var body = arguments
                body["session"] = nil
                return try await answer(dispatch.call(.post, "/v1/sessions/\(id)/actions", json: Self.json(.object(body))))
            case "members": return try await answer(dispatch.call(.get, "/v1/members"))
            default: return Self.failure("no tool \(name.debugDescription); tools/list names them")
            }
        } catch let refusal as ToolRefusal {
            return Self.failure(refusal.reason)
        } catch {
            return Self.failure("\(error)")
        }
    }

    /// One task as a swarm of one, waited for: its TaskResult, or the reason it has none.
    func run(_ arguments: [String: Value]) async throws -> CallTool.Result {
        let submitted = await dispatch.call(.post, "/v1/swarms", json: try Self.json(.object(["tasks": .array([.object(arguments)])])))
        guard submitted.ok else { return Self.failure(submitted.errorMessage) }
        guard let id = (try? JSONSerialization.jsonObject(with: submitted.body) as? [String: Any])?["id"] as? String,
              SwarmRoutes.isSwarmID(Substring(id)) else {
            return Self.failure("the mesh accepted the task but named no swarm for it")
        }
        let timeout = arguments["timeoutSeconds"].flatMap { $0.doubleValue ?? $0.intValue.map(Double.init) } ?? 600
        let wait = min(Self.maxWaitSeconds, max(0, timeout.isFinite ? timeout : Self.maxWaitSeconds) + Self.runSlackSeconds)
        if let failure = try await waitUntilFinished(id, seconds: wait) {
            return Self.failure("\(failure) (swarm \(id))")
        }
        let status = await dispatch.call(.get, "/v1/swarms/\(id)?limit=1")
        guard status.ok else { return Self.failure(status.errorMessage) }
        guard let object = try? JSONSerialization.jsonObject(with: status.body) as? [String: Any],
              let tasks = object["tasks"] as? [[String: Any]], let task = tasks.first,
              let result = task["result"] as? [String: Any] else {
            return Self.failure("swarm \(id) ended without a result for its task (it was cancelled)")
        }
        let data = try JSONSerialization.data(withJSONObject: result, options: [.sortedKeys, .withoutEscapingSlashes])
        let value = try JSONDecoder().decode(Value.self, from: data)
        // A task the policy denied never ran: that is the tool failing, with the policy's reason.
        if result["reason"] as? String == "denied" {
            let why = (result["stderr"] as? String)?.trimmingCharacters(in: .whitespacesAndNewlines) ?? "denied by the node's policy"
            return CallTool.Result(content: [.text("the task was not run: \(why)")], structuredContent: Optional(value), isError: true)
        }
        return CallTool.Result(content: [.text(String(decoding: data, as: UTF8.self))], structuredContent: Optional(value), isError: false)
    }

    func swarmStatus(_ arguments: [String: Value]) async throws -> CallTool.Result {
        let id = try Self.swarmID(arguments)
        if let seconds = arguments["waitSeconds"].flatMap({ $0.doubleValue ?? $0.intValue.map(Double.init) }), seconds > 0 {
            guard seconds.isFinite, seconds <= Self.maxWaitSeconds else { throw ToolRefusal("waitSeconds is at most \(Int(Self.maxWaitSeconds))") }
            if let failure = try await waitUntilFinished(id, seconds: seconds), !failure.hasPrefix(Self.stillRunning) {
                return Self.failure(failure)
            }
        }
        var query: [String] = []
        if let tasks = arguments["tasks"] {
            guard let flag = tasks.boolValue else { throw ToolRefusal("tasks must be true or false") }
            query.append("tasks=\(flag)")
        }
        if let offset = try Self.integer(arguments, "offset") { query.append("offset=\(offset)") }
        if let limit = try Self.integer(arguments, "limit") { query.append("limit=\(limit)") }
        return try answer(await dispatch.call(.get, "/v1/swarms/\(id)" + (query.isEmpty ? "" : "?" + query.joined(separator: "&"))))
    }

    static let stillRunning = "still running after"

    /// Follows the swarm's event stream (the route `GET /v1/swarms/ID/events`, which wakes on the
    /// store's writes, so this is no poll) until its `done` event. Nil once it ended; else why not.
    func waitUntilFinished(_ id: String, seconds: Double) async throws -> String? {
        let deadline = ContinuousClock.now + .milliseconds(Int64(seconds * 1000))
        let dispatch = self.dispatch
        while ContinuousClock.now < deadline {
            let answer: MCPAPIAnswer? = await withTaskGroup(of: MCPAPIAnswer?.self) { group in
                group.addTask {
                    await dispatch.call(.get, "/v1/swarms/\(id)/events", keep: false) { part in
                        part.readableBytesView.starts(with: "event: done".utf8)
                    }
                }
                group.addTask {
                    try? await Task.sleep(until: deadline)
                    return nil
                }
                let first = await group.next() ?? nil
                group.cancelAll()
                return first
            }
            try Task.checkCancellation()
            guard let answer else { break }
            if answer.stopped { return nil }
            // An error answer (no such swarm, no holder reachable) ends the wait with its reason;
            // a stream that ended without `done` (its lifetime) is followed again.
            if !answer.ok { return answer.errorMessage }
        }
        return "\(Self.stillRunning) \(Int(seconds)) s"
    }

    // MARK: Answers

    /// A route's answer as a tool result: its JSON as text and as structured content, or a tool
    /// error with its message.
    func answer(_ answer: MCPAPIAnswer) throws -> CallTool.Result {
        guard answer.ok else { return Self.failure(answer.errorMessage) }
        guard !answer.body.isEmpty else { return CallTool.Result(content: [.text("{}")], structuredContent: Optional(Value.object([:])), isError: false) }
        let value = try? JSONDecoder().decode(Value.self, from: answer.body)
        let structured: Value? = if case .object = value { value } else { nil }
        return CallTool.Result(content: [.text(String(decoding: answer.body, as: UTF8.self))], structuredContent: structured, isError: false)
    }

    static func failure(_ reason: String) -> CallTool.Result {
        CallTool.Result(content: [.text(reason)], isError: true)
    }

    struct ToolRefusal: Error {
        let reason: String
        init(_ reason: String) { self.reason = reason }
    }

    // MARK: Arguments

    static func json(_ value: Value) throws -> Data { try JSONEncoder().encode(value) }

    /// A swarm id as the routes take it; anything else never becomes part of a path.
    static func swarmID(_ arguments: [String: Value]) throws -> String {
        guard let id = arguments["id"]?.stringValue, SwarmRoutes.isSwarmID(Substring(id)) else {
            throw ToolRefusal("id: a swarm id is 16 lowercase hex digits, as spawn_swarm returned it")
        }
        return id
    }

    static func sessionID(_ arguments: [String: Value], _ name: String) throws -> String {
        guard let id = arguments[name]?.stringValue, SessionLimits.validID(id) else {
            throw ToolRefusal("\(name): a session id is 1 to 64 of [A-Za-z0-9._-]")
        }
        return id
    }

    static func integer(_ arguments: [String: Value], _ name: String) throws -> Int? {
        guard let value = arguments[name] else { return nil }
        if let n = value.intValue, n >= 0 { return n }
        if let d = value.doubleValue, d >= 0, d <= Double(Int32.max), d.rounded() == d { return Int(d) }
        throw ToolRefusal("\(name) must be a non-negative integer")
    }
}

/// Counts one MCP session's tool calls in flight. The SDK's server runs every request in a task
/// of its own, so without this one client could start any number of sandboxes through one session.
final class MCPCallGate: Sendable {
    let limit: Int
    private let running = Mutex(0)

    init(limit: Int) { self.limit = limit }

    func enter() -> Bool {
        running.withLock { n in
            guard n < limit else { return false }
            n += 1
            return true
        }
    }

    func leave() { running.withLock { $0 -= 1 } }

    var inFlight: Int { running.withLock { $0 } }
}
