import Foundation
import Glibc

/// A process told apart from a later one that reuses its PID: the PID and the process's start
/// time (field 22 of /proc/<pid>/stat, clock ticks since boot).
///
/// A runner writes its own as `<workRoot>/<pid>.owner` beside its work directory. The sweep
/// treats an owner as gone when no process has the PID *or* the process that has it started
/// at another time: a PID reused after a crash no longer keeps leftovers for ever. The marker
/// judges only work directories in its own work root; cgroup owners carry the identity in their
/// directory name (`ownerName`), since the cgroup parent is shared across work roots.
struct ProcessIdentity: Equatable, Sendable {
    let pid: pid_t
    let startTime: UInt64

    /// The process that has `pid` now; nil when there is none.
    static func of(_ pid: pid_t) -> ProcessIdentity? {
        // The command name (field 2) is any bytes the process chose, not necessarily UTF-8: decode
        // leniently, as only the numeric fields after its closing parenthesis are used.
        guard pid > 0, let bytes = FileManager.default.contents(atPath: "/proc/\(pid)/stat") else { return nil }
        let stat = String(decoding: bytes, as: UTF8.self)
        guard let close = stat.lastIndex(of: ")") else { return nil }
        // Fields after the command name start at field 3 (state); field 22 is the 20th of them.
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        guard fields.count > 19, let started = UInt64(fields[19]) else { return nil }
        return ProcessIdentity(pid: pid, startTime: started)
    }

    /// The marker file's text: `<pid> <start time>`.
    var marker: String { "\(pid) \(startTime)\n" }

    /// The name of this process's cgroup owner directory: `<pid>-<start time>`. The name alone
    /// says whose the groups are, so a sweep never needs a marker from some work root (another
    /// runner's, with another work root, may have the same PID).
    var ownerName: String { "\(pid)-\(startTime)" }


    init(pid: pid_t, startTime: UInt64) {
        self.pid = pid
        self.startTime = startTime
    }

    /// Parses a marker; nil for anything else (a marker is bounded: 64 bytes are read).
    init?(marker text: String) {
        let parts = text.split(whereSeparator: { $0 == " " || $0 == "\n" })
        guard parts.count == 2, let pid = pid_t(parts[0]), pid > 0, let started = UInt64(parts[1]) else { return nil }
        self.init(pid: pid, startTime: started)
    }
}

/// Whose a cgroup owner directory (`<parent>/<owner>`) is, read from its name.
enum CgroupOwner: Equatable {
    /// `<pid>-<start time>`: gone when no process with that PID and start time runs.
    case identified(ProcessIdentity)
    /// `<pid>`, the name before start times were in it: gone when no process has the PID.
    case legacy(pid_t)

    /// Parses a directory name strictly (decimal digits only, PID > 0); nil for anything else,
    /// which the sweep leaves alone.
    init?(directoryName name: String) {
        func number<N: FixedWidthInteger>(_ text: Substring) -> N? {
            guard !text.isEmpty, text.utf8.allSatisfy({ (0x30...0x39).contains($0) }) else { return nil }
            return N(text)
        }
        let parts = name.split(separator: "-", omittingEmptySubsequences: false)
        switch parts.count {
        case 1:
            guard let pid: pid_t = number(parts[0]), pid > 0 else { return nil }
            self = .legacy(pid)
        case 2:
            guard let pid: pid_t = number(parts[0]), pid > 0, let started: UInt64 = number(parts[1]) else { return nil }
            self = .identified(ProcessIdentity(pid: pid, startTime: started))
        default:
            return nil
        }
    }

    var pid: pid_t {
        switch self {
        case .identified(let identity): identity.pid
        case .legacy(let pid): pid
        }
    }

    /// Whether the owner's groups may be swept. Never this process's own. A `<pid>-<start>`
    /// owner is gone when that exact process is; a legacy `<pid>` one only when no process has
    /// the PID (ESRCH): a live process with the PID may be its owner, and its tasks must live.
    /// When the PID's start time cannot be read (its /proc entry vanished or is hidden), the
    /// ESRCH rule decides: groups are kept unless no process has the PID.
    var isGone: Bool {
        switch self {
        case .identified(let identity):
            if let current = ProcessIdentity.of(identity.pid) { return current != identity }
            return identity.pid != getpid() && kill(identity.pid, 0) != 0 && errno == ESRCH
        case .legacy(let pid):
            return pid != getpid() && kill(pid, 0) != 0 && errno == ESRCH
        }
    }
}

enum OwnerMarker {
    static func path(workRoot: String, owner: pid_t) -> String { "\(workRoot)/\(owner).owner" }

    /// Writes this process's marker (write to a temporary name, then rename: never half a marker).
    static func write(workRoot: String) {
        guard let me = ProcessIdentity.of(getpid()) else { return }
        let path = path(workRoot: workRoot, owner: getpid())
        let temporary = path + ".tmp"
        guard FileManager.default.createFile(atPath: temporary, contents: Data(me.marker.utf8), attributes: [.posixPermissions: 0o600]) else { return }
        rename(temporary, path)
    }

    /// The marker `owner` left in `workRoot`, if any.
    static func read(workRoot: String, owner: pid_t) -> ProcessIdentity? {
        guard let handle = FileHandle(forReadingAtPath: path(workRoot: workRoot, owner: owner)) else { return nil }
        defer { try? handle.close() }
        guard let data = try? handle.read(upToCount: 64) else { return nil }
        return ProcessIdentity(marker: String(decoding: data, as: UTF8.self)).flatMap { $0.pid == owner ? $0 : nil }
    }

    /// Whether owner `pid`'s leftovers may go: it is not this process, and its marker names a
    /// process that is no longer there (gone, or its PID now someone else's). Without a marker
    /// (a runner that crashed before writing it): whether no process has the PID.
    static func isGone(_ pid: pid_t, workRoot: String) -> Bool {
        guard pid != getpid() else { return false }
        if let marked = read(workRoot: workRoot, owner: pid) { return ProcessIdentity.of(pid) != marked }
        return kill(pid, 0) != 0 && errno == ESRCH
    }
}
