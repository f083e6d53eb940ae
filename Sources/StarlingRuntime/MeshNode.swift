import CUV
import Foundation
import Logging
import StarlingCore
import StarlingCrypto
import Synchronization

/// A running mesh node: one libuv loop, on its own thread, owns the gossip socket, the stream
/// listener, the timers, and the membership state machine.
///
/// Threading: every field below `shared` is touched only by the loop thread (after `init`,
/// which runs before the thread starts). Other threads talk to the node through `shared`, a
/// mutex-guarded snapshot and inbox, and wake the loop with `uv_async_send`, the one libuv
/// call that is safe from any thread. That is why the `@unchecked Sendable` below is sound.
public final class MeshNode: @unchecked Sendable {
    public let configuration: MeshConfiguration
    let logger: Logger

    private struct Shared {
        var snapshot: MeshSnapshot
        var inbox: [Command] = []
        var stopped = false
    }

    enum Command {
        case leave
        case setFreeSlots(Int)
        case setCapacity(freeSlots: Int, freeMemoryMB: Int)
        /// A key file read off the loop thread (see `reloadKeys`).
        case installKeys(Result<Keyring, any Error>)
        /// Work for a hosted protocol (see `ProtocolHandle`); `refused` runs instead when the
        /// node has stopped or the inbox is full.
        case work(@Sendable (MeshNode) -> Void, refused: @Sendable (any Error) -> Void)
        /// Stop at once, without leaving.
        case stop
        /// A change to this node's gossiped metadata (free capacity), from a protocol's performer.
        case updateMetadata(@Sendable (inout MemberMetadata) -> Void)
    }

    private let shared: Mutex<Shared>

    // Loop-thread state.
    let loop: UnsafeMutablePointer<uv_loop_t>
    let udp: UnsafeMutablePointer<uv_udp_t>
    let listener: UnsafeMutablePointer<uv_tcp_t>
    private let timer: UnsafeMutablePointer<uv_timer_t>
    /// Runs once per loop turn, after I/O: resets the accept budget.
    private let turn: UnsafeMutablePointer<uv_check_t>
    /// Active only while an accept is deferred: keeps the loop turning and accepts it.
    private let deferredAccept: UnsafeMutablePointer<uv_idle_t>
    /// Connections accepted in this loop turn. libuv accepts until the queue is empty before it
    /// reads any socket, so a stranger who connects as fast as he is shed would keep the loop in
    /// the accept callback and starve every read, the hellos of real peers included. Past the
    /// budget a connection waits in the kernel's queue for the next turn.
    var acceptsThisTurn = 0
    static let acceptsPerTurn = 16
    private let wakeup: UnsafeMutablePointer<uv_async_t>
    private var signals: [UnsafeMutablePointer<uv_signal_t>] = []
    let readBuffer: UnsafeMutableRawPointer
    static let readBufferBytes = 65_536
    var membership: Membership
    var keyring: Keyring
    let metrics = MeshMetrics()
    var streams: [ObjectIdentifier: StreamExchange] = [:]
    /// Bytes inbound streams hold for frames not yet complete (bounded by `maxBufferedStreamBytes`).
    var inboundStreamBytesBuffered = 0
    /// Bytes this node's own push-pulls hold for replies not yet complete (bounded separately,
    /// by `maxBufferedOutboundStreamBytes`, so inbound buffering never fails our own exchanges).
    var outboundStreamBytesBuffered = 0
    /// Hellos that opened recently: a replayed hello is refused.
    lazy var helloNonces = NonceReplayCache(capacity: configuration.maxRememberedHellos,
                                            retention: configuration.replayWindow * 2)
    /// Gossip datagrams that opened recently: a replayed datagram is dropped.
    lazy var datagramNonces = NonceReplayCache(capacity: configuration.maxRememberedDatagrams,
                                               retention: configuration.replayWindow * 2, whenFull: .evictOldest)
    private var addressCache: [NodeAddress: sockaddr_storage] = [:]
    private let origin = uv_hrtime()
    private var leaveDeadline: Instant?
    private var onExit: (@Sendable () -> Void)?
    private var lastPublish = Instant.zero
    /// A key file read is in flight on its own thread; a second SIGHUP meanwhile is folded in.
    private var keyReloadInFlight = false
    /// Protocols hosted besides membership, by channel (see ProtocolHost.swift).
    var protocols: [UInt8: any HostedRunner] = [:]
    /// What protocols last heard of each member (see `reconcileMembers`).
    var reportedMembers: [PeerName: ReportedMember] = [:]
    /// Persistent connections to peers for hosted protocols (see PeerLinks.swift).
    let links = LinkTable()
    let linkMetrics = LinkMetrics()
    lazy var membershipChannel = MembershipChannel(node: self)
    private(set) var started = false
    private var hasShutDown = false

