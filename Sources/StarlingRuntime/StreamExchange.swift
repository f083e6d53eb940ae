import CUV
import Glibc
import StarlingCore
import StarlingCrypto

/// One push-pull exchange over TCP: a request frame and a reply frame, each
/// `length:u32 sealed-envelope`, then the connection closes.
///
/// Lives on the loop thread only. The node's `streams` table holds the strong reference; the
/// libuv handle's `data` points back here, unretained, until the close callback removes it.
final class StreamExchange {
    enum Role {
        case client(PushPullState)
        case server
    }

    unowned let node: MeshNode
    let role: Role
    let handle: UnsafeMutablePointer<uv_tcp_t>
    let deadline: Instant
    let peer: String
    private var received: [UInt8] = []
    private var finished = false
    private var closeAfterWrite = false
    private(set) var closed = false

    init(node: MeshNode, role: Role, deadline: Instant, peer: String) {
        self.node = node
        self.role = role
        self.deadline = deadline
        self.peer = peer
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
        guard !finished else { return }
        node.metrics.received(bytes: bytes.count, stream: true)
        received.append(contentsOf: bytes)
        guard received.count >= 4 else { return }
        let length = Int(received[0..<4].reduce(UInt32(0)) { $0 << 8 | UInt32($1) })
        guard length <= node.configuration.maxFrameBytes else {
            node.metrics.drop(reason: "frame_too_large")
            return fail("frame too large: \(length)")
        }
        guard received.count >= 4 + length else { return }
        guard received.count == 4 + length else {
            node.metrics.drop(reason: "trailing")
            return fail("trailing bytes after the frame")
        }
        finished = true
        uv_read_stop(asStream(handle))
        handleFrame(Array(received[4...]))
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
            write(Envelope.seal(reply.encoded(), kind: .pushPullReply, key: node.keyring.primary, sentAtMs: wallClockMs()),
                  thenClose: true)
        }
    }

    /// Writes one frame. The buffer lives until libuv's write callback frees it.
    func write(_ sealed: [UInt8], thenClose: Bool) {
        let total = 4 + sealed.count
        let memory = UnsafeMutableRawPointer.allocate(byteCount: total, alignment: 1)
        let bytes = memory.assumingMemoryBound(to: UInt8.self)
        let n = UInt32(sealed.count)
        for i in 0..<4 { bytes[i] = UInt8(truncatingIfNeeded: n >> UInt32(24 - 8 * i)) }
        sealed.withUnsafeBufferPointer { (bytes + 4).update(from: $0.baseAddress!, count: sealed.count) }
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
        uv_close(asHandle(handle)) { h in
            let ex = StreamExchange.from(h!.pointee.data)
            ex.node.streams[ObjectIdentifier(ex)] = nil
            ex.handle.deallocate()
        }
    }
}

extension MeshNode {
    func startPushPull(_ state: PushPullState, to address: NodeAddress) {
        guard streams.count < configuration.maxOpenStreams, var dest = socketAddress(for: address) else {
            metrics.drop(reason: "stream_limit")
            execute(membership.completePushPull(nil, now: now))
            return
        }
        let ex = StreamExchange(node: self, role: .client(state), deadline: now + configuration.streamTimeout,
                                peer: address.description)
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
                    } else if case .client(let state) = ex.role {
                        ex.startReading()
                        ex.write(Envelope.seal(state.encoded(), kind: .pushPullRequest, key: ex.node.keyring.primary,
                                               sentAtMs: wallClockMs()), thenClose: false)
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

    func acceptStream() {
        let ex = StreamExchange(node: self, role: .server, deadline: now + configuration.streamTimeout, peer: "inbound")
        streams[ObjectIdentifier(ex)] = ex
        guard uv_accept(asStream(listener), asStream(ex.handle)) == 0 else { return ex.close() }
        guard streams.count <= configuration.maxOpenStreams else {
            metrics.drop(reason: "stream_limit")
            return ex.close()
        }
        ex.startReading()
    }

    /// Closes exchanges past their deadline (a stalled or malicious peer cannot hold one open).
    func sweepStreams(now t: Instant) {
        for ex in streams.values where !ex.closed && t >= ex.deadline {
            metrics.drop(reason: "stream_timeout")
            ex.fail("timed out")
        }
    }
}

/// libuv's connection callback for the stream listener.
let acceptCallback: uv_connection_cb = { server, status in
    let node = Unmanaged<MeshNode>.fromOpaque(server!.pointee.data).takeUnretainedValue()
    if status >= 0 { node.acceptStream() }
    node.afterEvent()
}
