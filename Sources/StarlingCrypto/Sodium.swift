import CSodium

/// libsodium's one-time initialisation (idempotent and thread-safe, per its documentation).
enum Sodium {
    static let ready: Bool = sodium_init() >= 0

    static func ensureReady() {
        precondition(ready, "libsodium failed to initialise")
    }
}

/// Cryptographically secure random bytes from libsodium.
public func secureRandomBytes(_ count: Int) -> [UInt8] {
    Sodium.ensureReady()
    var out = [UInt8](repeating: 0, count: count)
    out.withUnsafeMutableBytes { randombytes_buf($0.baseAddress!, count) }
    return out
}

/// A random 64-bit value, for seeding the protocols' deterministic generators in production.
public func secureRandomUInt64() -> UInt64 {
    secureRandomBytes(8).reduce(0) { $0 << 8 | UInt64($1) }
}

/// BLAKE2b with a chosen output length (16 to 64 bytes).
public func blake2b(_ data: [UInt8], outputBytes: Int = 32) -> [UInt8] {
    Sodium.ensureReady()
    precondition(outputBytes >= 16 && outputBytes <= 64)
    var out = [UInt8](repeating: 0, count: outputBytes)
    _ = out.withUnsafeMutableBufferPointer { o in
        data.withUnsafeBufferPointer { d in
            crypto_generichash(o.baseAddress!, outputBytes, d.baseAddress, UInt64(d.count), nil, 0)
        }
    }
    return out
}
