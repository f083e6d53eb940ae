import CUV
import Glibc
import StarlingCore
import StarlingCrypto

/// One push-pull exchange over TCP. Frames are `length:u32 sealed-envelope`:
/// ```
/// client -> server: hello request      (hello: a small sealed frame of kind streamHello)
/// server -> client: reply              then the connection closes
/// ```
/// The hello exists for the server's sake: a stranger who connects can make it buffer at most
/// `maxHelloFrameBytes` and hold the connection at most `authTimeout`; only a peer whose hello
/// opened (it holds the key, or replays a hello within the replay window) may send a frame of
/// up to `maxFrameBytes` and keep the connection for `streamTimeout`.
///
/// Lives on the loop thread only. The node's `streams` table holds the strong reference; the
/// libuv handle's `data` points back here, unretained, until the close callback removes it.
final class StreamExchange {
    enum Role {
        case client(PushPullState)
        case server
    }

    /// The stream protocol's version, the hello payload's first byte.
    static let helloVersion: UInt8 = 2
    /// The hello's sealed payload: the version, then the gossip address the client dialled
    /// (`HOST:PORT`, UTF-8). A hello is addressed: the replay cache is per node, so an
    /// unaddressed hello captured on its way to one node opened once at every other node.
    static func helloPayload(to destination: NodeAddress) -> [UInt8] {
        [helloVersion] + Array(destination.description.utf8)
    }
    /// Bound on the hello frame (sealed: `Envelope.overheadBytes` + 1 + an address of at most
    /// `NodeAddress.maxHostBytes` + 2 + 6 bytes).
    static let maxHelloFrameBytes = Envelope.overheadBytes + PeerLink.maxHelloPayloadBytes

    unowned let node: MeshNode
    let role: Role
    let handle: UnsafeMutablePointer<uv_tcp_t>
    let openedAt: Instant
    private(set) var deadline: Instant
    let peer: String
    /// The peer's source key (its IPv4 address, or its IPv6 /64; see `SourceKey`), for the
    /// per-source limits (inbound only).
    var source = ""
    /// Where an inbound connection arrived (its local socket address), which a hello must name
    /// (or the node's advertised address, for a peer that dialled it through NAT).
    var localAddress: NodeAddress?
    /// The gossip address an outbound stream dialled, which its hello names.
    var destination: NodeAddress?
    /// An inbound stream is authenticated once its hello opened; an outbound one always is.
    private(set) var authenticated: Bool
    private(set) var received: [UInt8] = []
    private var finished = false
    private var closeAfterWrite = false
    private(set) var closed = false
    /// Set when the hello was a link hello (`PeerLink.helloVersion`): the dialler's name and the
    /// link's connection number. The connection is then handed to a `PeerLink`.
    private var linkPeer: (name: PeerName, connection: UInt64)?
    /// The link hello, kept until its identity is checked (after the envelope's replay check).
    private var linkHello: PeerLink.Hello?

    var isInbound: Bool { if case .server = role { true } else { false } }

    init(node: MeshNode, role: Role, now: Instant, peer: String) {
        self.node = node
        self.role = role
        self.peer = peer
        openedAt = now
        if case .server = role {
            authenticated = false
            deadline = now + node.configuration.authTimeout
        } else {
            authenticated = true
            deadline = now + node.configuration.streamTimeout
        }
        handle = .allocate(capacity: 1)
        uv_tcp_init(node.loop, handle)
        handle.pointee.data = Unmanaged.passUnretained(self).toOpaque()
    }

    static func from(_ p: UnsafeMutableRawPointer?) -> StreamExchange {
        Unmanaged<StreamExchange>.fromOpaque(p!).takeUnretainedValue()
    }

    func startReading() {
        uv_read_start(asStream(handle), { h, _, buf in
            let ex = StreamExchange.from(h!.pointee.data)
            buf!.pointee = uv_buf_init(ex.node.readBuffer.assumingMemoryBound(to: CChar.self), UInt32(MeshNode.readBufferBytes))
        }, { s, nread, buf in
            let ex = StreamExchange.from(s!.pointee.data)
            if nread < 0 {
                ex.fail(nread == Int(UV_EOF.rawValue) ? "closed early" : uvError(Int32(nread)))
            } else if nread > 0, let base = buf?.pointee.base {
                ex.consume(UnsafeRawBufferPointer(start: base, count: nread))
            }
            ex.node.afterEvent()
        })
    }

