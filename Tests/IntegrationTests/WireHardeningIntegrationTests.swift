import Foundation
import Glibc
import StarlingCore
import StarlingCrypto
import Synchronization
import Testing

/// A stranger without the key that keeps `target` idle TCP connections open to a port, spread
/// over source addresses 127.0.0.2 to 127.0.0.33, and opens a new one whenever the node closes
/// one. Runs on its own thread until `stop()`; closes every descriptor it opened.
final class IdleConnectionFlood: Sendable {
    private let running = Atomic<Bool>(true)
    private let opened = Atomic<Int>(0)
    private let finished = DispatchSemaphore(value: 0)

    init(target: Int, port: UInt16, sources: Int = 32) {
        precondition((1...253).contains(sources), "sources are 127.0.0.2 to 127.0.0.254")
        let thread = Thread { [self] in
            var fds: [Int32] = []
            var next = 0
            while running.load(ordering: .relaxed) {
                while fds.count < target {
                    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
                    guard fd >= 0 else { break }
                    var source = sockaddr_in()
                    source.sin_family = sa_family_t(AF_INET)
                    source.sin_addr.s_addr = inet_addr("127.0.0.\(2 + next % sources)")
                    next += 1
                    _ = withUnsafePointer(to: &source) {
                        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
                    }
                    _ = withLoopback(port: port) { connect(fd, $0, $1) }
                    fds.append(fd)
                    opened.add(1, ordering: .relaxed)
                }
                // Replace every connection the node closed (readable with EOF, or an error).
                var polls = fds.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
                _ = poll(&polls, nfds_t(polls.count), 100)
                var sink = [UInt8](repeating: 0, count: 16)
                fds = polls.compactMap { p in
                    guard p.revents != 0 else { return p.fd }
                    if p.revents & Int16(POLLIN) != 0, recv(p.fd, &sink, sink.count, Int32(MSG_DONTWAIT)) > 0 { return p.fd }
                    close(p.fd)
                    return nil
                }
            }
            for fd in fds { close(fd) }
            finished.signal()
        }
        thread.start()
    }

    /// Connections opened so far (replacements included).
    var connectionsOpened: Int { opened.load(ordering: .relaxed) }

    func stop() {
        guard running.exchange(false, ordering: .relaxed) else { return }
        finished.wait()
    }
}

/// Issue #8 item 6 against real `starling node` processes: a peer holding the key cannot crash
/// a node, and a stranger cannot starve it.
@Suite("Wire and stream hardening with real processes", .serialized)
struct WireHardeningIntegrationTests {
    static func nowMs() -> UInt64 { UInt64(Date().timeIntervalSince1970 * 1000) }

    /// Frames as the stream protocol writes them: `length:u32 sealed`.
    static func frame(_ sealed: [UInt8]) -> [UInt8] {
        let n = UInt32(sealed.count)
        return [UInt8(n >> 24), UInt8(truncatingIfNeeded: n >> 16), UInt8(truncatingIfNeeded: n >> 8), UInt8(truncatingIfNeeded: n)] + sealed
    }

    /// A hello frame addressed to the node at 127.0.0.1:`port`, as a peer holding the key sends it.
    static func hello(to port: UInt16, key: ClusterKey) -> [UInt8] {
        frame(Envelope.seal([2] + Array("127.0.0.1:\(port)".utf8), kind: .streamHello, key: key, sentAtMs: nowMs()))
    }

    /// A hello and a push-pull request carrying `state`, as a peer holding the key sends them.
    static func pushPullRequest(_ state: [UInt8], key: ClusterKey, port: UInt16) -> [UInt8] {
        hello(to: port, key: key)
            + frame(Envelope.seal(state, kind: .pushPullRequest, key: key, sentAtMs: nowMs()))
    }

