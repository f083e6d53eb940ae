import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import NIOCore
import Prometheus
import StarlingCore
import StarlingCrypto
import Testing
@testable import StarlingRuntime

/// `/mcp` on the API's router, in process: sessions, their bounds, and tool errors that leave the
/// session working. The node runs no swarms or sessions here (no gateway), so those tools are
/// refused by their routes; the real mesh is in IntegrationTests/MCPIntegrationTests.
@Suite("MCP endpoint")
struct MCPEndpointTests {
    static func app(_ limits: MCPEndpoint.Limits = MCPEndpoint.Limits()) throws -> some ApplicationProtocol {
        let config = MeshConfiguration(name: "mcp-test", bind: NodeAddress(host: "127.0.0.1", port: 0), api: "127.0.0.1:1",
                                       seeds: [], slots: 1, keyFile: "/dev/null", settings: .loopback)
        let node = try MeshNode(configuration: config, keyring: Keyring(keys: [.generate()]), logger: Logger(label: "test"))
        var server = APIServer(node: node, registry: PrometheusCollectorRegistry(), host: "127.0.0.1", port: 0, logger: Logger(label: "test"))
        server.mcpLimits = limits
        return Application(router: server.makeRouter())
    }

    struct Answer {
        var status: HTTPResponse.Status
        var session: String?
        /// The JSON-RPC messages of the answer (the `data` of its events, or its JSON body).
        var messages: [[String: Any]]
        var result: [String: Any]? { messages.first?["result"] as? [String: Any] }
    }

    static let initialize = #"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"test","version":"1"}}}"#

