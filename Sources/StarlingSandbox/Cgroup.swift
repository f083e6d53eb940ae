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

    /// The limits last written, so that an unchanged limit costs no write (a warm dispatch with
    /// the default limits touches no cgroup file) and the memory order needs no read-back.
    private struct Limits {
        var memoryMB: Int?
        var cpus: Double?
        var pids: Int?
    }
    private let limits = Mutex(Limits())

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

    /// This process's parent group: `starling/<pid>`, so that a later process can tell a dead
    /// owner's leftovers from a live one's.
    static var ownerName: String { String(getpid()) }

    /// Creates the groups `starling/<pid>/<name>` under each hierarchy.
    public init(name: String) throws {
        guard let (version, roots) = Cgroup.layout else {
            throw SandboxUnavailable("no writable cgroup hierarchy (v2, or v1 with memory, cpu, cpuacct and pids)")
        }
        self.version = version
        self.name = name
        var dirs: [String: String] = [:]
        for (controller, root) in roots {
            let parent = root + "/starling/" + Cgroup.ownerName
            let dir = parent + "/" + name
            if mkdir(dir, 0o755) != 0, errno == ENOENT {
                // First sandbox of this process (or after a shutdown): create the parents.
                for level in [root + "/starling", parent] {
                    mkdir(level, 0o755)
                    if version == .v2 { Cgroup.write("+memory +cpu +pids", to: level + "/cgroup.subtree_control") }
                }
                mkdir(dir, 0o755)
            }
            guard access(dir, W_OK) == 0 else {
                throw SandboxUnavailable("cannot create cgroup \(dir): \(String(cString: strerror(errno)))")
            }
            dirs[controller] = dir
        }
        self.dirs = dirs
    }

    /// Removes the groups of owners that are no longer running (a node that was SIGKILLed leaves
    /// its sandboxes' groups behind; their processes died with it through PDEATHSIG).
    public static func sweepStale() {
        guard let (version, roots) = layout else { return }
        for root in Set(roots.values) {
            let top = root + "/starling"
            for owner in (try? FileManager.default.contentsOfDirectory(atPath: top)) ?? [] {
                guard let pid = pid_t(owner), pid != getpid(), kill(pid, 0) != 0, errno == ESRCH else { continue }
                let ownerDir = top + "/" + owner
                for child in (try? FileManager.default.contentsOfDirectory(atPath: ownerDir)) ?? [] {
                    let dir = ownerDir + "/" + child
                    var isDir: ObjCBool = false
                    guard FileManager.default.fileExists(atPath: dir, isDirectory: &isDir), isDir.boolValue else { continue }
                    let g = Cgroup(version: version, name: child, dirs: ["any": dir])
                    for p in (read(dir + "/cgroup.procs") ?? "").split(separator: "\n").compactMap({ pid_t($0) }) { kill(p, SIGKILL) }
                    g.removeDirectories()
                }
                rmdir(ownerDir)
            }
        }
    }

    static func removeOwnerIfEmpty() {
        guard let (_, roots) = layout else { return }
        for root in Set(roots.values) { rmdir(root + "/starling/" + ownerName) }
    }

    private init(version: Version, name: String, dirs: [String: String]) {
        self.version = version
        self.name = name
        self.dirs = dirs
    }

    /// The `cgroup.procs` files the task must join before it execs.
    public var procsFiles: [String] { Array(Set(dirs.values)).sorted().map { $0 + "/cgroup.procs" } }

    func dir(_ controller: String) -> String { dirs[version == .v2 ? "unified" : controller]! }

    @discardableResult
    static func write(_ value: String, to path: String) -> Bool {
        let fd = open(path, O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        return value.withCString { Glibc.write(fd, $0, strlen($0)) } >= 0
    }

    static func read(_ path: String) -> String? { try? String(contentsOfFile: path, encoding: .utf8) }

    /// Sets the memory limit. Raising and lowering both work while the task runs (vertical
    /// elasticity); lowering below current use makes the kernel reclaim, then OOM-kill.
    public func setMemory(megabytes: Int) {
        let previous = limits.withLock { l -> Int? in
            defer { l.memoryMB = megabytes }
            return l.memoryMB
        }
        if previous == megabytes { return }
        let bytes = String(megabytes << 20)
        switch version {
        case .v2:
            Cgroup.write(bytes, to: dir("memory") + "/memory.max")
            Cgroup.write("0", to: dir("memory") + "/memory.swap.max")
        case .v1:
            let d = dir("memory")
            let swapFile = d + "/memory.memsw.limit_in_bytes"
            let hasSwapLimit = FileManager.default.fileExists(atPath: swapFile)
            // memsw must stay >= the memory limit: order the two writes accordingly.
            // A fresh group has no limit, so the first write lowers it.
            if megabytes > (previous ?? .max) {
                if hasSwapLimit { Cgroup.write(bytes, to: swapFile) }
                Cgroup.write(bytes, to: d + "/memory.limit_in_bytes")
            } else {
                Cgroup.write(bytes, to: d + "/memory.limit_in_bytes")
                if hasSwapLimit { Cgroup.write(bytes, to: swapFile) }
            }
        }
    }

    /// Sets the CPU quota in cores (1.5 = one and a half cores' time per period).
    public func setCPU(cores: Double) {
        guard limits.withLock({ l -> Bool in
            defer { l.cpus = cores }
            return l.cpus != cores
        }) else { return }
        let period = 100_000
        let quota = max(1_000, Int(cores * Double(period)))
        switch version {
        case .v2: Cgroup.write("\(quota) \(period)", to: dir("cpu") + "/cpu.max")
        case .v1:
            Cgroup.write(String(period), to: dir("cpu") + "/cpu.cfs_period_us")
            Cgroup.write(String(quota), to: dir("cpu") + "/cpu.cfs_quota_us")
        }
    }

    public func setPids(_ n: Int) {
        guard limits.withLock({ l -> Bool in
            defer { l.pids = n }
            return l.pids != n
        }) else { return }
        Cgroup.write(String(n), to: dir("pids") + "/pids.max")
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

    public var processIDs: [pid_t] {
        (Cgroup.read(dir("pids") + "/cgroup.procs") ?? "").split(separator: "\n").compactMap { pid_t($0) }
    }

    /// Kills every process in the group, repeatedly, until none is left (bounded).
    public func killAll() {
        if version == .v2, Cgroup.write("1", to: dir("pids") + "/cgroup.kill") { return }
        for _ in 0..<200 {
            let pids = processIDs
            if pids.isEmpty { return }
            for p in pids { kill(p, SIGKILL) }
            usleep(2_000)
        }
    }

    /// Kills what is left and removes the groups.
    public func destroy() {
        killAll()
        removeDirectories()
    }

    func removeDirectories() {
        for d in Set(dirs.values) {
            for _ in 0..<500 {
                if rmdir(d) == 0 || errno == ENOENT { break }
                usleep(2_000)
            }
        }
    }
}
