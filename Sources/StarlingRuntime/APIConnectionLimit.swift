import NIOCore
import Synchronization

/// Open HTTP API connections per source (an IPv4 address or an IPv6 /64, as `SourceKey`
/// groups them). Without it, one client could hold every connection the server accepts
/// (`--api-max-connections`) and lock every other client out for as long as it keeps them busy.
final class APIConnectionCounter: Sendable {
    let perSource: Int
    private let open = Mutex<[String: Int]>([:])

    init(perSource: Int) { self.perSource = perSource }

    /// Counts one more connection from `source`, or says no (and counts nothing) at the limit.
    func admit(_ source: String) -> Bool {
        open.withLock { counts in
            let n = counts[source, default: 0]
            guard n < perSource else { return false }
            counts[source] = n + 1
            return true
        }
    }

    func release(_ source: String) {
        open.withLock { counts in
            guard let n = counts[source] else { return }
            assert(n > 0, "a source's count went below zero")
            counts[source] = n > 1 ? n - 1 : nil
        }
    }

    func count(_ source: String) -> Int { open.withLock { $0[source, default: 0] } }
}

/// Closes a new connection whose source already holds `perSource` connections. Added to each
/// connection's pipeline by the HTTP server; it counts the connection from the moment it joins
/// the pipeline until it leaves it.
final class APIConnectionLimitHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny
    let counter: APIConnectionCounter
    /// Touched only on the channel's event loop (handlerAdded and handlerRemoved).
    private var admitted: String?

    init(counter: APIConnectionCounter) { self.counter = counter }

    func handlerAdded(context: ChannelHandlerContext) {
        let source = SourceKey.of(host: context.channel.remoteAddress?.ipAddress ?? "unknown")
        if counter.admit(source) {
            admitted = source
        } else {
            context.close(promise: nil)
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        if let admitted { counter.release(admitted) }
        admitted = nil
    }
}
