import Foundation
import Glibc
import Synchronization
import Testing
@testable import StarlingSandbox

/// The pid namespace a process is in (`pid:[4026531836]`), or nil when it has gone.
private func pidNamespace(_ pid: String) -> String? {
    try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/ns/pid")
}

/// Host processes (those in this test's pid namespace) whose environ or cmdline contains `needle`.
private func hostProcessesHolding(_ needle: String) -> [String] {
    let mine = pidNamespace("self")
    var found: [String] = []
    for pid in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] where pid.allSatisfy(\.isNumber) {
        guard let ns = pidNamespace(pid), ns == mine else { continue }
        for file in ["environ", "cmdline"] {
            guard let data = FileManager.default.contents(atPath: "/proc/\(pid)/\(file)") else { continue }
            if data.range(of: Data(needle.utf8)) != nil {
                let command = (try? String(contentsOfFile: "/proc/\(pid)/comm", encoding: .utf8)) ?? "?"
                found.append("\(pid) (\(command.trimmingCharacters(in: .whitespacesAndNewlines))) \(file)")
            }
        }
    }
    return found
}

/// A value shared with the threads a test starts.
private final class Shared<T: Sendable>: Sendable {
    let value: Mutex<T>
    init(_ v: T) { value = Mutex(v) }
    var current: T { value.withLock { $0 } }
    func set(_ v: T) { value.withLock { $0 = v } }
}

private func randomToken(_ prefix: String) -> String {
    prefix + "-" + SandboxRunner.newID()
}

/// Waits until `condition` holds or `seconds` pass; returns whether it held.
private func waitFor(_ seconds: Double, _ condition: () -> Bool) -> Bool {
    let end = Date().addingTimeInterval(seconds)
    while Date() < end {
        if condition() { return true }
        usleep(20_000)
    }
    return condition()
}

// Nested in the serialized "Sandbox escapes and limits" suite: these tests compile, fork and
// spin too, and beside that suite's CPU-quota and timeout tests they would skew its figures.
extension SandboxTests {
    @Suite("Sandbox hardening: the host never runs or holds what a task sends", .serialized)
    struct SandboxHardeningTests {
        /// While a task holding a secret runs, no process in the host's pid namespace (bwrap outside
        /// the namespaces, this node) carries the secret or the task's variables in its environ or
        /// cmdline. Processes inside the sandbox's pid namespace hold them by design.
        @Test(arguments: [false, true])
        func noHostProcessCarriesTheSecretOrTheTasksVariables(warm: Bool) throws {
            let secret = randomToken("sekrit")
            let variable = randomToken("plainvar")
            let (runner, _) = try makeRunner(policy: Policy(secrets: ["TOKEN"]), secrets: ["TOKEN": secret], warm: warm ? 1 : 0)
            defer { runner.shutdown() }
            if warm { #expect(waitFor(10) { runner.warmReady == 1 }) }
            let started = Shared<RunningTask?>(nil)
            let done = DispatchSemaphore(value: 0)
            let result = Shared<TaskResult?>(nil)
            let task = TaskSpec(argv: ["/bin/sh", "-c", "mkdir -p out; echo \"$TOKEN $PLAIN\" > out/got; sleep 60"],
                                env: ["PLAIN": variable], secrets: ["TOKEN"], timeoutSeconds: 60)
            Thread.detachNewThread {
                let r = try? runner.run(task, preferWarm: warm, onStart: { started.set($0) })
                result.set(r)
                done.signal()
            }
            #expect(waitFor(20) {
                guard let t = started.current else { return false }
                return FileManager.default.contents(atPath: t.sandbox.workdir + "/out/got") != nil
            })
            let handle = try #require(started.current)
            // Positive control: the task itself did receive both.
            let got = String(decoding: FileManager.default.contents(atPath: handle.sandbox.workdir + "/out/got") ?? Data(), as: UTF8.self)
            #expect(got == "\(secret) \(variable)\n")
            #expect(hostProcessesHolding(secret).isEmpty, "the secret is visible on the host: \(hostProcessesHolding(secret))")
            #expect(hostProcessesHolding(variable).isEmpty, "a task variable is visible on the host: \(hostProcessesHolding(variable))")
            handle.cancel()
            #expect(done.wait(timeout: .now() + 20) == .success)
            #expect(result.current?.reason == .killed)
        }

