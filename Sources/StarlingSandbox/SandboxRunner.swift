import CSandbox
import Foundation
import Glibc
import Synchronization

/// Raised when sandboxed execution is impossible here. Starling never falls back silently.
public struct SandboxUnavailable: Error, CustomStringConvertible {
    public var description: String
    public init(_ d: String) { description = d }
}

public struct SandboxConfiguration: Sendable {
    public var nodeName: String
    /// Per-sandbox work directories (mode 0700, on tmpfs when under /dev/shm).
    public var workRoot: String
    /// The `starling-sandbox-init` binary, needed for the warm pool.
    public var initPath: String?
    public var warmPoolSize: Int
    /// Bytes kept of stdout and of stderr each; the rest is dropped and `truncated` set.
    public var outputCapBytes: Int
    public var outputFileCapBytes: Int
    public var outputsTotalCapBytes: Int
    public var policy: Policy
    public var secrets: SecretStore
    /// Development only: run tasks without bubblewrap. Every result says so.
    public var unsafeNoSandbox: Bool
    /// The cgroup under which this process's sandbox groups live (`<parent>/<pid>-<start time>/<sandbox>` in
    /// each hierarchy). Tests use their own, to break it without disturbing other runners.
    public var cgroupParent: String = Cgroup.defaultParent

    public init(nodeName: String, workRoot: String = "/dev/shm/starling-sandboxes", initPath: String? = nil,
                warmPoolSize: Int = 0, outputCapBytes: Int = 1 << 20, outputFileCapBytes: Int = 1 << 20,
                outputsTotalCapBytes: Int = 4 << 20, policy: Policy = Policy(), secrets: SecretStore = SecretStore(),
                unsafeNoSandbox: Bool = false) {
        self.nodeName = nodeName
        self.workRoot = workRoot
        self.initPath = initPath
        self.warmPoolSize = warmPoolSize
        self.outputCapBytes = outputCapBytes
        self.outputFileCapBytes = outputFileCapBytes
        self.outputsTotalCapBytes = outputsTotalCapBytes
        self.policy = policy
        self.secrets = secrets
        self.unsafeNoSandbox = unsafeNoSandbox
    }

