import Foundation
import Glibc
import Synchronization
import Testing
@testable import StarlingSandbox

/// A read-only bind mount of `source` (or `path` itself) on `path`: every write under it fails
/// with EROFS, even for root, who ignores file modes.
///
/// Held through an O_PATH descriptor and unmounted through it: the kernel lets a runner rmdir a
/// cgroup while one of its files is a mount point, and the mount would then have no path left.
final class ReadOnlyBind {
    let path: String
    private let handle: Int32
    private var mounted = true

    init(_ path: String, source: String? = nil) throws {
        guard mount(source ?? path, path, nil, UInt(MS_BIND), nil) == 0 else {
            throw SandboxUnavailable("bind \(path): \(String(cString: strerror(errno)))")
        }
        handle = open(path, 0o10000000 | O_CLOEXEC)  // O_PATH: the mount's root, whatever happens to `path`
        self.path = path
        guard handle >= 0, mount("none", path, nil, UInt(MS_REMOUNT | MS_BIND | MS_RDONLY), nil) == 0 else {
            let e = errno
            unmount()
            throw SandboxUnavailable("remount \(path) read-only: \(String(cString: strerror(e)))")
        }
    }

    func unmount() {
        guard mounted else { return }
        mounted = false
        if handle >= 0 {
            umount2("/proc/self/fd/\(handle)", Int32(MNT_DETACH))
        } else {
            umount2(path, Int32(MNT_DETACH))
        }
    }

    deinit {
        unmount()
        if handle >= 0 { close(handle) }
    }
}

/// Runs `body` with a runner of its own: a work root and a cgroup parent that no other suite in
/// this process uses (suites run in parallel, and each leftover check must see only its own
/// sandboxes; a test that breaks its cgroups must break no one else's). All removed afterwards.
func withSeparateRunner<T>(_ label: String, warm: Int = 0, configure: (inout SandboxConfiguration) -> Void = { _ in },
                           _ body: (SandboxRunner, String) throws -> T) throws -> T {
    let unique = "\(label)-\(SandboxRunner.newID())"
    var configuration = SandboxConfiguration(nodeName: "test", workRoot: "/dev/shm/starling-tests-\(unique)", initPath: initBinary(),
                                             warmPoolSize: warm, policy: Policy(net: .host))
    configuration.cgroupParent = "starling-tests-\(unique)"
    configure(&configuration)
    let runner = try SandboxRunner(configuration: configuration)
    defer {
        runner.shutdown()
        removeCgroupParent(configuration.cgroupParent)
        removeTree(configuration.workRoot)
    }
    return try body(runner, configuration.workRoot)
}

/// This process's group directories under `parent`, one per hierarchy (v1: per controller).
func ownerDirectories(_ parent: String) -> [String] {
    guard let (_, roots) = Cgroup.layout else { return [] }
    return Set(roots.values).sorted().map { "\($0)/\(parent)/\(Cgroup.ownerName)" }
}

func subdirectories(_ dir: String) -> [String] {
    ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).filter {
        var isDir: ObjCBool = false
        return FileManager.default.fileExists(atPath: dir + "/" + $0, isDirectory: &isDir) && isDir.boolValue
    }.map { dir + "/" + $0 }
}

/// Removes the groups a test left under `parent` (their processes are gone).
func removeCgroupParent(_ parent: String) {
    guard let (_, roots) = Cgroup.layout else { return }
    for owner in ownerDirectories(parent) {
        for group in subdirectories(owner) { rmdir(group) }
        rmdir(owner)
    }
    for root in Set(roots.values) { rmdir("\(root)/\(parent)") }
}

/// Waits for `condition` until `seconds` have passed; returns whether it held.
func eventually(within seconds: Double, _ condition: () -> Bool) -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if condition() { return true }
        usleep(10_000)
    }
    return condition()
}

/// Nested in `SandboxTests`, whose `.serialized` reaches its nested suites: these tests load the
/// CPU (100,000s of directories, memory fills), and the outer suite's CPU-time checks must not
/// compete with them.
extension SandboxTests {
    @Suite("Sandbox limits fail closed", .serialized)
    struct SandboxLimitsTests {
        @Test func aCgroupTheChildCannotJoinFailsTheSpawn() throws {
            // /dev/full opens for writing and fails every write (ENOSPC): a join the kernel refuses.
            #expect(throws: LimitNotApplied("joining the task to", path: "/dev/full", errno: ENOSPC)) {
                let child = try spawn("/bin/true", ["true"], env: [], fds: [], cgroupProcs: ["/dev/null", "/dev/full"])
                var status: Int32 = 0
                waitpid(child.pid, &status, 0)
            }
            // The same spawn with a join that works starts the program: the check above can fail.
            let child = try spawn("/bin/true", ["true"], env: [], fds: [], cgroupProcs: ["/dev/null"])
            defer { if child.pidfd >= 0 { close(child.pidfd) } }
            var status: Int32 = 0
            #expect(waitpid(child.pid, &status, 0) == child.pid && status == 0)
        }

