import Foundation
import Glibc

/// The bubblewrap command line for one sandbox. Cold and warm sandboxes share it, so their
/// isolation is identical by construction; only the program after `--` differs.
///
/// Nothing a task sends reaches bwrap's own environment or command line: bwrap runs on the host,
/// outside every namespace, so a task's `LD_PRELOAD` there would run the task's code on the host,
/// and a secret there would be readable in the host's `/proc/PID/environ`. bwrap starts with
/// `hostEnvironment` only; `--clearenv` empties what the task inherits, and the task's variables
/// arrive as `--setenv` pairs read from a memfd (`--args`), which appear in no host process's
/// environ or cmdline (a warm sandbox's arrive over its control socket instead).
struct Bubblewrap: Sendable {
    static let seccompFD: Int32 = 4
    static let controlFD: Int32 = 3
    static let argsFD: Int32 = 5
    /// bwrap's own environment: fixed, the same for every sandbox, nothing of the task's.
    static let hostEnvironment = ["PATH=/usr/bin:/bin"]
    static let initMount = "/run/starling-init"
    /// Where a sandbox sees its run directory (read-only): the node's end of the task's API
    /// socket appears there as `api.sock` (see TaskSocket).
    static let runMount = "/run/starling"
    /// The unprivileged identity inside the sandbox.
    static let uid = 65534

    let path: String
    /// `--disable-userns` works here (bubblewrap 0.8+): the task cannot create a user namespace,
    /// by a sysctl limit in the sandbox's own user namespace. The seccomp filter refuses
    /// namespace flags to clone as well, so a bwrap without it still blocks them.
    let disablesUserNamespaces: Bool

    /// The `--args` payload that gives a cold task its environment: NUL-terminated
    /// `--setenv NAME VALUE` triples. A NUL inside an entry would end it early and make the rest
    /// a bwrap option, so it is refused (tasks are validated before this; secrets come from the
    /// node's own file).
    static func environmentArguments(_ env: [String]) throws -> [UInt8] {
        var bytes: [UInt8] = []
        for entry in env {
            guard !entry.utf8.contains(0) else { throw SandboxUnavailable("an environment entry contains NUL") }
            guard let eq = entry.firstIndex(of: "=") else { continue }
            for part in ["--setenv", String(entry[..<eq]), String(entry[entry.index(after: eq)...])] {
                bytes.append(contentsOf: part.utf8)
                bytes.append(0)
            }
        }
        return bytes
    }

    /// The few host files a task needs (tool alternatives, the loader cache, the time zone), and
    /// name resolution and certificates only with host networking. Checked once: every extra
    /// mount costs each sandbox's start-up.
    static let etcNone: [String] = ["/etc/alternatives", "/etc/ld.so.cache", "/etc/localtime"].filter { access($0, F_OK) == 0 }
    static let etcHost: [String] = (etcNone + ["/etc/ssl", "/etc/ca-certificates", "/etc/resolv.conf", "/etc/hosts",
                                               "/etc/nsswitch.conf", "/etc/gai.conf"]).filter { access($0, F_OK) == 0 }
    static func etc(_ net: NetworkMode) -> [String] { net == .host ? etcHost : etcNone }

    /// Finds bwrap on PATH (or the usual places); nil when bubblewrap is not installed.
    static func locate() -> String? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        for dir in path.split(separator: ":") + ["/usr/bin", "/usr/local/bin"] {
            let candidate = "\(dir)/bwrap"
            if access(candidate, X_OK) == 0 { return candidate }
        }
        return nil
    }

    /// System directories are bound read-only; /bin, /lib... follow the host (a symlink into
    /// /usr on merged-/usr systems, else a read-only bind). Nothing else of the host is visible:
    /// no /home, /root, /var, /tmp, no node data dir, no other sandbox.
    /// `environmentFromArgs`: read the task's environment from `argsFD` (a cold sandbox).
    /// `runDir`: the host directory bound read-only at `runMount` (every warm sandbox, and a cold
    /// one whose task gets an API socket).
    func arguments(workdir: String, net: NetworkMode, initPath: String?, environmentFromArgs: Bool, program: [String],
                   runDir: String? = nil) -> [String] {
        var a = ["--unshare-all", "--unshare-user"]
        if disablesUserNamespaces { a.append("--disable-userns") }
        a += ["--die-with-parent", "--new-session", "--cap-drop", "ALL",
              "--uid", String(Self.uid), "--gid", String(Self.uid), "--hostname", "sandbox",
              "--ro-bind", "/usr", "/usr"]
        if net == .host { a.append("--share-net") }
        for top in ["bin", "lib", "lib32", "lib64", "sbin"] {
            var buf = [CChar](repeating: 0, count: 256)
            let n = readlink("/" + top, &buf, 255)
            if n > 0 {
                a += ["--symlink", String(decoding: buf[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self), "/" + top]
            } else if access("/" + top, F_OK) == 0 {
                a += ["--ro-bind", "/" + top, "/" + top]
            }
        }
        for e in Self.etc(net) { a += ["--ro-bind", e, e] }
        a += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp",
              "--bind", workdir, "/task", "--chdir", "/task",
              "--seccomp", String(Self.seccompFD)]
        if let initPath { a += ["--ro-bind", initPath, Self.initMount] }
        if let runDir { a += ["--ro-bind", runDir, Self.runMount] }
        a.append("--clearenv")
        if environmentFromArgs { a += ["--args", String(Self.argsFD)] }
        a.append("--")
        a += program
        return a
    }
}
