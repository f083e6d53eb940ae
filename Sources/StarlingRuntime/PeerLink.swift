import CUV
import Glibc
import StarlingCore
import StarlingCrypto

/// One persistent sealed TCP connection to a peer, carrying the frames of every hosted protocol
/// (`LinkFrame`), many requests at once. On the gossip port, like push-pull:
/// ```
/// dialler -> acceptor: hello (kind streamHello, version 4: addressed, names the dialler, signed by its identity)
/// then both ways:      length:u32 sealed(kind linkFrame, LinkFrame)   ...
/// ```
/// The acceptor's side starts life as a `StreamExchange` (admission, per-source limits, the
/// hello deadline and replay cache all apply unchanged) and is handed over here once a link
/// hello opened.
///
/// Bounded: frames over `maxLinkFrameBytes` close the link; unfinished inbound frames count
/// against the node's inbound stream buffer (`maxBufferedStreamBytes`); the send queue holds at
/// most `maxLinkQueueBytes`, past which `enqueue` refuses at once (backpressure).
///
/// Loop thread only. The node's `links.all` holds the strong reference; the libuv handle's
/// `data` points back here, unretained, until the close callback removes it.
final class PeerLink {
    enum State { case connecting, open, closed }

    /// The link hello's version (the first payload byte; push-pull hellos are version 2).
    /// Version 4 carries the dialler's Ed25519 signature (identity), version 3 did not.
    static let helloVersion: UInt8 = 4
    /// Random bytes in each hello, under the signature: a signed hello re-sealed in a fresh
    /// envelope by a cluster-key holder is caught by this token in the node's hello cache.
    static let helloTokenBytes = 16
    static let helloSignatureBytes = 64
    /// The largest link hello payload: version, address (length-prefixed), name
    /// (length-prefixed), sent-at, token, signature (length-prefixed).
    static let maxHelloPayloadBytes = 1 + 1 + NodeAddress.maxHostBytes + 6 + 1 + WireLimits.maxNameBytes + 8 + helloTokenBytes + 1 + helloSignatureBytes

    /// A parsed link hello. `signed` is what the signature covers.
    struct Hello: Equatable {
        var destination: NodeAddress
        var sender: PeerName
        var sentAtMs: UInt64
        var token: [UInt8]
        var signature: [UInt8]
        var signed: [UInt8]
    }

    /// What a link hello's signature covers: a domain tag, then the hello's fields.
    static func helloSigned(_ fields: [UInt8]) -> [UInt8] { Array("starling-link-hello-v4".utf8) + [0] + fields }

    /// The link hello's payload: version, the address dialled, the dialler's name, when it was
    /// sent, a random token, and the dialler's Ed25519 signature over all of them (empty when
    /// the node has no identity: tests of meshes without identities).
    static func helloPayload(to destination: NodeAddress, from name: PeerName, sentAtMs: UInt64, token: [UInt8],
                             identity: NodeIdentity?) -> [UInt8] {
        let address = Array(destination.description.utf8)
        let nameBytes = Array(name.utf8)
        precondition(address.count <= 255 && nameBytes.count <= 255 && token.count == helloTokenBytes)
        var fields = [UInt8(address.count)] + address + [UInt8(nameBytes.count)] + nameBytes
        fields += (0..<8).reversed().map { UInt8(truncatingIfNeeded: sentAtMs >> (8 * UInt64($0))) }
        fields += token
        let signature = identity?.sign(helloSigned(fields)) ?? []
        return [helloVersion] + fields + [UInt8(signature.count)] + signature
    }

    /// Parses a link hello's payload; nil when malformed (a name the decoders would refuse included).
    static func parseHello(_ payload: [UInt8]) -> Hello? {
        guard payload.count >= 2, payload[0] == helloVersion else { return nil }
        var at = 1
        func take(_ n: Int) -> ArraySlice<UInt8>? {
            guard n >= 0, payload.count - at >= n else { return nil }
            defer { at += n }
            return payload[at..<at + n]
        }
        guard let addressLength = take(1)?.first, let address = take(Int(addressLength)),
              let destination = NodeAddress(String(decoding: address, as: UTF8.self)),
              let nameLength = take(1)?.first, let nameBytes = take(Int(nameLength)),
              let sent = take(8), let token = take(helloTokenBytes) else { return nil }
        let fieldsEnd = at
        guard let signatureLength = take(1)?.first, let signature = take(Int(signatureLength)), at == payload.count,
              signature.isEmpty || signature.count == helloSignatureBytes else { return nil }
        let name = String(decoding: nameBytes, as: UTF8.self)
        guard !name.isEmpty, name.utf8.count <= WireLimits.maxNameBytes, WireLimits.isPrintable(name),
              Array(name.utf8) == Array(nameBytes) else { return nil }
        return Hello(destination: destination, sender: name, sentAtMs: sent.reduce(UInt64(0)) { $0 << 8 | UInt64($1) },
                     token: Array(token), signature: Array(signature), signed: helloSigned(Array(payload[1..<fieldsEnd])))
    }