    /// `starling-sandbox-init` beside the running executable, if it is there.
    public static func initBesideExecutable() -> String? {
        var buf = [CChar](repeating: 0, count: 4096)
        let n = readlink("/proc/self/exe", &buf, 4095)
        guard n > 0 else { return nil }
        let exe = String(decoding: buf[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        let candidate = (exe as NSString).deletingLastPathComponent + "/starling-sandbox-init"
        return access(candidate, X_OK) == 0 ? candidate : nil
    }
}

/// A sandbox that has been spawned: its process, pipes, cgroup and work directory.
final class SpawnedSandbox: Sendable {
    let id: String
    let workdir: String
    /// The host directory bound read-only at /run/starling (warm sandboxes, and cold ones whose
    /// task has an API socket); nil otherwise.
    let runDir: String?
    let cgroup: Cgroup?
    let pid: pid_t
    let stdin: Int32
    let stdout: Int32
    let stderr: Int32
    let control: Int32?
    /// Set once `waitpid` has reaped `pid`: from then on the number may belong to another
    /// process, so nothing may signal it. The cgroup is the safe handle on what is left.
    let reaped = Atomic<Bool>(false)
    /// bwrap's pidfd, -1 once closed (or without pidfd support). Signals go through it, so a
    /// reused PID is never hit; the lock keeps a signal from racing the close, after which the
    /// number could name another descriptor.
    private let pidfd: Mutex<Int32>

    init(id: String, workdir: String, runDir: String?, cgroup: Cgroup?, pid: pid_t, pidfd: Int32, stdin: Int32, stdout: Int32,
         stderr: Int32, control: Int32?) {
        self.id = id
        self.workdir = workdir
        self.runDir = runDir
        self.cgroup = cgroup
        self.pid = pid
        self.pidfd = Mutex(pidfd)
        self.stdin = stdin
        self.stdout = stdout
        self.stderr = stderr
        self.control = control
    }

    /// SIGKILL to bwrap (by its pidfd) and to everything in the task's cgroup.
    func killTree() {
        signalBubblewrap(SIGKILL)
        cgroup?.killAll()
    }

    /// Signals bwrap through its pidfd; without pidfds (Linux < 5.3), by PID until it is reaped.
    func signalBubblewrap(_ sig: Int32) {
        pidfd.withLock { fd in
            if fd >= 0 {
                _ = starling_pidfd_send_signal(fd, sig)
            } else if !reaped.load(ordering: .acquiring) {
                kill(pid, sig)
            }
        }
    }

    /// Waits for the sandbox's bwrap process and records that it is gone.
    func reap() -> Int32 {
        // A wait that fails (ECHILD: someone else reaped it) must not read as exit 0, a success:
        // it reads as killed, which fails the task closed.
        var status = SIGKILL
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        reaped.store(true, ordering: .releasing)
        return status
    }

    /// Kills anything left, reaps, and removes the cgroup and the work directory (unless the
    /// caller hands that to a `TreeReaper`).
    func destroy(removingWorkdir: Bool = true) {
        if !reaped.load(ordering: .acquiring) {
            signalBubblewrap(SIGKILL)
            _ = reap()
        }
        pidfd.withLock { fd in
            if fd >= 0 { close(fd) }
            fd = -1
        }
        cgroup?.destroy()
        if let runDir { removeTree(runDir) }
        if removingWorkdir { removeTree(workdir) }
    }
}

/// A handle on a running task: resize its limits in place, or kill it.
public final class RunningTask: Sendable {
    let sandbox: SpawnedSandbox
    let cancelled = Atomic<Bool>(false)

    init(_ s: SpawnedSandbox) { sandbox = s }

    /// Vertical elasticity: new memory and CPU limits take effect at once. Throws when the
    /// kernel refuses one (on cgroup v1, lowering memory below what the task uses fails with
    /// EBUSY); the refused limit is not applied and the one before it stays in force.
    public func resize(memoryMB: Int? = nil, cpus: Double? = nil) throws(LimitNotApplied) {
        if let memoryMB { try sandbox.cgroup?.setMemory(megabytes: memoryMB) }
        if let cpus { try sandbox.cgroup?.setCPU(cores: cpus) }
    }

    /// The memory limit in force now, read from the kernel (nil without one, or unsandboxed).
    public var memoryLimitMB: Int? { sandbox.cgroup?.memoryLimitBytes.map { $0 >> 20 } }

    public func cancel() {
        cancelled.store(true, ordering: .relaxed)
        sandbox.killTree()
    }
}

/// Runs tasks, each in a fresh bubblewrap sandbox with cgroup limits, destroyed afterwards.
///
/// Thread-safe: `run` may be called from many threads at once; each call owns its sandbox.
public final class SandboxRunner: Sendable {
    public let configuration: SandboxConfiguration
    let bubblewrap: Bubblewrap?
    private let pool: WarmPool?
    private let reserve: SlotReserve?
    /// Sandboxes are destroyed here, off the path that returns a result. Serial and bounded by
    /// the number of tasks that ran; `quiesce()` waits for it. Their work directories go on to
    /// `reaper`, which takes turns between trees, so one huge tree does not hold up the rest.
    private let cleanup = DispatchQueue(label: "starling-sandbox-cleanup")
    private let reaper = TreeReaper()

    /// This process's work directory root: `<workRoot>/<pid>`.
    public let root: String

    public init(configuration: SandboxConfiguration) throws {
        do throws(PolicyDenial) { try configuration.policy.validate() } catch {
            throw SandboxUnavailable("the node's policy is invalid: \(error.description)")
        }
        // A task that closes its stdin, or a warm sandbox that died, must give EPIPE, not kill us.
        signal(SIGPIPE, SIG_IGN)
        self.configuration = configuration
        mkdir(configuration.workRoot, 0o700)
        chmod(configuration.workRoot, 0o700)
        root = configuration.workRoot + "/" + String(getpid())
        mkdir(root, 0o700)
        OwnerMarker.write(workRoot: configuration.workRoot)
        Self.sweepStale(workRoot: configuration.workRoot, cgroupParent: configuration.cgroupParent, reaper: reaper)
        if configuration.unsafeNoSandbox {
            bubblewrap = nil
            pool = nil
            reserve = nil
            return
        }
        guard let path = Bubblewrap.locate() else {
            throw SandboxUnavailable("bubblewrap (bwrap) is not installed: install it (apt-get install bubblewrap), or pass --unsafe-no-sandbox for development only")
        }
        guard Cgroup.layout != nil else {
            throw SandboxUnavailable("no writable cgroups (v2, or v1 memory+cpu+cpuacct+pids): limits cannot be enforced; run as root, or pass --unsafe-no-sandbox for development only")
        }
        // Prove that namespaces work here before promising isolation. Through the same spawn
        // helper as every task (not Foundation's Process, which refuses to start anything when
        // the node inherited a descriptor numbered above its open-file limit).
        func probe(_ extra: [String]) throws -> Bool {
            let null = open("/dev/null", O_RDWR | O_CLOEXEC)
            guard null >= 0 else { throw SandboxUnavailable("cannot open /dev/null: \(String(cString: strerror(errno)))") }
            defer { close(null) }
            let argv = [path, "--unshare-all", "--unshare-user"] + extra
                + ["--ro-bind", "/usr", "/usr", "--symlink", "usr/bin", "/bin", "--symlink", "usr/lib", "/lib",
                   "--symlink", "usr/lib64", "/lib64", "--clearenv", "--", "/usr/bin/true"]
            let child = try spawn(path, argv, env: ["PATH=/usr/bin:/bin"], fds: [(null, 0), (null, 1), (null, 2)], cgroupProcs: [])
            if child.pidfd >= 0 { close(child.pidfd) }
            var status: Int32 = 0
            var reaped: pid_t
            repeat { reaped = waitpid(child.pid, &status, 0) } while reaped < 0 && errno == EINTR
            return reaped == child.pid && status == 0  // a wait that failed is no proof
        }
        guard try probe([]) else {
            throw SandboxUnavailable("bubblewrap cannot create namespaces here (user namespaces disabled?): refusing to run unsandboxed; pass --unsafe-no-sandbox for development only")
        }
        // Without --disable-userns (bubblewrap < 0.8) the seccomp filter alone refuses nested
        // namespaces; every sandbox has that filter or does not start.
        bubblewrap = Bubblewrap(path: path, disablesUserNamespaces: try probe(["--disable-userns", "--assert-userns-disabled"]))
        let root = self.root
        let cgroupParent = configuration.cgroupParent
        reserve = SlotReserve(target: 4) {
            let id = Self.newID()
            let dir = root + "/" + id
            guard mkdir(dir, 0o700) == 0, mkdir(dir + "/out", 0o755) == 0 else { throw SandboxUnavailable("mkdir \(dir)") }
            do {
                return .init(id: id, workdir: dir, cgroup: try Cgroup(name: id, parent: cgroupParent))
            } catch {
                removeTree(dir)
                throw error
            }
        }
        pool = configuration.warmPoolSize > 0 && configuration.initPath != nil ? WarmPool(size: configuration.warmPoolSize) : nil
        if let pool, let initPath = configuration.initPath {
            // weak: the refill thread may still be spawning while the runner deinitialises.
            pool.start { [weak self] in
                guard let self else { throw SandboxUnavailable("the runner is gone") }
                return try self.spawnWarm(initPath: initPath)
            }
        }
    }

    deinit { shutdown() }

    /// Removes work directories and cgroups left by processes that died without cleaning up.
    /// The directories go through `reaper` when given, so a huge leftover does not hold up the
    /// start.
    ///
    /// An owner is gone when its marker (`<pid>.owner`: PID and start time) names a process that
    /// is no longer there, so a PID reused after a crash does not keep leftovers for ever. Groups
    /// are swept under `cgroupParent` (this runner's) and the default parent, judged by their
    /// owner directory's name alone (`<pid>-<start time>`; see `Cgroup.sweepStale`), never by this
    /// work root's markers: the parent is shared with runners that use other work roots.
    static func sweepStale(workRoot: String, cgroupParent: String = Cgroup.defaultParent, reaper: TreeReaper? = nil) {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: workRoot)) ?? []
        var gone: [pid_t: Bool] = [:]
        func isGone(_ pid: pid_t) -> Bool {
            if let known = gone[pid] { return known }
            let answer = OwnerMarker.isGone(pid, workRoot: workRoot)
            gone[pid] = answer
            return answer
        }
        for owner in entries {
            guard let pid = pid_t(owner), isGone(pid) else { continue }
            if let reaper { reaper.remove(workRoot + "/" + owner) } else { removeTree(workRoot + "/" + owner) }
        }
        for parent in Set([cgroupParent, Cgroup.defaultParent]) {
            Cgroup.sweepStale(parent: parent)
        }
        for entry in entries where entry.hasSuffix(".owner") {
            guard let pid = pid_t(entry.dropLast(".owner".count)), isGone(pid) else { continue }
            unlink(workRoot + "/" + entry)
        }
    }

