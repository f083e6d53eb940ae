import CSandbox
import Foundation
import Glibc

/// Monotonic nanoseconds.
func monotonicNanos() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}

/// A pipe whose ends the parent keeps or hands to the child.
struct Pipe {
    var read: Int32
    var write: Int32

    /// A stream socket pair instead of a pipe: the parent can shut down its sending side and
    /// still see, as a hang-up, the moment the child closes its end.
    static func socketPair() throws -> Pipe {
        var fds: [Int32] = [0, 0]
        guard starling_socketpair_cloexec(&fds) == 0 else { throw SandboxUnavailable("socketpair: \(String(cString: strerror(errno)))") }
        return Pipe(read: fds[0], write: fds[1])
    }

    init(read: Int32, write: Int32) {
        self.read = read
        self.write = write
    }

    init() throws {
        var fds: [Int32] = [0, 0]
        guard starling_pipe_cloexec(&fds) == 0 else { throw SandboxUnavailable("pipe: \(String(cString: strerror(errno)))") }
        read = fds[0]
        write = fds[1]
    }
}

/// Where a task's stdout and stderr go: pipes the runner reads (bounded, redacted), or this
/// process's own stdout and stderr (live and unbounded, for a person at a terminal).
public enum OutputMode: Sendable {
    case capture
    case inherit
}

/// A task's standard streams, in either mode.
struct TaskStreams {
    let input: Pipe
    let output: Pipe?
    let errors: Pipe?

    init(_ mode: OutputMode) throws {
        input = try Pipe()
        output = mode == .capture ? try Pipe() : nil
        errors = mode == .capture ? try Pipe() : nil
    }

    /// Parent fd → child fd (0, 1, 2).
    var childFDs: [(Int32, Int32)] { [(input.read, 0), (output?.write ?? 1, 1), (errors?.write ?? 2, 2)] }
    /// The ends the parent reads, -1 when inherited.
    var stdout: Int32 { output?.read ?? -1 }
    var stderr: Int32 { errors?.read ?? -1 }

    func closeChildEnds() {
        close(input.read)
        if let output { close(output.write) }
        if let errors { close(errors.write) }
    }

    func closeAll() {
        closeChildEnds()
        close(input.write)
        if let output { close(output.read) }
        if let errors { close(errors.read) }
    }
}

/// A spawned child: its pid, and a pidfd for it (-1 without pidfd support) that the caller owns.
struct Spawned {
    let pid: pid_t
    let pidfd: Int32
}

/// Spawns through the C helper (fork on its long-lived spawner thread, join cgroups, map fds, exec).
func spawn(_ path: String, _ argv: [String], env: [String], fds: [(Int32, Int32)], cgroupProcs: [String]) throws -> Spawned {
    func cStrings(_ xs: [String]) -> [UnsafeMutablePointer<CChar>?] { xs.map { strdup($0) } + [nil] }
    var cargv = cStrings(argv), cenv = cStrings(env), cgroups = cStrings(cgroupProcs)
    defer { for p in cargv + cenv + cgroups { free(p) } }
    let sources = fds.map(\.0), targets = fds.map(\.1)
    var pidfd: Int32 = -1
    let pid = starling_spawn(path, &cargv, &cenv, sources, targets, Int32(fds.count), &cgroups, Int32(cgroupProcs.count), &pidfd)
    guard pid > 0 else {
        let failure = -pid
        // The child could not join one of its cgroups: it would have run without limits.
        if failure & STARLING_SPAWN_CGROUP_FAILED != 0, case let index = Int((failure >> 16) & 0xff), index < cgroupProcs.count {
            throw LimitNotApplied("joining the task to", path: cgroupProcs[index], errno: failure & 0xffff)
        }
        throw SandboxUnavailable("cannot start \(path): \(String(cString: strerror(failure)))")
    }
    return Spawned(pid: pid, pidfd: pidfd)
}

/// Reads a child's stdout and stderr, keeping at most `cap` bytes of each, until the child has
/// exited and both pipes are drained, or until `deadline` (monotonic ns), when it calls
/// `onDeadline` once. The child's exit is watched through a pidfd, so a task that closes its
/// output early still meets its deadline.
func capture(stdout: Int32, stderr: Int32, pid: pid_t, cap: Int, deadline: UInt64, onDeadline: () -> Void,
             firstByte: ((UInt64) -> Void)? = nil, onStderr: (([UInt8]) -> Void)? = nil) -> (out: [UInt8], err: [UInt8], outCut: Bool, errCut: Bool, truncated: Bool) {
    var out: [UInt8] = [], err: [UInt8] = []
    var outCut = false, errCut = false
    var open: [Int32] = [stdout, stderr].filter { $0 >= 0 }
    let pidfd = starling_pidfd_open(pid)
    defer { if pidfd >= 0 { close(pidfd) } }
    var exited = pidfd < 0  // without pidfds (Linux < 5.3) fall back to EOF on the pipes
    var exitedAt: UInt64 = 0
    var fired = false
    var sawFirst = false
    var buffer = [UInt8](repeating: 0, count: 65_536)
    while !open.isEmpty || !exited {
        let now = monotonicNanos()
        if now >= deadline, !fired {
            fired = true
            onDeadline()
        }
        // Once the sandbox is gone, its pipes close at once; a second is a generous bound.
        if exited, exitedAt > 0, now - exitedAt > 1_000_000_000 { break }
        let waitMs = fired || exited ? 100 : Int32(min(1_000, (deadline - min(now, deadline)) / 1_000_000 + 1))
        var pfds = open.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
        if !exited { pfds.append(pollfd(fd: pidfd, events: Int16(POLLIN), revents: 0)) }
        let n = poll(&pfds, nfds_t(pfds.count), waitMs)
        if n < 0 && errno != EINTR { break }
        if n <= 0 { continue }
        for p in pfds where p.revents != 0 {
            if p.fd == pidfd {
                exited = true
                exitedAt = monotonicNanos()
                continue
            }
            let r = buffer.withUnsafeMutableBytes { Glibc.read(p.fd, $0.baseAddress, $0.count) }
            if r <= 0 {
                open.removeAll { $0 == p.fd }
                continue
            }
            if !sawFirst { sawFirst = true; firstByte?(monotonicNanos()) }
            if p.fd == stdout {
                let room = max(0, cap - out.count)
                out.append(contentsOf: buffer[0..<min(room, r)])
                if r > room { outCut = true }
            } else {
                let room = max(0, cap - err.count)
                err.append(contentsOf: buffer[0..<min(room, r)])
                onStderr?(Array(buffer[0..<r]))
                if r > room { errCut = true }
            }
        }
    }
    return (out, err, outCut, errCut, outCut || errCut)
}

/// Writes all of `bytes` to a blocking `fd`, across partial writes and interruptions.
func writeAll(_ bytes: [UInt8], to fd: Int32) {
    var at = 0
    while at < bytes.count {
        let n = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + at, bytes.count - at) }
        if n < 0 && errno == EINTR { continue }
        if n <= 0 { return }
        at += n
    }
}

/// Writes all of `bytes` to `fd` on a background thread, then closes it (a task that never reads
/// its stdin cannot block the node).
func feed(_ bytes: [UInt8], to fd: Int32) {
    guard !bytes.isEmpty else {
        close(fd)
        return
    }
    let t = Thread {
        writeAll(bytes, to: fd)  // SIGPIPE is ignored since the runner started: EPIPE ends it
        close(fd)
    }
    t.start()
}