    @Test func extremeNumbersFromAPeerWithTheKeyDoNotCrashANode() throws {
        let cluster = try LocalCluster()
        defer { cluster.shutdown() }
        let nodes = try cluster.startMesh(["x1", "x2"])
        let a = nodes[0]
        let key = try Keyring.load(path: cluster.keyFile).primary
        let me = NodeAddress(host: "127.0.0.1", port: a.gossipPort)
        // Accusations nobody could refute, an impostor at the top, and a timestamp 2⁶³ ms off.
        let messages: [MembershipMessage] = [
            .suspect(name: "x1", incarnation: .max, from: "x2"), .dead(name: "x1", incarnation: .max, from: "x2"),
            .alive(.init(name: "x1", address: NodeAddress(host: "127.0.0.1", port: 9), incarnation: .max, metadata: MemberMetadata())),
            .suspect(name: "x2", incarnation: .max, from: "x1"),
        ]
        var datagrams = messages.map { Envelope.seal(Packet([$0]).encoded(), kind: .gossip, key: key, sentAtMs: Self.nowMs()) }
        datagrams.append(Envelope.seal(Packet([.suspect(name: "x1", incarnation: 1, from: "x2")]).encoded(), kind: .gossip,
                                       key: key, sentAtMs: Self.nowMs() &+ (1 << 63)))
        datagrams.append(Envelope.seal(Packet([.suspect(name: "x1", incarnation: 1, from: "x2")]).encoded(), kind: .gossip,
                                       key: key, sentAtMs: 0))
        sendDatagrams(datagrams, to: a.gossipPort)
        // The same through a push-pull: an entry about us at UInt64.max, dead.
        let state = PushPullState(join: false, source: "x2", entries: [
            .init(name: "x1", address: me, incarnation: .max, status: .dead, metadata: MemberMetadata()),
            .init(name: "x7", address: NodeAddress(host: "127.0.0.1", port: 9), incarnation: 3, status: .alive, metadata: MemberMetadata()),
        ])
        sendStream(Self.pushPullRequest(state.encoded(), key: key, port: a.gossipPort), to: a.gossipPort)
        // The good entry of that exchange applies: the bad one was skipped, not the exchange.
        try waitUntil("the good entry of the push-pull applies", seconds: 5) { a.members()?.contains { $0.name == "x7" } == true }
        #expect(a.isRunning)
        #expect(a.metric("starling_push_pull_entries_skipped_total") == 1)
        let view = try #require(a.members())
        #expect(view.first { $0.name == "x1" }?.incarnation ?? .max < 1 << 62)
        #expect(a.metrics().contains("starling_packets_dropped_total{reason=\"replay_window\"}"))
        #expect(a.metrics().contains("starling_packets_dropped_total{reason=\"invalid\"}"))
        try waitUntil("both still alive at both", seconds: 5) { nodes.allSatisfy { $0.status(of: "x1") == "alive" && $0.status(of: "x2") == "alive" } }
    }

    // MARK: Strangers

    /// Opens `count` TCP connections to 127.0.0.1:port without waiting on each (non-blocking),
    /// then waits until they are established. Returns the descriptors; the caller closes them.
    static func openIdleConnections(_ count: Int, to port: UInt16) -> [Int32] {
        var fds: [Int32] = []
        for _ in 0..<count {
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
            guard fd >= 0 else { break }
            _ = withLoopback(port: port) { connect(fd, $0, $1) }
            fds.append(fd)
        }
        var pending = fds.map { pollfd(fd: $0, events: Int16(POLLOUT), revents: 0) }
        let deadline = Date().addingTimeInterval(10)
        while !pending.isEmpty, Date() < deadline {
            _ = poll(&pending, nfds_t(pending.count), 100)
            pending = pending.filter { $0.revents == 0 }.map { pollfd(fd: $0.fd, events: Int16(POLLOUT), revents: 0) }
        }
        return fds
    }

    /// Raises this process's descriptor limit: the test holds hundreds of sockets.
    static func raiseOpenFileLimit() {
        var limit = rlimit()
        getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        limit.rlim_cur = limit.rlim_max
        setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
    }

    /// Seconds until every node in `nodes` lists `name` alive.
    static func timeToJoin(_ name: String, through seed: NodeProcess, cluster: LocalCluster, watchedBy others: [NodeProcess]) throws -> (NodeProcess, Double) {
        let started = Date()
        let joiner = try cluster.start(name, join: [seed])
        let all = others + [joiner]
        try waitUntil("\(name) is alive everywhere", seconds: 20) { all.allSatisfy { $0.status(of: name) == "alive" } }
        return (joiner, Date().timeIntervalSince(started))
    }

