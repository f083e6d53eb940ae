import Foundation
import Glibc
import StarlingCore
import StarlingCrypto
@testable import StarlingRuntime
import Testing

/// Hosted protocols over persistent peer links, with real MeshNodes in this process talking
/// over real TCP on 127.0.0.1 (issue #10, deliverable 1).
@Suite("Peer links and the protocol host", .serialized, .stopsItsNodes)
struct PeerLinkTests {
    /// Two nodes that see each other alive.
    static func pair(_ a: String = "la", _ b: String = "lb", configure: (inout MeshConfiguration) -> Void = { _ in }) async throws
        -> (EchoNode, EchoNode, ClusterKey) {
        let key = ClusterKey.generate()
        let first = try EchoNode(a, key: key, configure: configure)
        let second = try EchoNode(b, key: key, seeds: [first], configure: configure)
        try await eventually("\(a) and \(b) see each other", seconds: 10) {
            first.sees(b, as: .alive) && second.sees(a, as: .alive)
        }
        return (first, second, key)
    }

    @Test func manyConcurrentRequestsTravelOverOneConnectionPerPeerPair() async throws {
        let (a, b, _) = try await Self.pair()
        defer { a.node.stop(); b.node.stop() }
        let before = establishedConnections(toPort: b.port)
        let answers = try await withThrowingTaskGroup(of: Bool.self) { group in
            for i in 0..<1_000 {
                group.addTask {
                    let payload = Array("request \(i)".utf8)
                    return try await a.ask("lb", payload) == payload
                }
            }
            return try await group.reduce(0) { $0 + ($1 ? 1 : 0) }
        }
        #expect(answers == 1_000)
        // And the other way round, on the same connection.
        for i in 0..<50 { #expect(try await b.ask("la", [UInt8(i), 1]) == [UInt8(i), 1]) }
        #expect(establishedConnections(toPort: b.port) == before + 1, "one TCP connection from a to b; a: \(a.node.linkTally()), b: \(b.node.linkTally())")
        #expect(establishedConnections(toPort: a.port) == 0, "b reused a's connection instead of dialling")
        let ta = a.node.linkTally(), tb = b.node.linkTally()
        #expect(ta.links("dialled") == 1 && ta.links("accepted") == 0)
        #expect(tb.links("dialled") == 0 && tb.links("accepted") == 1)
        #expect(ta.channel(Echo.channel).framesSent == 1_000 + 50)
        #expect(tb.channel(Echo.channel).framesReceived == 1_000 + 50)
        // Through the performer (answered from another thread) as well.
        #expect(try await a.ask("lb", Array("Pabc".utf8)) == Array("cbaP".utf8))
        let stats = try await a.stats()
        #expect(stats.duplicateResponses == 0 && stats.nilResponses == 0 && stats.responses == 1_001)
    }

    @Test func messagesToOnePeerArriveInOrder() async throws {
        let (a, b, _) = try await Self.pair("oa", "ob")
        defer { a.node.stop(); b.node.stop() }
        for i in 0..<500 { _ = try await a.echo.command(.tell("ob", [UInt8(i >> 8), UInt8(i & 0xFF)])) }
        try await eventually("b received all 500", seconds: 10) { try await b.stats().received.count == 500 }
        let received = try await b.stats().received.map { Int($0[0]) << 8 | Int($0[1]) }
        #expect(received == Array(0..<500))
    }

    @Test func aRequestThatTimesOutGetsNilExactlyOnce() async throws {
        let (a, b, _) = try await Self.pair("ta", "tb")
        defer { a.node.stop(); b.node.stop() }
        let started = Date()
        let answer = try await a.ask("tb", Array("Silent".utf8), timeout: .milliseconds(300))
        let elapsed = Date().timeIntervalSince(started)
        #expect(answer == nil)
        #expect(elapsed >= 0.29 && elapsed < 3, "answered after \(elapsed) s")
        // b answers late: the answer is dropped, not delivered a second time.
        _ = try await b.echo.command(.release)
        try await eventually("the late answer reaches a", seconds: 5) {
            a.node.linkTally().drops(Echo.channel, "unexpected_response") == 1
        }
        let stats = try await a.stats()
        #expect(stats.responses == 1 && stats.nilResponses == 1 && stats.duplicateResponses == 0)
        #expect(a.node.linkTally().drops(Echo.channel, "timeout") == 1)
    }

    @Test func aBrokenLinkFailsTheRequestsInFlight() async throws {
        let (a, b, _) = try await Self.pair("ba", "bb")
        defer { a.node.stop() }
        let started = Date()
        async let answers = withThrowingTaskGroup(of: [UInt8]?.self) { group in
            for i in 0..<50 { group.addTask { try await a.ask("bb", Array("S\(i)".utf8), timeout: .seconds(60)) } }
            return try await group.reduce(into: [[UInt8]?]()) { $0.append($1) }
        }
        try await eventually("b holds all 50", seconds: 10) { try await b.stats().held == 50 }
        try await b.stop()
        let results = try await answers
        #expect(results.count == 50 && results.allSatisfy { $0 == nil })
        #expect(Date().timeIntervalSince(started) < 20, "the requests waited for their timeout instead of failing")
        #expect(a.node.linkTally().drops(Echo.channel, "broken") == 50)
        let stats = try await a.stats()
        #expect(stats.responses == 50 && stats.duplicateResponses == 0)
        // A command to a stopped node fails instead of waiting forever.
        await #expect(throws: MeshError.self) { _ = try await b.stats() }
    }

    /// A peer that stops reading: the send queue fills to its bound, then sends fail at once
    /// and are counted; requests get their nil at once; other peers are served as before.
    @Test func aFullQueueFailsFastAndStaysBounded() async throws {
        let queueBound = 1 << 20
        let (a, b, key) = try await Self.pair("qa", "qb") { $0.maxLinkQueueBytes = queueBound }
        defer { a.node.stop(); b.node.stop() }
        var stalled = try #require(RawLink.open(to: a.port, key: key, name: "stall"))
        defer { stalled.close() }
        // One frame so that a adopts the link (and so learns its name).
        #expect(stalled.send(stalled.frame(kind: .oneway, payload: [1])))
        try await eventually("a received the stalled peer's frame", seconds: 5) { try await a.stats().received.count == 1 }
        // The kernel's socket buffers take several MB first; after them, the queue fills.
        let rounds = 40, count = 200, size = 60 * 1024
        for _ in 0..<rounds { _ = try await a.echo.command(.flood("stall", count: count, bytes: size, ask: false)) }
        let started = Date()
        let answer = try await a.echo.command(.flood("stall", count: count, bytes: size, ask: true))
        guard case .response(let response) = answer else { Issue.record("not a response: \(answer)"); return }
        #expect(response == nil, "the request after the flood was answered")
        #expect(Date().timeIntervalSince(started) < 5, "the request on a full queue waited for its timeout")
        let tally = a.node.linkTally()
        let refused = tally.drops(Echo.channel, "queue_full")
        #expect(refused > 0, "nothing was refused")
        #expect(tally.channel(Echo.channel).framesSent + refused == (rounds + 1) * count + 1, "every send either queued or was refused")
        try await eventually("the queue gauge is published", seconds: 2) { a.node.linkTally().queuedBytes > 0 }
        #expect(a.node.linkTally().queuedBytes <= queueBound)
        // Another peer is served as before.
        #expect(try await a.ask("qb", [9]) == [9])
    }

    /// Frames a key holder sends that do not fit: each dropped and counted, the link (or, for a
    /// frame over the global bound, the node) keeps serving.
    @Test func malformedAndOversizedFramesAreDroppedAndCounted() async throws {
        let (a, b, key) = try await Self.pair("ma", "mb") { $0.maxLinkFrameBytes = 256 * 1024 }
        defer { a.node.stop(); b.node.stop() }
        var rogue = try #require(RawLink.open(to: b.port, key: key, name: "rogue"))
        defer { rogue.close() }
        #expect(rogue.send(rogue.frame(kind: .oneway, payload: [0xFF, 1, 2])))
        #expect(rogue.send(rogue.frame(kind: .oneway, payload: [UInt8](repeating: 7, count: Echo.maxMessageBytes + 1))))
        #expect(rogue.send(rogue.frame(channel: Channel(rawValue: 99), kind: .oneway, payload: [1])))
        #expect(rogue.send(rogue.frame(kind: .request, requestId: 77, payload: [0xFF])))
        #expect(rogue.send(rogue.frame(kind: .response, requestId: 12_345, payload: [1])))
        #expect(rogue.send(rogue.frame(kind: .request, requestId: 78, payload: Array("still here".utf8))))
        let answer = try #require(rogue.readFrame(seconds: 5), "no answer on the same link")
        #expect(answer.kind == .response && answer.requestId == 78 && answer.payload == Array("still here".utf8))
        #expect(answer.direction == .fromAcceptor && answer.connection == rogue.connection && answer.sequence == 0)
        let tally = b.node.linkTally()
        #expect(tally.drops(Echo.channel, "malformed") == 2)
        #expect(tally.drops(Echo.channel, "oversize") == 1)
        #expect(tally.drops(Channel(rawValue: 99), "unknown_channel") == 1)
        #expect(tally.drops(Echo.channel, "unexpected_response") == 1)
        #expect(try await b.stats().received.isEmpty)
        // A frame over the global bound closes that link; the node goes on serving.
        var big = try #require(RawLink.open(to: b.port, key: key, name: "big"))
        defer { big.close() }
        #expect(big.send(big.frame(kind: .oneway, payload: [UInt8](repeating: 1, count: 300 * 1024))))
        #expect(big.isClosed(within: 5))
        #expect(b.node.linkTally().links("link_frame_too_large") == 1)
        #expect(try await a.ask("mb", [4, 2]) == [4, 2])
    }

    /// Unfinished inbound frames count against the node's inbound stream buffer: a link that
    /// would take it over its bound is closed, and the node goes on serving.
    @Test func aLinkCannotBufferPastTheInboundBound() async throws {
        let (a, b, key) = try await Self.pair("ua", "ub") { $0.maxBufferedStreamBytes = 64 * 1024 }
        defer { a.node.stop(); b.node.stop() }
        var hog = try #require(RawLink.open(to: b.port, key: key, name: "hog"))
        defer { hog.close() }
        // A frame of 60 KiB, all but its last byte: within the bound, buffered, not closed.
        let frame = hog.frame(kind: .oneway, payload: [UInt8](repeating: 1, count: 60 * 1024))
        #expect(hog.send(Array(frame.dropLast())))
        #expect(!hog.isClosed(within: 0.5))
        // The last byte (the frame completes and is delivered), then 70 KiB of an unfinished
        // next frame, which would stay buffered over the 64 KiB bound.
        #expect(hog.send([frame.last!] + Array(hog.frame(kind: .oneway, payload: [UInt8](repeating: 2, count: 80 * 1024)).prefix(70 * 1024))))
        #expect(hog.isClosed(within: 5))
        #expect(b.node.linkTally().links("link_memory") == 1)
        #expect(try await b.stats().received.count == 1, "the complete frame was delivered")
        #expect(try await a.ask("ub", [0, 3]) == [0, 3])
    }

    @Test func aStrangerWithoutTheKeyCannotOpenALink() async throws {
        let (a, b, _) = try await Self.pair("sa", "sb")
        defer { a.node.stop(); b.node.stop() }
        var stranger = try #require(RawLink.open(to: b.port, key: ClusterKey.generate(), name: "sa"))
        defer { stranger.close() }
        _ = stranger.send(stranger.frame(kind: .request, requestId: 1, payload: [1]))
        #expect(stranger.isClosed(within: 5), "a hello sealed with another key kept its connection")
        #expect(b.node.linkTally().links("accepted") == 0)
        // A node holding another key does not get a link either: its request fails.
        let outsider = try EchoNode("sx", key: ClusterKey.generate(), seeds: [b])
        defer { outsider.node.stop() }
        #expect(try await outsider.ask("sb", [1], timeout: .seconds(2)) == nil)
        #expect(b.node.linkTally().links("accepted") == 0)
        #expect(try await b.stats().received.isEmpty)
    }

    @Test func aReplayedFrameIsRefused() async throws {
        let (a, b, key) = try await Self.pair("ra", "rb")
        defer { a.node.stop(); b.node.stop() }
        var first = try #require(RawLink.open(to: b.port, key: key, name: "r1"))
        defer { first.close() }
        let frame = first.frame(kind: .oneway, payload: Array("once".utf8))
        #expect(first.send(frame))
        try await eventually("b received the frame", seconds: 5) { try await b.stats().received.count == 1 }
        // The same bytes again on the same connection...
        #expect(first.send(frame))
        #expect(first.isClosed(within: 5))
        #expect(b.node.linkTally().links("link_replay") == 1)
        // ...and on another connection, whose own hello opened.
        let second = try #require(RawLink.open(to: b.port, key: key, name: "r2"))
        defer { second.close() }
        #expect(second.send(frame))
        #expect(second.isClosed(within: 5))
        #expect(b.node.linkTally().links("link_replay") == 2)
        #expect(try await b.stats().received == [Array("once".utf8)])
    }

    @Test func protocolsHearOfMembersJoiningChangingAndDying() async throws {
        let key = ClusterKey.generate()
        let a = try EchoNode("ea", key: key)
        defer { a.node.stop() }
        // The first event: this node itself.
        let first = try #require(try await a.stats().events.first)
        guard case .updated(let me) = first else { Issue.record("first event \(first)"); return }
        #expect(me.name == "ea" && me.status == .alive)
        let b = try EchoNode("eb", key: key, seeds: [a])
        func lastView(of name: String) async throws -> PeerView? {
            try await a.stats().events.reversed().compactMap { e -> PeerView? in
                if case .updated(let v) = e, v.name == name { return v } else { return nil }
            }.first
        }
        try await eventually("a hears eb joined", seconds: 10) { try await lastView(of: "eb")?.status == .alive }
        // A metadata change (free slots) arrives without a status change.
        b.node.setFreeSlots(1)
        try await eventually("a hears eb's free slots", seconds: 10) { try await lastView(of: "eb")?.metadata.free == 1 }
        // Through the protocol's handle, as a performer advertises capacity; one a peer would
        // refuse (free over slots) is not applied.
        b.echo.updateMetadata { $0.free = 3 }
        try await eventually("a hears eb's new free slots", seconds: 10) { try await lastView(of: "eb")?.metadata.free == 3 }
        b.echo.updateMetadata { $0.free = 99 }
        b.echo.updateMetadata { $0.free = 2 }
        try await eventually("a hears the next valid change", seconds: 10) { try await lastView(of: "eb")?.metadata.free == 2 }
        #expect(try await a.stats().events.allSatisfy { if case .updated(let v) = $0 { v.metadata.free <= v.metadata.slots } else { true } })
        #expect(b.node.snapshot().members.first { $0.name == "eb" }?.metadata.free == 2)
        try await b.stop()
        try await eventually("a hears eb died", seconds: 15) { try await lastView(of: "eb")?.status == .dead }
    }

    /// Both ends dial at once (b's loop is stalled while a dials it, and b is told to ask a
    /// before it reads a's hello): every request is answered, and the two connections settle
    /// on one, the one dialled by the smaller name.
    @Test func simultaneousDialsSettleOnOneConnection() async throws {
        // Long suspicion timeouts: the stall must not get b declared dead (its links would close).
        let (a, b, _) = try await Self.pair("da", "db") { $0.settings.suspicionMultiplier = 50 }
        defer { a.node.stop(); b.node.stop() }
        async let stalled = b.echo.command(.block(milliseconds: 400))
        try await Task.sleep(for: .milliseconds(100))
        async let fromA = a.ask("db", [1])
        try await Task.sleep(for: .milliseconds(100))
        async let fromB = b.ask("da", [2])
        #expect(try await fromA == [1])
        #expect(try await fromB == [2])
        _ = try await stalled
        #expect(a.node.linkTally().links("dialled") == 1 && b.node.linkTally().links("dialled") == 1, "the race did not happen")
        // Both ways, many at once, while it settles.
        let answered = try await withThrowingTaskGroup(of: Bool.self) { group in
            for i in 0..<200 {
                // (A first byte of 0: "S" and "P" mean something to Echo.)
                group.addTask { i % 2 == 0 ? try await a.ask("db", [0, UInt8(i)]) == [0, UInt8(i)] : try await b.ask("da", [0, UInt8(i)]) == [0, UInt8(i)] }
            }
            return try await group.reduce(0) { $0 + ($1 ? 1 : 0) }
        }
        #expect(answered == 200, "a: \(a.node.linkTally()) b: \(b.node.linkTally())")
        defer { print("simultaneous dials: a \(a.node.linkTally()) b \(b.node.linkTally()) to a \(establishedConnections(toPort: a.port)) to b \(establishedConnections(toPort: b.port))") }
        try await eventually("one connection is left", seconds: 5) {
            establishedConnections(toPort: b.port) == 1 && establishedConnections(toPort: a.port) == 0
        }
        #expect(b.node.linkTally().links("closed") == 1, "b closed the connection it dialled")
        #expect(a.node.linkTally().drops(Echo.channel, "broken") == 0 && b.node.linkTally().drops(Echo.channel, "broken") == 0)
    }

    @Test func anIdleLinkIsClosedAndDialledAgainOnTheNextSend() async throws {
        let (a, b, _) = try await Self.pair("ia", "ib") { $0.linkIdleTimeout = .milliseconds(300) }
        defer { a.node.stop(); b.node.stop() }
        #expect(try await a.ask("ib", [0, 1]) == [0, 1])
        #expect(a.node.linkTally().links("dialled") == 1)
        try await eventually("the idle link is closed", seconds: 5) {
            a.node.linkTally().links("closed") == 1 && establishedConnections(toPort: b.port) == 0
        }
        #expect(try await a.ask("ib", [0, 2]) == [0, 2])
        #expect(a.node.linkTally().links("dialled") == 2)
    }

    /// A peer that refuses connections: the dial fails, the request gets nil, and sends in the
    /// backoff that follows fail at once without dialling again.
    @Test func aFailedDialBacksOff() async throws {
        let (a, b, _) = try await Self.pair("fa", "fb") {
            $0.settings.suspicionMultiplier = 50
            $0.linkBackoff = .seconds(5)
        }
        defer { a.node.stop() }
        try await b.stop()
        #expect(a.sees("fb", as: .alive) || a.sees("fb", as: .suspect), "b must still be a member for the dial")
        #expect(try await a.ask("fb", [0, 1], timeout: .seconds(5)) == nil)
        #expect(a.node.linkTally().links("dial_failed") == 1)
        #expect(try await a.ask("fb", [0, 2], timeout: .seconds(5)) == nil)
        #expect(a.node.linkTally().drops(Echo.channel, "backoff") == 1)
        #expect(a.node.linkTally().links("dial_failed") == 1, "dialled again during the backoff")
    }

    /// Periodic push-pull between live members goes over their link (channel 1), next to the
    /// hosted protocols' traffic: still one connection per pair, and no push-pull fails.
    @Test func periodicPushPullTravelsOverTheLink() async throws {
        let (a, b, _) = try await Self.pair("pa", "pb") {
            $0.settings.pushPullInterval = .milliseconds(200)
            $0.pushPullOverLinks = true  // the default, stated: this test is about it
        }
        defer { a.node.stop(); b.node.stop() }
        #expect(try await a.ask("pb", [0, 1]) == [0, 1])
        try await eventually("push-pulls went over the link both ways", seconds: 10) {
            a.node.linkTally().channel(.membership).framesReceived >= 6 && b.node.linkTally().channel(.membership).framesReceived >= 6
        }
        #expect(establishedConnections(toPort: b.port) + establishedConnections(toPort: a.port) == 1)
        #expect(a.node.snapshot().stats.pushPullsFailed == 0 && b.node.snapshot().stats.pushPullsFailed == 0)
        #expect(a.node.snapshot().stats.pushPullsServed > 0 && b.node.snapshot().stats.pushPullsServed > 0)
        #expect(a.node.linkTally().links("dialled") + b.node.linkTally().links("dialled") == 1)
    }

    /// A member that leaves (or dies) loses its link at once, before its connection breaks,
    /// and the requests in flight on it get their nil.
    @Test func theLinkToAMemberThatLeftIsClosed() async throws {
        let (a, b, _) = try await Self.pair("xa", "xb") { $0.settings.gossipInterval = .milliseconds(20) }
        defer { a.node.stop(); b.node.stop() }
        async let held = a.ask("xb", Array("S1".utf8), timeout: .seconds(60))
        try await eventually("b holds the request", seconds: 5) { try await b.stats().held == 1 }
        b.node.requestLeave()
        #expect(try await held == nil)
        try await eventually("a closed the link because b left", seconds: 5) { a.node.linkTally().links("member_left") == 1 }
        #expect(a.node.linkTally().drops(Echo.channel, "broken") == 1)
    }

    /// A peer cannot make this node owe it answers without bound: past
    /// `maxOwedRequestsPerLink` on one link, its requests are dropped and counted.
    @Test func owedRequestsPerLinkAreBounded() async throws {
        let (a, b, _) = try await Self.pair("wa", "wb") { $0.maxOwedRequestsPerLink = 10 }
        defer { a.node.stop(); b.node.stop() }
        let answers = try await withThrowingTaskGroup(of: [UInt8]?.self) { group in
            for i in 0..<20 { group.addTask { try await a.ask("wb", Array("S\(i)".utf8), timeout: .seconds(2)) } }
            return try await group.reduce(into: [[UInt8]?]()) { $0.append($1) }
        }
        #expect(answers.count == 20 && answers.allSatisfy { $0 == nil })
        #expect(try await b.stats().held == 10)
        #expect(b.node.linkTally().drops(Echo.channel, "too_many_requests") == 10)
        // Once answered, there is room again.
        _ = try await b.echo.command(.release)
        #expect(try await a.ask("wb", [0, 5]) == [0, 5])
    }

    @Test func aRequestToThisNodeItselfIsServedLocally() async throws {
        let a = try EchoNode("self", key: ClusterKey.generate())
        defer { a.node.stop() }
        #expect(try await a.ask("self", [1, 2]) == [1, 2])
        #expect(try await a.ask("nobody", [1], timeout: .seconds(5)) == nil)
        #expect(a.node.linkTally().drops(Echo.channel, "unreachable") == 1)
        #expect(a.node.linkTally().links("dialled") == 0)
    }
}

/// The frame header and the link hello decode any bytes without trapping.
@Suite("Link frame decoding")
struct LinkFrameDecodingTests {
    @Test func framesRoundTrip() throws {
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<500 {
            let frame = LinkFrame(connection: rng.next(), sequence: rng.next(), direction: Bool.random() ? .fromDialer : .fromAcceptor,
                                  channel: Channel(rawValue: .random(in: 0...255)), kind: [.oneway, .request, .response].randomElement()!,
                                  requestId: rng.next(), payload: (0..<Int.random(in: 0..<64)).map { _ in .random(in: 0...255) })
            #expect(try LinkFrame.decode(frame.encoded()) == frame)
        }
    }