    static func post(_ client: some TestClientProtocol, _ body: String, session: String? = nil,
                     accept: String = "application/json, text/event-stream") async throws -> Answer {
        var headers: HTTPFields = [.contentType: "application/json", .accept: accept]
        if let session { headers[HTTPField.Name("Mcp-Session-Id")!] = session }
        return try await client.execute(uri: "/mcp", method: .post, headers: headers, body: ByteBuffer(string: body)) { r in
            let text = String(buffer: r.body)
            var messages: [[String: Any]] = []
            let lines = r.headers[.contentType]?.hasPrefix("text/event-stream") == true
                ? text.split(separator: "\n").filter { $0.hasPrefix("data:") }.map { $0.dropFirst(5).trimmingCharacters(in: .whitespaces) }
                : [text]
            for line in lines where !line.isEmpty {
                if let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] { messages.append(object) }
            }
            return Answer(status: r.status, session: r.headers[HTTPField.Name("Mcp-Session-Id")!], messages: messages)
        }
    }

    /// Opens a session: `initialize`, then `notifications/initialized`. With `idle` (the
    /// endpoint's idle time, when a test makes it short), an attempt whose two requests took
    /// longer than that in all and whose second one found the session gone is tried again: the
    /// session was rightly closed while the test's task stalled (seen at 200 ms in whole unit
    /// runs on 2 loaded cores), which is not what these tests check.
    static func open(_ client: some TestClientProtocol, idle: Duration? = nil) async throws -> String {
        for _ in 0..<5 {
            let began = ContinuousClock.now
            let answer = try await post(client, initialize)
            #expect(answer.status == .ok)
            let session = try #require(answer.session)
            let initialized = try await post(client, #"{"jsonrpc":"2.0","method":"notifications/initialized"}"#, session: session)
            if let idle, initialized.status == .notFound, ContinuousClock.now - began > idle { continue }
            #expect(initialized.status == .accepted)
            return session
        }
        return try #require(nil as String?, "every attempt to open a session took longer than its idle time")
    }

    static func call(_ client: some TestClientProtocol, _ session: String, id: Int, _ tool: String, _ arguments: String = "{}") async throws -> [String: Any] {
        let answer = try await post(client, #"{"jsonrpc":"2.0","id":\#(id),"method":"tools/call","params":{"name":"\#(tool)","arguments":\#(arguments)}}"#,
                                    session: session)
        #expect(answer.status == .ok)
        return try #require(answer.result, "no result in \(answer.messages)")
    }

    static func text(_ result: [String: Any]) -> String {
        ((result["content"] as? [[String: Any]]) ?? []).compactMap { $0["text"] as? String }.joined()
    }

    @Test func initializeOpensASessionWhoseToolListNamesEveryTool() async throws {
        try await Self.app().test(.router) { client in
            let answer = try await Self.post(client, Self.initialize)
            #expect(answer.status == .ok)
            #expect(answer.session != nil)
            #expect((answer.result?["serverInfo"] as? [String: Any])?["name"] as? String == "starling")
            let session = try #require(answer.session)
            let tools = try await Self.post(client, #"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#, session: session)
            let listed = try #require(tools.result?["tools"] as? [[String: Any]])
            #expect(Set(listed.compactMap { $0["name"] as? String })
                    == ["run", "spawn_swarm", "swarm_status", "cancel_swarm", "session_create", "session_checkpoint", "session_get", "act", "members"])
            for tool in listed {
                #expect((tool["inputSchema"] as? [String: Any])?["type"] as? String == "object", "\(tool["name"] ?? "?")")
                #expect(((tool["description"] as? String)?.count ?? 0) > 20, "\(tool["name"] ?? "?")")
            }
        }
    }

    @Test func aRefusalIsAToolErrorWithItsReasonAndTheSessionGoesOn() async throws {
        try await Self.app().test(.router) { client in
            let session = try await Self.open(client)
            // No swarms on this node: the route's 503 comes back as the tool's error.
            let spawned = try await Self.call(client, session, id: 3, "spawn_swarm", #"{"tasks":[{"argv":["true"]}]}"#)
            #expect(spawned["isError"] as? Bool == true)
            #expect(Self.text(spawned).contains("does not run swarms"), "\(Self.text(spawned))")
            // An id that is not a swarm id never becomes part of a path.
            let bad = try await Self.call(client, session, id: 4, "swarm_status", #"{"id":"../../v1/members"}"#)
            #expect(bad["isError"] as? Bool == true)
            #expect(Self.text(bad).contains("16 lowercase hex digits"))
            let badSession = try await Self.call(client, session, id: 5, "session_get", #"{"id":"a/b"}"#)
            #expect(badSession["isError"] as? Bool == true)
            let unknown = try await Self.call(client, session, id: 6, "nope")
            #expect(unknown["isError"] as? Bool == true)
            // And the session still answers.
            let members = try await Self.call(client, session, id: 7, "members")
            #expect(members["isError"] as? Bool == false)
            #expect((members["structuredContent"] as? [String: Any])?["members"] is [Any])
        }
    }

    @Test func sessionsAreBoundedInNumberAndEndWithDelete() async throws {
        try await Self.app(MCPEndpoint.Limits(maxSessions: 2)).test(.router) { client in
            let first = try await Self.open(client)
            _ = try await Self.open(client)
            let third = try await Self.post(client, Self.initialize)
            #expect(third.status == .serviceUnavailable)
            #expect(third.session == nil)
            let ended = try await client.execute(uri: "/mcp", method: .delete, headers: [HTTPField.Name("Mcp-Session-Id")!: first]) { $0.status }
            #expect(ended == .ok)
            let gone = try await Self.post(client, #"{"jsonrpc":"2.0","id":9,"method":"tools/list"}"#, session: first)
            #expect(gone.status == .notFound)
            let again = try await Self.post(client, Self.initialize)
            #expect(again.status == .ok)
        }
    }

    @Test func anIdleSessionIsClosed() async throws {
        let idle = Duration.milliseconds(200)
        try await Self.app(MCPEndpoint.Limits(idleTimeout: idle)).test(.router) { client in
            let session = try await Self.open(client, idle: idle)
            let lastUsed = ContinuousClock.now
            // Any request to its own session would count as use: let the idle time pass, then
            // another request (a DELETE of no session) sweeps, and the session is gone.
            try await Task.sleep(until: lastUsed + .milliseconds(300))
            let none = try await client.execute(uri: "/mcp", method: .delete, headers: [HTTPField.Name("Mcp-Session-Id")!: "none"]) { $0.status }
            #expect(none == .notFound)
            let status = try await Self.post(client, #"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#, session: session).status
            #expect(status == .notFound)
        }
    }

    /// The other side: a session in use is not closed, though it lives longer than its idle time.
    /// An attempt counts only if no two requests were more than half the idle time apart: in
    /// the whole unit run on 2 cores a step's quarter-second sleep sometimes ended seconds late
    /// (the test's own tasks stalled), and a session really idle that long is rightly closed.
    @Test func aSessionInUseStays() async throws {
        let idle = Duration.seconds(2)
        try await Self.app(MCPEndpoint.Limits(idleTimeout: idle)).test(.router) { client in
            var judged = false
            for _ in 0..<5 where !judged {
                let session = try await Self.open(client, idle: idle)
                let opened = ContinuousClock.now
                var last = opened
                var stalled = false
                var statuses: [HTTPResponse.Status] = []
                // 3 s in all, longer than the idle time, in steps of a quarter of a second.
                for id in 2..<14 {
                    try await Task.sleep(for: .milliseconds(250))
                    if ContinuousClock.now - last > idle / 2 { stalled = true; break }
                    statuses.append(try await Self.post(client, #"{"jsonrpc":"2.0","id":\#(id),"method":"tools/list"}"#, session: session).status)
                    last = ContinuousClock.now
                }
                guard !stalled else { continue }
                judged = true
                #expect(ContinuousClock.now - opened > idle)
                #expect(statuses.allSatisfy { $0 == .ok }, "\(statuses)")
            }
            #expect(judged, "every attempt stalled for more than half the idle time between two requests")
        }
    }

    @Test func theTransportsRulesAndTheBodyBound() async throws {
        try await Self.app(MCPEndpoint.Limits(maxBodyBytes: 4_096)).test(.router) { client in
            // A client that cannot read an event stream is refused.
            #expect(try await Self.post(client, Self.initialize, accept: "application/json").status == .notAcceptable)
            // No session and not an initialize.
            #expect(try await Self.post(client, #"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#).status == .badRequest)
            // A page of another site may not drive it (DNS rebinding).
            let foreign = try await client.execute(uri: "/mcp", method: .post,
                                                   headers: [.contentType: "application/json", .accept: "application/json, text/event-stream",
                                                             HTTPField.Name("Origin")!: "http://evil.example"],
                                                   body: ByteBuffer(string: Self.initialize)) { $0.status }
            #expect(foreign == .forbidden)
            let big = try await Self.post(client, #"{"jsonrpc":"2.0","id":2,"method":"tools/list","params":{"x":"\#(String(repeating: "a", count: 5_000))"}}"#)
            #expect(big.status == .contentTooLarge)
            // No stream of server-initiated messages: 405 with Allow.
            let get = try await client.execute(uri: "/mcp", method: .get, headers: [.accept: "text/event-stream"]) { ($0.status, $0.headers[.allow]) }
            #expect(get.0 == .methodNotAllowed)
            #expect(get.1 == "DELETE, POST")
        }
    }
}

@Suite("MCP pieces")
struct MCPPiecesTests {
    /// One session's tool calls in flight are bounded; a finished call frees its place.
    @Test func theCallGateAdmitsUpToItsLimit() {
        let gate = MCPCallGate(limit: 2)
        #expect(gate.enter())
        #expect(gate.enter())
        #expect(!gate.enter())
        #expect(gate.inFlight == 2)
        gate.leave()
        #expect(gate.enter())
        #expect(gate.inFlight == 2)
    }

    /// The bridge's event parser: events cut anywhere between reads, CRLF lines, a priming event
    /// with empty data (skipped by the bridge), and data on several lines.
    @Test func theBridgeSplitsAnEventStreamCutAnywhere() {
        let stream = "id: 1\nretry: 100\ndata: \n\nevent: message\r\nid: 2\r\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}\r\n\r\ndata: a\ndata: b\n\n"
        let bytes = Array(stream.utf8)
        for cut in [1, 7, 20, 33, bytes.count - 1] {
            var parser = SSEParser()
            var events = parser.feed(ByteBuffer(bytes: bytes[..<cut]))
            events += parser.feed(ByteBuffer(bytes: bytes[cut...]))
            #expect(events.map { String(decoding: $0, as: UTF8.self) } == ["", #"{"jsonrpc":"2.0","id":1,"result":{}}"#, "a\nb"], "cut at \(cut)")
        }
    }
}