    /// The link's connection number: the first 8 bytes of its sealed hello's nonce.
    static func connection(ofSealedHello sealed: [UInt8]) -> UInt64 {
        sealed[5..<13].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
    }

    unowned let node: MeshNode
    let peer: PeerName
    /// Which end we are: our frames carry this direction, the peer's the other.
    let direction: LinkFrame.Direction
    let handle: UnsafeMutablePointer<uv_tcp_t>
    let connection: UInt64
    let openedAt: Instant
    private(set) var state: State
    var lastActivity: Instant
    /// Superseded by another connection to the same peer (see `MeshNode.adopt`): no new
    /// requests go out on it; it closes once nothing is in flight either way.
    var draining = false
    /// Our requests on this link still waiting for their response.
    var requestsInFlight = 0
    /// The peer's requests on this link we still owe a response to.
    var requestsOwed = 0
    private var sendSequence: UInt64 = 0
    private var receiveSequence: UInt64 = 0
    /// Length-prefixed sealed frames not yet handed to libuv (the hello first, on a dial).
    private var outbound: [UInt8] = []
    /// Bytes handed to libuv whose write has not completed.
    private var writing = 0
    private var received: [UInt8] = []
    private var readOffset = 0
    /// Bytes of `received` counted in the node's inbound buffer.
    private var accounted = 0
    var isDirty = false

    var queuedBytes: Int { outbound.count + writing }
    var dialled: Bool { direction == .fromDialer }
    var id: ObjectIdentifier { ObjectIdentifier(self) }

    /// A link we dial: the hello waits at the head of the queue for the connection.
    init(node: MeshNode, dialling peer: PeerName, at destination: NodeAddress, now: Instant) {
        self.node = node
        self.peer = peer
        direction = .fromDialer
        let sentAtMs = wallClockMs()
        let payload = Self.helloPayload(to: destination, from: node.configuration.name, sentAtMs: sentAtMs,
                                        token: secureRandomBytes(Self.helloTokenBytes), identity: node.configuration.identity)
        let hello = Envelope.seal(payload, kind: .streamHello, key: node.keyring.primary, sentAtMs: sentAtMs)
        connection = Self.connection(ofSealedHello: hello)
        openedAt = now
        lastActivity = now
        state = .connecting
        handle = .allocate(capacity: 1)
        uv_tcp_init(node.loop, handle)
        handle.pointee.data = Unmanaged.passUnretained(self).toOpaque()
        Self.appendFrame(hello, to: &outbound)
    }

    /// An accepted connection whose link hello opened: takes over its handle.
    init(node: MeshNode, accepted handle: UnsafeMutablePointer<uv_tcp_t>, from peer: PeerName, connection: UInt64, now: Instant) {
        self.node = node
        self.peer = peer
        direction = .fromAcceptor
        self.connection = connection
        self.handle = handle
        openedAt = now
        lastActivity = now
        state = .open
        handle.pointee.data = Unmanaged.passUnretained(self).toOpaque()
    }

    static func from(_ p: UnsafeMutableRawPointer?) -> PeerLink {
        Unmanaged<PeerLink>.fromOpaque(p!).takeUnretainedValue()
    }

    private static func appendFrame(_ sealed: [UInt8], to out: inout [UInt8]) {
        let n = UInt32(sealed.count)
        for i in 0..<4 { out.append(UInt8(truncatingIfNeeded: n >> UInt32(24 - 8 * i))) }
        out += sealed
    }

    /// The size of a frame on the wire for `payloadBytes` of protocol message.
    static func wireBytes(payload payloadBytes: Int) -> Int { 4 + Envelope.overheadBytes + LinkFrame.headerBytes + payloadBytes }