    /// What a flood must not do is keep a joiner out. It does slow a join down even when the
    /// joiner is never refused: the seed's loop spends its time accepting and evicting strangers
    /// that reconnect at once (32 sources: 0.65 s against 0.26 on an idle machine, 0.70 against
    /// 0.19 in a fresh-clone CI run, both with no refusal; 200 sources: 1.2 s). And under load the
    /// joiner's first stream can be evicted as the oldest unauthenticated one before the seed has
    /// read its hello; its retry, one reconnect interval (0.5 s) later, gets in (seen once in CI:
    /// 1 refusal, joined in 1.27 s). So one refusal is allowed, a second is not, and the time
    /// bound leaves room for both on a loaded machine (200 sources while other work held both
    /// cores: 2.88 s against 0.57). The rules these tests replaced refused every newcomer: the
    /// joiner never got in within `timeToJoin`'s 20 s, or only at a later retry.
    static func expectTheJoinWasNotStarved(_ joiner: NodeProcess, took flooded: Double, baseline: Double,
                                           _ flood: String, sourceLocation: SourceLocation = #_sourceLocation) {
        let refused = joiner.metric("starling_push_pulls_failed_total")
        print("join time: \(baseline)s without the flood, \(flooded)s under \(flood) (the joiner's failed push-pulls: \(refused))")
        #expect(refused <= 1, "the joiner was refused more than once", sourceLocation: sourceLocation)
        #expect(flooded < baseline + 4, "join took \(flooded)s under the flood, \(baseline)s without", sourceLocation: sourceLocation)
    }

    @Test func fiveHundredIdleConnectionsDoNotDelayAJoin() throws {
        Self.raiseOpenFileLimit()
        let cluster = try LocalCluster()
        defer { cluster.shutdown() }
        let nodes = try cluster.startMesh(["f1", "f2"])
        let seed = nodes[0]
        let (j1, baseline) = try Self.timeToJoin("j1", through: seed, cluster: cluster, watchedBy: nodes)

        // A stranger (same source address as every node here) opens 500 connections and idles.
        let idle = Self.openIdleConnections(500, to: seed.gossipPort)
        defer { for fd in idle { close(fd) } }
        #expect(idle.count == 500)
        // It has accepted them once it has shed most (by eviction, or refusal at a limit).
        func shed() -> Double {
            ["stream_evicted", "stream_limit", "stream_source_limit"].reduce(0) {
                $0 + seed.metric("starling_packets_dropped_total{reason=\"\($1)\"}")
            }
        }
        try waitUntil("the seed has seen the flood", seconds: 5) { shed() >= 300 }
        let (j2, flooded) = try Self.timeToJoin("j2", through: seed, cluster: cluster, watchedBy: nodes + [j1])
        Self.expectTheJoinWasNotStarved(j2, took: flooded, baseline: baseline, "500 idle connections from one source")
        #expect(seed.isRunning)
    }

    /// 500 idle connections held open at all times from 32 other source addresses: the inbound
    /// limit is full of strangers the whole time. A join still gets in (it evicts the oldest
    /// unauthenticated stream), and the seed's own push-pulls still go out (outbound streams
    /// have their own limit).
    @Test func aSustainedFloodFromManySourcesStarvesNeitherJoinsNorOutboundPushPulls() throws {
        Self.raiseOpenFileLimit()
        let cluster = try LocalCluster()
        defer { cluster.shutdown() }
        let nodes = try cluster.startMesh(["g1", "g2", "g3"])
        let seed = nodes[0]
        let (j1, baseline) = try Self.timeToJoin("j1", through: seed, cluster: cluster, watchedBy: nodes)

        let flood = IdleConnectionFlood(target: 500, port: seed.gossipPort)
        defer { flood.stop() }
        try waitUntil("the seed's inbound limit is full of strangers", seconds: 10) {
            seed.metric("starling_packets_dropped_total{reason=\"stream_limit\"}")
                + seed.metric("starling_packets_dropped_total{reason=\"stream_evicted\"}") >= 300
        }
        let started = seed.metric("starling_push_pulls_total")
        let failed = seed.metric("starling_push_pulls_failed_total")
        let joined: (NodeProcess, Double)
        do { joined = try Self.timeToJoin("j2", through: seed, cluster: cluster, watchedBy: nodes + [j1]) } catch {
            print("diagnostics: the seed's stream counters", seed.metrics().split(separator: "\n").filter { $0.contains("dropped") || $0.contains("push_pull") }.joined(separator: "\n"))
            print("diagnostics: the joiner's log", cluster.nodes.last.map { cluster.log(of: $0).suffix(3000) } ?? "")
            throw error
        }
        let (j2, flooded) = joined
        Self.expectTheJoinWasNotStarved(j2, took: flooded, baseline: baseline, "a sustained flood from 32 sources")
        // A periodic push-pull is due every 3 s here; the seed's own must go out and succeed.
        try waitUntil("the seed starts push-pulls of its own", seconds: 15) { seed.metric("starling_push_pulls_total") >= started + 2 }
        #expect(seed.metric("starling_push_pulls_failed_total") == failed, "outbound push-pulls failed under the flood")
        #expect(flood.connectionsOpened > 500, "the node closed idle strangers and they came back")
        #expect(seed.isRunning)
    }

