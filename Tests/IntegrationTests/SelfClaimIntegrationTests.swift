import Foundation
import StarlingCore
import StarlingCrypto
import Testing

/// Second security review, item 1, against real `starling node` processes: one sealed packet to
/// r1 with alive(r2, forged address) at 2²⁴ and then 2²⁵ (each within the step of what r1 holds).
/// r2 must win back its entry, alive at its real address, at every node.
@Suite("Self claims too far ahead with real processes", .serialized)
struct SelfClaimIntegrationTests {
    typealias W = WireHardeningIntegrationTests

    @Test func theTwoStepForgeryIsWonBackAtEveryNode() throws {
        let cluster = try LocalCluster()
        defer { cluster.shutdown() }
        let nodes = try cluster.startMesh(["r1", "r2", "r3"])
        let key = try Keyring.load(path: cluster.keyFile).primary
        let step = WireLimits.maxIncarnationStep
        // The forger copies r2's identity key, which r2 gossips (issue #11 item 1): under another
        // key, or none, r1 would refuse the forgery outright (IdentityTests).
        var r2Key: [UInt8]?
        try waitUntil("r1 lists r2's identity key", seconds: 10) {
            r2Key = nodes[0].members()?.first { $0.name == "r2" }?.identityKey.flatMap(Self.bytes(hex:))
            return r2Key != nil
        }
        let forged = [step, 2 * step].map {
            MembershipMessage.alive(.init(name: "r2", address: NodeAddress(host: "127.0.0.1", port: 9), incarnation: $0,
                                          metadata: MemberMetadata(version: .max, api: "127.0.0.1:9", slots: 2, free: 2, identityKey: r2Key)))
        }
        sendDatagrams([Envelope.seal(Packet(forged).encoded(), kind: .gossip, key: key, sentAtMs: W.nowMs())], to: nodes[0].gossipPort)
        let real = "127.0.0.1:\(nodes[1].gossipPort)"
        try waitUntil("r1 took the forgery", seconds: 5) {
            (nodes[0].members()?.first { $0.name == "r2" }?.incarnation ?? 0) >= step
        }
        do {
            try waitUntil("r2 wins back its entry at every node", seconds: 30) {
                nodes.allSatisfy { n in
                    guard let r2 = n.members()?.first(where: { $0.name == "r2" }) else { return false }
                    return r2.status == "alive" && r2.gossip == real && r2.incarnation > 2 * step
                }
            }
        } catch let timeout as TimedOut {
            // Every node's view of r2 and r2's refutation count, for the failure report.
            let views = nodes.map { n in
                let r2 = n.members()?.first { $0.name == "r2" }
                return "\(n.name): \(r2.map { "\($0.status) \($0.gossip) \($0.incarnation)" } ?? "no answer")"
            }
            let refutations = nodes[1].metric("starling_refutations_total")
            Issue.record("\(timeout.description)\n\(views.joined(separator: "\n"))\nr2 refuted \(refutations) times")
        }
        let running = nodes.allSatisfy { $0.isRunning }
        #expect(running)
    }

    static func bytes(hex: String) -> [UInt8]? {
        let digits = Array(hex.utf8)
        guard digits.count % 2 == 0 else { return nil }
        return stride(from: 0, to: digits.count, by: 2).compactMap { UInt8(String(decoding: digits[$0..<$0 + 2], as: UTF8.self), radix: 16) }
    }
}
