import Foundation
import Glibc

/// What a task left under its `out` directory, read back within bounds.
struct CollectedOutputs {
    /// Relative path (secret values redacted) → content (redacted, cut at the per-file cap).
    var files: [String: String] = [:]
    /// Something was left out: a file cut, a file past the count, an entry past the depth or
    /// the visit budget.
    var truncated = false
}

/// Bounds on the walk over a task's outputs. A task controls the tree, so every dimension is
/// bounded: the files kept, the bytes read, and the entries *visited* (a million empty
/// directories hold no file, yet would cost the node a million `lstat`s).
struct OutputBounds {
    var perFile: Int
    var total: Int
    var maxFiles = 256
    var maxEntries = 10_000
    var maxDepth = 16
}

/// Reads regular files under `dir` without following links (a task could plant a symlink to a
/// host path). Secret values are redacted from names and contents, before each file's cap so
/// that a value straddling the cut leaks no prefix.
///
/// The walk goes by descriptor: each entry is looked up relative to its parent directory's
/// descriptor with its name's raw bytes (`fstatat`/`openat`), so neither a name that is not
/// UTF-8 nor a path longer than PATH_MAX is ever mistaken for a missing file. Names are strings
/// in the result (interface.md), so an entry whose name is not valid UTF-8 is left out. Anything
/// left out, for whatever reason (such a name, a link or other non-regular file, an entry that
/// cannot be read, a name that collides with one already kept after redaction, a bound), sets
/// `truncated`.
func collectOutputs(_ dir: String, bounds: OutputBounds, secrets: SecretStore = SecretStore()) -> CollectedOutputs {
    var result = CollectedOutputs()
    var used = 0
    var visited = 0
    var exhausted = false
    let overlap = secrets.overlap
    /// Walks directory `fd` (closed here) whose entries' paths start with `prefix`.
    func walk(_ fd: Int32, _ prefix: String, depth: Int) {
        guard let d = fdopendir(fd) else {
            close(fd)
            result.truncated = true
            return
        }
        defer { closedir(d) }
        while !exhausted, let e = readdir(d) {
            let raw = entryName(e)
            if isDotOrDotDot(raw) { continue }
            visited += 1
            guard visited <= bounds.maxEntries else {
                result.truncated = true
                exhausted = true
                return
            }
            guard let name = String(validating: raw.dropLast().map { UInt8(bitPattern: $0) }, as: UTF8.self) else {
                result.truncated = true  // not a string: it cannot be a key of `outputs`
                continue
            }
            let rel = prefix.isEmpty ? name : prefix + "/" + name
            var st = stat()
            guard fstatat(fd, raw, &st, AT_SYMLINK_NOFOLLOW) == 0 else {
                result.truncated = true
                continue
            }
            switch st.st_mode & S_IFMT {
            case S_IFDIR:
                guard depth + 1 < bounds.maxDepth else {
                    result.truncated = true
                    continue
                }
                // O_NOFOLLOW: a directory swapped for a link after its fstatat is not followed.
                let child = openat(fd, raw, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
                guard child >= 0 else {
                    result.truncated = true  // there, but unreadable: left out
                    continue
                }
                walk(child, rel, depth: depth + 1)
            case S_IFREG:
                let key = secrets.redact(rel)
                guard result.files.count < bounds.maxFiles, result.files[key] == nil else {
                    result.truncated = true  // past the count, or a second file under a name already kept
                    continue
                }
                // O_NONBLOCK: should the file have become a FIFO since its fstatat, the open
                // cannot hang the node.
                let file = openat(fd, raw, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK)
                guard file >= 0 else {
                    result.truncated = true
                    continue
                }
                defer { close(file) }
                let want = max(0, min(bounds.perFile, bounds.total - used))
                // Read past the cap by the longest secret less one, redact, then cut.
                let bytes = readUpTo(file, want + overlap)
                let (text, cut) = secrets.redact(bytes, cap: want)
                if cut || Int(st.st_size) > bytes.count { result.truncated = true }
                used += text.utf8.count
                result.files[key] = text
            default:
                result.truncated = true  // a link, FIFO, socket or device: never read, but not returned either
            }
        }
    }
    let top = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
    if top >= 0 {
        walk(top, "", depth: 0)
    } else if errno != ENOENT {
        result.truncated = true  // there, but unreadable: left out
    }
    return result
}

/// Reads at most `limit` bytes from `fd` (until EOF or an error).
private func readUpTo(_ fd: Int32, _ limit: Int) -> [UInt8] {
    var bytes = [UInt8](repeating: 0, count: max(0, limit))
    var got = 0
    while got < limit {
        let n = bytes.withUnsafeMutableBytes { read(fd, $0.baseAddress! + got, limit - got) }
        if n < 0 && errno == EINTR { continue }
        if n <= 0 { break }
        got += n
    }
    return Array(bytes[0..<got])
}