        /// bwrap runs on the host; were the task's LD_PRELOAD its environment, the library's
        /// constructor would run on the host, outside every namespace.
        @Test(arguments: [false, true])
        func aTasksLDPreloadNeverLoadsIntoAHostProcess(warm: Bool) throws {
            guard access("/usr/bin/cc", X_OK) == 0 else {
                Issue.record("no C compiler at /usr/bin/cc: cannot build the preload library (apt-get install gcc)")
                return
            }
            let dir = "/tmp/starling-preload-\(SandboxRunner.newID())"
            mkdir(dir, 0o755)
            defer { try? FileManager.default.removeItem(atPath: dir) }
            let marker = dir + "/marker"
            let source = """
                #include <fcntl.h>
                #include <unistd.h>
                __attribute__((constructor)) static void mark(void) {
                    int fd = open("\(marker)", O_WRONLY | O_CREAT, 0644);
                    if (fd >= 0) close(fd);
                }
                """
            try source.write(toFile: dir + "/mark.c", atomically: true, encoding: .utf8)
            let cc = Process()
            cc.executableURL = URL(fileURLWithPath: "/usr/bin/cc")
            cc.arguments = ["-shared", "-fPIC", "-o", dir + "/libmark.so", dir + "/mark.c"]
            try cc.run()
            cc.waitUntilExit()
            try #require(cc.terminationStatus == 0)
            // Positive control: the library does leave its marker when a host process loads it.
            let control = Process()
            control.executableURL = URL(fileURLWithPath: "/bin/true")
            control.environment = ["LD_PRELOAD": dir + "/libmark.so"]
            try control.run()
            control.waitUntilExit()
            try #require(access(marker, F_OK) == 0, "the preload library did not work on the host")
            unlink(marker)

            let (runner, _) = try makeRunner(warm: warm ? 1 : 0)
            defer { runner.shutdown() }
            if warm { #expect(waitFor(10) { runner.warmReady == 1 }) }
            for variable in ["LD_PRELOAD", "LD_AUDIT"] {
                let r = try runner.run(TaskSpec(argv: ["/bin/true"], env: [variable: dir + "/libmark.so"]), preferWarm: warm)
                #expect(r.reason == .exited)
                #expect(access(marker, F_OK) != 0, "\(variable) from the task ran code on the host")
                if warm { _ = waitFor(10) { runner.warmReady == 1 } }
            }
        }

        /// A real attempt at each denied class from inside a sandbox (syscall numbers by
        /// architecture), and real workloads that must still run.
        @Test func nestedNamespacesAndKernelAttackSurfaceAreRefused() throws {
            let (runner, _) = try makeRunner()
            defer { runner.shutdown() }
            #expect(runner.bubblewrap?.disablesUserNamespaces == true, "bubblewrap 0.8 on Debian 12 has --disable-userns")
            let probe = #"""
                import ctypes, os, platform, struct
                libc = ctypes.CDLL(None, use_errno=True)
                libc.syscall.restype = ctypes.c_long
                x86 = platform.machine() == "x86_64"
                nr = dict(clone=56, clone3=435, io_uring_setup=425, ptrace=101, bpf=321, keyctl=250, perf_event_open=298,
                          mount=165, unshare=272, kcmp=312, pidfd_getfd=438, chroot=161, fanotify_init=300,
                          open_by_handle_at=304, process_madvise=440, setns=308, mseal=462) if x86 else \
                     dict(clone=220, clone3=435, io_uring_setup=425, ptrace=117, bpf=280, keyctl=219, perf_event_open=241,
                          mount=40, unshare=97, kcmp=272, pidfd_getfd=438, chroot=51, fanotify_init=262,
                          open_by_handle_at=265, process_madvise=440, setns=268, mseal=462)
                CLONE_NEWUSER, CLONE_NEWNET, SIGCHLD = 0x10000000, 0x40000000, 17
                def attempt(name, *args):
                    ctypes.set_errno(0)
                    r = libc.syscall(nr[name], *[ctypes.c_long(a) for a in args])
                    if r == 0 and name in ("clone", "clone3"):
                        os._exit(0)  # the child of a clone that should not have happened
                    if r > 0 and name in ("clone", "clone3"):
                        os.waitpid(r, 0)
                    print(name, "ok" if r >= 0 else os.strerror(ctypes.get_errno()))
                attempt("clone", CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0)
                attempt("clone", CLONE_NEWNET | SIGCHLD, 0, 0, 0, 0)
                args = ctypes.create_string_buffer(struct.pack("QQQQQQQQ", CLONE_NEWUSER, 0, 0, 0, SIGCHLD, 0, 0, 0))
                attempt("clone3", ctypes.addressof(args), 64)
                params = ctypes.create_string_buffer(120)
                attempt("io_uring_setup", 4, ctypes.addressof(params))
                attempt("ptrace", 0, 0, 0, 0)
                attempt("bpf", 0, 0, 0)
                attempt("keyctl", 0, 0, 0, 0, 0)
                attr = ctypes.create_string_buffer(128)
                attempt("perf_event_open", ctypes.addressof(attr), 0, -1, -1, 0)
                attempt("mount", 0, 0, 0, 0, 0)
                attempt("unshare", CLONE_NEWUSER)
                attempt("setns", 0, 0)
                attempt("kcmp", os.getpid(), os.getpid(), 0, 0, 0)
                attempt("pidfd_getfd", 0, 0, 0)
                attempt("chroot", 0)
                attempt("fanotify_init", 0, 0)
                attempt("open_by_handle_at", 0, 0, 0)
                attempt("process_madvise", 0, 0, 0, 0, 0)
                attempt("mseal", 0, 0, 0)  # on no list: the allow-list's default
                """#
            let r = try runner.run(TaskSpec(argv: ["python3", "-c", probe], timeoutSeconds: 60))
            #expect(r.reason == .exited, "\(r.stderr)")
            let lines = Set(r.stdout.split(separator: "\n").map(String.init))
            let eperm = "Operation not permitted"
            for name in ["clone", "io_uring_setup", "ptrace", "bpf", "keyctl", "perf_event_open", "mount", "unshare", "setns", "kcmp",
                         "pidfd_getfd", "chroot", "fanotify_init", "open_by_handle_at", "process_madvise"] {
                #expect(lines.contains("\(name) \(eperm)"), "\(name): \(r.stdout)")
            }
            #expect(r.stdout.components(separatedBy: "clone \(eperm)").count == 3, "both namespace clones refused: \(r.stdout)")
            #expect(lines.contains("clone3 Function not implemented"), "clone3 must be ENOSYS so that libc falls back to clone: \(r.stdout)")
            #expect(lines.contains("mseal Function not implemented"), "a call on no list must be ENOSYS: \(r.stdout)")
        }

        @Test func ordinaryWorkloadsStillRunUnderTheFilter() throws {
            let (runner, _) = try makeRunner()
            defer { runner.shutdown() }
            let python = """
                import os, subprocess, threading
                out = []
                ts = [threading.Thread(target=lambda i=i: out.append(i * i)) for i in range(8)]
                [t.start() for t in ts]; [t.join() for t in ts]
                pid = os.fork()
                if pid == 0:
                    os._exit(3)
                squares = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
                print(sorted(out)[-1], squares, subprocess.run(["echo", "sub"], capture_output=True, text=True).stdout.strip(), os.uname().nodename)
                """
            let py = try runner.run(TaskSpec(argv: ["python3", "-c", python], timeoutSeconds: 60))
            #expect(py.stdout == "49 3 sub sandbox\n", "\(py.stderr)")
            // The standard library's system-facing parts: event loop, sockets, files, mmap, sqlite, hashing.
            let stdlib = """
                import asyncio, hashlib, mmap, os, socket, sqlite3, ssl, tempfile, time
                async def main():
                    r, w = await asyncio.open_connection(sock=socket.socketpair()[0])
                    return 'loop'
                loop = asyncio.run(main())
                a, b = socket.socketpair(); a.send(b'x'); got = b.recv(1)
                with tempfile.NamedTemporaryFile() as f:
                    f.write(b'abc'); f.flush()
                    m = mmap.mmap(f.fileno(), 3); first = m[:1]; m.close()
                db = sqlite3.connect(':memory:'); n = db.execute('select 40 + 2').fetchone()[0]
                print(loop, got, first, n, hashlib.sha256(b'').hexdigest()[:6], time.monotonic() > 0, ssl.OPENSSL_VERSION[:7])
                """
            let lib = try runner.run(TaskSpec(argv: ["python3", "-c", stdlib], timeoutSeconds: 60))
            #expect(lib.stdout == "loop b'x' b'a' 42 e3b0c4 True OpenSSL\n", "\(lib.stderr)")
            let bash = try runner.run(TaskSpec(argv: ["/bin/bash", "-c", "seq 1 1000 | sort -rn | head -3 | tr '\\n' ' '; (sleep 0.1 & wait); echo $(( 6 * 7 ))"]))
            #expect(bash.stdout == "1000 999 998 42\n", "\(bash.stderr)")
            if access("/usr/bin/cc", X_OK) == 0 {
                let c = try runner.run(TaskSpec(argv: ["/bin/sh", "-c", "printf '#include <stdio.h>\\n#include <pthread.h>\\nvoid *f(void *a){return a;}\\nint main(void){pthread_t t; pthread_create(&t,0,f,0); pthread_join(t,0); puts(\"compiled\"); return 0;}\\n' > m.c && cc -pthread -o m m.c && ./m"],
                                                timeoutSeconds: 120, memoryMB: 1024))
                #expect(c.stdout == "compiled\n", "\(c.stderr)")
            }
            if access("/usr/bin/node", X_OK) == 0 {
                let node = try runner.run(TaskSpec(argv: ["node", "-e", "console.log(require('os').cpus().length > 0)"], timeoutSeconds: 60, memoryMB: 1024))
                #expect(node.stdout == "true\n", "\(node.stderr)")
            }
        }

        /// The same task sees the same environment (PATH, PWD, everything) warm or cold, and its
        /// program is found on its own PATH either way. (`env` directly: a shell would add PWD.)
        @Test func warmAndColdSandboxesGiveTheSameEnvironment() throws {
            let (runner, _) = try makeRunner(warm: 1)
            defer { runner.shutdown() }
            func both(_ task: TaskSpec) throws -> (cold: TaskResult, warm: TaskResult) {
                let cold = try runner.run(task, preferWarm: false)
                #expect(waitFor(10) { runner.warmReady == 1 })
                var timing = SandboxRunner.Timing()
                let warm = try runner.run(task, preferWarm: true, timing: { timing = $0 })
                #expect(timing.handedOver > 0, "the second run must have been warm")
                return (cold, warm)
            }
            let env = try both(TaskSpec(argv: ["/usr/bin/env"], env: ["MINE": "value"]))
            #expect(env.cold.stdout == env.warm.stdout, "cold:\n\(env.cold.stdout)\nwarm:\n\(env.warm.stdout)")
            #expect(env.cold.stdout.contains("PATH=/usr/local/bin:/usr/bin:/bin\n") && env.cold.stdout.contains("MINE=value\n")
                    && env.cold.stdout.contains("PWD=/task\n"), "\(env.cold.stdout)")
            // nologin is only in /usr/sbin, on the task's PATH but not on the sandbox's default one.
            let lookup = try both(TaskSpec(argv: ["nologin"], env: ["PATH": "/usr/sbin:/usr/bin:/bin"]))
            #expect(lookup.cold.exitCode == 1 && lookup.warm.exitCode == 1, "cold: \(lookup.cold.stderr) warm: \(lookup.warm.stderr)")
        }
    }

    @Suite("Sandbox spawning", .serialized)
    struct SandboxSpawnTests {
        /// PDEATHSIG follows the thread that forked. A spawn from a thread that then exits must not
        /// take its child with it.
        @Test func aChildOutlivesTheShortLivedThreadThatSpawnedIt() throws {
            final class Box { var spawned: Spawned?; var error: Error? }  // written before the join, read after
            let box = Box()
            var thread = pthread_t()
            let unmanaged = Unmanaged.passRetained(box)
            let rc = pthread_create(&thread, nil, { raw in
                let box = Unmanaged<Box>.fromOpaque(raw!).takeRetainedValue()
                do {
                    box.spawned = try spawn("/bin/sh", ["sh", "-c", "sleep 0.5; exit 7"], env: ["PATH=/usr/bin:/bin"],
                                            fds: [], cgroupProcs: [])
                } catch { box.error = error }
                return nil
            }, unmanaged.toOpaque())
            try #require(rc == 0)
            pthread_join(thread, nil)  // the spawning thread is gone now
            let child = try #require(box.spawned, "\(String(describing: box.error))")
            defer { if child.pidfd >= 0 { close(child.pidfd) } }
            var status: Int32 = 0
            while waitpid(child.pid, &status, 0) < 0 && errno == EINTR {}
            #expect((status & 0x7f) == 0, "killed by signal \(status & 0x7f) when its spawning thread exited")
            #expect((status >> 8) & 0xff == 7)
        }

        /// The same through the runner, with real bwrap: a sandbox spawned from a thread that then
        /// exits runs its task to the end.
        @Test func aSandboxOutlivesTheShortLivedThreadThatSpawnedIt() throws {
            let (runner, _) = try makeRunner()
            defer { runner.shutdown() }
            final class Box {  // written before the join, read after
                let runner: SandboxRunner
                var sandbox: SpawnedSandbox?
                var error: Error?
                init(_ r: SandboxRunner) { runner = r }
            }
            let box = Box(runner)
            var thread = pthread_t()
            let rc = pthread_create(&thread, nil, { raw in
                let box = Unmanaged<Box>.fromOpaque(raw!).takeRetainedValue()
                do {
                    box.sandbox = try box.runner.spawnSandbox(net: .none, grant: nil, program: ["/bin/sh", "-c", "sleep 0.5; exit 7"],
                                                              env: ["PATH=/usr/bin:/bin"], initPath: nil)
                } catch { box.error = error }
                return nil
            }, Unmanaged.passRetained(box).toOpaque())
            try #require(rc == 0)
            pthread_join(thread, nil)
            let sandbox = try #require(box.sandbox, "\(String(describing: box.error))")
            defer {
                close(sandbox.stdout)
                close(sandbox.stderr)
                sandbox.destroy()
            }
            close(sandbox.stdin)
            let status = sandbox.reap()
            #expect((status & 0x7f) == 0, "bwrap killed by signal \(status & 0x7f) when its spawning thread exited")
            #expect((status >> 8) & 0xff == 7)
        }

        /// A failed exec is reported, not mistaken for a started child. (The report pipe used to be
        /// closed with the other descriptors, so the parent read EOF and returned a pid.)
        @Test func aFailedExecIsReportedAsAnError() throws {
            #expect(throws: SandboxUnavailable.self) {
                _ = try spawn("/nonexistent/program", ["x"], env: [], fds: [], cgroupProcs: [])
            }
            let devnull = open("/dev/null", O_RDONLY | O_CLOEXEC)
            defer { close(devnull) }
            #expect(throws: SandboxUnavailable.self) {
                _ = try spawn("/nonexistent/program", ["x"], env: [], fds: [(devnull, 9)], cgroupProcs: [])
            }
        }

        /// The child gets exactly 0, 1, 2 and its mapped descriptors; nothing else of ours.
        @Test func aChildInheritsOnlyItsMappedDescriptors() throws {
            var stray: [Int32] = []
            for _ in 0..<4 { stray.append(dup(0)) }  // not close-on-exec
            defer { for fd in stray { close(fd) } }
            let out = try StarlingSandbox.Pipe()
            let devnull = open("/dev/null", O_RDONLY | O_CLOEXEC)
            defer { close(devnull) }
            let child = try spawn("/bin/sh", ["sh", "-c", "cd /proc/self/fd && echo *"], env: ["PATH=/usr/bin:/bin"],
                                  fds: [(devnull, 0), (out.write, 1), (devnull, 7)], cgroupProcs: [])
            close(out.write)
            var bytes: [UInt8] = []
            var buf = [UInt8](repeating: 0, count: 4096)
            while true {
                let n = read(out.read, &buf, buf.count)
                if n <= 0 { break }
                bytes += buf[0..<n]
            }
            close(out.read)
            var status: Int32 = 0
            waitpid(child.pid, &status, 0)
            if child.pidfd >= 0 { close(child.pidfd) }
            // The shell's glob opens one directory descriptor of its own (the lowest free: 3).
            let seen = Set(String(decoding: bytes, as: UTF8.self).split(whereSeparator: { $0 == " " || $0 == "\n" }).map(String.init))
            #expect(seen.isSubset(of: ["0", "1", "2", "3", "7"]) && seen.contains("7"), "\(seen)")
        }

        /// A signal through the pidfd reaches the task's bwrap while it runs; after it is reaped,
        /// cancelling again is harmless (no PID is signalled).
        @Test func cancellingSignalsThroughThePidfdAndIsHarmlessAfterTheEnd() throws {
            let (runner, _) = try makeRunner()
            defer { runner.shutdown() }
            let handle = Shared<RunningTask?>(nil)
            let r = try runner.run(TaskSpec(argv: ["sleep", "60"], timeoutSeconds: 60), onStart: { task in
                handle.set(task)
                Thread.detachNewThread {
                    usleep(200_000)
                    task.cancel()
                }
            })
            #expect(r.reason == .killed)
            #expect(r.durationMs < 30_000)
            let task = try #require(handle.current)
            runner.quiesce()
            task.cancel()  // reaped and destroyed: must do nothing
        }
    }

    @Suite("Policy: maxPids")
    struct PolicyPidsTests {
        @Test func maxPidsCapsTheDefaultRefusesMoreAndNarrows() throws {
            let policy = try JSONDecoder().decode(Policy.self, from: Data(#"{"maxPids": 32}"#.utf8))
            #expect(policy.maxPids == 32)
            #expect(try policy.decide(TaskSpec(argv: ["true"])).get().pids == 32)
            #expect(try policy.decide(TaskSpec(argv: ["true"], pids: 16)).get().pids == 16)
            guard case .failure(let denial) = policy.decide(TaskSpec(argv: ["true"], pids: 64)) else {
                Issue.record("a task above maxPids must be refused")
                return
            }
            #expect(denial.description.contains("pids"))
            #expect(policy.narrowed(by: Policy(maxPids: 8)).maxPids == 8)
            #expect(policy.narrowed(by: Policy(maxPids: 100)).maxPids == 32)
            #expect(Policy().narrowed(by: Policy(maxPids: 8)).maxPids == 8)
            #expect(try Policy().decide(TaskSpec(argv: ["true"])).get().pids == Policy.defaultPids)
        }

        @Test func aRunAboveMaxPidsIsDeniedAndNeverRuns() throws {
            let (runner, _) = try makeRunner(policy: Policy(maxPids: 4))
            defer { runner.shutdown() }
            let r = try runner.run(TaskSpec(argv: ["true"], pids: 5))
            #expect(r.reason == .denied)
            #expect(r.stderr.contains("pids"))
            // Within the ceiling: five processes at once cannot start.
            let capped = try runner.run(sh("for i in 1 2 3 4 5 6; do sleep 2 & done; wait", timeout: 20))
            #expect(capped.stderr.contains("fork") || capped.stderr.contains("Resource temporarily unavailable"), "\(capped)")
        }
    }
}