    /// The reviewer's flood: 200 source addresses with 10 idle connections each, held open. Every
    /// source then holds about one stream of the 128, so "evict from a source holding at least
    /// two more than the newcomer's" refused every newcomer, the joiner included, until its
    /// retry: the join took 1.7 s instead of 0.2 s.
    @Test func aFloodFromTwoHundredSourcesDoesNotDelayAJoin() throws {
        Self.raiseOpenFileLimit()
        let cluster = try LocalCluster()
        defer { cluster.shutdown() }
        let nodes = try cluster.startMesh(["h1", "h2"])
        let seed = nodes[0]
        let (j1, baseline) = try Self.timeToJoin("j1", through: seed, cluster: cluster, watchedBy: nodes)
        let flood = IdleConnectionFlood(target: 2_000, port: seed.gossipPort, sources: 200)
        defer { flood.stop() }
        try waitUntil("the seed's inbound limit is full of strangers", seconds: 15) {
            seed.metric("starling_packets_dropped_total{reason=\"stream_limit\"}")
                + seed.metric("starling_packets_dropped_total{reason=\"stream_evicted\"}") >= 1_000
        }
        let (j2, flooded) = try Self.timeToJoin("j2", through: seed, cluster: cluster, watchedBy: nodes + [j1])
        print("\(flood.connectionsOpened) connections opened")
        Self.expectTheJoinWasNotStarved(j2, took: flooded, baseline: baseline, "2,000 idle connections from 200 sources")
        #expect(seed.isRunning)
    }

    /// Seconds until the server closes a connection on which we trickle `bytes`, one a second.
    static func secondsUntilClosed(port: UInt16, trickling bytes: [UInt8]) -> Double? {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        guard withLoopback(port: port, { connect(fd, $0, $1) == 0 }) else { return nil }
        let started = Date()
        for i in 0..<15 {
            var b = bytes[i % bytes.count]
            if send(fd, &b, 1, Int32(MSG_NOSIGNAL)) < 0 { return Date().timeIntervalSince(started) }
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            if poll(&p, 1, 1000) > 0 {
                var sink = [UInt8](repeating: 0, count: 64)
                if recv(fd, &sink, sink.count, 0) <= 0 { return Date().timeIntervalSince(started) }
            }
        }
        return nil
    }

    @Test func aSlowLorisIsClosedAtTheAuthenticationDeadline() throws {
        let cluster = try LocalCluster()
        defer { cluster.shutdown() }
        let a = try cluster.start("s1")
        // A plausible hello header (61 bytes follow), one byte a second.
        let closedAfter = try #require(Self.secondsUntilClosed(port: a.gossipPort, trickling: [0, 0, 0, 61] + Array(repeating: 7, count: 61)))
        #expect(closedAfter > 2.5 && closedAfter < 4.5, "closed after \(closedAfter)s; the deadline is 3 s")
        #expect(a.metric("starling_packets_dropped_total{reason=\"auth_timeout\"}") == 1)
    }

