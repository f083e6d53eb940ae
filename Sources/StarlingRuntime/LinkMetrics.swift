import Metrics
import StarlingCore
import Synchronization

/// What peer links and hosted protocols did, per channel: a copy any thread may read
/// (`MeshNode.linkTally()`), the same figures as the Prometheus counters
/// `starling_link_frames_total{channel,direction}`, `starling_link_bytes_total{channel,direction}`,
/// `starling_link_drops_total{channel,reason}` and `starling_links_total{event}`.
public struct LinkTally: Sendable, Equatable {
    public struct ChannelTally: Sendable, Equatable {
        public var framesSent = 0
        public var bytesSent = 0
        public var framesReceived = 0
        public var bytesReceived = 0
        /// Frames or messages dropped, by reason (`queue_full`, `oversize`, `malformed`,
        /// `timeout`, `broken`, `unreachable`, ...).
        public var drops: [String: Int] = [:]
    }

    public var channels: [UInt8: ChannelTally] = [:]
    /// Link lifecycle events: `dialled`, `accepted`, `closed`, `dial_failed`, `refused`, and
    /// link-level drops (`link_replay`, `link_frame_too_large`, `link_memory`, ...).
    public var links: [String: Int] = [:]
    /// Links open now, and the bytes queued for sending on all of them (updated per event).
    public var open = 0
    public var queuedBytes = 0

    public func channel(_ c: Channel) -> ChannelTally { channels[c.rawValue] ?? ChannelTally() }
    public func drops(_ c: Channel, _ reason: String) -> Int { channel(c).drops[reason] ?? 0 }
    public func links(_ event: String) -> Int { links[event] ?? 0 }
}

/// Loop thread only, except `tally`, which is behind its own mutex.
final class LinkMetrics {
    let tally = Mutex(LinkTally())
    private var counters: [String: Counter] = [:]

    private func counter(_ label: String, _ dimensions: [(String, String)]) -> Counter {
        let key = label + dimensions.map { "|\($0.0)=\($0.1)" }.joined()
        if let c = counters[key] { return c }
        let c = Counter(label: label, dimensions: dimensions)
        counters[key] = c
        return c
    }

    func sent(_ channel: Channel, bytes: Int) {
        tally.withLock {
            $0.channels[channel.rawValue, default: .init()].framesSent += 1
            $0.channels[channel.rawValue, default: .init()].bytesSent += bytes
        }
        counter("starling_link_frames_total", [("channel", channel.description), ("direction", "out")]).increment()
        counter("starling_link_bytes_total", [("channel", channel.description), ("direction", "out")]).increment(by: bytes)
    }

    func received(_ channel: Channel, bytes: Int) {
        tally.withLock {
            $0.channels[channel.rawValue, default: .init()].framesReceived += 1
            $0.channels[channel.rawValue, default: .init()].bytesReceived += bytes
        }
        counter("starling_link_frames_total", [("channel", channel.description), ("direction", "in")]).increment()
        counter("starling_link_bytes_total", [("channel", channel.description), ("direction", "in")]).increment(by: bytes)
    }

    func drop(_ channel: Channel, _ reason: String) {
        tally.withLock { $0.channels[channel.rawValue, default: .init()].drops[reason, default: 0] += 1 }
        counter("starling_link_drops_total", [("channel", channel.description), ("reason", reason)]).increment()
    }

    func link(_ event: String) {
        tally.withLock { $0.links[event, default: 0] += 1 }
        counter("starling_links_total", [("event", event)]).increment()
    }

    /// A drop that belongs to no channel (the frame did not open, or the link broke a bound).
    func linkDrop(_ reason: String) {
        link(reason)
    }

    func gauges(open: Int, queuedBytes: Int) {
        tally.withLock {
            $0.open = open
            $0.queuedBytes = queuedBytes
        }
    }
}
