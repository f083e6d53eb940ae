import Foundation
import Glibc
import Synchronization

/// How far a call to `removeTree` got.
enum TreeRemoval: Equatable {
    /// The tree is gone (or was never there).
    case removed
    /// The budget ran out first; call again to go on.
    case unfinished
    /// An entry could not be removed (the reason is the errno of the last failure).
    case failed(Int32)
}

/// Removes `path` and everything under it, without following symbolic links.
///
/// A task may leave directories mode 000 or 0500: each directory is made readable, writable
/// and searchable by its owner before it is entered, which is all a node that is not root needs
/// (it owns what its sandboxes wrote). The mode is changed through an `O_PATH` descriptor, so a
/// directory swapped for a symbolic link is never followed to a host file. Nesting depth costs
/// neither stack nor descriptors past `hoistDepth`: deeper directories are moved up to the top
/// of the tree and removed from there.
///
/// At most `budget` entries are removed per call, so a caller can take turns between trees.
@discardableResult
func removeTree(_ path: String, budget: Int = .max) -> TreeRemoval {
    var st = stat()
    guard lstat(path, &st) == 0 else { return errno == ENOENT ? .removed : .failed(errno) }
    guard (st.st_mode & S_IFMT) == S_IFDIR else { return unlink(path) == 0 || errno == ENOENT ? .removed : .failed(errno) }
    guard let top = openDirectory(at: AT_FDCWD, path) else { return .failed(errno) }
    defer { close(top) }
    var remover = Remover(top: top, budget: budget)
    switch remover.empty(top, depth: 0) {
    case .removed: return rmdir(path) == 0 || errno == ENOENT ? .removed : .failed(errno)
    case let other: return other
    }
}

/// Opens directory `name` under `parent` for reading, first giving its owner rwx if it lacks
/// them. Nil when it is not a directory (a symbolic link included) or cannot be opened.
private func openDirectory(at parent: Int32, _ name: String) -> Int32? {
    let handle = openat(parent, name, openPathOnly | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
    guard handle >= 0 else { return nil }
    defer { close(handle) }
    var st = stat()
    guard fstat(handle, &st) == 0 else { return nil }
    // The descriptor's /proc link names this very inode; it is not a path a task can redirect.
    let exact = "/proc/self/fd/\(handle)"
    if st.st_mode & S_IRWXU != S_IRWXU { chmod(exact, (st.st_mode & 0o7777) | S_IRWXU) }
    let fd = open(exact, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
    return fd >= 0 ? fd : nil
}

/// Linux's O_PATH (the same on x86-64 and arm64), which Swift's Glibc module does not export.
private let openPathOnly: Int32 = 0o10000000

/// Removes at most this many directory levels by descending; deeper ones are moved up.
private let hoistDepth = 32
/// Names for directories moved up to the top of a tree: unique within this process.
private let hoisted = Atomic<Int>(0)

private struct Remover {
    let top: Int32
    var budget: Int
    var lastError: Int32 = 0

    init(top: Int32, budget: Int) {
        self.top = top
        self.budget = budget
    }

    /// Empties directory `fd` (which stays open; the caller closes it).
    mutating func empty(_ fd: Int32, depth: Int) -> TreeRemoval {
        while true {
            let names = Self.names(in: fd, limit: 4_096)
            if names.isEmpty { return .removed }
            var progress = false
            for name in names {
                guard budget > 0 else { return .unfinished }
                switch remove(name, in: fd, depth: depth) {
                case .removed: progress = true
                case .unfinished: return .unfinished
                case .failed(let e): lastError = e
                }
            }
            // A full pass that removed nothing would loop for ever: give up on this directory.
            if !progress { return .failed(lastError) }
        }
    }

    mutating func remove(_ name: String, in parent: Int32, depth: Int) -> TreeRemoval {
        var st = stat()
        guard fstatat(parent, name, &st, AT_SYMLINK_NOFOLLOW) == 0 else { return errno == ENOENT ? .removed : .failed(errno) }
        if (st.st_mode & S_IFMT) != S_IFDIR {
            budget -= 1
            return unlinkat(parent, name, 0) == 0 || errno == ENOENT ? .removed : .failed(errno)
        }
        if depth >= hoistDepth, parent != top {
            for _ in 0..<3 {
                let target = ".starling-hoisted-\(hoisted.add(1, ordering: .relaxed).newValue)"
                if renameat(parent, name, top, target) == 0 { return .removed }  // the top's pass gets it
            }
            return .failed(errno)
        }
        guard let child = openDirectory(at: parent, name) else { return .failed(errno) }
        let inner = empty(child, depth: depth + 1)
        close(child)
        guard inner == .removed else { return inner }
        budget -= 1
        return unlinkat(parent, name, AT_REMOVEDIR) == 0 || errno == ENOENT ? .removed : .failed(errno)
    }

    /// Up to `limit` entry names of directory `fd`, read through a fresh descriptor so that each
    /// pass starts at the beginning (entries removed meanwhile are not skipped over).
    static func names(in fd: Int32, limit: Int) -> [String] {
        let again = openat(fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard again >= 0, let d = fdopendir(again) else {
            if again >= 0 { close(again) }
            return []
        }
        defer { closedir(d) }
        var names: [String] = []
        while names.count < limit, let e = readdir(d) {
            let name = withUnsafeBytes(of: e.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }
}

/// Removes finished sandboxes' work directories in the background, taking turns: each tree
/// gets a slice of `sliceEntries` removals, then goes to the back of the line. A tree of a
/// million entries therefore delays a small one by one slice, not by its whole removal.
final class TreeReaper: Sendable {
    private let pending = Mutex<(paths: [String], working: Bool)>(([], false))
    private let outstanding = DispatchGroup()
    private let queue = DispatchQueue(label: "starling-tree-reaper", qos: .utility)
    private let sliceEntries: Int

    init(sliceEntries: Int = 2_000) {
        precondition(sliceEntries > 0)
        self.sliceEntries = sliceEntries
    }

    /// Queues `path` for removal. Bounded by the number of sandboxes that ran.
    func remove(_ path: String) {
        outstanding.enter()
        let start = pending.withLock { p -> Bool in
            p.paths.append(path)
            defer { p.working = true }
            return !p.working
        }
        if start { queue.async { self.work() } }
    }

    /// Waits until every queued tree is removed (or given up on).
    func waitUntilIdle() { outstanding.wait() }

    private func work() {
        while let path = pending.withLock({ p -> String? in
            if p.paths.isEmpty {
                p.working = false
                return nil
            }
            return p.paths.removeFirst()
        }) {
            if removeTree(path, budget: sliceEntries) == .unfinished {
                pending.withLock { $0.paths.append(path) }
            } else {
                // Removed, or failed: a failed tree stays until the next start's sweep.
                outstanding.leave()
            }
        }
    }
}