        @Test func limitsOutOfRangeAreRefusedWithoutTrapping() throws {
            let parent = "starling-tests-range-\(SandboxRunner.newID())"
            defer { removeCgroupParent(parent) }
            let group = try Cgroup(name: "g", parent: parent)
            defer { group.destroy() }
            #expect(throws: LimitNotApplied.self) { try group.setCPU(cores: .nan) }
            #expect(throws: LimitNotApplied.self) { try group.setCPU(cores: 1e300) }
            #expect(throws: LimitNotApplied.self) { try group.setMemory(megabytes: .max) }
            #expect(throws: LimitNotApplied.self) { try group.setMemory(megabytes: -1) }
            #expect(throws: LimitNotApplied.self) { try group.setPids(-5) }  // the kernel's EINVAL, now reported
            try group.setMemory(megabytes: 64)
            #expect(group.memoryLimitBytes == 64 << 20)
            #expect(throws: SandboxUnavailable.self) { try Cgroup(name: "g", parent: "../escape") }
        }

        @Test func aLimitFileThatCannotBeWrittenRefusesTheTaskInsteadOfRunningItUnlimited() throws {
            try withSeparateRunner("limit-file") { runner, _ in
                let parent = runner.configuration.cgroupParent
                // The reserve makes 4 groups ahead; every one gets a read-only memory limit file.
                guard let memoryRoot = Cgroup.layout?.1[Cgroup.layout?.0 == .v2 ? "unified" : "memory"] else { return }
                let owner = "\(memoryRoot)/\(parent)/\(Cgroup.ownerName)"
                #expect(eventually(within: 10) { subdirectories(owner).count == 4 })
                let limitFile = Cgroup.layout?.0 == .v2 ? "memory.max" : "memory.limit_in_bytes"
                let standIn = "/dev/shm/starling-test-ro-\(SandboxRunner.newID())"
                FileManager.default.createFile(atPath: standIn, contents: Data("max\n".utf8))
                defer { unlink(standIn) }
                var mounted: [ReadOnlyBind] = []
                defer { mounted.forEach { $0.unmount() } }
                for group in subdirectories(owner) { mounted.append(try ReadOnlyBind(group + "/" + limitFile, source: standIn)) }
                // Without its 48 MB limit this would succeed; with it, it is OOM-killed.
                let hog = TaskSpec(argv: ["python3", "-c", "a = b'x' * (200 << 20); print('ran unlimited')"], timeoutSeconds: 30, memoryMB: 48)
                let r = try runner.run(hog)
                #expect(r.reason == .denied, "\(r)")
                #expect(r.stdout.isEmpty && r.attempts == 0)
                #expect(r.stderr.contains("limit not applied") && r.stderr.contains(limitFile) && r.stderr.contains("Read-only file system"),
                        "\(r.stderr)")
                // The cause names the file, not the host's cgroup paths or the node's PID.
                #expect(!r.stderr.contains("/sys/fs/cgroup") && !r.stderr.contains(parent) && !r.stderr.contains("/\(getpid())") && !r.stderr.contains(Cgroup.ownerName), "\(r.stderr)")
                runner.quiesce()
                mounted.forEach { $0.unmount() }
                mounted = []
                // With writable limit files the same task runs and meets its limit.
                #expect(try runner.run(hog).reason == .oom)
            }
        }

        @Test func aTaskThatCannotJoinItsCgroupIsRefusedInsteadOfRunningOutsideIt() throws {
            try withSeparateRunner("join") { runner, _ in
                guard let (version, roots) = Cgroup.layout else { return }
                let owner = "\(roots[version == .v2 ? "unified" : "pids"]!)/\(runner.configuration.cgroupParent)/\(Cgroup.ownerName)"
                #expect(eventually(within: 10) { subdirectories(owner).count == 4 })
                // Every reserved group's cgroup.procs becomes /dev/full: the limits are written, but
                // the child's join between fork and exec fails.
                var mounted: [ReadOnlyBind] = []
                defer { mounted.forEach { $0.unmount() } }
                for group in subdirectories(owner) { mounted.append(try ReadOnlyBind(group + "/cgroup.procs", source: "/dev/full")) }
                let r = try runner.run(TaskSpec(argv: ["echo", "ran outside its cgroup"], net: .host, pids: 8))
                #expect(r.reason == .denied, "\(r)")
                #expect(r.stdout.isEmpty)
                #expect(r.stderr.contains("joining the task to") && r.stderr.contains("cgroup.procs") && !r.stderr.contains("/sys/fs/cgroup"), "\(r.stderr)")
                runner.quiesce()
                mounted.forEach { $0.unmount() }
                mounted = []
                #expect(try runner.run(TaskSpec(argv: ["echo", "joined"], net: .host)).stdout == "joined\n")
            }
        }

        @Test func aCgroupDirectoryMadeUnwritableRefusesTasksColdAndWarm() throws {
            try withSeparateRunner("unwritable-dir", warm: 1) { runner, _ in
                let parent = runner.configuration.cgroupParent
                #expect(eventually(within: 10) { runner.warmReady == 1 })
                #expect(eventually(within: 10) { ownerDirectories(parent).allSatisfy { subdirectories($0).count >= 5 } })
                var mounted: [ReadOnlyBind] = []
                defer { mounted.forEach { $0.unmount() } }
                for owner in ownerDirectories(parent) { mounted.append(try ReadOnlyBind(owner)) }
                // Warm: the sandbox exists; writing the task's limits into its group fails.
                let warm = try runner.run(TaskSpec(argv: ["true"], memoryMB: 64, cpus: 0.5, pids: 16))
                #expect(warm.reason == .denied, "\(warm)")
                #expect(warm.stderr.contains("limit not applied") && warm.stderr.contains("Read-only file system"), "\(warm.stderr)")
                // Cold, from a reserved group or a new one (whose creation fails): refused as well.
                for _ in 0..<6 {
                    let asked = Date()
                    let cold = try runner.run(TaskSpec(argv: ["true"], memoryMB: 64, net: .host))
                    // The refusal does not wait on removing groups that cannot be removed (EROFS).
                    #expect(Date().timeIntervalSince(asked) < 0.5)
                    #expect(cold.reason == .denied, "\(cold)")
                    #expect(cold.stderr.contains("limit not applied"), "\(cold.stderr)")
                }
                runner.quiesce()
                mounted.forEach { $0.unmount() }
                mounted = []
                let after = try runner.run(TaskSpec(argv: ["echo", "limited"], memoryMB: 64, net: .host))
                #expect(after.reason == .exited && after.stdout == "limited\n", "\(after)")
            }
        }

        @Test func loweringMemoryBelowWhatATaskUsesIsReportedAndTheOldLimitStays() throws {
            try withSeparateRunner("resize") { runner, _ in
                let fill = "head -c 100000000 /dev/zero > /task/fill && echo filled; while [ ! -e /task/go ]; do sleep 0.05; done; echo done"
                struct Seen: Sendable {
                    var refusal: LimitNotApplied?
                    var before: Int?, after: Int?
                    var raised = false
                    var refusedAgain = false
                }
                let seen = Mutex(Seen())
                let r = try runner.run(sh(fill, timeout: 60, memoryMB: 256), onStart: { task in
                    Thread.detachNewThread {
                        // tmpfs pages are charged to the task's group and, without swap, cannot be reclaimed.
                        let filled = eventually(within: 20) { memoryUsage(task) >= 95_000_000 }
                        var s = Seen()
                        s.before = task.memoryLimitMB
                        if filled {
                            do { try task.resize(memoryMB: 20) } catch { s.refusal = error as? LimitNotApplied }
                        }
                        s.after = task.memoryLimitMB
                        // The refused value was not cached as applied: asking again is refused again.
                        s.refusedAgain = filled && (try? task.resize(memoryMB: 20)) == nil
                        // Not cached as applied: raising from the limit really in force works.
                        s.raised = (try? task.resize(memoryMB: 300)) != nil && task.memoryLimitMB == 300
                        seen.withLock { $0 = s }
                        FileManager.default.createFile(atPath: task.sandbox.workdir + "/go", contents: nil)
                    }
                })
                let s = seen.withLock { $0 }
                #expect(r.reason == .exited && r.stdout == "filled\ndone\n", "\(r)")
                #expect(s.before == 256)
                if Cgroup.layout?.0 == .v1 {
                    #expect(s.refusal?.errno == EBUSY, "lowering below use must be refused, got \(String(describing: s.refusal))")
                    #expect(s.after == 256, "the old limit stays in force")
                    #expect(s.refusedAgain)
                }
                #expect(s.raised)
            }
        }
    }
}

/// The memory a running task's group is charged for, in bytes.
func memoryUsage(_ task: RunningTask) -> Int {
    guard let g = task.sandbox.cgroup else { return 0 }
    let file = g.version == .v2 ? "/memory.current" : "/memory.usage_in_bytes"
    return Int(Cgroup.read(g.dir("memory") + file)?.trimmingCharacters(in: .whitespacesAndNewlines) ?? "") ?? 0
}
