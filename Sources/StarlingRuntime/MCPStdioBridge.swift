import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import Synchronization

/// `starling mcp`: the MCP stdio transport (one JSON-RPC message per line on stdin and stdout)
/// bridged to a node's `/mcp` (Streamable HTTP), for MCP clients that launch a command.
///
/// Each line from stdin is POSTed to `/mcp` with the session's `Mcp-Session-Id` (learnt from the
/// answer to `initialize`) and `MCP-Protocol-Version`; each message of the answer (JSON, or the
/// `data` of each server-sent event) becomes one line on stdout. Requests are forwarded at once,
/// several at a time (a long `run` does not hold up a `tools/list`); `initialize`, notifications
/// and responses are forwarded in order, each before the next line is read. A request the node
/// did not answer gets a JSON-RPC error with its own id, so the client never waits forever. At
/// EOF on stdin the bridge waits for the answers in flight, ends the session (DELETE) and returns.
public struct MCPStdioBridge: Sendable {
    let url: String
    /// Requests forwarded at once; the next line is read when one finishes.
    let maxInFlight: Int
    /// Bytes of one line from stdin (the node refuses larger bodies anyway).
    static let maxLineBytes = SwarmRoutes.maxBodyBytes
    /// Bytes of one answer read from the node.
    static let maxAnswerBytes = 128 << 20

    public init(api: String, maxInFlight: Int = 32) {
        url = "http://\(api)/mcp"
        self.maxInFlight = maxInFlight
    }

    /// What the bridge learnt from the node: its session id and the negotiated version.
    final class SessionState: Sendable {
        private let state = Mutex<(id: String?, version: String?)>((nil, nil))
        var id: String? { state.withLock { $0.id } }
        var version: String? { state.withLock { $0.version } }
        func learn(id: String?) { if let id { state.withLock { $0.id = id } } }
        func learn(version: String?) { if let version { state.withLock { $0.version = version } } }
    }

    /// Serialises whole lines onto stdout.
    final class Output: Sendable {
        private let lock = Mutex(())
        func emit(_ message: Data) {
            var line = message
            line.append(UInt8(ascii: "\n"))
            lock.withLock { _ in FileHandle.standardOutput.write(line) }
        }
    }