    @Test func anyBytesDecodeOrThrowWithoutTrapping() {
        var rng = SystemRandomNumberGenerator()
        var decoded = 0
        let good = LinkFrame(connection: 1, sequence: 2, direction: .fromDialer, channel: .swarm, kind: .request,
                             requestId: 3, payload: [9, 9]).encoded()
        for i in 0..<20_000 {
            var bytes: [UInt8]
            if i % 2 == 0 {
                bytes = (0..<Int.random(in: 0..<40, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            } else {
                // A good frame with a few bytes changed and maybe cut short.
                bytes = Array(good.prefix(Int.random(in: 0...good.count, using: &rng)))
                for _ in 0..<Int.random(in: 0...3, using: &rng) where !bytes.isEmpty {
                    bytes[Int.random(in: 0..<bytes.count, using: &rng)] = .random(in: 0...255, using: &rng)
                }
            }
            if let frame = try? LinkFrame.decode(bytes) {
                decoded += 1
                #expect(frame.payload.count == bytes.count - LinkFrame.headerBytes)
            }
            _ = PeerLink.parseHello(bytes)
            _ = PeerLink.parseHello([PeerLink.helloVersion] + bytes)
        }
        #expect(decoded > 0)
    }

    @Test func aShortHeaderOrAnUnknownKindOrDirectionIsRefused() {
        let good = LinkFrame(connection: 1, sequence: 2, direction: .fromDialer, channel: .swarm, kind: .request,
                             requestId: 3, payload: [9]).encoded()
        for n in 0..<LinkFrame.headerBytes { #expect(throws: WireError.self) { _ = try LinkFrame.decode(Array(good.prefix(n))) } }
        var badDirection = good
        badDirection[16] = 2
        #expect(throws: WireError.self) { _ = try LinkFrame.decode(badDirection) }
        var badKind = good
        badKind[18] = 3
        #expect(throws: WireError.self) { _ = try LinkFrame.decode(badKind) }
    }

    /// A link opens only under the identity key membership gossips for the name in its hello: a
    /// cluster-key holder cannot dial under another member's name (review of the sessions code:
    /// under the owner's name it could install a shortened chain on a session's replicas).
    @Test func aLinkOpensOnlyUnderTheIdentityMembershipGossipsForItsName() async throws {
        let dir = try makeTemporaryDirectory("starling-link-identity")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (ia, ib, stranger) = (try NodeIdentity.loadOrCreate(dataDir: "\(dir)/a"), try NodeIdentity.loadOrCreate(dataDir: "\(dir)/b"),
                                  try NodeIdentity.loadOrCreate(dataDir: "\(dir)/s"))
        let key = ClusterKey.generate()
        let a = try EchoNode("ia", key: key) { $0.identity = ia; $0.identityKey = ia.publicKey }
        let b = try EchoNode("ib", key: key, seeds: [a]) { $0.identity = ib; $0.identityKey = ib.publicKey }
        defer { a.node.stop(); b.node.stop() }
        try await eventually("ia and ib see each other", seconds: 10) { a.sees("ib", as: .alive) && b.sees("ia", as: .alive) }
        // Honest nodes sign their hellos: their links open both ways.
        #expect(try await a.ask("ib", [1]) == [1])
        #expect(try await b.ask("ia", [2]) == [2])
        /// Whether a link dialled by hand to b opens: a request on it is answered.
        func opens(_ name: String, _ identity: NodeIdentity?, token: [UInt8]? = nil, sentAtMs: UInt64? = nil) -> Bool {
            guard var raw = RawLink.open(to: b.port, key: key, name: name, identity: identity, token: token, sentAtMs: sentAtMs) else { return false }
            defer { raw.close() }
            guard raw.send(raw.frame(kind: .request, requestId: 5, payload: [7])) else { return false }
            return raw.readFrame(seconds: 3)?.requestId == 5
        }
        #expect(!opens("ia", nil), "unsigned, under a name whose key membership gossips")
        #expect(!opens("ia", stranger), "signed under another key than the gossiped one")
        #expect(!opens("nobody", stranger), "a name membership gives no key for")
        #expect(!opens("ia", ia, sentAtMs: WireHardeningIntegrationTests.nowMs() - 120_000), "signed two minutes ago")
        // The check is the key, not the socket: whoever holds ia's identity opens a link as ia.
        let token = secureRandomBytes(PeerLink.helloTokenBytes)
        #expect(opens("ia", ia, token: token))
        // The same signed hello re-sealed in a fresh envelope (a key holder replaying it) is a replay.
        #expect(!opens("ia", ia, token: token), "a signed hello's token seen before")
    }

    @Test func theLinkHelloRoundTripsAndRefusesBadNames() throws {
        let to = NodeAddress(host: "10.0.0.1", port: 7946)
        let token = [UInt8](repeating: 7, count: PeerLink.helloTokenBytes)
        func hello(_ name: String, identity: NodeIdentity? = nil) -> [UInt8] {
            PeerLink.helloPayload(to: to, from: name, sentAtMs: 1_234, token: token, identity: identity)
        }
        let parsed = try #require(PeerLink.parseHello(hello("node-1")))
        #expect(parsed.destination == to && parsed.sender == "node-1" && parsed.sentAtMs == 1_234 && parsed.token == token)
        #expect(parsed.signature.isEmpty)
        #expect(PeerLink.parseHello(hello("")) == nil)
        #expect(PeerLink.parseHello(hello("bad\nname")) == nil)
        #expect(PeerLink.parseHello(hello(String(repeating: "n", count: 65))) == nil)
        for n in 0..<hello("node-1").count { #expect(PeerLink.parseHello(Array(hello("node-1").prefix(n))) == nil) }
        #expect(PeerLink.parseHello(hello("node-1") + [0]) == nil)
        #expect(PeerLink.parseHello([PeerLink.helloVersion, 200] + Array(hello("node-1").dropFirst(2))) == nil)
        // Signed: the signature verifies under the signer's key over exactly `signed`, and any
        // changed field breaks it.
        let dir = try makeTemporaryDirectory("starling-link-hello")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let identity = try NodeIdentity.loadOrCreate(dataDir: dir)
        let signed = hello("node-1", identity: identity)
        #expect(signed.count <= PeerLink.maxHelloPayloadBytes)
        let s = try #require(PeerLink.parseHello(signed))
        #expect(NodeIdentity.verify(signature: s.signature, message: s.signed, publicKey: identity.publicKey))
        let other = try #require(PeerLink.parseHello(PeerLink.helloPayload(to: to, from: "node-2", sentAtMs: 1_234, token: token, identity: identity)))
        #expect(!NodeIdentity.verify(signature: s.signature, message: other.signed, publicKey: identity.publicKey))
        #expect(PeerLink.parseHello(Array(signed.dropLast())) == nil, "a cut signature")
    }
}

/// The `starling` binary: periodic push-pull between its nodes travels over their link, and
/// shows in the link metrics.
@Suite("Peer links with real processes", .serialized)
struct PeerLinkProcessTests {
    static func linkFrames(_ node: NodeProcess, channel: String, direction: String) -> Double {
        for line in node.metrics().split(separator: "\n") where line.hasPrefix("starling_link_frames_total{")
            && line.contains("channel=\"\(channel)\"") && line.contains("direction=\"\(direction)\"") {
            return Double(line.split(separator: " ").last ?? "") ?? 0
        }
        return 0
    }

    @Test func pushPullBetweenRealNodesTravelsOverTheirLink() throws {
        let cluster = try LocalCluster()
        defer { cluster.shutdown() }
        let nodes = try cluster.startMesh(["k1", "k2"])
        try waitUntil("push-pulls went over the link both ways", seconds: 20) {
            nodes.allSatisfy { Self.linkFrames($0, channel: "membership", direction: "in") >= 2 }
        }
        #expect(nodes.allSatisfy { $0.metric("starling_push_pulls_failed_total") == 0 })
        let dialled = nodes.map { $0.metric("starling_links_total{event=\"dialled\"}") }
        #expect(dialled.reduce(0, +) >= 1 && dialled.reduce(0, +) <= 2, "links dialled: \(dialled)")
    }
}
