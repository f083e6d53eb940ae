import Foundation
import Glibc
import StarlingCore
import StarlingCrypto
import Testing

/// Second security review, item 3: the replay cache is per node and the hello payload named
/// nobody, so a hello captured on its way from A to B opened once at every other node. A hello
/// now names the gossip address the client dialled, and a node refuses one not addressed to it.
@Suite("Addressed hellos with real processes", .serialized)
struct HelloAddressTests {
    typealias W = WireHardeningIntegrationTests
    typealias F = WireFixesIntegrationTests

    @Test func aHelloForAnotherNodeIsRefusedAndOneForThisNodeOpens() throws {
        let cluster = try LocalCluster()
        defer { cluster.shutdown() }
        let a = try cluster.start("h1")
        let b = try cluster.start("h2")
        let key = try Keyring.load(path: cluster.keyFile).primary
        // A hello sealed for a, as someone who captured it on its way to a presents it to b.
        let forA = W.hello(to: a.gossipPort, key: key)
        let misdirected = try #require(F.connectFrom("127.0.0.2", to: b.gossipPort))
        defer { close(misdirected) }
        #expect(F.sendAll(misdirected, forA))
        #expect(F.isClosed(misdirected, within: 2), "a hello addressed to another node kept its connection")
        #expect(b.metric("starling_packets_dropped_total{reason=\"hello_misdirected\"}") == 1)
        #expect(b.metric("starling_stream_hellos_total") == 0)
        // One addressed to b opens at b.
        let proper = try #require(F.connectFrom("127.0.0.2", to: b.gossipPort))
        defer { close(proper) }
        #expect(F.sendAll(proper, W.hello(to: b.gossipPort, key: key)))
        try waitUntil("b opens the hello addressed to it", seconds: 3) { b.metric("starling_stream_hellos_total") == 1 }
        #expect(!F.isClosed(proper, within: 0))
        // And real nodes still push-pull with each other.
        _ = try cluster.start("h3", join: [a, b])
        try waitUntil("h3 joins through both", seconds: 15) {
            [a, b].allSatisfy { $0.status(of: "h3") == "alive" }
        }
    }
}
