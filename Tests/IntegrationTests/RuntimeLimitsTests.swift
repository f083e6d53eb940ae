import Logging
import StarlingCore
import StarlingCrypto
@testable import StarlingRuntime
import Testing

/// The runtime's own checks on numbers and limits, in process.
@Suite("Runtime limits")
struct RuntimeLimitsTests {
    @Test func gaugesClampInsteadOfTrapping() {
        #expect(MeshMetrics.gaugeValue(.max) == .max)
        #expect(MeshMetrics.gaugeValue(UInt64(Int64.max) + 1) == .max)
        #expect(MeshMetrics.gaugeValue(42) == 42)
    }

    /// A node refuses to start with metadata its peers' decoders would refuse (one limit for both).
    @Test func aNodeRefusesAnApiAddressOverTheWireLimit() throws {
        let config = MeshConfiguration(name: "n", bind: NodeAddress(host: "127.0.0.1", port: 0),
                                       api: String(repeating: "a", count: MemberMetadata.maxApiBytes + 1), seeds: [],
                                       slots: 1, keyFile: "/nonexistent", settings: .loopback)
        #expect(throws: MeshError.self) {
            _ = try MeshNode(configuration: config, keyring: try Keyring(keys: [ClusterKey.generate()]), logger: Logger(label: "test"))
        }
        var negative = config
        negative.api = "127.0.0.1:1"
        negative.slots = -1
        #expect(throws: MeshError.self) {
            _ = try MeshNode(configuration: negative, keyring: try Keyring(keys: [ClusterKey.generate()]), logger: Logger(label: "test"))
        }
    }

    /// A name, host or api with a control character would forge log lines at every peer; the
    /// node refuses it for itself as the decoders refuse it from peers.
    @Test(arguments: ["n\nforged log line", "n\u{1B}[2J", "n\u{202E}", ""])
    func aNodeRefusesAnUnprintableName(_ name: String) throws {
        let config = MeshConfiguration(name: name, bind: NodeAddress(host: "127.0.0.1", port: 0), api: "127.0.0.1:1",
                                       seeds: [], slots: 1, keyFile: "/nonexistent", settings: .loopback)
        #expect(throws: MeshError.self) {
            _ = try MeshNode(configuration: config, keyring: try Keyring(keys: [ClusterKey.generate()]), logger: Logger(label: "test"))
        }
        var badApi = config
        badApi.name = "n"
        badApi.api = "127.0.0.1:1\u{1B}]0;owned\u{07}"
        #expect(throws: MeshError.self) {
            _ = try MeshNode(configuration: badApi, keyring: try Keyring(keys: [ClusterKey.generate()]), logger: Logger(label: "test"))
        }
    }
}

/// Per-source limits group what one machine can use as sources (review item 6).
@Suite("Source keys and hello replay cache")
struct SourceKeyTests {
    @Test func ipv6IsGroupedByItsSlash64AndMappedIPv4IsUnmapped() {
        #expect(SourceKey.of(host: "127.0.0.2") == "127.0.0.2")
        #expect(SourceKey.of(host: "::ffff:127.0.0.2") == "127.0.0.2")
        #expect(SourceKey.of(host: "::ffff:7f00:2") == "127.0.0.2")
        #expect(SourceKey.of(host: "2001:db8:1:2::1") == "2001:db8:1:2::/64")
        #expect(SourceKey.of(host: "2001:db8:1:2::1") == SourceKey.of(host: "2001:0db8:0001:0002:ffff:eeee:dddd:cccc"))
        #expect(SourceKey.of(host: "2001:db8:1:2::1") != SourceKey.of(host: "2001:db8:1:3::1"))
        #expect(SourceKey.of(host: "fe80::1%eth0") == SourceKey.of(host: "fe80::2"))
        #expect(SourceKey.of(host: "::1") == "0:0:0:0::/64")
        #expect(SourceKey.of(host: "not an address") == "not an address")
    }

    @Test func aHelloNonceOpensOnceWithinItsRetention() {
        var cache = NonceReplayCache(capacity: 3, retention: .seconds(60))
        let t0 = Instant.zero
        #expect(cache.admit([1], now: t0) == .fresh)
        #expect(cache.admit([1], now: t0 + .seconds(59)) == .replay)
        #expect(cache.admit([2], now: t0) == .fresh)
        #expect(cache.admit([3], now: t0) == .fresh)
        #expect(cache.admit([4], now: t0) == .full, "bounded: fail closed when full")
        #expect(cache.admit([1], now: t0 + .seconds(60)) == .fresh, "expired after the retention")
        #expect(cache.count == 1)
        for i in 0..<5_000 { _ = cache.admit([UInt8(i & 0xFF), UInt8(i >> 8)], now: t0 + .seconds(120 + Int64(i) * 61)) }
        #expect(cache.count <= 3)
    }

    /// The datagram cache never refuses (a full cache would make the node deaf: acks and
    /// refutations dropped): the oldest nonce goes, so the newest stay protected.
    @Test func aFullDatagramCacheForgetsItsOldestNonceInsteadOfRefusing() {
        var cache = NonceReplayCache(capacity: 3, retention: .seconds(60), whenFull: .evictOldest)
        let t0 = Instant.zero
        for n: UInt8 in 1...3 { #expect(cache.admit([n], now: t0) == .fresh) }
        #expect(cache.admit([4], now: t0) == .freshEvicting, "admitted, not refused")
        #expect(cache.count == 3)
        #expect(cache.admit([4], now: t0) == .replay, "the newest stays remembered")
        #expect(cache.admit([3], now: t0) == .replay)
        #expect(cache.admit([1], now: t0) == .freshEvicting, "the oldest was forgotten")
        for i in 0..<5_000 { _ = cache.admit([UInt8(i & 0xFF), UInt8(i >> 8), 7], now: t0 + .milliseconds(Int64(i))) }
        #expect(cache.count == 3)
    }
}
