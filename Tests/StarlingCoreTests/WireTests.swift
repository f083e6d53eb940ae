import Testing
@testable import StarlingCore

@Suite("Wire format")
struct WireTests {
    static let all: [MembershipMessage] = [
        .ping(seq: 7, target: "b", source: "a", replyTo: addr(1)),
        .ack(seq: 7, source: "b"),
        .nack(seq: 9, source: "c"),
        .pingReq(seq: 3, target: "b", targetAddress: addr(2), source: "a", replyTo: NodeAddress(host: "::1", port: 9)),
        alive("x", 5, inc: 4, meta: MemberMetadata(version: 3, api: "127.0.0.1:8400", slots: 8, free: 2)),
        .suspect(name: "x", incarnation: 4, from: "a"),
        .dead(name: "x", incarnation: 5, from: "x"),
    ]

    @Test func everyMessageRoundTripsAndItsSizeIsExact() throws {
        let packet = Packet(Self.all)
        let bytes = packet.encoded()
        #expect(bytes.count == packet.encodedSize)
        #expect(try Packet.decode(bytes) == packet)
        for m in Self.all { #expect(Packet([m]).encoded().count == Packet([m]).encodedSize) }
    }

    @Test func everyTruncationIsRejectedWithATypedError() {
        let bytes = Packet(Self.all).encoded()
        for n in 0..<bytes.count {
            #expect(throws: WireError.self) { try Packet.decode(Array(bytes.prefix(n))) }
        }
    }

    @Test func randomBytesNeverCrashTheDecoder() {
        var rng = DeterministicRNG(seed: 42)
        var rejected = 0
        for _ in 0..<20_000 {
            let n = Int.random(in: 0..<300, using: &rng)
            var bytes = (0..<n).map { _ in UInt8.random(in: 0...255, using: &rng) }
            if n > 0, Bool.random(using: &rng) { bytes[0] = Packet.version }
            if (try? Packet.decode(bytes)) == nil { rejected += 1 }
        }
        #expect(rejected > 19_000)
    }

    @Test func anUnknownMessageTypeIsSkippedWhole() throws {
        var bytes = Packet([.ack(seq: 1, source: "a"), .ack(seq: 2, source: "b")]).encoded()
        bytes[2] = 200  // the first message's type
        let decoded = try Packet.decode(bytes)
        #expect(decoded.messages == [.ack(seq: 2, source: "b")])
    }

    @Test func wrongVersionAndOversizeNamesAreRejected() {
        var bytes = Packet([.ack(seq: 1, source: "a")]).encoded()
        bytes[0] = 9
        #expect(throws: WireError.unsupportedVersion(9)) { try Packet.decode(bytes) }
        let long = String(repeating: "n", count: 65)
        let oversize = Packet([.ack(seq: 1, source: long)]).encoded()
        #expect(throws: WireError.tooLarge(field: "source", size: 65, limit: 64)) { try Packet.decode(oversize) }
    }

    @Test func pushPullStateRoundTripsAndRejectsGarbage() throws {
        let state = PushPullState(join: true, source: "a", entries: [
            .init(name: "a", address: addr(1), incarnation: 2, status: .alive, metadata: MemberMetadata(version: 1, api: "x", slots: 2, free: 1)),
            .init(name: "b", address: NodeAddress(host: "fe80::1", port: 2), incarnation: 9, status: .left, metadata: MemberMetadata()),
        ])
        #expect(try PushPullState.decode(state.encoded()) == state)
        var bad = state.encoded()
        bad[bad.count - 14] = 0xff  // free (before memoryMB, freeMemoryMB, key length, sessions) > slots: that entry is skipped, the rest decodes
        let decoded = try PushPullState.decode(bad)
        #expect(decoded.entries == [state.entries[0]])
        #expect(decoded.skippedEntries == 1)
        #expect(throws: WireError.self) { try PushPullState.decode(state.encoded() + [0]) }
    }

    @Test func addressesParseInBothFamilies() {
        #expect(NodeAddress("127.0.0.1:7946") == NodeAddress(host: "127.0.0.1", port: 7946))
        #expect(NodeAddress("[::1]:7946") == NodeAddress(host: "::1", port: 7946))
        #expect(NodeAddress("[::1]:7946")?.description == "[::1]:7946")
        #expect(NodeAddress("::1:7946") == nil)
        #expect(NodeAddress("host") == nil)
        #expect(NodeAddress("h:99999") == nil)
    }
}