    @Test func aLargeFrameBeforeAuthenticationIsRefusedAtOnce() throws {
        let cluster = try LocalCluster()
        defer { cluster.shutdown() }
        let a = try cluster.start("s1")
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        #expect(withLoopback(port: a.gossipPort) { connect(fd, $0, $1) == 0 })
        let started = Date()
        var bytes: [UInt8] = [0, 0x40, 0, 0] + Array(repeating: 9, count: 1024)  // claims 4 MiB, under maxFrameBytes
        _ = send(fd, &bytes, bytes.count, Int32(MSG_NOSIGNAL))
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        var sink = [UInt8](repeating: 0, count: 64)
        #expect(poll(&p, 1, 2000) > 0 && recv(fd, &sink, sink.count, 0) <= 0, "the node keeps the connection open")
        #expect(Date().timeIntervalSince(started) < 1)
        #expect(a.metric("starling_packets_dropped_total{reason=\"preauth_too_large\"}") == 1)
    }

    /// Eviction only ever takes streams that have not authenticated: a peer whose hello opened
    /// keeps its stream (until `streamTimeout`) however many strangers arrive from its address.
    @Test func anAuthenticatedStreamIsNeverEvicted() throws {
        let cluster = try LocalCluster()
        defer { cluster.shutdown() }
        let a = try cluster.start("e1")
        let key = try Keyring.load(path: cluster.keyFile).primary
        let peer = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(peer) }
        #expect(withLoopback(port: a.gossipPort) { connect(peer, $0, $1) == 0 })
        var hello = Self.hello(to: a.gossipPort, key: key)
        #expect(send(peer, &hello, hello.count, Int32(MSG_NOSIGNAL)) == hello.count)
        let opened = Date()
        try waitUntil("the node has read the hello", seconds: 2) { a.metric("starling_stream_hellos_total") == 1 }
        // Then 60 strangers from the same address: the per-source limit (16) evicts 44 of them.
        let strangers = Self.openIdleConnections(60, to: a.gossipPort)
        defer { for fd in strangers { close(fd) } }
        try waitUntil("the strangers are shed", seconds: 5) {
            a.metric("starling_packets_dropped_total{reason=\"stream_evicted\"}") >= 40
        }
        var p = pollfd(fd: peer, events: Int16(POLLIN), revents: 0)
        #expect(poll(&p, 1, 0) == 0, "the authenticated stream was closed")
        #expect(Date().timeIntervalSince(opened) < 3, "checked within the authentication deadline")
    }

    // MARK: The loop thread

    /// A key file that is a FIFO (or a file on a hung mount) must stall neither gossip nor later
    /// reloads: the reload opens it non-blocking and refuses anything but a regular file of at
    /// most 64 KiB. Before, the reload thread blocked in open(2) on the FIFO for ever, and
    /// every later SIGHUP was folded into that reload without a word.
    @Test func aKeyFileThatIsAFIFOOrTooLargeIsRefusedAndLaterReloadsWork() throws {
        let cluster = try LocalCluster()
        defer { cluster.shutdown() }
        let key = try String(contentsOfFile: cluster.keyFile, encoding: .utf8)
        let keyFile = cluster.dir + "/k1.key"
        _ = FileManager.default.createFile(atPath: keyFile, contents: Data(key.utf8), attributes: [.posixPermissions: 0o600])
        let k1 = try cluster.start("k1", keyFile: keyFile)
        let k2 = try cluster.start("k2", join: [k1])
        try waitUntil("both alive", seconds: 10) { [k1, k2].allSatisfy { ($0.members() ?? []).filter { $0.status == "alive" }.count == 2 } }
        func failures() -> Int { cluster.log(of: k1).components(separatedBy: "keyring reload failed").count - 1 }

        try FileManager.default.removeItem(atPath: keyFile)
        #expect(mkfifo(keyFile, 0o600) == 0)
        // A writer holds the FIFO open and writes nothing: a blocking read waits for ever.
        let writer = open(keyFile, O_RDWR | O_NONBLOCK)
        #expect(writer >= 0)
        defer { close(writer) }
        k1.signal(SIGHUP)
        try waitUntil("the FIFO is refused", seconds: 5) { failures() == 1 }
        #expect(cluster.log(of: k1).contains("not a regular file"))
        let probes = k1.metric("starling_probes_total")
        try waitUntil("gossip goes on", seconds: 5) { k1.metric("starling_probes_total") >= probes + 2 }

        try FileManager.default.removeItem(atPath: keyFile)
        let padding = String(repeating: "# " + String(repeating: "x", count: 98) + "\n", count: 700)  // 70 KB
        _ = FileManager.default.createFile(atPath: keyFile, contents: Data((key + padding).utf8), attributes: [.posixPermissions: 0o600])
        k1.signal(SIGHUP)
        try waitUntil("the oversized file is refused", seconds: 5) { failures() == 2 }
        #expect(cluster.log(of: k1).contains("byte limit"))

        try Data(key.utf8).write(to: URL(fileURLWithPath: keyFile))
        k1.signal(SIGHUP)
        try waitUntil("a good key file reloads", seconds: 5) { cluster.log(of: k1).contains("keyring reloaded") }
        #expect(k2.status(of: "k1") == "alive")
        #expect(k1.isRunning)
    }

    @Test func underChurnTheSnapshotIsPublishedAtABoundedRateAndStaysFresh() throws {
        let cluster = try LocalCluster()
        defer { cluster.shutdown() }
        let a = try cluster.start("c1")
        let key = try Keyring.load(path: cluster.keyFile).primary
        // 3,000 new members, one datagram each: 3,000 changes within about a second.
        let datagrams = (0..<3000).map { i in
            Envelope.seal(Packet([.alive(.init(name: "ghost\(i)", address: NodeAddress(host: "127.0.0.2", port: UInt16(10_000 + i)),
                                               incarnation: 1, metadata: MemberMetadata()))]).encoded(),
                          kind: .gossip, key: key, sentAtMs: Self.nowMs())
        }
        let before = a.metric("starling_snapshot_publishes_total")
        let cpuBefore = DescriptorExhaustionTests.cpuSeconds(a.pid)
        let started = Date()
        sendDatagrams(datagrams, to: a.gossipPort)
        try waitUntil("every new member is visible", seconds: 5) { (a.members()?.count ?? 0) >= 3001 }
        let elapsed = Date().timeIntervalSince(started)
        let cpu = DescriptorExhaustionTests.cpuSeconds(a.pid) - cpuBefore
        let published = a.metric("starling_snapshot_publishes_total") - before
        print("3,000 changes: visible after \(elapsed)s, \(published) publishes, \(cpu)s of the node's CPU")
        // The work, not only the counter: publishing after every change sorted and copied the
        // whole table 3,000 times (O(N²)); bounded publishing must stay far below that. The bound
        // was 1.5 s; on the machine of 1 December the bounded code itself used 1.17–1.63 s (debug,
        // idle machine, 5 runs), and a fresh-clone CI run failed at 1.63 s. 3 s keeps a margin
        // for a slower machine and still catches the quadratic path, whose publishes the next
        // check counts directly.
        #expect(cpu < 3.0, "the node used \(cpu)s of CPU for 3,000 changes")
        // At most one publish per 50 ms plus the 100 ms heartbeat, with slack for scheduling.
        #expect(published >= 1)
        #expect(published <= elapsed / 0.05 + 10, "\(published) publishes in \(elapsed)s for 3,000 changes")
    }
}

