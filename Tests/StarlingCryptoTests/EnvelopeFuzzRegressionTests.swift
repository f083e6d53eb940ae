import Testing
@testable import StarlingCrypto

/// Inputs the fuzzers (Fuzz/) found to trap, kept as tests of the code they broke.
@Suite("Envelope: fuzzer findings")
struct EnvelopeFuzzRegressionTests {
    /// Fuzz/Regressions/envelope/peer-timestamp-2-pow-63-from-now: a peer holding the key sent a
    /// timestamp 2^63 ms from the receiver's clock, so the signed age was Int64.min and `abs`
    /// trapped. It must be refused as stale, as any timestamp outside the window.
    @Test func aTimestampHalfTheClockAwayIsStaleNotATrap() throws {
        let key = ClusterKey.generate()
        let ring = try Keyring(keys: [key])
        let now: UInt64 = 1_800_000_000_000
        for sentAt in [now &+ (1 << 63), now &- (1 << 63), now &+ (1 << 63) &+ 1, now &+ (1 << 63) &- 1, 0, .max] {
            let sealed = Envelope.seal([1], kind: .pushPullReply, key: key, sentAtMs: sentAt)
            let error = #expect(throws: Envelope.OpenError.self) {
                try Envelope.open(sealed, kind: .pushPullReply, keyring: ring, nowMs: now, maxAgeMs: 30_000)
            }
            guard case .stale = error else {
                Issue.record("refused for \(String(describing: error)), not as stale")
                continue
            }
        }
    }
}
