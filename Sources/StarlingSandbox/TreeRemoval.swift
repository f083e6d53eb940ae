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
    guard let top = path.withCString({ openDirectory(at: AT_FDCWD, $0) }) else { return .failed(errno) }
    defer { close(top) }
    var remover = Remover(top: top, budget: budget)
    switch remover.empty(top, depth: 0) {
    case .removed: return rmdir(path) == 0 || errno == ENOENT ? .removed : .failed(errno)
    case let other: return other
    }
}

/// Opens directory `name` under `parent` for reading, first giving its owner rwx if it lacks
/// them. Nil when it is not a directory (a symbolic link included) or cannot be opened.
private func openDirectory(at parent: Int32, _ name: UnsafePointer<CChar>) -> Int32? {
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

/// renameat2(2) with RENAME_NOREPLACE: fails with EEXIST rather than replace `to`. Looked up at
/// run time since Swift's Glibc module does not export renameat2; without it (glibc < 2.28)
/// every move fails and removal reports it rather than risk replacing a directory.
private func renameNoReplace(_ fromDir: Int32, _ from: EntryName, _ toDir: Int32, _ to: String) -> Int32 {
    guard let renameat2 = renameat2Function else {
        errno = ENOSYS
        return -1
    }
    return renameat2(fromDir, from, toDir, to, 1 /* RENAME_NOREPLACE */)
}

private typealias RenameAt2 = @convention(c) (Int32, UnsafePointer<CChar>, Int32, UnsafePointer<CChar>, UInt32) -> Int32
private let renameat2Function: RenameAt2? = dlsym(nil, "renameat2").map { unsafeBitCast($0, to: RenameAt2.self) }

/// A directory entry's name exactly as the kernel gave it: bytes, NUL-terminated. Never decoded,
/// so a name that is not UTF-8 reaches `fstatat`/`unlinkat`/`openat` unchanged.
typealias EntryName = [CChar]

/// Passes over one directory within one call before it is given up on: each pass must remove
/// something, so this only bounds a directory that something keeps refilling.
private let maximumPasses = 1 << 16

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
        for _ in 0..<maximumPasses {
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
        return .failed(lastError == 0 ? ELOOP : lastError)
    }

    /// Removes entry `name` of `parent`. An entry that was just listed but is not there (ENOENT)
    /// is a failure, not progress: counting it as removed is how a pass that removes nothing
    /// could go on for ever.
    mutating func remove(_ name: EntryName, in parent: Int32, depth: Int) -> TreeRemoval {
        var st = stat()
        guard fstatat(parent, name, &st, AT_SYMLINK_NOFOLLOW) == 0 else { return .failed(errno) }
        if (st.st_mode & S_IFMT) != S_IFDIR {
            budget -= 1
            return unlinkat(parent, name, 0) == 0 ? .removed : .failed(errno)
        }
        if depth >= hoistDepth, parent != top {
            // Each move costs budget like a removal: a directory at the hoisting depth with a
            // million subdirectories is moved up a slice at a time, not all at once.
            budget -= 1
            return hoist(name, from: parent)
        }
        guard let child = openDirectory(at: parent, name) else { return .failed(errno) }
        let inner = empty(child, depth: depth + 1)
        close(child)
        guard inner == .removed else { return inner }
        budget -= 1
        return unlinkat(parent, name, AT_REMOVEDIR) == 0 ? .removed : .failed(errno)
    }

    /// Moves directory `name` of `parent` up to the top under a fresh random name; the top's
    /// pass removes it from there. The name cannot be guessed and the move never replaces
    /// anything (RENAME_NOREPLACE), so a task that plants directories under likely names makes
    /// the move retry with another name, never fail.
    private func hoist(_ name: EntryName, from parent: Int32) -> TreeRemoval {
        var failure: Int32 = EEXIST
        for _ in 0..<8 {
            let target = ".starling-hoisted-\(SandboxRunner.newID())"
            if renameNoReplace(parent, name, top, target) == 0 { return .removed }
            failure = errno
            guard failure == EEXIST || failure == ENOTEMPTY else { break }
        }
        return .failed(failure)
    }

    /// Up to `limit` entry names of directory `fd`, as raw bytes, read through a fresh
    /// descriptor so that each pass starts at the beginning (entries removed meanwhile are not
    /// skipped over).
    static func names(in fd: Int32, limit: Int) -> [EntryName] {
        let again = openat(fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard again >= 0, let d = fdopendir(again) else {
            if again >= 0 { close(again) }
            return []
        }
        defer { closedir(d) }
        var names: [EntryName] = []
        while names.count < limit, let e = readdir(d) {
            let name = entryName(e)
            if !isDotOrDotDot(name) { names.append(name) }
        }
        return names
    }
}

/// The name of directory entry `e`, bytes and terminating NUL, undecoded.
func entryName(_ e: UnsafeMutablePointer<dirent>) -> EntryName {
    withUnsafeBytes(of: e.pointee.d_name) { raw in
        let bytes = raw.bindMemory(to: CChar.self)
        let length = bytes.firstIndex(of: 0) ?? bytes.count
        return Array(bytes[..<length]) + [0]
    }
}

func isDotOrDotDot(_ name: EntryName) -> Bool {
    name == [0x2E, 0] || name == [0x2E, 0x2E, 0]
}

/// Removes finished sandboxes' work directories in the background, taking turns: each tree
/// gets a slice of `sliceEntries` removals, then goes to the back of the line. A tree of a
/// million entries therefore delays a small one by one slice, not by its whole removal.
final class TreeReaper: Sendable {
    private struct Queue {
        var paths: [String] = []
        var working = false
        /// The tree whose slice is being removed now (out of `paths` meanwhile).
        var current: String?
    }
    private let pending = Mutex(Queue())
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

    /// Waits at most until `deadline`; whether every queued tree was removed (or given up on).
    func waitUntilIdle(deadline: DispatchTime) -> Bool { outstanding.wait(timeout: deadline) == .success }

    /// The trees queued and not yet removed (the one being worked on included).
    var remaining: [String] { pending.withLock { $0.paths + ($0.current.map { [$0] } ?? []) } }

    private func work() {
        while let path = pending.withLock({ p -> String? in
            p.current = nil
            if p.paths.isEmpty {
                p.working = false
                return nil
            }
            p.current = p.paths.removeFirst()
            return p.current
        }) {
            switch removeTree(path, budget: sliceEntries) {
            case .unfinished:
                pending.withLock { $0.paths.append(path) }
            case .removed:
                outstanding.leave()
            case .failed(let e):
                // Given up on, and said so: the tree stays until the next start's sweep, which
                // again gives up on it in bounded time rather than holding up the reaper.
                let line = "starling: could not remove \(path): \(String(cString: strerror(e)))\n"
                FileHandle.standardError.write(Data(line.utf8))
                outstanding.leave()
            }
        }
    }
}
