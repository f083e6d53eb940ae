import Foundation
import StarlingCore
import StarlingCrypto
import Testing

/// Large states as content-addressed chunks (issue #11 item 4): cutting, the manifest, what a
/// checkpoint sends, and what a replica refuses.
@Suite struct SessionChunksTests {
    /// A JSON-like state of `bytes` bytes: a counter field first, then pseudo-random words.
    static func state(counter: Int, bytes: Int = SessionLimits.maxStateBytes - 64, seed: UInt64 = 7) -> [UInt8] {
        var out = Array("{\"counter\":\(counter),\"notes\":\"".utf8)
        var x = seed
        while out.count < bytes - 2 {
            x = x &* 6364136223846793005 &+ 1442695040888963407
            let length = Int(x >> 60) + 2
            for k in 0..<length { out.append(UInt8(0x61 + Int((x >> UInt64(8 + k * 3)) & 0x0F))) }
            out.append(0x20)
        }
        out = Array(out.prefix(bytes - 2))
        return out + Array("\"}".utf8)
    }

    static let hash: @Sendable ([UInt8]) -> [UInt8] = { blake2b($0) }

    @Test func aStateIsCutIntoBoundedChunksThatCoverIt() {
        let s = Self.state(counter: 1)
        let ranges = StateChunks.boundaries(s)
        #expect(ranges.first?.lowerBound == 0 && ranges.last?.upperBound == s.count)
        #expect(zip(ranges, ranges.dropFirst()).allSatisfy { $0.upperBound == $1.lowerBound })
        #expect(ranges.dropLast().allSatisfy { $0.count >= StateChunks.minChunkBytes && $0.count <= StateChunks.maxChunkBytes })
        // Cuts fall where the content says (about 80 KiB apart on average), not at the maximum.
        #expect(ranges.count <= StateChunks.maxChunks && ranges.count >= 8, "\(ranges.map(\.count))")
        // The same bytes are cut the same way (every node agrees), whatever the state (a run of
        // one byte is cut at the maximum).
        #expect(StateChunks.boundaries(s) == ranges)
        let flat = [UInt8](repeating: 0x79, count: SessionLimits.maxStateBytes)
        #expect(StateChunks.boundaries(flat).map(\.count) == [StateChunks.maxChunkBytes, StateChunks.maxChunkBytes, StateChunks.maxChunkBytes, StateChunks.maxChunkBytes])
        #expect(StateChunks.boundaries([]).isEmpty)
        #expect(StateChunks.boundaries([1, 2, 3]) == [0..<3])
    }

    @Test func anEditChangesOnlyTheChunksAroundIt() {
        let before = StateManifest.of(Self.state(counter: 9), hash: Self.hash).manifest
        // The counter grows by a digit: every byte after it shifts by one.
        let after = StateManifest.of(Self.state(counter: 10), hash: Self.hash).manifest
        let new = Set(after.chunks.map(\.digest)).subtracting(before.chunks.map(\.digest))
        #expect(new.count <= 2, "new chunks: \(new.count) of \(after.chunks.count)")
        let newBytes = after.chunks.filter { new.contains($0.digest) }.map(\.size).reduce(0, +)
        #expect(newBytes < 200 << 10, "new bytes: \(newBytes)")
        #expect(after.chunks.count >= 4)
    }