    /// Seals one frame and queues it. False, with nothing queued, when the link is closed or the
    /// queue would go over `maxLinkQueueBytes`.
    func enqueue(channel: Channel, kind: LinkFrame.Kind, requestId: UInt64, payload: [UInt8]) -> Bool {
        guard state != .closed else { return false }
        guard queuedBytes + Self.wireBytes(payload: payload.count) <= node.configuration.maxLinkQueueBytes else { return false }
        let frame = LinkFrame(connection: connection, sequence: sendSequence, direction: direction, channel: channel,
                              kind: kind, requestId: requestId, payload: payload)
        sendSequence &+= 1
        Self.appendFrame(Envelope.seal(frame.encoded(), kind: .linkFrame, key: node.keyring.primary, sentAtMs: wallClockMs()),
                         to: &outbound)
        lastActivity = node.now
        node.markDirty(self)
        return true
    }

    /// Hands everything queued to libuv in one write (called once per loop event). The write's
    /// memory starts with its byte count, so the callback can take it off `writing`.
    func flush() {
        isDirty = false
        guard state == .open, !outbound.isEmpty else { return }
        let total = outbound.count
        let memory = UnsafeMutableRawPointer.allocate(byteCount: 8 + total, alignment: 8)
        memory.storeBytes(of: total, as: Int.self)
        outbound.withUnsafeBytes { (memory + 8).copyMemory(from: $0.baseAddress!, byteCount: total) }
        outbound.removeAll(keepingCapacity: total <= 65_536)
        writing += total
        let request = UnsafeMutablePointer<uv_write_t>.allocate(capacity: 1)
        request.pointee.data = memory
        var buf = uv_buf_init((memory + 8).assumingMemoryBound(to: CChar.self), UInt32(total))
        let rc = uv_write(request, asStream(handle), &buf, 1) { req, status in
            let link = PeerLink.from(req!.pointee.handle!.pointee.data)
            let memory = req!.pointee.data!
            let bytes = memory.load(as: Int.self)
            memory.deallocate()
            req!.deallocate()
            link.writeCompleted(bytes: bytes, status: status)
            // A close fails requests, and the protocols' effects may queue frames elsewhere.
            if link.state == .closed { link.node.afterEvent() }
        }
        if rc != 0 {
            memory.deallocate()
            request.deallocate()
            writing -= total
            close(reason: "write_failed", uvError(rc))
        } else {
            node.metrics.sent(bytes: total, stream: true)
        }
    }

    private func writeCompleted(bytes: Int, status: Int32) {
        writing -= bytes
        assert(writing >= 0, "link write accounting out of step")
        if status < 0 { return close(reason: "write_failed", uvError(status)) }
        if let reason = closeAfterWrites, queuedBytes == 0 { close(reason: reason) }
    }

    /// Set by `closeWhenWritten`: close once the queue is written.
    private var closeAfterWrites: String?

    /// Closes now if nothing is queued, else once the queue is written (`close` drops it).
    func closeWhenWritten(reason: String) {
        if queuedBytes == 0 { close(reason: reason) } else { closeAfterWrites = reason }
    }

    func connected(status: Int32) {
        guard state == .connecting else { return }
        guard status >= 0 else { return close(reason: "dial_failed", uvError(status)) }
        state = .open
        lastActivity = node.now
        node.linkMetrics.link("dialled")
        configureSocket()
        startReading()
        flush()
    }

    /// A link is long-lived, so a peer that vanishes (a partition, a machine switched off) must
    /// not leave it open with our frames unacknowledged: TCP_USER_TIMEOUT closes the connection
    /// once sent data stays unacknowledged for `linkStallTimeout`, and keepalives probe an idle
    /// one. The next send then dials afresh instead of queueing behind a dead connection.
    func configureSocket() {
        var fd: uv_os_fd_t = -1
        guard uv_fileno(asHandle(handle), &fd) == 0 else { return }
        var timeoutMs = UInt32(clamping: node.configuration.linkStallTimeout.nanoseconds / 1_000_000)
        _ = setsockopt(fd, Int32(IPPROTO_TCP), 18 /* TCP_USER_TIMEOUT */, &timeoutMs, socklen_t(MemoryLayout<UInt32>.size))
        _ = uv_tcp_keepalive(handle, 1, UInt32(max(1, node.configuration.linkStallTimeout.nanoseconds / 1_000_000_000)))
        _ = uv_tcp_nodelay(handle, 1)
    }