    private func consume(_ bytes: UnsafeRawBufferPointer) {
        guard !finished, !closed else { return }
        node.metrics.received(bytes: bytes.count, stream: true)
        guard node.makeRoom(for: bytes.count, on: self) else { return }
        received.append(contentsOf: bytes)
        node.adjustBuffered(by: bytes.count, inbound: isInbound)
        while !finished, !closed, received.count >= 4 {
            let length = Int(received[0..<4].reduce(UInt32(0)) { $0 << 8 | UInt32($1) })
            let limit = authenticated ? node.configuration.maxFrameBytes : Self.maxHelloFrameBytes
            guard length <= limit else {
                node.metrics.drop(reason: authenticated ? "frame_too_large" : "preauth_too_large")
                return fail("frame too large: \(length)")
            }
            guard received.count >= 4 + length else { return }
            let frame = Array(received[4..<4 + length])
            received.removeFirst(4 + length)
            node.adjustBuffered(by: -(4 + length), inbound: isInbound)
            if !authenticated {
                guard openHello(frame) else { return }
                if let link = linkPeer { return handOff(to: link) }
                continue
            }
            guard received.isEmpty else {
                node.metrics.drop(reason: "trailing")
                return fail("trailing bytes after the frame")
            }
            finished = true
            uv_read_stop(asStream(handle))
            deadline = openedAt + node.configuration.streamTimeout
            handleFrame(frame)
        }
    }

    /// Opens an inbound stream's hello; on success the stream may send one full frame.
    private func openHello(_ sealed: [UInt8]) -> Bool {
        do {
            let payload = try Envelope.open(sealed, kind: .streamHello, keyring: node.keyring, nowMs: wallClockMs(),
                                            maxAgeMs: node.configuration.replayWindow.nanoseconds / 1_000_000)
            let named: NodeAddress?
            if payload.first == PeerLink.helloVersion {
                guard let hello = PeerLink.parseHello(payload) else { throw WireError.invalidValue("link hello") }
                named = hello.destination
                linkHello = hello
                linkPeer = (hello.sender, PeerLink.connection(ofSealedHello: sealed))
            } else {
                guard payload.first == Self.helloVersion else { throw WireError.unsupportedVersion(payload.first ?? 0) }
                named = NodeAddress(String(decoding: payload.dropFirst(), as: UTF8.self))
            }
            // Before the nonce is remembered: a misdirected hello takes no room in the cache.
            guard let named, named == localAddress || named == node.configuration.advertise else {
                node.metrics.drop(reason: "hello_misdirected")
                fail("hello addressed to \(named?.description ?? "nothing"), not to this node")
                return false
            }
        } catch {
            node.metrics.drop(reason: error.reason)
            fail("unreadable hello: \(error)")
            return false
        }
        // Only after it opened (a stranger cannot fill the cache with invented nonces).
        switch node.helloNonces.admit(Envelope.nonce(of: sealed) ?? [], now: node.now) {
        case .fresh, .freshEvicting: break  // hellos refuse when full: never evicting
        case .replay:
            node.metrics.drop(reason: "hello_replay")
            fail("replayed hello")
            return false
        case .full:
            node.metrics.drop(reason: "hello_cache_full")
            fail("too many recent hellos to remember")
            return false
        }
        if let hello = linkHello, let refusal = node.linkIdentityRefusal(hello, nowMs: wallClockMs()) {
            node.metrics.drop(reason: refusal.reason)
            fail(refusal.message)
            return false
        }
        authenticated = true
        // The request frame must follow promptly: an authenticated stream is never evicted, so
        // it may not sit on its slot (or on buffered bytes) for the whole exchange timeout.
        deadline = min(openedAt + node.configuration.streamTimeout, node.now + node.configuration.authTimeout)
        node.metrics.streamAuthenticated()
        return true
    }

