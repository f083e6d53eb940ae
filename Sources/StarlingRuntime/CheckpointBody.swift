import Foundation

/// A checkpoint's body `{"state": VALUE}`: VALUE's bytes as the client sent them.
///
/// Why not parse and re-encode the state canonically: `JSONSerialization`'s encoder took about
/// 160 ms for a 1 MiB state (`starling session bench`, `routeJSONEncodeMs`), most of a 1 MiB
/// checkpoint's time; its parse takes about 10 ms. The value is the bytes between the colon
/// after the one key `state` and the closing brace, whitespace trimmed, and is parsed once to
/// check that it is one JSON value (so the body is exactly `{"state": VALUE}`). A body this does not cover (another
/// member, a key written with escapes) goes the old way (`nil`: parse and re-encode).
enum CheckpointBody {
    static func state(_ body: [UInt8]) -> [UInt8]? {
        func isSpace(_ b: UInt8) -> Bool { b == 0x20 || b == 0x09 || b == 0x0A || b == 0x0D }
        var start = 0
        var end = body.count
        while start < end, isSpace(body[start]) { start += 1 }
        while end > start, isSpace(body[end - 1]) { end -= 1 }
        guard start < end, body[start] == UInt8(ascii: "{"), body[end - 1] == UInt8(ascii: "}") else { return nil }
        start += 1
        end -= 1
        while start < end, isSpace(body[start]) { start += 1 }
        let key = Array("\"state\"".utf8)
        guard end - start > key.count, Array(body[start..<start + key.count]) == key else { return nil }
        start += key.count
        while start < end, isSpace(body[start]) { start += 1 }
        guard start < end, body[start] == UInt8(ascii: ":") else { return nil }
        start += 1
        while start < end, isSpace(body[start]) { start += 1 }
        while end > start, isSpace(body[end - 1]) { end -= 1 }
        guard start < end else { return nil }
        // The value itself must be one JSON value: then the body is exactly `{"state": VALUE}`.
        // (Parsing the whole body instead let `{"state":1,"state":2}` through, whose slice
        // `1,"state":2` is no JSON value: acknowledged, then read back as null. Review.)
        let value = Array(body[start..<end])
        guard (try? JSONSerialization.jsonObject(with: Data(value), options: [.fragmentsAllowed])) != nil else { return nil }
        return value
    }
}