    @Test func theManifestCodecIsTotalAndBounded() throws {
        let (manifest, chunks) = StateManifest.of(Self.state(counter: 1), hash: Self.hash)
        #expect(try StateManifest.decode(manifest.encoded) == manifest)
        var have: [[UInt8]: [UInt8]] = [:]
        for (ref, chunk) in zip(manifest.chunks, chunks) { have[ref.digest] = chunk }
        #expect(manifest.assemble(from: have) == Self.state(counter: 1))
        have.removeValue(forKey: manifest.chunks[1].digest)
        #expect(manifest.assemble(from: have) == nil)
        // Sizes that do not add up, a chunk over its bound, a count the bytes cannot hold: refused.
        var lying = manifest
        lying.length += 1
        #expect(throws: (any Error).self) { try StateManifest.decode(lying.encoded) }
        var huge = manifest
        huge.chunks[0].size = StateChunks.maxChunkBytes + 1
        huge.length += StateChunks.maxChunkBytes + 1 - manifest.chunks[0].size
        #expect(throws: (any Error).self) { try StateManifest.decode(huge.encoded) }
        var bytes = manifest.encoded
        bytes[StateManifest.of([], hash: Self.hash).manifest.encoded.count - 1] = 0xFF
        #expect(throws: (any Error).self) { try StateManifest.decode(bytes) }
        for cut in 0..<manifest.encoded.count { #expect(throws: (any Error).self) { try StateManifest.decode(Array(manifest.encoded.prefix(cut))) } }
    }

    @Test func aCheckpointThatChangesOneFieldSendsOnlyTheChangedChunks() throws {
        var mesh = try SessionMesh(["n1", "n2", "n3"])
        let owner = try SessionsTests.created(&mesh, "s1")
        guard case .recorded? = mesh.command(owner, .checkpoint(id: "s1", state: Self.state(counter: 1))) else { Issue.record("first"); return }
        for counter in 2...4 {
            mesh.sent = []
            guard case .recorded? = mesh.command(owner, .checkpoint(id: "s1", state: Self.state(counter: counter))) else {
                Issue.record("checkpoint \(counter)"); return
            }
            // One request to each of the two other replicas: the manifest and a chunk or two.
            #expect(mesh.sent.count == 2)
            #expect(mesh.sent.allSatisfy { $0.kind == 10 && $0.bytes <= 2 * StateChunks.maxChunkBytes && $0.bytes < SessionLimits.maxStateBytes / 2 },
                    "\(mesh.sent)")
        }
        // Every replica holds the whole latest state, and the same chain.
        let images = mesh.nodes.values.compactMap { $0.image(of: "s1") }
        #expect(images.count == 3)
        #expect(images.allSatisfy { $0.records.last?.content == Self.state(counter: 4) })
        #expect(Set(images.map { $0.records.map(\.signature) }).count == 1)
        guard case .view(let view)? = mesh.command(owner, .show(id: "s1", since: 0)) else { Issue.record("show"); return }
        #expect(view.state == Self.state(counter: 4))
        // A takeover verifies the chunked chain (every replica's image) and serves the state.
        mesh.crash(owner)
        guard let next = mesh.owner(of: "s1"), case .view(let resumed)? = mesh.command(next, .show(id: "s1", since: 0)) else {
            Issue.record("nobody resumed the session"); return
        }
        #expect(resumed.state == Self.state(counter: 4))
        guard case .recorded? = mesh.command(next, .checkpoint(id: "s1", state: Self.state(counter: 5))) else { Issue.record("after takeover"); return }
    }

    /// The owner's next checkpoint, as the append it sends to `peer` (not delivered).
    static func nextAppend(_ mesh: inout SessionMesh, owner: PeerName, state: [UInt8]) -> (SessionRecord, [UInt8], [[UInt8]], PeerName)? {
        var n = mesh.nodes[owner]!
        let effects = n.command(.checkpoint(id: "s1", state: state), id: CommandID(rawValue: 900_000), now: mesh.now)
        mesh.nodes[owner] = n
        for case .request(.appendChunks(let record, let manifest, let chunks), let to, _, _) in effects {
            return (record, manifest, chunks, to)
        }
        return nil
    }

    static func answer(_ mesh: inout SessionMesh, _ peer: PeerName, from owner: PeerName, _ message: SessionMessage) -> SessionMessage? {
        var n = mesh.nodes[peer]!
        let effects = n.request(try! Sessions.decode(Sessions.encode(message)), from: owner, token: RequestToken(rawValue: 900_001), now: mesh.now)
        mesh.nodes[peer] = n
        for effect in effects {
            if case .respond(let m, _) = effect { return m }
            if case .perform(.persist(_, .respond(_, let m))) = effect { return m }
        }
        return nil
    }