    private func handleFrame(_ sealed: [UInt8]) {
        let kind: Envelope.Kind
        switch role {
        case .client: kind = .pushPullReply
        case .server: kind = .pushPullRequest
        }
        let state: PushPullState
        do {
            let plain = try Envelope.open(sealed, kind: kind, keyring: node.keyring, nowMs: wallClockMs(),
                                          maxAgeMs: node.configuration.replayWindow.nanoseconds / 1_000_000)
            state = try PushPullState.decode(plain)
        } catch {
            node.metrics.drop(reason: error.reason)
            finished = false
            return fail("unreadable frame: \(error)")
        }
        switch role {
        case .client:
            node.execute(node.membership.completePushPull(state, now: node.now))
            close()
        case .server:
            let (reply, directives) = node.membership.servePushPull(state, now: node.now)
            node.execute(directives)
            write([Envelope.seal(reply.encoded(), kind: .pushPullReply, key: node.keyring.primary, sentAtMs: wallClockMs())],
                  thenClose: true)
        }
    }

    /// Writes frames in one write. The buffer lives until libuv's write callback frees it.
    func write(_ frames: [[UInt8]], thenClose: Bool) {
        let total = frames.reduce(0) { $0 + 4 + $1.count }
        let memory = UnsafeMutableRawPointer.allocate(byteCount: total, alignment: 1)
        let bytes = memory.assumingMemoryBound(to: UInt8.self)
        var at = 0
        for sealed in frames {
            let n = UInt32(sealed.count)
            for i in 0..<4 { bytes[at + i] = UInt8(truncatingIfNeeded: n >> UInt32(24 - 8 * i)) }
            sealed.withUnsafeBufferPointer { (bytes + at + 4).update(from: $0.baseAddress!, count: sealed.count) }
            at += 4 + sealed.count
        }
        node.metrics.sent(bytes: total, stream: true)
        let request = UnsafeMutablePointer<uv_write_t>.allocate(capacity: 1)
        request.pointee.data = memory
        var buf = uv_buf_init(memory.assumingMemoryBound(to: CChar.self), UInt32(total))
        closeAfterWrite = thenClose
        let rc = uv_write(request, asStream(handle), &buf, 1) { req, status in
            let stream = req!.pointee.handle!
            req!.pointee.data.deallocate()
            req!.deallocate()
            let ex = StreamExchange.from(stream.pointee.data)
            if status < 0 { ex.fail(uvError(status)) } else if ex.closeAfterWrite { ex.close() }
        }
        if rc != 0 {
            memory.deallocate()
            request.deallocate()
            fail(uvError(rc))
        }
    }

    /// A link hello opened: the connection, its handle and the bytes after the hello go to a
    /// `PeerLink`. This exchange is done without closing the handle, which is the link's now.
    private func handOff(to link: (name: PeerName, connection: UInt64)) {
        closed = true
        finished = true
        let rest = received
        node.adjustBuffered(by: -received.count, inbound: isInbound)
        received = []
        uv_read_stop(asStream(handle))
        node.streams[ObjectIdentifier(self)] = nil
        node.adoptLink(handle: handle, from: link.name, connection: link.connection, leftover: rest)
    }

    func fail(_ why: String) {
        guard !closed else { return }
        node.logger.debug("push-pull failed", metadata: ["peer": "\(peer)", "error": "\(why)"])
        if case .client = role, !finished {
            finished = true
            node.execute(node.membership.completePushPull(nil, now: node.now))
        }
        close()
    }

    func close() {
        guard !closed else { return }
        closed = true
        node.adjustBuffered(by: -received.count, inbound: isInbound)
        received = []
        uv_close(asHandle(handle)) { h in
            let ex = StreamExchange.from(h!.pointee.data)
            ex.node.streams[ObjectIdentifier(ex)] = nil
            ex.handle.deallocate()
        }
    }
}

extension MeshNode {
    func adjustBuffered(by delta: Int, inbound: Bool) {
        if inbound { inboundStreamBytesBuffered += delta } else { outboundStreamBytesBuffered += delta }
        assert(inboundStreamBytesBuffered >= 0 && outboundStreamBytesBuffered >= 0, "stream buffer accounting out of step")
    }

