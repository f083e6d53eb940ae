import Foundation
import Glibc
import Synchronization

/// One sandbox's control groups: memory, CPU and pids limits, and its CPU time, peak memory and
/// OOM kills. cgroup v2 where it is mounted, v1 otherwise (one directory per controller).
public final class Cgroup: Sendable {
    public enum Version: String, Sendable { case v1, v2 }

    public let version: Version
    public let name: String
    /// v1: controller → directory; v2: "unified" → directory.
    let dirs: [String: String]

    /// The limits the kernel accepted, so that an unchanged limit costs no write (a warm dispatch
    /// with the default limits touches no cgroup file) and the memory order needs no read-back.
    /// Only a write that succeeded is recorded: a failed one leaves the old value (still in force)
    /// or, when a step of a two-file change failed, marks the value unknown so the next change
    /// reads the kernel's instead of trusting the cache.
    private struct Limits {
        var memory: Known<Int> = .unset
        var cpus: Double?
        var pids: Int?
    }
    private enum Known<Value: Sendable>: Sendable {
        /// A fresh group: no limit written yet (the kernel's default is "unlimited").
        case unset
        case applied(Value)
        /// A write failed half way: ask the kernel.
        case unknown
    }
    private let limits = Mutex(Limits())
    /// Held across a whole limit change (check, writes, record), so that two changes at once
    /// (a resize while another is under way) cannot interleave their writes or their records.
    private let changing = NSLock()

    /// Where each controller's hierarchy is mounted, or nil if cgroups are unusable here.
    public static let layout: (Version, [String: String])? = detect()

    static func detect() -> (Version, [String: String])? {
        guard let mounts = try? String(contentsOfFile: "/proc/self/mounts", encoding: .utf8) else { return nil }
        var v1: [String: String] = [:]
        var v2: String?
        for line in mounts.split(separator: "\n") {
            let f = line.split(separator: " ")
            guard f.count >= 4 else { continue }
            if f[2] == "cgroup2" { v2 = String(f[1]) }
            if f[2] == "cgroup" {
                for opt in f[3].split(separator: ",") where ["memory", "cpu", "cpuacct", "pids"].contains(opt) {
                    v1[String(opt)] = String(f[1])
                }
            }
        }
        // A hybrid host mounts an empty cgroup2 beside the v1 controllers: use v2 only if it
        // actually carries memory, cpu and pids.
        if let v2, access(v2, W_OK) == 0,
           let controllers = read(v2 + "/cgroup.controllers")?.split(whereSeparator: \.isWhitespace).map(String.init),
           ["memory", "cpu", "pids"].allSatisfy(controllers.contains) {
            return (.v2, ["unified": v2])
        }
        if ["memory", "cpu", "cpuacct", "pids"].allSatisfy({ v1[$0] != nil }), access(v1["memory"]!, W_OK) == 0 {
            return (.v1, v1)
        }
        return nil
    }

    /// This process's parent group: `starling/<pid>-<start time>`, so that a later process can
    /// tell a dead owner's leftovers from a live one's by the name alone, even when the PID has
    /// been reused (see `CgroupOwner`). Only if /proc cannot tell this process's start time, the
    /// bare PID (swept only when no process has it).
    static let ownerName: String = ProcessIdentity.of(getpid())?.ownerName ?? String(getpid())

    /// The default parent of every group this process creates, under each hierarchy.
    public static let defaultParent = "starling"

    /// Creates the groups `<parent>/<pid>-<start time>/<name>` under each hierarchy (`parent` is `starling`
    /// unless configured otherwise; tests use their own parent so that they can make it
    /// unwritable without touching other runners' groups).
    public init(name: String, parent: String = Cgroup.defaultParent) throws {
        guard let (version, roots) = Cgroup.layout else {
            throw SandboxUnavailable("no writable cgroup hierarchy (v2, or v1 with memory, cpu, cpuacct and pids)")
        }
        guard !parent.isEmpty, !parent.hasPrefix("/"),
              parent.split(separator: "/", omittingEmptySubsequences: false).allSatisfy({ !$0.isEmpty && $0 != "." && $0 != ".." }) else {
            throw SandboxUnavailable("cgroup parent \(parent.debugDescription) must be a relative path without . or ..")
        }
        self.version = version
        self.name = name
        var dirs: [String: String] = [:]
        for (controller, root) in roots {
            let owner = root + "/" + parent + "/" + Cgroup.ownerName
            let dir = owner + "/" + name
            if dirs.values.contains(dir) {  // v1 co-mounts controllers (cpu,cpuacct): one directory
                dirs[controller] = dir
                continue
            }
            var failure = mkdir(dir, 0o755) == 0 ? 0 : errno
            if failure == ENOENT {
                // First sandbox of this process (or after a shutdown): create the parents.
                for level in [root + "/" + parent, owner] {
                    mkdir(level, 0o755)
                    // A failure here shows later: the limit files it would enable are missing,
                    // and writing them fails the task.
                    if version == .v2 { try? Cgroup.write("+memory +cpu +pids", to: level + "/cgroup.subtree_control") }
                }
                failure = mkdir(dir, 0o755) == 0 ? 0 : errno
            }
            guard failure == 0 else {
                for made in Set(dirs.values) { rmdir(made) }
                throw LimitNotApplied("creating cgroup", path: dir, errno: failure)
            }
            dirs[controller] = dir
        }
        self.dirs = dirs
    }

