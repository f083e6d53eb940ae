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

    @Test func streamLimitsAreSeparateEachWay() {
        var config = MeshConfiguration(name: "n", bind: NodeAddress(host: "127.0.0.1", port: 0), api: "", seeds: [],
                                       slots: 1, keyFile: "", settings: .loopback)
        #expect(config.maxInboundStreams == 128 && config.maxOutboundStreams == 128)
        #expect(config.authTimeout < config.streamTimeout)
        config.maxOpenStreams = 16
        #expect(config.maxInboundStreams == 16 && config.maxOutboundStreams == 16)
    }
}
