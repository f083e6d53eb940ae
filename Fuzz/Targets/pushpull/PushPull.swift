import FuzzSupport
import StarlingCore

/// The push-pull state decoder (TCP anti-entropy): arbitrary bytes either decode or throw a
/// `WireError`, and what decodes round-trips.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzPushPull(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    guard let state = try? PushPullState.decode(bytes(data, size)) else { return 0 }
    invariant(state.entries.count <= WireLimits.maxMembers, "more entries than the limit")
    // Compared field by field: what the decoder kept must come back, whatever it skipped.
    let again = try? PushPullState.decode(state.encoded())
    invariant(again?.join == state.join && again?.source == state.source && again?.entries == state.entries,
              "a decoded push-pull state does not round-trip")
    return 0
}

@_cdecl("LLVMFuzzerInitialize")
public func initialize(_ argc: UnsafeMutableRawPointer?, _ argv: UnsafeMutableRawPointer?) -> Int32 {
    writeSeedsIfAsked(PushPullSeeds.all)
    return 0
}

/// Real push-pull payloads: empty, a join, and a table with every member status.
enum PushPullSeeds {
    static func entry(_ name: String, _ status: MemberStatus, port: UInt16) -> PushPullState.Entry {
        .init(name: name, address: NodeAddress(host: "127.0.0.1", port: port), incarnation: UInt64(port % 7),
              status: status, metadata: MemberMetadata(version: 1, api: "127.0.0.1:\(port + 1000)", slots: 4, free: 1,
                                                       // Every other entry with an identity key, the rest without.
                                                       identityKey: port % 2 == 0 ? Array(repeating: UInt8(truncatingIfNeeded: port), count: 32) : nil))
    }

    static var all: [String: [UInt8]] {
        let statuses: [MemberStatus] = [.alive, .suspect, .dead, .left]
        let table = statuses.enumerated().map { entry("node-\($0.offset)", $0.element, port: UInt16(7000 + $0.offset)) }
        return [
            "empty": PushPullState(join: false, source: "node-a", entries: []).encoded(),
            "join": PushPullState(join: true, source: "node-new", entries: [entry("node-new", .alive, port: 7100)]).encoded(),
            "table": PushPullState(join: false, source: "node-0", entries: table).encoded(),
        ]
    }
}
