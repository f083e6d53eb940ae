import Foundation
import Glibc

/// The bubblewrap command line for one sandbox. Cold and warm sandboxes share it, so their
/// isolation is identical by construction; only the program after `--` differs.
struct Bubblewrap: Sendable {
    static let seccompFD: Int32 = 4
    static let controlFD: Int32 = 3
    static let initMount = "/run/starling-init"
    /// The unprivileged identity inside the sandbox.
    static let uid = 65534

    let path: String

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
    func arguments(workdir: String, net: NetworkMode, initPath: String?, program: [String]) -> [String] {
        var a = ["--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL",
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
        a.append("--")
        a += program
        return a
    }
}
