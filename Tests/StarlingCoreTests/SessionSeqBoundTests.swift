import Testing
@testable import StarlingCore

/// Seqs come from the wire: one near `UInt64.max` in a compacted image (which may start at any
/// seq) overflowed `first.seq + i` in `verify`, or `lastSeq + 1` at the next append, and
/// trapped the node (review of the compaction merge). They are bounded at decoding and in
/// `verify`.
@Suite struct SessionSeqBoundTests {
    /// A compacted image of `sid` starting at `seq`: a checkpoint and a base naming it, signed by `signer`.
    func compacted(_ sid: String, at seq: UInt64, crypto: SessionCrypto, signer: PeerName) -> SessionImage {
        let checkpoint = crypto.seal(session: sid, seq: seq, previousHash: Array(repeating: 1, count: 32), epoch: 1, kind: .checkpoint,
                                     key: "", content: Array("{}".utf8), signer: signer)
        let base = SessionBase(cutSeq: seq, options: [], effects: [])
        let record = crypto.seal(session: sid, seq: seq &+ 1, previousHash: crypto.hash(of: checkpoint), epoch: 1, kind: .base, key: "",
                                 content: base.encoded, signer: signer)
        return SessionImage(id: sid, epoch: 1, owner: signer, replicas: [signer, "n2"], records: [checkpoint, record])
    }

    @Test func anImageAtAHugeSeqIsRefusedNotATrap() throws {
        let mesh = try SessionMesh(["n1", "n2", "n3"])
        for seq in [UInt64.max, UInt64.max - 1, SessionLimits.maxSeq + 1] {
            let image = compacted("s\(seq % 7)", at: seq, crypto: mesh.crypto["n1"]!, signer: "n1")
            // Off the wire: the decoder refuses it.
            #expect(throws: SessionDecodingError.self) { try Sessions.decode(Sessions.encode(.install(image))) }
            // Handed to the protocol directly: refused as invalid, and the node goes on.
            var node = mesh.nodes["n2"]!
            #expect(node.verify(image) != nil, "seq \(seq)")
            let effects = node.request(.install(image), from: "n1", token: RequestToken(rawValue: 1), now: mesh.now)
            let answers = effects.compactMap { effect -> SessionMessage? in if case .respond(let m, _) = effect { m } else { nil } }
            #expect(answers.allSatisfy { if case .invalid = $0 { true } else { false } } && !answers.isEmpty, "seq \(seq): \(answers)")
        }
        // At the bound itself an image is fine (and nothing overflows after it).
        let fine = compacted("s-ok", at: SessionLimits.maxSeq - 10, crypto: mesh.crypto["n1"]!, signer: "n1")
        #expect((try? Sessions.decode(Sessions.encode(.install(fine)))) != nil)
    }
}
