import CUV
import Glibc
import StarlingCore

/// Conversions between `NodeAddress` and the C socket address structures libuv takes.
public enum SocketAddress {
    static func make(_ a: NodeAddress) -> sockaddr_storage? {
        var storage = sockaddr_storage()
        let rc: Int32 = withUnsafeMutablePointer(to: &storage) { p in
            if a.isIPv6 {
                return p.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { uv_ip6_addr(a.host, Int32(a.port), $0) }
            }
            return p.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { uv_ip4_addr(a.host, Int32(a.port), $0) }
        }
        return rc == 0 ? storage : nil
    }

    static func nodeAddress(_ sa: UnsafePointer<sockaddr>) -> NodeAddress? {
        /// The NUL-terminated text libuv wrote into the buffer.
        func text(_ buffer: [CChar]) -> String {
            String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        }
        var name = [CChar](repeating: 0, count: 64)
        switch Int32(sa.pointee.sa_family) {
        case AF_INET:
            return sa.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { p in
                guard uv_ip4_name(p, &name, 64) == 0 else { return nil }
                return NodeAddress(host: text(name), port: UInt16(bigEndian: p.pointee.sin_port))
            }
        case AF_INET6:
            return sa.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { p in
                guard uv_ip6_name(p, &name, 64) == 0 else { return nil }
                return NodeAddress(host: text(name), port: UInt16(bigEndian: p.pointee.sin6_port))
            }
        default:
            return nil
        }
    }

    /// Resolves `HOST:PORT` where HOST may be a name (for `--join` and `--api`), to an IP literal.
    public static func resolve(_ text: String) -> NodeAddress? {
        guard let parsed = NodeAddress(text) else { return nil }
        if make(parsed) != nil { return parsed }
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_DGRAM.rawValue)
        var result: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(parsed.host, nil, &hints, &result) == 0, let first = result else { return nil }
        defer { freeaddrinfo(result) }
        guard let sa = first.pointee.ai_addr, var a = nodeAddress(sa) else { return nil }
        a.port = parsed.port
        return a
    }
}

/// Reinterprets a libuv handle pointer as its base type (C's struct prefix inheritance).
@inline(__always) func asHandle<T>(_ p: UnsafeMutablePointer<T>) -> UnsafeMutablePointer<uv_handle_t> {
    UnsafeMutableRawPointer(p).assumingMemoryBound(to: uv_handle_t.self)
}

@inline(__always) func asStream<T>(_ p: UnsafeMutablePointer<T>) -> UnsafeMutablePointer<uv_stream_t> {
    UnsafeMutableRawPointer(p).assumingMemoryBound(to: uv_stream_t.self)
}

func uvError(_ code: Int32) -> String { String(cString: uv_strerror(code)) }

/// Milliseconds since the Unix epoch, for envelope timestamps (not for protocol time).
func wallClockMs() -> UInt64 {
    var tv = timeval()
    gettimeofday(&tv, nil)
    return UInt64(tv.tv_sec) * 1000 + UInt64(tv.tv_usec) / 1000
}