    /// Stops the warm pool, destroys its idle sandboxes, and removes this process's empty
    /// directories (they stay while another runner of this process still uses them).
    ///
    /// Waits at most `seconds` for sandboxes to be destroyed and work directories removed; what
    /// is left then is named on stderr and left to the next start's sweep (a task that left
    /// millions of files must not hold a node's exit hostage). Returns whether all of it went.
    @discardableResult
    public func shutdown(within seconds: Double = 60) -> Bool {
        pool?.drain()
        reserve?.drain()
        guard quiesce(within: seconds) else {
            let left = reaper.remaining
            let line = "starling: cleanup unfinished after \(seconds) s; left for the next start's sweep: "
                + (left.isEmpty ? "sandboxes still being destroyed" : left.joined(separator: ", ")) + "\n"
            FileHandle.standardError.write(Data(line.utf8))
            return false
        }
        rmdir(root)
        Cgroup.removeOwnerIfEmpty(parent: configuration.cgroupParent)
        // The marker stays while anything of this process does (another runner's, or a tree
        // that could not be removed), so that the sweep can tell it from a later process's.
        if access(root, F_OK) != 0 && !Cgroup.ownerExists(parent: configuration.cgroupParent) {
            unlink(OwnerMarker.path(workRoot: configuration.workRoot, owner: getpid()))
        }
        return true
    }

