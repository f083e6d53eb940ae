import Foundation
import Glibc
import StarlingCore
import StarlingCrypto
import Testing

/// Real `starling node` processes on 127.0.0.1 with real UDP and TCP.
@Suite("Membership with real processes", .serialized)
struct MembershipIntegrationTests {
    func allSee(_ nodes: [NodeProcess], _ member: String, as status: String) -> Bool {
        nodes.allSatisfy { $0.status(of: member) == status }
    }

    @Test func joinCrashRestartAndLeave() throws {
        let cluster = try LocalCluster()
        defer { cluster.shutdown() }
        let seed = try cluster.start("n1")
        var nodes = [seed]
        for i in 2...5 { nodes.append(try cluster.start("n\(i)", join: [seed])) }

        // 5 nodes join through one seed and each lists 5 alive.
        try waitUntil("every node lists 5 alive", seconds: 20) {
            nodes.allSatisfy { n in (n.members() ?? []).filter { $0.status == "alive" }.count == 5 }
        }
        let before = try #require(seed.members()?.first { $0.name == "n5" })
        #expect(before.capacity == .init(slots: 2, free: 2))
        #expect(before.gossip == "127.0.0.1:\(nodes[4].gossipPort)")
        #expect(before.api == "127.0.0.1:\(nodes[4].apiPort)")

        // SIGKILL one: the rest list it dead.
        nodes[4].signal(SIGKILL)
        _ = nodes[4].waitForExit(seconds: 5)
        let rest = Array(nodes[0..<4])
        try waitUntil("the rest list n5 dead", seconds: 20) { allSee(rest, "n5", as: "dead") }
        // One of the four declared it (the others learnt it by gossip); n4 leaves below, so count now.
        let deaths = rest.map { $0.metric("starling_deaths_total") }.reduce(0, +)

        // Restart it with the same name and data dir: it rejoins alive with a higher incarnation.
        let reborn = try cluster.start("n5", join: [seed])
        try waitUntil("n5 is alive again everywhere", seconds: 20) { allSee(rest + [reborn], "n5", as: "alive") }
        let after = try #require(seed.members()?.first { $0.name == "n5" })
        #expect(after.incarnation > before.incarnation)

        // SIGTERM one: it exits 0 and the rest list it left.
        nodes[3].signal(SIGTERM)
        #expect(nodes[3].waitForExit(seconds: 10) == 0)
        let remaining = Array(nodes[0..<3]) + [reborn]
        try waitUntil("the rest list n4 left", seconds: 10) { allSee(remaining, "n4", as: "left") }
        // An unknown route is a 404 with the interface's error shape.
        let (status, body) = try httpRequest(port: seed.apiPort, path: "/v1/no-such-route")
        #expect(status == 404)
        #expect((try? JSONSerialization.jsonObject(with: body) as? [String: String])?["error"] != nil)
        #expect(deaths >= 1)
    }

    @Test func aStalledNodeIsDeclaredDeadAndRejoinsByItselfWhenItResumes() throws {
        let cluster = try LocalCluster()
        defer { cluster.shutdown() }
        let nodes = try cluster.startMesh(["a", "b", "c"])
        let (a, b, c) = (nodes[0], nodes[1], nodes[2])
        let before = try #require(a.members()?.first { $0.name == "c" }?.incarnation)
        c.signal(SIGSTOP)
        try waitUntil("a and b declare the stalled c dead", seconds: 20) { allSee([a, b], "c", as: "dead") }
        c.signal(SIGCONT)
        try waitUntil("c is alive again everywhere, by itself", seconds: 20) {
            allSee([a, b], "c", as: "alive") && allSee([c], "a", as: "alive") && allSee([c], "b", as: "alive")
        }
        let after = try #require(a.members()?.first { $0.name == "c" }?.incarnation)
        #expect(after > before, "c must refute its death with a higher incarnation")
        // Metrics are published at most 100 ms after a change.
        try waitUntil("c counts its refutation", seconds: 5) { c.metric("starling_refutations_total") >= 1 }
    }

    @Test func aNodeWithAnotherKeyNeverAppears() throws {
        let cluster = try LocalCluster()
        defer { cluster.shutdown() }
        let seed = try cluster.start("a")
        let b = try cluster.start("b", join: [seed])
        try waitUntil("a and b see each other", seconds: 15) { allSee([seed, b], "b", as: "alive") && allSee([seed, b], "a", as: "alive") }
        let otherKey = cluster.dir + "/other.key"
        try runStarling(["keygen", "--out", otherKey])
        let intruder = try cluster.start("intruder", join: [seed, b], keyFile: otherKey)
        // Give it several reconnect intervals and push-pull rounds.
        Thread.sleep(forTimeInterval: 3)
        #expect(seed.members()?.contains { $0.name == "intruder" } == false)
        #expect(b.members()?.contains { $0.name == "intruder" } == false)
        #expect(intruder.members()?.map(\.name) == ["intruder"])
        #expect(seed.metrics().contains("starling_packets_dropped_total{reason=\"unknown_key\"}"))
    }

