import Foundation
import Glibc

/// What a task left under its `out` directory, read back within bounds.
struct CollectedOutputs {
    /// Relative path (secret values redacted) → content (redacted, cut at the per-file cap), for
    /// files whose content is valid UTF-8.
    var files: [String: String] = [:]
    /// The same for files whose content is not valid UTF-8: their bytes in base64
    /// (interface.md's `outputsBase64`). A name is in one of the two maps, never both.
    var binaryFiles: [String: String] = [:]
    /// Files cut at the per-file or total cap, by their (redacted) names, for the result's warnings.
    var cutFiles: [String] = []
    /// A file or directory was left out: past the count, the depth or the visit budget, a link
    /// or special file, a name that is not UTF-8 or collides, or unreadable.
    var leftOut = false
    /// Something was left out or cut.
    var truncated: Bool { leftOut || !cutFiles.isEmpty }
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
            result.leftOut = true
            return
        }
        defer { closedir(d) }
        while !exhausted, let e = readdir(d) {
            let raw = entryName(e)
            if isDotOrDotDot(raw) { continue }
            visited += 1
            guard visited <= bounds.maxEntries else {
                result.leftOut = true
                exhausted = true
                return
            }
            guard let name = String(validating: raw.dropLast().map { UInt8(bitPattern: $0) }, as: UTF8.self) else {
                result.leftOut = true  // not a string: it cannot be a key of `outputs`
                continue
            }
            let rel = prefix.isEmpty ? name : prefix + "/" + name
            var st = stat()
            guard fstatat(fd, raw, &st, AT_SYMLINK_NOFOLLOW) == 0 else {
                result.leftOut = true
                continue
            }
            switch st.st_mode & S_IFMT {
            case S_IFDIR:
                guard depth + 1 < bounds.maxDepth else {
                    result.leftOut = true
                    continue
                }
                // O_NOFOLLOW: a directory swapped for a link after its fstatat is not followed.
                let child = openat(fd, raw, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
                guard child >= 0 else {
                    result.leftOut = true  // there, but unreadable: left out
                    continue
                }
                walk(child, rel, depth: depth + 1)
            case S_IFREG:
                let key = secrets.redact(rel)
                guard result.files.count + result.binaryFiles.count < bounds.maxFiles,
                      result.files[key] == nil, result.binaryFiles[key] == nil else {
                    result.leftOut = true  // past the count, or a second file under a name already kept
                    continue
                }
                // O_NONBLOCK: should the file have become a FIFO since its fstatat, the open
                // cannot hang the node.
                let file = openat(fd, raw, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK)
                guard file >= 0 else {
                    result.leftOut = true
                    continue
                }
                defer { close(file) }
                let want = max(0, min(bounds.perFile, bounds.total - used))
                // Read past the cap by the longest secret less one, redact, then cut.
                let bytes = readUpTo(file, want + overlap)
                var (kept, cut) = secrets.redactBytes(bytes, cap: want)
                let fileCut = cut || Int(st.st_size) > bytes.count
                if fileCut { result.cutFiles.append(key) }
                used += kept.count
                // A text file cut inside a character is still text: drop the partial character
                // rather than send the file as base64.
                if let text = textContent(kept, wasCut: fileCut) {
                    result.files[key] = text
                } else {
                    result.binaryFiles[key] = Data(kept).base64EncodedString()
                }
            default:
                result.leftOut = true  // a link, FIFO, socket or device: never read, but not returned either
            }
        }
    }
    let top = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
    if top >= 0 {
        walk(top, "", depth: 0)
    } else if errno != ENOENT {
        result.leftOut = true  // there, but unreadable: left out
    }
    return result
}

/// The content as text when it is valid UTF-8; a file cut inside a character still counts as
/// text, without the partial character (it should not turn into base64 because of our cut).
private func textContent(_ bytes: [UInt8], wasCut: Bool) -> String? {
    if let text = String(validating: bytes, as: UTF8.self) { return text }
    guard wasCut else { return nil }
    var trimmed = bytes
    SecretStore.dropIncompleteCharacter(&trimmed)
    return String(validating: trimmed, as: UTF8.self)
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