    /// Removes the groups of owners that are no longer running (a node that was SIGKILLed leaves
    /// its sandboxes' groups behind; their processes died with it through PDEATHSIG).
    ///
    /// Whose groups they are comes from the owner directory's name only (`CgroupOwner`): the
    /// parent is shared by every runner on the machine, whatever its work root, so a marker in
    /// one work root says nothing about the process that has the PID now. `<pid>-<start time>`
    /// owners are gone when that exact process is; bare `<pid>` owners (older runners) when no
    /// process has the PID. Anything else under the parent is left alone.
    public static func sweepStale(parent: String = defaultParent) {
        guard let (version, roots) = layout else { return }
        for root in Set(roots.values) {
            let top = root + "/" + parent
            for owner in (try? FileManager.default.contentsOfDirectory(atPath: top)) ?? [] {
                guard owner != ownerName, let parsed = CgroupOwner(directoryName: owner), parsed.isGone else { continue }
                let ownerDir = top + "/" + owner
                for child in (try? FileManager.default.contentsOfDirectory(atPath: ownerDir)) ?? [] {
                    let dir = ownerDir + "/" + child
                    var isDir: ObjCBool = false
                    guard FileManager.default.fileExists(atPath: dir, isDirectory: &isDir), isDir.boolValue else { continue }
                    let g = Cgroup(version: version, name: child, dirs: [version == .v2 ? "unified" : "pids": dir])
                    g.killAll()
                    g.removeDirectories()
                }
                rmdir(ownerDir)
            }
        }
    }

    /// Whether this process still has a group directory under `parent`.
    static func ownerExists(parent: String = Cgroup.defaultParent) -> Bool {
        guard let (_, roots) = layout else { return false }
        return Set(roots.values).contains { access($0 + "/" + parent + "/" + ownerName, F_OK) == 0 }
    }

    static func removeOwnerIfEmpty(parent: String = Cgroup.defaultParent) {
        guard let (_, roots) = layout else { return }
        for root in Set(roots.values) { rmdir(root + "/" + parent + "/" + ownerName) }
    }

    private init(version: Version, name: String, dirs: [String: String]) {
        self.version = version
        self.name = name
        self.dirs = dirs
    }

    /// The `cgroup.procs` files the task must join before it execs.
    public var procsFiles: [String] { Array(Set(dirs.values)).sorted().map { $0 + "/cgroup.procs" } }

    func dir(_ controller: String) -> String { dirs[version == .v2 ? "unified" : controller]! }