/// A node whose descriptor limit is lower than a flood of connections: accept fails with
/// EMFILE, and the node must neither spin nor stop serving once the flood is gone.
@Suite("Descriptor exhaustion", .serialized)
struct DescriptorExhaustionTests {
    /// CPU seconds (user + system) the process has used, from /proc.
    static func cpuSeconds(_ pid: Int32) -> Double {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return 0 }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        // Fields 14 and 15 (utime, stime) are the 12th and 13th after the command name.
        guard fields.count > 13, let user = Double(fields[11]), let system = Double(fields[12]) else { return 0 }
        return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }

    /// A node started by `bash -c "PREFIX && exec starling node ..."` (PREFIX sets its limits),
    /// its output in `cluster.dir/NAME.log`: the process, its gossip and API ports, and the log.
    static func startNode(_ name: String, after prefix: String, in cluster: LocalCluster) throws -> (Process, UInt16, UInt16, String) {
        let (gossip, api) = (freePort(), freePort())
        let node = Process()
        node.executableURL = URL(fileURLWithPath: "/bin/bash")
        node.arguments = ["-c", prefix + " && exec \"$0\" \"$@\"", starlingBinary(), "node", "--name", name,
                          "--gossip", "127.0.0.1:\(gossip)", "--api", "127.0.0.1:\(api)", "--data", cluster.dir + "/" + name,
                          "--key-file", cluster.keyFile, "--preset", "loopback", "--log-level", "info"]
        let log = cluster.dir + "/" + name + ".log"
        _ = FileManager.default.createFile(atPath: log, contents: nil)
        node.standardError = FileHandle(forWritingAtPath: log)
        node.standardOutput = node.standardError
        try node.run()
        return (node, gossip, api, log)
    }

    static func end(_ node: Process) {
        if node.isRunning { kill(node.processIdentifier, SIGKILL) }
        node.waitUntilExit()
    }

    /// A node that inherits a descriptor numbered above its open-file limit (a supervisor's
    /// leaked pipe) still starts: the sandbox probe refused to start anything there before
    /// (Foundation's Process fails with EBADF), and the node refused to start.
    @Test func aNodeThatInheritsADescriptorAboveItsLimitStarts() throws {
        let cluster = try LocalCluster()
        defer { cluster.shutdown() }
        let (node, _, api, log) = try Self.startNode("inherits", after: "exec 200</dev/null && ulimit -n 128", in: cluster)
        defer { Self.end(node) }
        try waitUntil("the node serves its API or exits", seconds: 20) { !node.isRunning || httpGet(port: api, path: "/v1/health") != nil }
        #expect(node.isRunning, "the node exited: \((try? String(contentsOfFile: log, encoding: .utf8))?.suffix(600) ?? "")")
    }

    @Test func acceptFailingWithEMFILEDoesNotSpinTheLoop() throws {
        WireHardeningIntegrationTests.raiseOpenFileLimit()
        let cluster = try LocalCluster()
        defer { cluster.shutdown() }
        // The node's hard limit is 128 descriptors: it cannot raise past that.
        let (node, gossip, api, _) = try Self.startNode("low", after: "ulimit -n 128", in: cluster)
        defer { Self.end(node) }
        try waitUntil("the node serves its API", seconds: 20) { httpGet(port: api, path: "/v1/health") != nil }

        // 400 connections held open from 32 sources: far more than the node has descriptors.
        let flood = IdleConnectionFlood(target: 400, port: gossip)
        let before = Self.cpuSeconds(node.processIdentifier)
        let started = Date()
        // A two-second measurement window, sampling the node's open descriptors.
        var mostOpen = 0
        while Date().timeIntervalSince(started) < 2 {
            let open = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(node.processIdentifier)/fd").count) ?? 0
            mostOpen = max(mostOpen, open)
            usleep(50_000)
        }
        let used = Self.cpuSeconds(node.processIdentifier) - before
        let window = Date().timeIntervalSince(started)
        let metrics = httpGet(port: api, path: "/metrics").map { String(decoding: $0, as: UTF8.self) } ?? ""
        flood.stop()
        print("under EMFILE: \(used) s of CPU in \(window) s; at most \(mostOpen) descriptors open;",
              metrics.split(separator: "\n").filter { $0.contains("stream") })
        // libuv sheds connections it cannot accept without calling back, so the proof that the
        // flood reached the limit is the descriptor count itself.
        #expect(mostOpen >= 120, "the flood never came near the descriptor limit (\(mostOpen) open)")
        #expect(node.isRunning)
        #expect(used < 0.6 * window, "the node used \(used) s of CPU in \(window) s under EMFILE: it spins")
        // With the flood gone, a node joins through it as usual.
        let joiner = try NodeProcess(name: "after", gossipPort: freePort(), apiPort: freePort(), dataDir: cluster.dir + "/after",
                                     keyFile: cluster.keyFile, join: [gossip], logPath: cluster.dir + "/after.log")
        defer {
            joiner.signal(SIGKILL)
            _ = joiner.waitForExit(seconds: 5)
        }
        try waitUntil("the joiner is known to the low node", seconds: 10) {
            httpGet(port: api, path: "/v1/members").map { String(decoding: $0, as: UTF8.self).contains("\"after\"") } ?? false
        }
        #expect(joiner.isRunning)
    }
}