    @Test func aReplicaChecksEveryChunkAndAsksForTheImageWhenOneIsMissing() throws {
        var mesh = try SessionMesh(["n1", "n2", "n3"])
        let owner = try SessionsTests.created(&mesh, "s1")
        guard case .recorded? = mesh.command(owner, .checkpoint(id: "s1", state: Self.state(counter: 1))) else { Issue.record("first"); return }
        guard let (record, manifest, chunks, peer) = Self.nextAppend(&mesh, owner: owner, state: Self.state(counter: 2, seed: 99)) else {
            Issue.record("no chunked append"); return
        }
        #expect(!chunks.isEmpty)
        // A chunk altered on the way: refused and counted as forged.
        var altered = chunks
        altered[0][altered[0].count / 2] ^= 1
        let forged = mesh.nodes[peer]!.counters.forged
        guard case .invalid? = Self.answer(&mesh, peer, from: owner, .appendChunks(record, manifest: manifest, chunks: altered)) else {
            Issue.record("an altered chunk was taken"); return
        }
        #expect(mesh.nodes[peer]!.counters.forged == forged + 1)
        // A manifest other than the signed one: refused.
        let otherManifest = StateManifest.of(Self.state(counter: 3), hash: Self.hash).manifest.encoded
        guard case .invalid? = Self.answer(&mesh, peer, from: owner, .appendChunks(record, manifest: otherManifest, chunks: chunks)) else {
            Issue.record("another manifest was taken"); return
        }
        // Chunks the replica does not hold, not sent: it answers behind (and gets the image).
        guard case .behind(_, let seq)? = Self.answer(&mesh, peer, from: owner, .appendChunks(record, manifest: manifest, chunks: [])) else {
            Issue.record("a state with missing chunks was taken"); return
        }
        #expect(seq == 2)
        // The whole append is taken.
        guard case .stored(_, 3)? = Self.answer(&mesh, peer, from: owner, .appendChunks(record, manifest: manifest, chunks: chunks)) else {
            Issue.record("the append was refused"); return
        }
        #expect(mesh.nodes[peer]!.image(of: "s1")?.records.last?.content == Self.state(counter: 2, seed: 99))
    }

    @Test func theChunkedAppendCodecIsTotal() throws {
        var mesh = try SessionMesh(["n1", "n2", "n3"])
        let owner = try SessionsTests.created(&mesh, "s1")
        _ = mesh.command(owner, .checkpoint(id: "s1", state: Self.state(counter: 1, bytes: 100_000)))
        guard let (record, manifest, chunks, _) = Self.nextAppend(&mesh, owner: owner, state: Self.state(counter: 2, bytes: 100_000, seed: 3)) else {
            Issue.record("no chunked append"); return
        }
        let message = SessionMessage.appendChunks(record, manifest: manifest, chunks: chunks)
        let bytes = Sessions.encode(message)
        #expect(try Sessions.decode(bytes) == message)
        for cut in stride(from: 0, to: bytes.count, by: max(1, bytes.count / 300)) {
            #expect(throws: (any Error).self) { try Sessions.decode(Array(bytes.prefix(cut))) }
        }
        #expect(throws: (any Error).self) { try Sessions.decode(bytes + [0]) }
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<2_000 {
            var mutated = bytes
            for _ in 0..<3 { mutated[Int.random(in: 0..<min(mutated.count, 4_096), using: &rng)] = UInt8.random(in: 0...255, using: &rng) }
            _ = try? Sessions.decode(mutated)
        }
        // A chunk count or a chunk length the bytes left cannot hold is refused before allocating.
        let header = Sessions.encode(.appendChunks(record, manifest: manifest, chunks: []))
        #expect(throws: (any Error).self) { try Sessions.decode(Array(header.dropLast(2)) + [0x00, 0x40]) }
        #expect(throws: (any Error).self) { try Sessions.decode(Array(header.dropLast(2)) + [0x00, 0x01, 0x7F, 0xFF, 0xFF, 0xFF, 0x00]) }
        // A chunked record that carries content, or is not a checkpoint: refused.
        var whole = record
        whole.content = [1]
        let tail = Array(header.dropFirst(Sessions.encode(.append(record)).count))
        #expect(throws: (any Error).self) { try Sessions.decode([10] + Array(Sessions.encode(.append(whole)).dropFirst()) + tail) }
        #expect(try Sessions.decode([10] + Array(Sessions.encode(.append(record)).dropFirst()) + tail) == .appendChunks(record, manifest: manifest, chunks: []))
    }
}