    @Test func garbageDatagramsAndStreamsLeaveANodeUpAndItsViewUnchanged() throws {
        let cluster = try LocalCluster()
        defer { cluster.shutdown() }
        let nodes = try cluster.startMesh(["a", "b", "c"])
        let (a, b, c) = (nodes[0], nodes[1], nodes[2])
        let before = try #require(a.members())

        var rng = SystemRandomNumberGenerator()
        var datagrams: [[UInt8]] = []
        for i in 0..<5_000 {
            let n = Int.random(in: 0...1_500, using: &rng)
            var d = (0..<n).map { _ in UInt8.random(in: 0...255, using: &rng) }
            // Many start like a real envelope (kind byte 1) so they reach the key lookup and AEAD.
            if n > 0, i % 2 == 0 { d[0] = 1 }
            datagrams.append(d)
        }
        sendDatagrams(datagrams, to: a.gossipPort)
        // Streams: garbage, a huge declared length, a truncated frame.
        sendStream((0..<300).map { _ in UInt8.random(in: 0...255, using: &rng) }, to: a.gossipPort)
        sendStream([0xff, 0xff, 0xff, 0xff, 1, 2, 3], to: a.gossipPort)
        sendStream([0, 0, 1, 0, 2], to: a.gossipPort)

        Thread.sleep(forTimeInterval: 1)
        #expect(a.isRunning)
        #expect(httpGet(port: a.apiPort, path: "/v1/health") != nil)
        let after = try #require(a.members())
        #expect(after.map(\.name) == before.map(\.name))
        #expect(after.allSatisfy { $0.status == "alive" })
        let lines = a.metrics().split(separator: "\n").filter { $0.hasPrefix("starling_packets_dropped_total") }
        let dropped = lines.compactMap { Double($0.split(separator: " ").last!) }.reduce(0, +)
        // Most arrive (the kernel may still drop some under load); every one that does is counted.
        #expect(dropped >= 1_000, "garbage must be counted as dropped, counted \(dropped)")
        for reason in ["oversize", "wrong_kind", "unknown_key"] {
            #expect(lines.contains { $0.contains("reason=\"\(reason)\"") }, "no drops counted as \(reason)")
        }
        try waitUntil("b and c still see a alive", seconds: 5) { allSee([b, c], "a", as: "alive") }
    }

    @Test func forgedAndReplayedPacketsUnderTheRealKeyAreRefused() throws {
        let cluster = try LocalCluster()
        defer { cluster.shutdown() }
        let a = try cluster.start("a")
        let key = try Keyring.load(path: cluster.keyFile).primary
        let nowMs = UInt64(Date().timeIntervalSince1970 * 1000)
        var rng = SystemRandomNumberGenerator()
        // Right kind and key id, wrong tag: authentication fails.
        var forged: [[UInt8]] = []
        for _ in 0..<200 {
            var d = Envelope.seal(Array(repeating: 1, count: 40), kind: .gossip, key: key, sentAtMs: nowMs)
            d[Envelope.headerBytes + Int.random(in: 0..<(d.count - Envelope.headerBytes), using: &rng)] ^= 0x40
            forged.append(d)
        }
        // Validly sealed garbage: it must fail the wire decoder, not crash the node.
        let garbage = (0..<200).map { _ in
            Envelope.seal((0..<Int.random(in: 0...200, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) },
                          kind: .gossip, key: key, sentAtMs: nowMs)
        }
        sendDatagrams(forged + garbage, to: a.gossipPort)
        // A valid packet sealed a minute ago (a replay): dropped, and its member never appears.
        let ghost = Packet([.alive(.init(name: "ghost", address: NodeAddress(host: "127.0.0.1", port: 9), incarnation: 7,
                                         metadata: MemberMetadata()))]).encoded()
        sendDatagrams([Envelope.seal(ghost, kind: .gossip, key: key, sentAtMs: nowMs - 60_000)], to: a.gossipPort)
        // Datagrams are handled in arrival order on one loop: once the stale one is counted,
        // every packet sent before it was handled too.
        try waitUntil("the stale packet is counted", seconds: 10) {
            a.metrics().contains("starling_packets_dropped_total{reason=\"replay_window\"}")
        }
        #expect(a.metrics().contains("starling_packets_dropped_total{reason=\"auth_failed\"}"))
        #expect(a.members()?.contains { $0.name == "ghost" } == false)
        #expect(a.isRunning)
        #expect(!a.metrics().contains("starling_packets_dropped_total{reason=\"replay\"}"), "no copy was sent yet")
        // The same packet sealed now is accepted (the check above can fail), and a copy of it,
        // within the window, is dropped as a replay: it would draw the replies the first drew.
        let fresh = Envelope.seal(ghost, kind: .gossip, key: key, sentAtMs: UInt64(Date().timeIntervalSince1970 * 1000))
        sendDatagrams([fresh, fresh], to: a.gossipPort)
        try waitUntil("a fresh alive is accepted", seconds: 5) { a.members()?.contains { $0.name == "ghost" } == true }
        try waitUntil("its copy is dropped as a replay", seconds: 5) {
            a.metrics().contains("starling_packets_dropped_total{reason=\"replay\"}")
        }
    }