    /// Writes `value` to a cgroup file; any failure (open, short or failed write) is thrown with
    /// the file and the kernel's reason, since a limit that silently did not apply is no limit.
    static func write(_ value: String, to path: String) throws(LimitNotApplied) {
        let fd = open(path, O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else { throw LimitNotApplied("writing \(value.debugDescription) to", path: path, errno: errno) }
        defer { close(fd) }
        let length = value.utf8.count
        let written = value.withCString { Glibc.write(fd, $0, length) }
        guard written == length else {
            throw LimitNotApplied("writing \(value.debugDescription) to", path: path, errno: written < 0 ? errno : EIO)
        }
    }

    static func read(_ path: String) -> String? { try? String(contentsOfFile: path, encoding: .utf8) }

    /// The memory limit the kernel enforces now, in bytes, or nil when there is none (or it
    /// cannot be read).
    public var memoryLimitBytes: Int? {
        let file = version == .v2 ? "/memory.max" : "/memory.limit_in_bytes"
        guard let text = Cgroup.read(dir("memory") + file)?.trimmingCharacters(in: .whitespacesAndNewlines),
              let bytes = Int(text), bytes < Int.max / 2 else { return nil }  // "max", or v1's huge default
        return bytes
    }

    /// Bounds on what a limit change may ask for (tasks are validated tighter, in TaskLimits).
    static let maximumMemoryMB = 1 << 30
    static let maximumCores = 4_096.0

    /// Sets the memory limit. Raising and lowering both work while the task runs (vertical
    /// elasticity). Lowering below current use makes the kernel reclaim; on v1, when it cannot
    /// reclaim enough, the write fails with EBUSY and the old limit stays (thrown, not cached);
    /// on v2 the kernel OOM-kills instead.
    public func setMemory(megabytes: Int) throws(LimitNotApplied) {
        // A resize's numbers come from outside: refuse what would overflow the byte count.
        guard (1...Cgroup.maximumMemoryMB).contains(megabytes) else {
            throw LimitNotApplied("setting \(megabytes) MB, out of range, as the memory limit of", path: dir("memory"), errno: EINVAL)
        }
        changing.lock()
        defer { changing.unlock() }
        let known = limits.withLock { $0.memory }
        let previousBytes: Int?
        switch known {
        case .applied(let mb):
            if mb == megabytes { return }
            previousBytes = mb << 20
        case .unset: previousBytes = nil
        case .unknown: previousBytes = memoryLimitBytes
        }
        let bytes = megabytes << 20
        let text = String(bytes)
        do {
            switch version {
            case .v2:
                try Cgroup.write(text, to: dir("memory") + "/memory.max")
                // Absent without swap accounting (as memsw on v1): then there is nothing to cap.
                let swapFile = dir("memory") + "/memory.swap.max"
                if FileManager.default.fileExists(atPath: swapFile) { try Cgroup.write("0", to: swapFile) }
            case .v1:
                let d = dir("memory")
                let swapFile = d + "/memory.memsw.limit_in_bytes"
                let hasSwapLimit = FileManager.default.fileExists(atPath: swapFile)
                // memsw must stay >= the memory limit: order the two writes accordingly.
                // A fresh group has no limit, so the first write lowers it.
                if bytes > (previousBytes ?? .max) {
                    if hasSwapLimit { try Cgroup.write(text, to: swapFile) }
                    try Cgroup.write(text, to: d + "/memory.limit_in_bytes")
                } else {
                    try Cgroup.write(text, to: d + "/memory.limit_in_bytes")
                    if hasSwapLimit { try Cgroup.write(text, to: swapFile) }
                }
            }
        } catch {
            // The first write failing changed nothing; a later one may have left the pair
            // half-changed. Either way the next change asks the kernel rather than the cache.
            limits.withLock { $0.memory = .unknown }
            throw error
        }
        limits.withLock { $0.memory = .applied(megabytes) }
    }

    /// Sets the CPU quota in cores (1.5 = one and a half cores' time per period).
    public func setCPU(cores: Double) throws(LimitNotApplied) {
        // Int(_:) of a NaN or huge Double traps: check before converting.
        guard cores.isFinite, cores >= 0.01, cores <= Cgroup.maximumCores else {
            throw LimitNotApplied("setting \(cores) cores, out of range, as the CPU quota of", path: dir("cpu"), errno: EINVAL)
        }
        changing.lock()
        defer { changing.unlock() }
        guard limits.withLock({ $0.cpus != cores }) else { return }
        let period = 100_000
        let quota = max(1_000, Int(cores * Double(period)))
        do {
            switch version {
            case .v2: try Cgroup.write("\(quota) \(period)", to: dir("cpu") + "/cpu.max")
            case .v1:
                try Cgroup.write(String(period), to: dir("cpu") + "/cpu.cfs_period_us")
                try Cgroup.write(String(quota), to: dir("cpu") + "/cpu.cfs_quota_us")
            }
        } catch {
            limits.withLock { $0.cpus = nil }
            throw error
        }
        limits.withLock { $0.cpus = cores }
    }

    public func setPids(_ n: Int) throws(LimitNotApplied) {
        changing.lock()
        defer { changing.unlock() }
        guard limits.withLock({ $0.pids != n }) else { return }
        do {
            try Cgroup.write(String(n), to: dir("pids") + "/pids.max")
        } catch {
            limits.withLock { $0.pids = nil }
            throw error
        }
        limits.withLock { $0.pids = n }
    }

    /// Writes a task's memory, CPU and pids limits; the first the kernel refuses is thrown.
    func apply(_ grant: Policy.Grant) throws(LimitNotApplied) {
        try setMemory(megabytes: grant.memoryMB)
        try setCPU(cores: grant.cpus)
        try setPids(grant.pids)
    }

    /// CPU time used so far, in nanoseconds.
    public var cpuNanoseconds: Int {
        switch version {
        case .v2:
            for line in (Cgroup.read(dir("cpu") + "/cpu.stat") ?? "").split(separator: "\n") where line.hasPrefix("usage_usec ") {
                return (Int(line.split(separator: " ")[1]) ?? 0) * 1000
            }
            return 0
        case .v1:
            return Int(Cgroup.read(dir("cpuacct") + "/cpuacct.usage")?.trimmingCharacters(in: .whitespacesAndNewlines) ?? "") ?? 0
        }
    }

    /// Peak memory use in bytes (v2 needs Linux 5.19 for memory.peak; 0 before).
    public var peakMemoryBytes: Int {
        let file = version == .v2 ? "/memory.peak" : "/memory.max_usage_in_bytes"
        return Int(Cgroup.read(dir("memory") + file)?.trimmingCharacters(in: .whitespacesAndNewlines) ?? "") ?? 0
    }

    /// How many times the kernel's OOM killer struck in this group.
    public var oomKills: Int {
        let file = version == .v2 ? "/memory.events" : "/memory.oom_control"
        for line in (Cgroup.read(dir("memory") + file) ?? "").split(separator: "\n") where line.hasPrefix("oom_kill ") {
            return Int(line.split(separator: " ")[1]) ?? 0
        }
        return 0
    }

    /// The processes in the group that may be signalled (see `signallableProcessIDs(in:)`).
    public var processIDs: [pid_t] {
        Cgroup.signallableProcessIDs(in: Cgroup.read(dir("pids") + "/cgroup.procs") ?? "")
    }

    /// The PIDs in a `cgroup.procs` text that name one process each: decimal, greater than 0.
    /// On v2 a process outside the reader's PID namespace reads as 0, and kill(0, sig) would
    /// hit the reader's own process group (kill(-1, sig): every process it may signal); such
    /// lines, and any that are not a plain number, are left out.
    static func signallableProcessIDs(in procs: String) -> [pid_t] {
        procs.split(separator: "\n").compactMap { line in
            guard !line.isEmpty, line.utf8.allSatisfy({ (0x30...0x39).contains($0) }),
                  let pid = pid_t(line), pid > 0 else { return nil }
            return pid
        }
    }

    /// Kills every process in the group: on v2 through `cgroup.kill` (Linux 5.14) where there
    /// is one, which needs no PIDs at all; otherwise by PID, repeatedly, until none is left
    /// (bounded).
    public func killAll() {
        if version == .v2, (try? Cgroup.write("1", to: dir("pids") + "/cgroup.kill")) != nil { return }
        for _ in 0..<200 {
            let pids = processIDs
            if pids.isEmpty { return }
            for p in pids {
                precondition(p > 0, "never signal a process group or every process")
                kill(p, SIGKILL)
            }
            usleep(2_000)
        }
    }

    /// Kills what is left and removes the groups.
    public func destroy() {
        killAll()
        removeDirectories()
    }

    /// Removes the group directories, waiting (bounded) while the kernel still counts exiting
    /// processes in them (EBUSY). Any other failure will not pass by waiting: the group is left
    /// for the next start's sweep, and a refusal that destroys a group on the result path does
    /// not stall for a second per directory.
    func removeDirectories() {
        for d in Set(dirs.values) {
            for _ in 0..<500 {
                if rmdir(d) == 0 || errno != EBUSY { break }
                usleep(2_000)
            }
        }
    }
}

/// A cgroup step the kernel refused (creating a group, writing a limit, joining it): the task it
/// was for must not run, or, for a resize, the old limit stays in force. Says which file, what
/// was tried and why.
public struct LimitNotApplied: Error, CustomStringConvertible, Equatable {
    /// What was tried, e.g. `writing "536870912" to`.
    public var action: String
    public var path: String
    public var errno: Int32

    public init(_ action: String, path: String, errno: Int32) {
        self.action = action
        self.path = path
        self.errno = errno
    }

    /// Names the file or group by its last component only: the description reaches the task (in
    /// a `denied` result), and the host's cgroup paths and the node's PID are none of its business.
    /// `path` keeps the whole path for the node's own logs.
    public var description: String {
        let name = path.split(separator: "/").last.map(String.init) ?? path
        return "limit not applied: \(action) \(name) (in the task's cgroup) failed: \(String(cString: strerror(errno)))"
    }
}
