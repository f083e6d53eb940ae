import AsyncHTTPClient
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import NIOHTTP1

/// Sends a swarm request this node cannot answer to the nodes that may hold the swarm, and
/// passes their answer back: the client never needs to know where a swarm lives.
///
/// Why AsyncHTTPClient (in the machine's package list) and not URLSession: it runs on NIO, as
/// Hummingbird does, streams a response body as an async sequence (the events route forwards an
/// open-ended server-sent event stream, which FoundationNetworking's URLSession on Linux cannot
/// hand out piece by piece without a delegate), takes a deadline per request, and pools
/// connections per host with a bound.
struct SwarmForwarder: Sendable {
    /// One client for the process, never shut down (it lives as long as the node). A holder
    /// that refuses the connection fails at once (AsyncHTTPClient would otherwise retry the
    /// connection until the request's deadline, which for an event stream is minutes), and a
    /// connect takes at most a second: the next holder is tried instead.
    static let client: HTTPClient = {
        var configuration = HTTPClient.Configuration.singletonConfiguration
        configuration.connectionPool.retryConnectionEstablishment = false
        configuration.timeout.connect = .seconds(1)
        configuration.redirectConfiguration = .disallow
        return HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: configuration)
    }()

    /// Set on a forwarded request (to the forwarding node's name): a node never forwards a
    /// request that carries it, so a request takes at most one hop.
    static let hopHeader = HTTPField.Name("X-Starling-Forwarded")!

    /// How long one holder has to answer a read or a cancel.
    var timeout: Duration = .seconds(5)
    /// How long a forwarded event stream may stay open (a little longer than a stream's own
    /// lifetime on the holder, which closes it first).
    var streamTimeout: Duration = .seconds(660)
    /// How long one holder has to carry out a forwarded cancel.
    var cancelTimeout: Duration = .seconds(120)
    /// Holders tried, in order, before giving up.
    var maxHolders = 3
    /// Bytes of a forwarded answer that is not a stream (a status page is bounded by the
    /// store's page budget; this is the backstop).
    var maxBodyBytes = 64 << 20
    var logger: Logger

    /// Tries each holder in turn. The first answer that is not a marked "not here" 404 is the
    /// answer; 404 when every holder that answered said "not here" (or there is none); 503 when
    /// none could be reached.
    func forward(_ request: Request, to holders: [String], from node: String, notFound: String) async throws -> Response {
        let streaming = request.uri.path.hasSuffix("/events")
        // A cancel waits for the holder's protocol, whose own deadline grows with the swarm
        // (1 ms a task): a 100,000-task cancel must not time out here first.
        let deadline = streaming ? streamTimeout : request.method == .delete ? max(timeout, cancelTimeout) : timeout
        let hop = HolderForwarding(maxHolders: maxHolders, maxBodyBytes: maxBodyBytes, passOverUnavailable: false,
                                   unreachable: "the nodes that hold this swarm cannot be reached", logger: logger)
        return try await hop.forward(request, body: nil, to: holders, from: node, notFound: notFound, deadline: deadline, streams: streaming)
    }

    static func nanoseconds(_ d: Duration) -> Int64 {
        d.components.seconds.multipliedReportingOverflow(by: 1_000_000_000).partialValue + d.components.attoseconds / 1_000_000_000
    }
}

/// Checks an API address from the member table before it goes into a URL: `HOST:PORT` with a
/// host of letters, digits, '.', '-' (or a bracketed IPv6 address) and a port.
enum SocketAddressText {
    static func isHostPort(_ s: String) -> Bool {
        guard let colon = s.lastIndex(of: ":"), let port = Int(s[s.index(after: colon)...]), (1...65_535).contains(port) else { return false }
        let host = s[..<colon]
        guard !host.isEmpty, host.utf8.count <= 253 else { return false }
        if host.hasPrefix("[") { return host.hasSuffix("]") && host.dropFirst().dropLast().allSatisfy { $0.isHexDigit || $0 == ":" || $0 == "." } }
        return host.allSatisfy { ($0.isASCII && ($0.isLetter || $0.isNumber)) || $0 == "." || $0 == "-" }
    }
}
