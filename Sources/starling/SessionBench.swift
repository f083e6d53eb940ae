import ArgumentParser
import Foundation
import StarlingCore
import StarlingCrypto
import StarlingRuntime
import StarlingStore

/// `starling session bench` (hidden; `Scripts/bench-sessions` runs it): what one 1 MiB
/// checkpoint costs on its path, step by step, in this process (no network), and how many
/// records a node signs and verifies per second.
///
/// Steps: the route's JSON parse and canonical re-encode of the body; BLAKE2b of 1 MiB; cutting
/// the state into chunks and hashing them (the manifest); sealing (manifest + Ed25519); a
/// replica's check; encoding and decoding the append (whole, and as changed chunks); the store's
/// durable write of the checkpoint (chunked, and whole as before chunking), `synchronous = FULL`.
struct SessionBench: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "bench", abstract: "Measure a session checkpoint's costs (prints JSON).",
                                                    shouldDisplay: false)

    @Option(help: "Repetitions of each 1 MiB step.")
    var count: Int = 40

    @Option(help: "Records signed and verified for the per-second figures.")
    var records: Int = 2_000

    @OptionGroup var scratch: BenchScratch

    func validate() throws {
        guard (2...10_000).contains(count) else { throw ValidationError("--count must be 2 to 10000") }
        guard (10...1_000_000).contains(records) else { throw ValidationError("--records must be 10 to 1000000") }
    }

    /// A 1 MiB agent-like state: pseudo-random words, one counter field that changes.
    static func state(_ counter: Int) -> [String: Any] {
        var x: UInt64 = 7
        var words: [String] = []
        var length = 0
        while length < (1 << 20) - 64 {
            x = x &* 6364136223846793005 &+ 1442695040888963407
            var letters: [UInt8] = []
            for k in 0..<(Int(x >> 60) % 8 + 2) {
                let nibble = UInt8(truncatingIfNeeded: (x >> UInt64(8 + k * 3)) & 0x0F)
                letters.append(0x61 + nibble)
            }
            let word = String(decoding: letters, as: UTF8.self)
            words.append(word)
            length += word.count + 1
        }
        return ["counter": counter, "notes": words.joined(separator: " ")]
    }

    func run() throws {
        try scratch.with(prefix: "starling-session-bench") { try measure(in: $0) }
    }

    func measure(in root: String) throws {
        let identity = try NodeIdentity.loadOrCreate(dataDir: root + "/identity")
        let crypto = SessionService.crypto(identity)
        let base = Self.state(0)
        let bodies = try (0...count).map { i -> Data in
            var s = base
            s["counter"] = i
            return try JSONSerialization.data(withJSONObject: ["state": s])
        }
        var states: [[UInt8]] = []
        var result: [String: Any] = ["count": count]

        result["routeJSONMs"] = try ms(count) { i in
            let object = try JSONSerialization.jsonObject(with: bodies[i]) as? [String: Any]
            let bytes = try JSONSerialization.data(withJSONObject: object?["state"] ?? NSNull(),
                                                   options: [.fragmentsAllowed, .sortedKeys, .withoutEscapingSlashes])
            states.append([UInt8](bytes))
        }
        states.append(states[0])
        // The route's two halves apart: the parse, and the canonical re-encode of the state.
        var parsed: [Any] = []
        result["routeJSONParseMs"] = try ms(count) { i in parsed.append(try JSONSerialization.jsonObject(with: bodies[i])) }
        result["routeJSONEncodeMs"] = try ms(count) { i in
            let object = parsed[i] as? [String: Any]
            _ = try JSONSerialization.data(withJSONObject: object?["state"] ?? NSNull(), options: [.fragmentsAllowed, .sortedKeys, .withoutEscapingSlashes])
        }
        parsed = []
        result["stateBytes"] = states[0].count
        result["blake2b1MiBMs"] = try ms(count) { i in _ = blake2b(states[i]) }
        result["cutMs"] = try ms(count) { i in _ = StateChunks.boundaries(states[i]) }
        result["manifestMs"] = try ms(count) { i in _ = StateManifest.of(states[i], hash: crypto.hash) }
        var sealed: [SessionRecord] = []
        var previous = SessionRecord.zeroHash
        result["sealCheckpointMs"] = try ms(count) { i in
            let r = crypto.seal(session: "bench", seq: UInt64(i + 2), previousHash: previous, epoch: 1, kind: .checkpoint, key: "",
                                content: states[i], signer: "n1")
            previous = crypto.hash(of: r)
            sealed.append(r)
        }
        result["checkCheckpointMs"] = try ms(count) { i in
            guard crypto.check(sealed[i], expectedKey: identity.publicKey) == nil else { throw ValidationError("a record does not verify") }
        }
        result["encodeWholeAppendMs"] = try ms(count) { i in _ = SessionMessage.encode(.append(sealed[i])) }
        let whole = SessionMessage.encode(.append(sealed[0]))
        result["decodeWholeAppendMs"] = try ms(count) { _ in _ = try SessionMessage.decode(whole) }
        // The append of checkpoint i + 1 after i: its manifest and the chunks i does not have.
        var deltas: [[UInt8]] = []
        result["encodeChunkedAppendMs"] = try ms(count - 1) { i in
            let (before, _) = StateManifest.of(states[i], hash: crypto.hash)
            let (after, chunks) = StateManifest.of(states[i + 1], hash: crypto.hash)
            let known = Set(before.chunks.map(\.digest))
            var header = sealed[i + 1]
            header.content = nil
            let fresh = zip(after.chunks, chunks).filter { !known.contains($0.0.digest) }.map(\.1)
            deltas.append(SessionMessage.encode(.appendChunks(header, manifest: after.encoded, chunks: fresh)))
        }
        result["chunkedAppendBytes"] = deltas.map(\.count).reduce(0, +) / deltas.count
        result["wholeAppendBytes"] = whole.count
        result["decodeChunkedAppendMs"] = try ms(count - 1) { i in _ = try SessionMessage.decode(deltas[i]) }

        // The store: a chunked checkpoint after the previous one, and the same state kept whole.
        for (name, chunked) in [("storeChunkedCheckpointMs", true), ("storeWholeCheckpointMs", false)] {
            let dir = root + "/" + name
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            let store = SessionStore(store: try SwarmStore(directory: dir))
            var chain = [crypto.seal(session: "bench", seq: 1, previousHash: SessionRecord.zeroHash, epoch: 1, kind: .create, key: "",
                                     content: [], signer: "n1")]
            try store.apply([.record(chain[0], epoch: 1, owner: "n1", replicas: ["n1"], dropContentOf: nil)])
            result[name] = try ms(count) { i in
                let digest = chunked ? crypto.contentDigest(kind: .checkpoint, content: states[i]) : blake2b(states[i])
                let r = crypto.seal(session: "bench", seq: UInt64(chain.count + 1), previousHash: crypto.hash(of: chain.last!), epoch: 1,
                                    kind: .checkpoint, key: "", content: states[i], contentDigest: digest, signer: "n1")
                try store.apply([.record(r, epoch: 1, owner: "n1", replicas: ["n1"], dropContentOf: i > 0 ? chain.last!.seq : nil)])
                chain.append(r)
            }
        }

        // A record's sign and verify cost (a small effect record: the hash and the signature).
        var small: [SessionRecord] = []
        let signs = try seconds {
            for i in 0..<records {
                small.append(crypto.seal(session: "bench", seq: UInt64(i + 1), previousHash: SessionRecord.zeroHash, epoch: 1,
                                         kind: .effectResult, key: "k\(i)", content: Array("{\"ok\":true}".utf8), signer: "n1"))
            }
        }
        let verifies = try seconds {
            for r in small where crypto.check(r, expectedKey: identity.publicKey) != nil { throw ValidationError("a record does not verify") }
        }
        result["recordSignsPerSecond"] = (Double(records) / signs).rounded()
        result["recordVerifiesPerSecond"] = (Double(records) / verifies).rounded()
        let json = try JSONSerialization.data(withJSONObject: result, options: [.sortedKeys])
        print(String(decoding: json, as: UTF8.self))
    }

    /// Milliseconds per call of `body(i)` for i in 0..<n, to the microsecond.
    private func ms(_ n: Int, _ body: (Int) throws -> Void) throws -> Double {
        let s = try seconds { for i in 0..<n { try body(i) } }
        return (s / Double(n) * 1_000_000).rounded() / 1000
    }

    private func seconds(_ body: () throws -> Void) throws -> Double {
        let start = DispatchTime.now().uptimeNanoseconds
        try body()
        return Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
    }
}