    public init(configuration: MeshConfiguration, keyring: Keyring, logger: Logger) throws {
        precondition(configuration.settings.reapAfter > configuration.replayWindow * 2,
                     "reapAfter must exceed the replay window, or a replayed alive could revive a reaped member")
        self.configuration = configuration
        self.keyring = keyring
        self.logger = logger
        signal(SIGPIPE, SIG_IGN)  // a peer closing a stream gives EPIPE, not death
        let openFiles = Self.raiseOpenFileLimit()
        logger.info("open file limit", metadata: ["soft": "\(openFiles)"])
        // Fail closed on metadata our peers' decoders would refuse (one limit for both sides).
        guard let slots = UInt32(exactly: configuration.slots) else { throw MeshError.badMetadata("slots \(configuration.slots)") }
        let memory = UInt32(clamping: max(0, configuration.taskMemoryMB))
        let metadata = MemberMetadata(version: 0, api: configuration.api, slots: slots, free: slots, memoryMB: memory, freeMemoryMB: memory,
                                      identityKey: configuration.identityKey)
        if let why = metadata.invalidReason { throw MeshError.badMetadata(why) }
        // The same rules as the decoders for the node's name and advertised host: peers would drop
        // our messages otherwise, and a control character would reach their logs.
        let name = configuration.name
        guard !name.isEmpty, name.utf8.count <= WireLimits.maxNameBytes, WireLimits.isPrintable(name) else {
            throw MeshError.badName("node name must be 1-\(WireLimits.maxNameBytes) bytes of printable text: \(name.debugDescription)")
        }
        guard WireLimits.isPrintable(configuration.advertise.host) else {
            throw MeshError.badAddress(configuration.advertise.host.debugDescription)
        }
        membership = Membership(settings: configuration.settings, name: configuration.name,
                                address: configuration.advertise, metadata: metadata,
                                seed: secureRandomUInt64(), now: .zero)
        shared = Mutex(Shared(snapshot: MeshSnapshot(name: configuration.name, members: [], stats: .init(),
                                                     localHealth: 0, incarnation: 0)))
        loop = .allocate(capacity: 1)
        udp = .allocate(capacity: 1)
        listener = .allocate(capacity: 1)
        timer = .allocate(capacity: 1)
        turn = .allocate(capacity: 1)
        deferredAccept = .allocate(capacity: 1)
        wakeup = .allocate(capacity: 1)
        readBuffer = .allocate(byteCount: Self.readBufferBytes, alignment: 16)
        precondition(uv_loop_init(loop) == 0)
        let me = Unmanaged.passUnretained(self).toOpaque()
        loop.pointee.data = me

        guard var bindAddress = SocketAddress.make(configuration.bind) else {
            throw MeshError.badAddress(configuration.bind.description)
        }
        uv_udp_init(loop, udp)
        udp.pointee.data = me
        var rc = withUnsafePointer(to: &bindAddress) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { uv_udp_bind(udp, $0, 0) }
        }
        guard rc == 0 else { throw MeshError.bind("udp \(configuration.bind)", uvError(rc)) }
        // A burst of gossip (or of garbage) should queue, not overflow the kernel's default buffer.
        // As root, SO_RCVBUFFORCE goes past net.core.rmem_max; otherwise ask within it.
        var receiveBuffer: Int32 = 4 << 20
        var fd: uv_os_fd_t = -1
        if uv_fileno(asHandle(udp), &fd) != 0
            || setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &receiveBuffer, socklen_t(MemoryLayout<Int32>.size)) != 0 {
            _ = uv_recv_buffer_size(asHandle(udp), &receiveBuffer)
        }
        uv_tcp_init(loop, listener)
        listener.pointee.data = me
        rc = withUnsafePointer(to: &bindAddress) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { uv_tcp_bind(listener, $0, 0) }
        }
        // A deep accept queue (the kernel caps it at net.core.somaxconn): under a connection
        // flood a joiner's SYN should wait its turn, not be dropped and retried a second later.
        if rc == 0 { rc = uv_listen(asStream(listener), 4096, acceptCallback) }
        guard rc == 0 else { throw MeshError.bind("tcp \(configuration.bind)", uvError(rc)) }
        uv_timer_init(loop, timer)
        timer.pointee.data = me
        uv_check_init(loop, turn)
        turn.pointee.data = me
        uv_idle_init(loop, deferredAccept)
        deferredAccept.pointee.data = me
        uv_async_init(loop, wakeup) { handle in
            Unmanaged<MeshNode>.fromOpaque(handle!.pointee.data).takeUnretainedValue().drainInbox()
        }
        wakeup.pointee.data = me
        for signal in [SIGTERM, SIGINT, SIGHUP] {
            let h = UnsafeMutablePointer<uv_signal_t>.allocate(capacity: 1)
            uv_signal_init(loop, h)
            h.pointee.data = me
            uv_signal_start(h, { handle, signum in
                let node = Unmanaged<MeshNode>.fromOpaque(handle!.pointee.data).takeUnretainedValue()
                node.handleSignal(signum)
            }, signal)
            signals.append(h)
        }
    }

    /// The bound gossip port (useful when binding port 0).
    public var boundPort: UInt16 {
        var storage = sockaddr_storage()
        var len = Int32(MemoryLayout<sockaddr_storage>.size)
        _ = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { uv_udp_getsockname(udp, $0, &len) }
        }
        return withUnsafePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { SocketAddress.nodeAddress($0)?.port ?? 0 }
        }
    }

    /// Starts the loop on its own thread. `onExit` runs on that thread once the node has left.
    public func start(onExit: @escaping @Sendable () -> Void) {
        self.onExit = onExit
        started = true
        let thread = Thread { [self] in self.run() }
        thread.name = "starling-mesh"
        thread.start()
    }

    /// Raises the soft limit on open descriptors to the hard limit: every stream is a
    /// descriptor, and a flood of connections should meet the stream limits, not EMFILE.
    /// Returns the soft limit in force.
    static func raiseOpenFileLimit() -> UInt64 {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return 0 }
        if limit.rlim_cur < limit.rlim_max {
            var raised = limit
            raised.rlim_cur = limit.rlim_max
            if setrlimit(Int32(RLIMIT_NOFILE.rawValue), &raised) == 0 { limit = raised }
        }
        return UInt64(limit.rlim_cur)
    }

    // MARK: Any thread

    public func snapshot() -> MeshSnapshot { shared.withLock { $0.snapshot } }

    /// Leave gracefully (as on SIGTERM), then stop.
    public func requestLeave() { post(.leave) }

    public func setFreeSlots(_ free: Int) { post(.setFreeSlots(free)) }

    /// Gossips this node's free task slots and free task memory (any thread).
    public func setCapacity(freeSlots: Int, freeMemoryMB: Int) { post(.setCapacity(freeSlots: freeSlots, freeMemoryMB: freeMemoryMB)) }

    /// Stops at once, without leaving (peers will find this node dead): closes every socket.
    public func stop() { post(.stop) }

    /// What peer links and hosted protocols did so far (see `LinkTally`).
    public func linkTally() -> LinkTally { linkMetrics.tally.withLock { $0 } }

    /// `bounded`: refused with `MeshError.busy` when `maxInboxCommands` wait already.
    func post(_ command: Command, bounded: Bool = false) {
        let refusal = shared.withLock { s -> MeshError? in
            if s.stopped { return .stopped }
            if bounded, s.inbox.count >= configuration.maxInboxCommands { return .busy }
            s.inbox.append(command)
            return nil
        }
        guard let refusal else {
            uv_async_send(wakeup)
            return
        }
        if case .work(_, let refused) = command { refused(refusal) }
    }

    // MARK: Loop thread

    var now: Instant { Instant(nanoseconds: Int64(uv_hrtime() - origin)) }

    /// Leaves the pending connection in libuv's hands (it stops watching the listener until
    /// `uv_accept`) and accepts it on the next turn.
    func deferAccept() {
        uv_idle_start(deferredAccept) { handle in
            let node = Unmanaged<MeshNode>.fromOpaque(handle!.pointee.data).takeUnretainedValue()
            uv_idle_stop(handle)
            node.acceptsThisTurn = 1
            node.acceptStream()
            node.afterEvent()
        }
    }

    private func run() {
        uv_check_start(turn) { handle in
            Unmanaged<MeshNode>.fromOpaque(handle!.pointee.data).takeUnretainedValue().acceptsThisTurn = 0
        }
        uv_udp_recv_start(udp, { handle, _, buf in
            let node = Unmanaged<MeshNode>.fromOpaque(handle!.pointee.data).takeUnretainedValue()
            buf!.pointee = uv_buf_init(node.readBuffer.assumingMemoryBound(to: CChar.self), UInt32(MeshNode.readBufferBytes))
        }, { handle, nread, buf, addr, _ in
            let node = Unmanaged<MeshNode>.fromOpaque(handle!.pointee.data).takeUnretainedValue()
            guard nread > 0, let addr, let base = buf?.pointee.base else { return }
            node.receiveDatagram(UnsafeRawBufferPointer(start: base, count: nread), from: addr)
        })
        logger.info("mesh node started", metadata: ["name": "\(configuration.name)", "gossip": "\(configuration.advertise)",
                                                    "seeds": "\(configuration.seeds.map(\.description))"])
        execute(membership.join(seeds: configuration.seeds, now: now))
        afterEvent(changed: true)
        uv_run(loop, UV_RUN_DEFAULT)
        logger.info("mesh node stopped", metadata: ["name": "\(configuration.name)"])
        onExit?()
    }

    func receiveDatagram(_ bytes: UnsafeRawBufferPointer, from addr: UnsafePointer<sockaddr>) {
        metrics.received(bytes: bytes.count, stream: false)
        guard bytes.count <= 1400 else {
            metrics.drop(reason: "oversize")
            return afterEvent()
        }
        let sealed = Array(bytes)
        let plaintext: [UInt8]
        do {
            plaintext = try Envelope.open(sealed, kind: .gossip, keyring: keyring, nowMs: wallClockMs(),
                                          maxAgeMs: configuration.replayWindow.nanoseconds / 1_000_000)
        } catch {
            metrics.drop(reason: error.reason)
            return afterEvent()
        }
        // Only after it opened (the nonce is authenticated) and before anything is decoded.
        switch datagramNonces.admit(Envelope.nonce(of: sealed) ?? [], now: now) {
        case .fresh: break
        case .freshEvicting: metrics.replayCacheEvicted()
        case .replay:
            metrics.drop(reason: "replay")
            return afterEvent()
        case .full:
            assertionFailure("the datagram cache evicts, it never refuses")
            metrics.drop(reason: "replay_cache_full")
            return afterEvent()
        }
        do {
            let packet = try Packet.decode(plaintext)
            let source = SocketAddress.nodeAddress(addr) ?? configuration.bind
            execute(membership.receive(packet, from: source, now: now))
        } catch let error as WireError {
            metrics.drop(reason: error.reason)
        } catch {
            metrics.drop(reason: "invalid")
        }
        afterEvent()
    }

    func execute(_ directives: [MembershipDirective]) {
        for d in directives {
            switch d {
            case .send(let packet, let to):
                sendDatagram(packet.encoded(), to: to)
            case .pushPull(let state, let to):
                startPushPull(state, to: to)
            case .changed(let change):
                logger.info("member changed", metadata: ["member": "\(change.name)", "address": "\(change.address)",
                                                         "from": "\(change.from.map(\.description) ?? "new")",
                                                         "to": "\(change.to.map(\.description) ?? "reaped")",
                                                         "incarnation": "\(change.incarnation)"])
                pendingChange = true
                memberChanged(change)
            }
        }
    }

    private var pendingChange = false

    func socketAddress(for address: NodeAddress) -> sockaddr_storage? {
        if let cached = addressCache[address] { return cached }
        guard let made = SocketAddress.make(address) else { return nil }
        if addressCache.count > 4 * WireLimits.maxMembers { addressCache.removeAll() }
        addressCache[address] = made
        return made
    }

    private func sendDatagram(_ payload: [UInt8], to address: NodeAddress) {
        guard var dest = socketAddress(for: address) else {
            metrics.drop(reason: "bad_address")
            return
        }
        var sealed = Envelope.seal(payload, kind: .gossip, key: keyring.primary, sentAtMs: wallClockMs())
        assert(sealed.count <= 1400, "sealed packet over the UDP budget")
        let rc = sealed.withUnsafeMutableBytes { raw -> Int32 in
            var buf = uv_buf_init(raw.baseAddress!.assumingMemoryBound(to: CChar.self), UInt32(raw.count))
            return withUnsafePointer(to: &dest) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { uv_udp_try_send(udp, &buf, 1, $0) }
            }
        }
        if rc < 0 { metrics.drop(reason: "send_failed") } else { metrics.sent(bytes: sealed.count, stream: false) }
    }

    /// After every event: run due timers, publish the snapshot, re-arm the timer.
    func afterEvent(changed: Bool = false) {
        guard !hasShutDown else { return }
        let t = now
        if t >= membership.nextDeadline { execute(membership.tick(now: t)) }
        logIdentityConflicts(at: t)
        tickProtocols(now: t)
        sweepStreams(now: t)
        sweepLinks(now: t)
        if let leaveDeadline, t >= leaveDeadline { return shutdown() }
        // A command publishes at once; membership changes at most every `publishInterval`
        // (a publish sorts and copies the whole table, and churn brings changes by the
        // thousand); and at least every 100 ms for the counters.
        let sincePublish = t - lastPublish
        if changed || (pendingChange && sincePublish >= configuration.publishInterval) || sincePublish >= .milliseconds(100) {
            publish(at: t)
        }
        var deadline = membership.nextDeadline
        if pendingChange { deadline = min(deadline, lastPublish + configuration.publishInterval) }
        if let leaveDeadline { deadline = min(deadline, leaveDeadline) }
        if !streams.isEmpty { deadline = min(deadline, t + .milliseconds(100)) }
        deadline = min(deadline, protocolsDeadline, linksDeadline(after: t))
        flushLinks()
        let waitMs = max(0, (deadline - t).nanoseconds + 999_999) / 1_000_000
        uv_timer_start(timer, { handle in
            Unmanaged<MeshNode>.fromOpaque(handle!.pointee.data).takeUnretainedValue().afterEvent()
        }, UInt64(waitMs), 0)
    }

    private var loggedIdentityConflicts = 0
    private var lastIdentityConflictLog: Instant?

    /// One log line for the `alive`s refused under another identity key since the last one (at
    /// most one a second: a refused member keeps gossiping), naming the latest. The count is
    /// `starling_identity_conflicts_total`.
    private func logIdentityConflicts(at t: Instant) {
        let total = membership.stats.identityConflicts
        guard total > loggedIdentityConflicts, let conflict = membership.lastIdentityConflict else { return }
        if let last = lastIdentityConflictLog, t - last < .seconds(1) { return }
        let refused = total - loggedIdentityConflicts
        loggedIdentityConflicts = total
        lastIdentityConflictLog = t
        func hex(_ key: [UInt8]?) -> String { key.map(MemberMetadata.hex) ?? "none" }
        let metadata: Logger.Metadata = ["member": "\(conflict.name)", "address": "\(conflict.address)",
                                         "incarnation": "\(conflict.incarnation)", "pinnedKey": "\(hex(conflict.heldKey))",
                                         "claimedKey": "\(hex(conflict.claimedKey))", "refused": "\(refused)"]
        if conflict.aboutMe {
            logger.error("another identity key claims this node's name: a node started under our name with another data directory, or our previous life under another key", metadata: metadata)
        } else {
            logger.warning("refused a member under another identity key than the one pinned for its name", metadata: metadata)
        }
    }

    private func publish(at t: Instant) {
        lastPublish = t
        pendingChange = false
        metrics.publish(membership)
        metrics.snapshotPublished()
        reconcileMembers()
        let snap = MeshSnapshot(name: configuration.name, members: membership.memberList, stats: membership.stats,
                                localHealth: membership.awareness.score, incarnation: membership.incarnation)
        shared.withLock { $0.snapshot = snap }
    }

    private func drainInbox() {
        let commands = shared.withLock { s -> [Command] in
            defer { s.inbox.removeAll() }
            return s.inbox
        }
        for c in commands {
            switch c {
            case .leave: beginLeave()
            case .installKeys(let result): installKeys(result)
            case .setFreeSlots(let free):
                membership.updateMetadata(now: now) { $0.free = UInt32(max(0, min(free, Int($0.slots)))) }
            case .setCapacity(let free, let memory):
                membership.updateMetadata(now: now) {
                    $0.free = UInt32(max(0, min(free, Int($0.slots))))
                    $0.freeMemoryMB = UInt32(clamping: max(0, memory))
                }
            case .work(let work, _): work(self)
            case .updateMetadata(let change): applyMetadataChange(change)
            case .stop: leaveDeadline = now
            }
        }
        afterEvent(changed: true)
    }

    /// Applies a performer's change to this node's metadata if peers' decoders would accept the
    /// result (free within slots, the api address unchanged); refuses it otherwise, logged.
    private func applyMetadataChange(_ change: (inout MemberMetadata) -> Void) {
        var changed = membership.metadata
        change(&changed)
        changed.version = membership.metadata.version
        guard changed != membership.metadata else { return }
        if let why = changed.invalidReason ?? (changed.api == membership.metadata.api ? nil : "the api address is not the performer's to change")
            ?? (changed.identityKey == membership.metadata.identityKey ? nil : "the identity key is fixed for the node's life") {
            return logger.error("metadata change refused", metadata: ["reason": "\(why)"])
        }
        membership.updateMetadata(now: now) { $0 = changed }
    }

    private func handleSignal(_ signum: Int32) {
        if signum == SIGHUP {
            reloadKeys()
        } else {
            logger.info("signal received, leaving", metadata: ["signal": "\(signum)"])
            beginLeave()
        }
        afterEvent(changed: true)
    }

    private func beginLeave() {
        guard leaveDeadline == nil else { return }
        execute(membership.leave(now: now))
        // Let gossip carry the leave for a few rounds before stopping.
        leaveDeadline = now + max(configuration.settings.gossipInterval * 5, .milliseconds(200))
    }

    /// Reads the key file on a thread of its own (a slow disk, a network mount or a FIFO must
    /// not stall gossip) and hands the result to the loop through the inbox.
    private func reloadKeys() {
        guard !keyReloadInFlight else {
            logger.warning("SIGHUP while a key reload is still in flight; folded into it", metadata: ["path": "\(configuration.keyFile)"])
            return
        }
        keyReloadInFlight = true
        let path = configuration.keyFile
        let reader = Thread { [self] in
            let result = Result { try Keyring.load(path: path) }
            post(.installKeys(result))
        }
        reader.name = "starling-key-reload"
        reader.start()
    }

    private func installKeys(_ result: Result<Keyring, any Error>) {
        keyReloadInFlight = false
        switch result {
        case .success(let loaded):
            keyring = loaded
            logger.info("keyring reloaded", metadata: ["keys": "\(keyring.keys.count)", "primary": "\(String(keyring.primary.id, radix: 16))"])
        case .failure(let error):
            logger.error("keyring reload failed; keeping the old keys", metadata: ["error": "\(error)"])
        }
    }

    private func shutdown() {
        hasShutDown = true
        let unserved = shared.withLock { s -> [Command] in
            s.stopped = true
            defer { s.inbox.removeAll() }
            return s.inbox
        }
        for case .work(_, let refused) in unserved { refused(MeshError.stopped) }
        stopProtocols()
        publish(at: now)
        for s in streams.values { s.close() }
        uv_timer_stop(timer)
        uv_close(asHandle(timer), nil)
        uv_close(asHandle(turn), nil)
        uv_close(asHandle(deferredAccept), nil)
        uv_close(asHandle(wakeup), nil)
        uv_close(asHandle(udp), nil)
        uv_close(asHandle(listener), nil)
        for s in signals { uv_close(asHandle(s), nil) }
    }
}

public enum MeshError: Error, CustomStringConvertible {
    case badAddress(String)
    case bind(String, String)
    case badMetadata(String)
    case badName(String)
    /// The node has stopped: a protocol command cannot be served.
    case stopped
    /// Too many commands wait for the loop already (`maxInboxCommands`).
    case busy
    case notRegistered(String)

    public var description: String {
        switch self {
        case .stopped: "the node has stopped"
        case .busy: "the node's inbox is full"
        case .notRegistered(let channel): "no protocol registered on channel " + channel
        case .badMetadata(let why): "metadata not accepted on the wire: \(why)"
        case .badName(let why): why
        case .badAddress(let a): "not an IP address and port: \(a)"
        case .bind(let what, let why): "cannot bind \(what): \(why)"
        }
    }
}

extension Error {
    var reason: String { (self as? Envelope.OpenError)?.reason ?? (self as? WireError)?.reason ?? "invalid" }
}