    public var warmReady: Int { pool?.readyCount ?? 0 }

    /// Waits until every finished sandbox has been destroyed and its work directory removed.
    public func quiesce() {
        cleanup.sync {}
        reaper.waitUntilIdle()
    }

    /// `quiesce()`, waiting at most `seconds` (clamped to 0...1 day, so no conversion traps);
    /// whether everything was done in time.
    public func quiesce(within seconds: Double) -> Bool {
        let bounded = seconds.isNaN ? 0 : min(max(seconds, 0), 86_400)
        let deadline = DispatchTime.now() + .milliseconds(Int(bounded * 1000))
        let destroyed = DispatchSemaphore(value: 0)
        cleanup.async { destroyed.signal() }
        guard destroyed.wait(timeout: deadline) == .success else { return false }
        return reaper.waitUntilIdle(deadline: deadline)
    }

    static func newID() -> String {
        var r = SystemRandomNumberGenerator()
        return (0..<8).map { _ in String(format: "%02x", UInt8.random(in: 0...255, using: &r)) }.joined()
    }

    func makeWorkdir(_ id: String) throws -> String {
        let dir = root + "/" + id
        if mkdir(dir, 0o700) != 0, errno == ENOENT {
            mkdir(root, 0o700)  // removed by an earlier shutdown
            OwnerMarker.write(workRoot: configuration.workRoot)
            mkdir(dir, 0o700)
        }
        guard access(dir, W_OK) == 0, mkdir(dir + "/out", 0o755) == 0 else {
            throw SandboxUnavailable("cannot create \(dir): \(String(cString: strerror(errno)))")
        }
        return dir
    }

