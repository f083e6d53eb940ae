import Glibc

/// The key under which inbound streams are counted per source (`maxInboundStreamsPerSource`
/// and the fair share between sources).
///
/// One IPv6 host usually owns a whole /64 (SLAAC, privacy addresses), so counting per full
/// IPv6 address would give one machine 2⁶⁴ "sources": IPv6 addresses are grouped by their /64.
/// An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, what a dual-stack listener reports for an
/// IPv4 peer) is the IPv4 address it maps. Anything that does not parse is its own key.
enum SourceKey {
    static func of(host: String) -> String {
        let address = host.split(separator: "%", maxSplits: 1).first.map(String.init) ?? host  // zone id
        var v4 = in_addr()
        if inet_pton(AF_INET, address, &v4) == 1 { return address }
        var v6 = in6_addr()
        guard inet_pton(AF_INET6, address, &v6) == 1 else { return host }
        let bytes = withUnsafeBytes(of: v6) { Array($0) }
        if bytes[0..<10].allSatisfy({ $0 == 0 }), bytes[10] == 0xFF, bytes[11] == 0xFF {
            return "\(bytes[12]).\(bytes[13]).\(bytes[14]).\(bytes[15])"
        }
        var groups: [String] = []
        for i in stride(from: 0, to: 8, by: 2) {
            groups.append(String(UInt16(bytes[i]) << 8 | UInt16(bytes[i + 1]), radix: 16))
        }
        return groups.joined(separator: ":") + "::/64"
    }
}