    func startReading() {
        uv_read_start(asStream(handle), { h, _, buf in
            let link = PeerLink.from(h!.pointee.data)
            buf!.pointee = uv_buf_init(link.node.readBuffer.assumingMemoryBound(to: CChar.self), UInt32(MeshNode.readBufferBytes))
        }, { s, nread, buf in
            let link = PeerLink.from(s!.pointee.data)
            if nread < 0 {
                link.close(reason: "broken", nread == Int(UV_EOF.rawValue) ? "closed by peer" : uvError(Int32(nread)))
            } else if nread > 0, let base = buf?.pointee.base {
                link.consume(UnsafeRawBufferPointer(start: base, count: nread))
            }
            link.node.afterEvent()
        })
    }

    /// Bytes from the socket (or left over from the hello's stream): buffers them within the
    /// node's inbound bound and handles every complete frame.
    func consume(_ bytes: UnsafeRawBufferPointer) {
        guard state != .closed else { return }
        lastActivity = node.now
        node.metrics.received(bytes: bytes.count, stream: true)
        received.append(contentsOf: bytes)
        let frameLimit = Self.wireBytes(payload: node.configuration.maxLinkFrameBytes) - 4
        while state != .closed, received.count - readOffset >= 4 {
            let length = Int(received[readOffset..<readOffset + 4].reduce(UInt32(0)) { $0 << 8 | UInt32($1) })
            guard length <= frameLimit else {
                node.linkMetrics.linkDrop("link_frame_too_large")
                return close(reason: "frame_too_large", "frame of \(length) bytes")
            }
            guard received.count - readOffset >= 4 + length else { break }
            let sealed = Array(received[readOffset + 4..<readOffset + 4 + length])
            readOffset += 4 + length
            open(sealed)
        }
        guard state != .closed else { return }
        if readOffset == received.count {
            received.removeAll(keepingCapacity: received.count <= 65_536)
            readOffset = 0
        } else if readOffset >= 65_536 {
            received.removeFirst(readOffset)
            readOffset = 0
        }
        // What stays buffered (an unfinished frame) counts against the node's inbound bound;
        // complete frames were handled first, so the chunk just read (at most one read buffer)
        // is the only excess, and only for this event.
        let unfinished = received.count - readOffset
        guard node.inboundStreamBytesBuffered - accounted + unfinished <= node.configuration.maxBufferedStreamBytes else {
            node.linkMetrics.linkDrop("link_memory")
            return close(reason: "link_memory", "inbound stream buffer over its bound")
        }
        node.adjustBuffered(by: unfinished - accounted, inbound: true)
        accounted = unfinished
    }

    /// Opens one sealed frame and checks that it belongs here, in order: a frame that does not
    /// open, or one replayed, reordered or reflected, closes the link (fail closed; the peer
    /// holds the key, so this is an attack or a corruption, not a bug to tolerate).
    private func open(_ sealed: [UInt8]) {
        let frame: LinkFrame
        do {
            let plain = try Envelope.open(sealed, kind: .linkFrame, keyring: node.keyring, nowMs: wallClockMs(),
                                          maxAgeMs: node.configuration.replayWindow.nanoseconds / 1_000_000)
            frame = try LinkFrame.decode(plain)
        } catch {
            node.linkMetrics.linkDrop("link_\(error.reason)")
            return close(reason: "unreadable", "\(error)")
        }
        guard frame.connection == connection, frame.direction != direction, frame.sequence == receiveSequence else {
            node.linkMetrics.linkDrop("link_replay")
            return close(reason: "replay", "frame \(frame.sequence) of connection \(frame.connection), expected \(receiveSequence) of \(connection)")
        }
        receiveSequence &+= 1
        node.linkReceived(frame, on: self)
    }

    func close(reason: String, _ detail: String = "") {
        guard state != .closed else { return }
        let wasConnecting = state == .connecting
        state = .closed
        node.logger.debug("peer link closed", metadata: ["peer": "\(peer)", "reason": "\(reason)", "detail": "\(detail)"])
        node.adjustBuffered(by: -accounted, inbound: true)
        accounted = 0
        received = []
        outbound = []
        node.linkClosed(self, failedToConnect: wasConnecting)
        uv_close(asHandle(handle)) { h in
            let link = PeerLink.from(h!.pointee.data)
            link.node.links.all[link.id] = nil
            link.handle.deallocate()
        }
    }
}