    @Test func keysRotateWithoutDowntime() throws {
        let cluster = try LocalCluster()
        defer { cluster.shutdown() }
        let oldKey = try String(contentsOfFile: cluster.keyFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        let newKeyFile = cluster.dir + "/new.key"
        try runStarling(["keygen", "--out", newKeyFile])
        let newKey = try String(contentsOfFile: newKeyFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)

        var nodes: [NodeProcess] = []
        for name in ["r1", "r2", "r3"] {
            let keyFile = "\(cluster.dir)/\(name).key"
            _ = FileManager.default.createFile(atPath: keyFile, contents: Data((oldKey + "\n").utf8), attributes: [.posixPermissions: 0o600])
            nodes.append(try cluster.start(name, join: nodes.first.map { [$0] } ?? [], keyFile: keyFile))
        }
        func allAlive() -> Bool { nodes.allSatisfy { ($0.members() ?? []).filter { $0.status == "alive" }.count == 3 } }
        try waitUntil("3 alive", seconds: 15, allAlive)

        func rewrite(_ keys: [String]) {
            for n in nodes {
                try? Data((keys.joined(separator: "\n") + "\n").utf8).write(to: URL(fileURLWithPath: n.keyFile))
                n.signal(SIGHUP)
            }
            Thread.sleep(forTimeInterval: 0.5)
        }
        rewrite([oldKey, newKey])   // install
        #expect(allAlive())
        rewrite([newKey, oldKey])   // use
        #expect(allAlive())
        rewrite([newKey])           // remove
        Thread.sleep(forTimeInterval: 1.5)
        #expect(allAlive(), "nobody was suspected through the rotation")
        #expect(nodes.allSatisfy { $0.metric("starling_deaths_total") == 0 })

        // A node that still has only the old key cannot join any more.
        let stale = try cluster.start("stale", join: [nodes[0]])
        Thread.sleep(forTimeInterval: 2)
        #expect(nodes[0].members()?.contains { $0.name == "stale" } == false)
        #expect(stale.members()?.count == 1)
    }
}

@Suite("Addresses")
struct AddressIntegrationTests {
    @Test func nodesMeetOverIPv6Loopback() throws {
        let dir = try makeTemporaryDirectory("starling-v6")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try runStarling(["keygen", "--out", dir + "/k"])
        let (g1, a1, g2, a2) = (freePort(), freePort(), freePort(), freePort())
        func start(_ name: String, _ g: UInt16, _ a: UInt16, _ extra: [String]) throws -> Process {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: starlingBinary())
            p.arguments = ["node", "--name", name, "--gossip", "[::1]:\(g)", "--api", "127.0.0.1:\(a)", "--data", "\(dir)/\(name)",
                           "--key-file", dir + "/k", "--preset", "loopback", "--log-level", "warning"] + extra
            p.standardError = FileHandle.nullDevice
            try p.run()
            return p
        }
        let p1 = try start("v1", g1, a1, [])
        let p2 = try start("v2", g2, a2, ["--join", "[::1]:\(g1)"])
        defer { for p in [p1, p2] where p.isRunning { kill(p.processIdentifier, SIGKILL); p.waitUntilExit() } }
        try waitUntil("v1 sees v2 over IPv6", seconds: 15) {
            guard let data = httpGet(port: a1, path: "/v1/members"),
                  let text = String(data: data, encoding: .utf8) else { return false }
            return text.contains("\"[::1]:\(g2)\"") && text.components(separatedBy: "\"alive\"").count == 3
        }
    }
}

@Suite("Advertised addresses")
struct AdvertiseIntegrationTests {
    @Test func aNodeBoundToTheWildcardIsKnownByItsAdvertisedAddress() throws {
        let cluster = try LocalCluster()
        defer { cluster.shutdown() }
        let seed = try cluster.start("seed")
        let (g, a) = (freePort(), freePort())
        let refused = try runCLI(["node", "--name", "w", "--gossip", "0.0.0.0:\(g)", "--api", "127.0.0.1:\(a)",
                                  "--data", cluster.dir + "/w", "--key-file", cluster.keyFile])
        #expect(refused.status != 0)
        #expect(refused.err.contains("--advertise"))
        let p = Process()
        p.executableURL = URL(fileURLWithPath: starlingBinary())
        p.arguments = ["node", "--name", "w", "--gossip", "0.0.0.0:\(g)", "--advertise", "127.0.0.1:\(g)", "--api", "127.0.0.1:\(a)",
                       "--data", cluster.dir + "/w", "--key-file", cluster.keyFile, "--preset", "loopback",
                       "--join", "127.0.0.1:\(seed.gossipPort)", "--log-level", "warning"]
        p.standardError = FileHandle.nullDevice
        try p.run()
        defer { if p.isRunning { kill(p.processIdentifier, SIGKILL); p.waitUntilExit() } }
        try waitUntil("the seed knows w by its advertised address", seconds: 15) {
            seed.members()?.first { $0.name == "w" }.map { $0.status == "alive" && $0.gossip == "127.0.0.1:\(g)" } ?? false
        }
    }
}