    /// Makes room for `count` more buffered bytes on `stream` within its direction's bound
    /// (inbound and outbound have separate ones). Over the bound, the stream of that direction
    /// holding the most unfinished bytes is closed, until the bytes fit: failing the stream
    /// that crossed the bound instead failed whoever came last, so a key holder keeping the
    /// room full with stalled near-complete frames made every newcomer fail, the joins and
    /// push-pulls of real peers included. Returns false if `stream` itself was closed.
    func makeRoom(for count: Int, on stream: StreamExchange) -> Bool {
        let inbound = stream.isInbound
        let bound = inbound ? configuration.maxBufferedStreamBytes : configuration.maxBufferedOutboundStreamBytes
        while (inbound ? inboundStreamBytesBuffered : outboundStreamBytesBuffered) + count > bound {
            let candidates = streams.values.filter { !$0.closed && $0.isInbound == inbound && $0 !== stream && !$0.received.isEmpty }
            let largest = candidates.max { $0.received.count < $1.received.count }
            metrics.drop(reason: "stream_memory")
            guard let victim = largest, victim.received.count >= stream.received.count + count else {
                stream.fail("streams buffer over the bound and this one holds the most")
                return false
            }
            victim.fail("evicted: holds the most unfinished stream bytes")
        }
        return true
    }

