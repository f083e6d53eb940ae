/// Where a node listens for gossip: an IP literal (v4 or v6) and a port.
///
/// Written `HOST:PORT`, or `[V6]:PORT` for IPv6, as on the command line and in JSON.
public struct NodeAddress: Hashable, Comparable, Sendable, CustomStringConvertible {
    public var host: String
    public var port: UInt16

    /// The longest host we accept on the wire (an IPv6 literal with a zone fits easily).
    public static let maxHostBytes = 64

    public init(host: String, port: UInt16) {
        self.host = host
        self.port = port
    }

    /// Parses `HOST:PORT`, `[V6]:PORT` or a bare IPv6 `::1:PORT` is rejected (ambiguous).
    public init?(_ text: String) {
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else { return nil }
            let host = String(text[text.index(after: text.startIndex)..<close])
            let rest = text[text.index(after: close)...]
            guard rest.hasPrefix(":"), let port = UInt16(rest.dropFirst()), !host.isEmpty else { return nil }
            self.init(host: host, port: port)
        } else {
            guard let colon = text.lastIndex(of: ":") else { return nil }
            let host = String(text[..<colon])
            guard !host.isEmpty, !host.contains(":"), let port = UInt16(text[text.index(after: colon)...]) else {
                return nil
            }
            self.init(host: host, port: port)
        }
        guard host.utf8.count <= Self.maxHostBytes else { return nil }
    }

    public var isIPv6: Bool { host.contains(":") }

    public var description: String { isIPv6 ? "[\(host)]:\(port)" : "\(host):\(port)" }

    public static func < (lhs: NodeAddress, rhs: NodeAddress) -> Bool {
        (lhs.host, lhs.port) < (rhs.host, rhs.port)
    }
}