    public func run() async throws {
        let client = HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup,
                                configuration: .init(redirectConfiguration: .disallow, timeout: .init(connect: .seconds(5))))
        let session = SessionState()
        let output = Output()
        let slots = DispatchSemaphore(value: maxInFlight)
        let lines = Self.stdinLines(slots: slots)
        await withTaskGroup(of: Void.self) { group in
            for await line in lines {
                guard !line.allSatisfy({ $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: "\r") || $0 == UInt8(ascii: "\t") }) else {
                    slots.signal()
                    continue
                }
                let message = Self.classify(line)
                if message.isRequest && !message.isInitialize {
                    group.addTask {
                        await forward(line, message, client: client, session: session, output: output)
                        slots.signal()
                    }
                } else {
                    await forward(line, message, client: client, session: session, output: output)
                    slots.signal()
                }
            }
            await group.waitForAll()
        }
        if let id = session.id {
            var request = HTTPClientRequest(url: url)
            request.method = .DELETE
            request.headers.add(name: "Mcp-Session-Id", value: id)
            if let version = session.version { request.headers.add(name: "MCP-Protocol-Version", value: version) }
            _ = try? await client.execute(request, timeout: .seconds(5))
        }
        try? await client.shutdown()
    }

    // MARK: Forwarding

    /// A JSON-RPC id: a string or a number.
    enum RequestID: Sendable {
        case string(String)
        case integer(Int)
        case number(Double)

        init?(_ json: Any?) {
            switch json {
            case let s as String: self = .string(s)
            case let n as Int: self = .integer(n)
            case let d as Double: self = .number(d)
            default: return nil
            }
        }

        var json: Any {
            switch self {
            case .string(let s): s
            case .integer(let n): n
            case .number(let d): d
            }
        }
    }

    struct Message: Sendable {
        /// The JSON-RPC id, when the line has one.
        var id: RequestID?
        var method: String?
        var isRequest: Bool { id != nil && method != nil }
        var isInitialize: Bool { method == "initialize" }
    }

    static func classify(_ line: Data) -> Message {
        guard let object = try? JSONSerialization.jsonObject(with: line) as? [String: Any] else { return Message() }
        return Message(id: RequestID(object["id"]), method: object["method"] as? String)
    }

    func forward(_ line: Data, _ message: Message, client: HTTPClient, session: SessionState, output: Output) async {
        var request = HTTPClientRequest(url: url)
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json")
        request.headers.add(name: "Accept", value: "application/json, text/event-stream")
        if let id = session.id { request.headers.add(name: "Mcp-Session-Id", value: id) }
        if let version = session.version { request.headers.add(name: "MCP-Protocol-Version", value: version) }
        request.body = .bytes(ByteBuffer(bytes: line))
        do {
            // A tool call may run as long as its task: the node bounds that, not the bridge.
            let response = try await client.execute(request, timeout: .hours(2))
            if message.isInitialize { session.learn(id: response.headers.first(name: "Mcp-Session-Id")) }
            let status = Int(response.status.code)
            if status == 202 { return }
            let type = response.headers.first(name: "Content-Type") ?? ""
            var answered = false
            if (200..<300).contains(status) && type.hasPrefix("text/event-stream") {
                var events = SSEParser()
                for try await part in response.body {
                    for data in events.feed(part) where !data.isEmpty {
                        if message.isInitialize { session.learn(version: Self.protocolVersion(data)) }
                        output.emit(data)
                        answered = true
                    }
                }
            } else {
                let body = Data(try await response.body.collect(upTo: Self.maxAnswerBytes).readableBytesView)
                if (200..<300).contains(status), !body.isEmpty {
                    if message.isInitialize { session.learn(version: Self.protocolVersion(body)) }
                    output.emit(body)
                    answered = true
                } else if !(200..<300).contains(status) {
                    // The transport's error bodies carry `"id": null`; give the request its own id.
                    let reason = Self.errorMessage(body) ?? "HTTP \(status)"
                    if message.isRequest { output.emit(Self.error(id: message.id, code: Self.errorCode(body), "\(reason) (HTTP \(status))")) }
                    answered = true
                }
            }
            if !answered, message.isRequest {
                output.emit(Self.error(id: message.id, code: -32603, "the node ended its answer without one"))
            }
        } catch {
            if message.isRequest {
                output.emit(Self.error(id: message.id, code: -32603, "starling mcp: no answer from \(url): \(error)"))
            }
        }
    }

    // MARK: JSON-RPC

    static func error(id: RequestID?, code: Int, _ message: String) -> Data {
        let object: [String: Any] = ["jsonrpc": "2.0", "id": id?.json ?? NSNull(), "error": ["code": code, "message": message]]
        return (try? JSONSerialization.data(withJSONObject: object)) ?? Data(#"{"jsonrpc":"2.0","id":null,"error":{"code":-32603,"message":"error"}}"#.utf8)
    }

    static func errorMessage(_ body: Data) -> String? {
        guard let object = try? JSONSerialization.jsonObject(with: body) as? [String: Any] else { return nil }
        if let error = object["error"] as? [String: Any] { return error["message"] as? String }
        return object["error"] as? String
    }

    static func errorCode(_ body: Data) -> Int {
        guard let object = try? JSONSerialization.jsonObject(with: body) as? [String: Any],
              let error = object["error"] as? [String: Any], let code = error["code"] as? Int else { return -32603 }
        return code
    }

    static func protocolVersion(_ message: Data) -> String? {
        guard let object = try? JSONSerialization.jsonObject(with: message) as? [String: Any],
              let result = object["result"] as? [String: Any] else { return nil }
        return result["protocolVersion"] as? String
    }

    // MARK: stdin

    /// Lines of stdin, read on a thread of their own (a blocking read), at most `slots` ahead of
    /// the forwarding: the reader takes a slot before it hands a line on, and a slot is given
    /// back when that line has been forwarded.
    static func stdinLines(slots: DispatchSemaphore) -> AsyncStream<Data> {
        let (stream, continuation) = AsyncStream<Data>.makeStream()
        let thread = Thread {
            var pending = Data()
            let input = FileHandle.standardInput
            while true {
                let chunk = input.availableData
                if chunk.isEmpty { break }
                pending.append(chunk)
                while let newline = pending.firstIndex(of: UInt8(ascii: "\n")) {
                    let line = Data(pending[pending.startIndex..<newline])
                    pending = Data(pending[pending.index(after: newline)...])
                    slots.wait()
                    continuation.yield(line)
                }
                if pending.count > maxLineBytes {
                    // A line past the bound is dropped whole: nothing sane can answer it.
                    FileHandle.standardError.write(Data("starling mcp: a line of more than \(maxLineBytes) bytes was dropped\n".utf8))
                    pending = Data()
                    while true {
                        let rest = input.availableData
                        if rest.isEmpty { break }
                        if let newline = rest.firstIndex(of: UInt8(ascii: "\n")) {
                            pending = Data(rest[rest.index(after: newline)...])
                            break
                        }
                    }
                }
            }
            if !pending.isEmpty {
                slots.wait()
                continuation.yield(pending)
            }
            continuation.finish()
        }
        thread.start()
        return stream
    }
}

/// Splits a server-sent event stream into the `data` of its events (lines of one event's data
/// joined by a newline), across reads that cut anywhere.
struct SSEParser {
    private var pending = Data()
    private var data: [Data] = []

    mutating func feed(_ buffer: ByteBuffer) -> [Data] {
        pending.append(contentsOf: buffer.readableBytesView)
        var events: [Data] = []
        while let newline = pending.firstIndex(of: UInt8(ascii: "\n")) {
            var line = Data(pending[pending.startIndex..<newline])
            pending = Data(pending[pending.index(after: newline)...])
            if line.last == UInt8(ascii: "\r") { line.removeLast() }
            if line.isEmpty {
                if !data.isEmpty { events.append(Data(data.joined(separator: [UInt8(ascii: "\n")]))) }
                data = []
            } else if line.starts(with: "data:".utf8) {
                var value = line.dropFirst(5)
                if value.first == UInt8(ascii: " ") { value = value.dropFirst() }
                data.append(Data(value))
            }
        }
        return events
    }
}
