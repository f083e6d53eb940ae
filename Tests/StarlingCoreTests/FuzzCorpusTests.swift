import Foundation
import Testing
@testable import StarlingCore

/// The fuzzers' seed corpora (Fuzz/Corpus) are real encodings: if the wire format changes,
/// this fails and `Scripts/fuzz --write-seeds` regenerates them, instead of the fuzzers
/// silently starting from inputs that no longer decode.
@Suite("Fuzz seed corpora")
struct FuzzCorpusTests {
    static let corpus = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Fuzz/Corpus")

    func seeds(_ target: String) throws -> [(String, [UInt8])] {
        let dir = Self.corpus.appendingPathComponent(target)
        return try FileManager.default.contentsOfDirectory(atPath: dir.path).sorted().map {
            ($0, [UInt8](try Data(contentsOf: dir.appendingPathComponent($0))))
        }
    }

    @Test func everyPacketSeedDecodes() throws {
        let all = try seeds("packet")
        #expect(all.count >= 8)
        for (name, bytes) in all { #expect(throws: Never.self, "seed \(name)") { try Packet.decode(bytes) } }
    }

    @Test func everyPushPullSeedDecodes() throws {
        let all = try seeds("pushpull")
        #expect(all.count >= 3)
        for (name, bytes) in all { #expect(throws: Never.self, "seed \(name)") { try PushPullState.decode(bytes) } }
    }

    /// The hosted protocols' seeds: a selector byte (mod 3: 0 swarm channel, 1 audit witness,
    /// 2 sessions), then a message that decodes.
    @Test func everyHostedProtocolSeedDecodes() throws {
        let all = try seeds("hosted")
        #expect(all.count >= 10)
        for channel: UInt8 in 0...2 { #expect(all.contains { $0.1.first == channel }, "channel \(channel) has seeds") }
        for (name, bytes) in all {
            let message = Array(bytes.dropFirst())
            switch (bytes.first ?? 0) % 3 {
            case 0: #expect(throws: Never.self, "seed \(name)") { try Swarm.decode(message) }
            case 2: #expect(throws: Never.self, "seed \(name)") { try Sessions.decode(message) }
            default: #expect(throws: Never.self, "seed \(name)") { try AuditWitness.decode(message) }
            }
        }
    }
}