    /// Spawns bwrap for a cold task (`program` given) or a warm one (the init stub waits on fd 3).
    /// `prepare` fills the work directory before the sandbox starts (a cold task's input files
    /// must exist before its program runs).
    /// `env` is the task's environment (a cold task's; a warm one's arrives over its control socket).
    /// `withRunDir`: give the sandbox a run directory (see `SpawnedSandbox.runDir`); `listen`
    /// then opens the task's socket in it before the sandbox starts.
    func spawnSandbox(net: NetworkMode, grant: Policy.Grant?, program: [String]?, env: [String], initPath: String?,
                      output: OutputMode = .capture, withRunDir: Bool = false, prepare: (String) throws -> Void = { _ in },
                      listen: ((String) throws -> Void)? = nil) throws -> SpawnedSandbox {
        guard let bubblewrap else { preconditionFailure("no bubblewrap") }
        let slot = reserve?.take()
        let id = slot?.id ?? Self.newID()
        let workdir = try slot?.workdir ?? makeWorkdir(id)
        var cgroup: Cgroup?
        var runDir: String?
        do {
            try prepare(workdir)
            if withRunDir || listen != nil {
                let dir = workdir + ".run"
                guard mkdir(dir, 0o700) == 0 else { throw SandboxUnavailable("mkdir \(dir): \(String(cString: strerror(errno)))") }
                runDir = dir
                try listen?(dir)
            }
            cgroup = try slot?.cgroup ?? Cgroup(name: id, parent: configuration.cgroupParent)
            let g = grant ?? Policy.Grant(memoryMB: Policy.defaultMemoryMB, cpus: Policy.defaultCpus, pids: Policy.defaultPids,
                                          timeoutSeconds: 0, net: .none, secrets: [])
            try cgroup!.apply(g)
            let seccomp = starling_seccomp_filter_fd()
            guard seccomp >= 0 else { throw SandboxUnavailable("seccomp filter: \(String(cString: strerror(-seccomp)))") }
            defer { close(seccomp) }
            // A cold task's environment goes to bwrap as `--setenv` arguments in a memfd: never
            // in bwrap's own environment or command line (see Bubblewrap).
            var envArgs: Int32 = -1
            if program != nil {
                let bytes = try Bubblewrap.environmentArguments(env)
                envArgs = bytes.withUnsafeBytes { starling_memfd_holding($0.baseAddress, $0.count) }
                guard envArgs >= 0 else { throw SandboxUnavailable("memfd for the task's environment: \(String(cString: strerror(-envArgs)))") }
            }
            defer { if envArgs >= 0 { close(envArgs) } }
            let streams = try TaskStreams(output)
            var fds = streams.childFDs + [(seccomp, Bubblewrap.seccompFD)]
            if envArgs >= 0 { fds.append((envArgs, Bubblewrap.argsFD)) }
            var control: Pipe?
            if initPath != nil {
                control = try Pipe.socketPair()
                fds.append((control!.read, Bubblewrap.controlFD))
            }
            let args = bubblewrap.arguments(workdir: workdir, net: net, initPath: initPath, environmentFromArgs: envArgs >= 0,
                                            program: program ?? [Bubblewrap.initMount], runDir: runDir)
            let child: Spawned
            do {
                child = try spawn(bubblewrap.path, ["bwrap"] + args, env: Bubblewrap.hostEnvironment, fds: fds,
                                  cgroupProcs: cgroup!.procsFiles)
            } catch {
                streams.closeAll()
                if let control { close(control.read); close(control.write) }
                throw error
            }
            streams.closeChildEnds()
            if let control { close(control.read) }
            return SpawnedSandbox(id: id, workdir: workdir, runDir: runDir, cgroup: cgroup, pid: child.pid, pidfd: child.pidfd, stdin: streams.input.write,
                                  stdout: streams.stdout, stderr: streams.stderr, control: control?.write)
        } catch {
            cgroup?.destroy()
            if let runDir { removeTree(runDir) }
            removeTree(workdir)
            throw error
        }
    }

    /// Every warm sandbox has a run directory: which of them will get a task with a socket is
    /// not known when it starts. An empty read-only directory is all a task without one sees.
    func spawnWarm(initPath: String) throws -> SpawnedSandbox {
        try spawnSandbox(net: .none, grant: nil, program: nil, env: [], initPath: initPath, withRunDir: true)
    }