    func startPushPull(_ state: PushPullState, to address: NodeAddress) {
        if pushPullOverLink(state, to: address) { return }
        let outbound = streams.values.count(where: { !$0.closed && !$0.isInbound })
        guard outbound < configuration.maxOutboundStreams, var dest = socketAddress(for: address) else {
            metrics.drop(reason: "stream_limit")
            execute(membership.completePushPull(nil, now: now))
            return
        }
        let ex = StreamExchange(node: self, role: .client(state), now: now, peer: address.description)
        ex.destination = address
        streams[ObjectIdentifier(ex)] = ex
        let connect = UnsafeMutablePointer<uv_connect_t>.allocate(capacity: 1)
        connect.pointee.data = Unmanaged.passUnretained(ex).toOpaque()
        let rc = withUnsafePointer(to: &dest) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
                uv_tcp_connect(connect, ex.handle, sa) { req, status in
                    let ex = StreamExchange.from(req!.pointee.data)
                    req!.deallocate()
                    guard !ex.closed else { return }
                    if status < 0 {
                        ex.fail(uvError(status))
                    } else if case .client(let state) = ex.role, let destination = ex.destination {
                        ex.startReading()
                        let key = ex.node.keyring.primary
                        ex.write([Envelope.seal(StreamExchange.helloPayload(to: destination), kind: .streamHello, key: key, sentAtMs: wallClockMs()),
                                  Envelope.seal(state.encoded(), kind: .pushPullRequest, key: key, sentAtMs: wallClockMs())],
                                 thenClose: false)
                    }
                    ex.node.afterEvent()
                }
            }
        }
        if rc != 0 {
            connect.deallocate()
            ex.fail(uvError(rc))
        }
    }

    /// Accepts one inbound stream within the inbound limits.
    ///
    /// A stranger can open connections without the key, so the limits favour whoever
    /// authenticates, and share the room fairly between source addresses:
    /// - A source at `maxInboundStreamsPerSource` makes room by closing its own oldest stream
    ///   that has not authenticated yet; if all of its streams have, the newcomer is refused.
    /// - When the node is at `maxInboundStreams`, a newcomer closes the oldest unauthenticated
    ///   stream among the sources that hold the most of them, but only if they hold at least
    ///   two more unauthenticated streams than the newcomer's would, or the newcomer's source
    ///   holds none yet; otherwise the newcomer is refused.
    ///   So a flood from many addresses, even one that reconnects as fast as it is shed, keeps
    ///   its fair share and no more: a peer from a quiet address always gets in, and is not
    ///   pushed out again by the flood while its hello (sent with its connect) arrives.
    /// Idle streams end at `authTimeout` in any case.
    func acceptStream() {
        let ex = StreamExchange(node: self, role: .server, now: now, peer: "inbound")
        streams[ObjectIdentifier(ex)] = ex
        guard uv_accept(asStream(listener), asStream(ex.handle)) == 0 else {
            metrics.drop(reason: "accept_failed")
            return ex.close()
        }
        ex.source = peerHost(of: ex.handle).map { SourceKey.of(host: $0) } ?? "unknown"
        ex.localAddress = localAddress(of: ex.handle)
        guard admit(ex) else { return ex.close() }
        ex.startReading()
    }

    private func admit(_ newcomer: StreamExchange) -> Bool {
        var inbound = streams.values.filter { !$0.closed && $0.isInbound && $0 !== newcomer }
        let mine = inbound.filter { $0.source == newcomer.source }
        if mine.count >= configuration.maxInboundStreamsPerSource {
            guard let oldest = Self.oldestUnauthenticated(mine) else {
                metrics.drop(reason: "stream_source_limit")
                return false
            }
            metrics.drop(reason: "stream_evicted")
            oldest.fail("evicted by a newer connection from the same source")
            inbound.removeAll { $0 === oldest }
        }
        guard inbound.count >= configuration.maxInboundStreams else { return true }
        // Fair shares of the unproven room: a source's authenticated streams (peers whose hello
        // opened, e.g. other nodes behind the same address) do not count against its newcomers.
        let sharesAfter = inbound.count { $0.source == newcomer.source && !$0.authenticated } + 1
        var pending: [String: [StreamExchange]] = [:]
        for ex in inbound where !ex.authenticated { pending[ex.source, default: []].append(ex) }
        // A source with no stream yet may always take the oldest pending stream of a source that
        // holds the most: with many flooding sources each holding about one stream, "at least two
        // more" refused every newcomer, the joiner included.
        guard let most = pending.values.map(\.count).max(), most > sharesAfter || sharesAfter == 1,
              let victim = Self.oldestUnauthenticated(pending.values.filter { $0.count == most }.flatMap { $0 }) else {
            metrics.drop(reason: "stream_limit")
            return false
        }
        metrics.drop(reason: "stream_evicted")
        victim.fail("evicted by a connection from a quieter source")
        return true
    }

    private static func oldestUnauthenticated(_ streams: [StreamExchange]) -> StreamExchange? {
        streams.filter { !$0.authenticated }.min { $0.openedAt < $1.openedAt }
    }

    private func localAddress(of handle: UnsafeMutablePointer<uv_tcp_t>) -> NodeAddress? {
        var storage = sockaddr_storage()
        var len = Int32(MemoryLayout<sockaddr_storage>.size)
        let rc = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { uv_tcp_getsockname(handle, $0, &len) }
        }
        guard rc == 0 else { return nil }
        return withUnsafePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { SocketAddress.nodeAddress($0) }
        }
    }

    private func peerHost(of handle: UnsafeMutablePointer<uv_tcp_t>) -> String? {
        var storage = sockaddr_storage()
        var len = Int32(MemoryLayout<sockaddr_storage>.size)
        let rc = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { uv_tcp_getpeername(handle, $0, &len) }
        }
        guard rc == 0 else { return nil }
        return withUnsafePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { SocketAddress.nodeAddress($0)?.host }
        }
    }

    /// Closes exchanges past their deadline (a stalled or malicious peer cannot hold one open):
    /// `authTimeout` before an inbound stream authenticates, `streamTimeout` in all.
    func sweepStreams(now t: Instant) {
        for ex in streams.values where !ex.closed && t >= ex.deadline {
            metrics.drop(reason: ex.authenticated ? "stream_timeout" : "auth_timeout")
            ex.fail("timed out")
        }
    }
}

/// libuv's connection callback for the stream listener. A failed accept (EMFILE and the like)
/// is counted, not retried: libuv itself sheds the pending connection with its reserved
/// descriptor, so the loop does not spin.
let acceptCallback: uv_connection_cb = { server, status in
    let node = Unmanaged<MeshNode>.fromOpaque(server!.pointee.data).takeUnretainedValue()
    if status < 0 {
        node.metrics.drop(reason: "accept_failed")
    } else if node.acceptsThisTurn < MeshNode.acceptsPerTurn {
        node.acceptsThisTurn += 1
        node.acceptStream()
    } else {
        return node.deferAccept()
    }
    node.afterEvent()
}