    /// The environment a task sees, warm or cold alike: a fixed base, its own variables, and the
    /// secrets it was granted. PWD is the one bwrap sets after `--chdir` in a cold sandbox.
    /// `STARLING_TASK` and `STARLING_SOCKET` are the node's: a task's own `env` cannot set them,
    /// so a task without a socket never sees a `STARLING_SOCKET`.
    func environment(_ task: TaskSpec, _ grant: Policy.Grant, context: TaskContext? = nil) -> [String] {
        // No LANG by default: a locale makes every program load a dozen files before it starts.
        var env = ["PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/task", "TMPDIR": "/tmp", "PWD": "/task"]
        for (k, v) in task.env ?? [:] where !TaskContext.reservedNames.contains(k) { env[k] = v }
        for name in grant.secrets { env[name] = configuration.secrets.values[name] }
        env["STARLING_TASK"] = context?.taskID ?? task.id ?? "local"
        if context?.socket != nil { env["STARLING_SOCKET"] = TaskContext.socketPath }
        return env.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }
    }

    /// Places the task's input files in its work directory.
    func writeFiles(_ task: TaskSpec, into workdir: String) throws {
        for (name, content) in task.files ?? [:] {
            let path = workdir + "/" + name
            let parent = (path as NSString).deletingLastPathComponent
            try FileManager.default.createDirectory(atPath: parent, withIntermediateDirectories: true)
            guard FileManager.default.createFile(atPath: path, contents: Data(content.utf8)) else {
                throw InvalidTask("cannot write input file \(name)")
            }
        }
    }

    public struct Timing: Sendable {
        /// Monotonic ns: when `run` was called, and when the first output byte arrived.
        public var started: UInt64 = 0
        public var firstByte: UInt64 = 0
        /// Warm only, when timing is asked for: when the sandbox began to exec the task.
        public var handedOver: UInt64 = 0
        public init() {}
    }

    /// Runs one task to completion. Throws `InvalidTask` for a malformed task; a policy refusal
    /// is a result with reason `denied`, and the task never runs.
    /// `output: .inherit` gives the task this process's stdout and stderr (the result then holds
    /// none); it always starts cold, since a warm sandbox's pipes are fixed when it is spawned.
    /// `context`: the task's identity, and its API socket when it may spawn (the socket is opened
    /// before the program starts and closed when it ends; a socket that cannot be opened refuses
    /// the task). Unsandboxed runs (`--unsafe-no-sandbox`) get no socket.
    public func run(_ task: TaskSpec, requestPolicy: Policy? = nil, preferWarm: Bool = true, output: OutputMode = .capture,
                    context: TaskContext? = nil,
                    onStart: ((RunningTask) -> Void)? = nil, timing: ((Timing) -> Void)? = nil) throws -> TaskResult {
        var t = Timing()
        t.started = monotonicNanos()
        try TaskLimits.validate(task)
        let grant: Policy.Grant
        do throws(PolicyDenial) { try requestPolicy?.validate() } catch {
            return .denied("request policy: \(error.description)", node: configuration.nodeName)
        }
        switch configuration.policy.narrowed(by: requestPolicy).decide(task) {
        case .failure(let denial): return .denied(denial.description, node: configuration.nodeName)
        case .success(let g): grant = g
        }
        for s in grant.secrets where configuration.secrets.values[s] == nil {
            return .denied("secret \(s) is not held by this node", node: configuration.nodeName)
        }
        if configuration.unsafeNoSandbox {
            if context?.socket != nil { return .denied("a task with an API socket needs a sandbox", node: configuration.nodeName) }
            return try runUnsandboxed(task, grant, output: output, context: context)
        }
        let socket = context?.socket
        // Once, whatever happens below: close() is safe on a socket that never listened.
        defer { socket?.close() }

        let env = environment(task, grant, context: context)
        var message = ByteMessage()
        message.strings(task.argv)
        message.strings(env)
        let sandbox: SpawnedSandbox
        // The init stub takes at most 1 MiB of command; larger ones start cold.
        if preferWarm, output == .capture, grant.net == .none, message.bytes.count <= ByteMessage.limit, let warm = pool?.take() {
            sandbox = warm
            do {
                try writeFiles(task, into: warm.workdir)
            } catch {
                warm.destroy()
                throw error
            }
            do {
                try warm.cgroup?.apply(grant)
            } catch {
                // Fail closed: the task would run without the limits it was granted.
                cleanup.async { warm.destroy() }
                return .denied(error.description, node: configuration.nodeName)
            }
            if let socket {
                do {
                    guard let runDir = warm.runDir else { throw TaskSocketUnavailable("the warm sandbox has no run directory") }
                    try socket.listen(at: try Self.socketHostPath(runDir))
                } catch {
                    cleanup.async { warm.destroy() }
                    return .denied("the task's API socket: \(error)", node: configuration.nodeName)
                }
            }
            writeAll(message.bytes, to: warm.control!)
            if timing != nil {
                // Measuring: the stub closes its end just before it execs the task.
                Glibc.shutdown(warm.control!, Int32(SHUT_WR))
                var p = pollfd(fd: warm.control!, events: Int16(POLLIN), revents: 0)
                var spare: UInt8 = 0
                while poll(&p, 1, 5_000) > 0, read(warm.control!, &spare, 1) > 0 {}
                t.handedOver = monotonicNanos()
            }
            close(warm.control!)
        } else {
            do {
                sandbox = try spawnSandbox(net: grant.net, grant: grant, program: task.argv, env: env, initPath: nil, output: output,
                                           prepare: { try self.writeFiles(task, into: $0) },
                                           listen: socket.map { s in { runDir in try s.listen(at: try Self.socketHostPath(runDir)) } })
            } catch let error as LimitNotApplied {
                // Fail closed: a limit the kernel refused (or a group the task could not join)
                // refuses the task; spawnSandbox has already removed what it made.
                return .denied(error.description, node: configuration.nodeName)
            } catch let error as TaskSocketUnavailable {
                return .denied("the task's API socket: \(error)", node: configuration.nodeName)
            }
        }
        defer {
            // The task's processes are dead (bwrap exited; the cgroup was killed on timeout);
            // removing its directories can wait.
            let reaper = self.reaper
            cleanup.async {
                sandbox.destroy(removingWorkdir: false)
                reaper.remove(sandbox.workdir)
            }
        }
        let result = finish(sandbox, task: task, grant: grant, started: t.started, onStart: onStart, onStderr: context?.onStderr) { t.firstByte = $0 }
        timing?(t)
        return result
    }

    /// Feeds stdin, captures output within caps, enforces the deadline, and builds the result.
    private func finish(_ s: SpawnedSandbox, task: TaskSpec, grant: Policy.Grant, started: UInt64,
                        onStart: ((RunningTask) -> Void)?, onStderr: (@Sendable ([UInt8]) -> Void)? = nil,
                        firstByte: @escaping (UInt64) -> Void) -> TaskResult {
        let handle = RunningTask(s)
        onStart?(handle)
        feed(Array((task.stdin ?? "").utf8), to: s.stdin)
        let deadline = started + nanoseconds(grant.timeoutSeconds)
        var timedOut = false
        let secrets = configuration.secrets
        // Keep `overlap` bytes past the cap, so that redaction sees a secret straddling it whole.
        let captured = capture(stdout: s.stdout, stderr: s.stderr, pid: s.pid, cap: configuration.outputCapBytes + secrets.overlap,
                               deadline: deadline, onDeadline: { timedOut = true; s.killTree() }, firstByte: firstByte, onStderr: onStderr)
        if s.stdout >= 0 { close(s.stdout) }
        if s.stderr >= 0 { close(s.stderr) }
        let status = s.reap()
        let ended = monotonicNanos()
        let oom = (s.cgroup?.oomKills ?? 0) > 0
        var exitCode: Int32? = nil, signal: Int32? = nil
        if (status & 0x7f) == 0 {
            let code = (status >> 8) & 0xff
            // bwrap reports a task killed by signal N as exit status 128 + N.
            if code > 128 && code <= 128 + 64 { signal = code - 128 } else { exitCode = code }
        } else {
            signal = status & 0x7f
        }
        let reason: TaskEndReason = timedOut ? .timeout : oom ? .oom : handle.cancelled.load(ordering: .relaxed) ? .killed
            : signal != nil ? .killed : .exited
        let outputs = collectOutputs(s.workdir + "/out", bounds: outputBounds, secrets: secrets)
        let stdout = secrets.redact(captured.out, cap: configuration.outputCapBytes)
        let stderr = secrets.redact(captured.err, cap: configuration.outputCapBytes)
        return TaskResult(
            exitCode: exitCode, signal: signal, reason: reason, stdout: stdout.text, stderr: stderr.text,
            truncated: captured.truncated || stdout.truncated || stderr.truncated || outputs.truncated,
            outputs: outputs.files, outputsBase64: outputs.binaryFiles.isEmpty ? nil : outputs.binaryFiles,
            warnings: warnings(stdoutCut: captured.outCut || stdout.truncated, stderrCut: captured.errCut || stderr.truncated, outputs: outputs),
            node: configuration.nodeName, attempts: 1,
            durationMs: Int((ended - started) / 1_000_000), cpuMs: (s.cgroup?.cpuNanoseconds ?? 0) / 1_000_000,
            peakMemoryKB: (s.cgroup?.peakMemoryBytes ?? 0) / 1024)
    }

    /// The host path of a task's socket in its run directory. A Unix socket's path holds at most
    /// 107 bytes: a work root too long for it refuses the task rather than binding elsewhere.
    static func socketHostPath(_ runDir: String) throws(TaskSocketUnavailable) -> String {
        let path = runDir + "/" + TaskContext.socketName
        guard path.utf8.count <= 107 else {
            throw TaskSocketUnavailable("socket path \(path) is longer than 107 bytes: use a shorter work root")
        }
        return path
    }

    /// Why `truncated` is set, in words a client can act on; nil when nothing was cut. Bounded:
    /// at most `maxWarnings` lines, however many files were cut.
    func warnings(stdoutCut: Bool, stderrCut: Bool, outputs: CollectedOutputs) -> [String]? {
        let cap = configuration.outputCapBytes
        var lines: [String] = []
        if stdoutCut { lines.append("stdout was cut at \(cap) bytes") }
        if stderrCut { lines.append("stderr was cut at \(cap) bytes") }
        let cut = outputs.cutFiles.sorted()
        for name in cut.prefix(Self.maxWarnings - 3) {
            lines.append("output file \(name.debugDescription) was cut (at most \(configuration.outputFileCapBytes) bytes a file, \(configuration.outputsTotalCapBytes) in all)")
        }
        if cut.count > Self.maxWarnings - 3 { lines.append("\(cut.count - (Self.maxWarnings - 3)) more output files were cut") }
        if outputs.leftOut {
            lines.append("some output files were left out (a link or special file, a name that is not UTF-8, past 256 files, 10,000 entries or depth 16, or unreadable)")
        }
        return lines.isEmpty ? nil : lines
    }

    /// Most lines `warnings` returns.
    static let maxWarnings = 16

    var outputBounds: OutputBounds {
        OutputBounds(perFile: configuration.outputFileCapBytes, total: configuration.outputsTotalCapBytes)
    }

    /// --unsafe-no-sandbox: the task runs as a plain child process, with no isolation at all.
    private func runUnsandboxed(_ task: TaskSpec, _ grant: Policy.Grant, output: OutputMode, context: TaskContext?) throws -> TaskResult {
        let id = Self.newID()
        let workdir = try makeWorkdir(id)
        defer { removeTree(workdir) }
        try writeFiles(task, into: workdir)
        let started = monotonicNanos()
        let streams = try TaskStreams(output)
        let shell = ["/bin/sh", "-c", "cd \"$0\" && exec \"$@\"", workdir] + task.argv
        let pid: pid_t
        do {
            let child = try spawn("/bin/sh", shell, env: environment(task, grant, context: context), fds: streams.childFDs, cgroupProcs: [])
            if child.pidfd >= 0 { close(child.pidfd) }
            pid = child.pid
        } catch {
            streams.closeAll()
            throw error
        }
        streams.closeChildEnds()
        feed(Array((task.stdin ?? "").utf8), to: streams.input.write)
        var timedOut = false
        let secrets = configuration.secrets
        let captured = capture(stdout: streams.stdout, stderr: streams.stderr, pid: pid, cap: configuration.outputCapBytes + secrets.overlap,
                               deadline: started + nanoseconds(grant.timeoutSeconds),
                               onDeadline: { timedOut = true; kill(-pid, SIGKILL); kill(pid, SIGKILL) })
        if streams.stdout >= 0 { close(streams.stdout) }
        if streams.stderr >= 0 { close(streams.stderr) }
        var status = SIGKILL  // a failed wait reads as killed, never as exit 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        let exited = (status & 0x7f) == 0
        let outputs = collectOutputs(workdir + "/out", bounds: outputBounds, secrets: secrets)
        let stdout = secrets.redact(captured.out, cap: configuration.outputCapBytes)
        let stderr = secrets.redact(captured.err, cap: configuration.outputCapBytes)
        let warning = "WARNING: --unsafe-no-sandbox: this task ran WITHOUT any isolation (development only)\n"
        return TaskResult(exitCode: exited ? (status >> 8) & 0xff : nil, signal: exited ? nil : status & 0x7f,
                          reason: timedOut ? .timeout : exited ? .exited : .killed,
                          stdout: stdout.text, stderr: warning + stderr.text,
                          truncated: captured.truncated || stdout.truncated || stderr.truncated || outputs.truncated,
                          outputs: outputs.files, outputsBase64: outputs.binaryFiles.isEmpty ? nil : outputs.binaryFiles,
                          warnings: warnings(stdoutCut: captured.outCut || stdout.truncated, stderrCut: captured.errCut || stderr.truncated, outputs: outputs),
                          node: configuration.nodeName, attempts: 1, durationMs: Int((monotonicNanos() - started) / 1_000_000),
                          cpuMs: 0, peakMemoryKB: 0)
    }
}

/// The warm-pool command message (see starling-sandbox-init): counts are u32 little-endian.
struct ByteMessage {
    /// What starling-sandbox-init accepts (its LIMIT).
    static let limit = 1 << 20
    var bytes: [UInt8] = []

    mutating func strings(_ xs: [String]) {
        var n = UInt32(xs.count).littleEndian
        withUnsafeBytes(of: &n) { bytes.append(contentsOf: $0) }
        for s in xs { bytes.append(contentsOf: s.utf8); bytes.append(0) }
    }
}

/// `seconds` as nanoseconds, clamped to 0...TaskLimits.maxTimeoutSeconds (NaN: 0), so that no
/// number, however it got here, makes the conversion trap.
func nanoseconds(_ seconds: Double) -> UInt64 {
    guard seconds > 0 else { return 0 }
    return UInt64(min(seconds, TaskLimits.maxTimeoutSeconds) * 1e9)
}
