import Glibc

/// The store's system calls, each retrying EINTR and throwing `StoreError` with the errno.
enum FileIO {
    static func openFile(_ path: String, _ flags: Int32, mode: mode_t = 0o600) throws(StoreError) -> Int32 {
        while true {
            let fd = open(path, flags | O_CLOEXEC, mode)
            if fd >= 0 { return fd }
            if errno == EINTR { continue }
            throw StoreError(.unavailable, "cannot open \(path)", errno: errno)
        }
    }

    static func pwriteAll(_ fd: Int32, _ bytes: [UInt8], at offset: Int, path: String) throws(StoreError) {
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress! + done, bytes.count - done, off_t(offset + done)) }
            if n > 0 {
                done += n
                continue
            }
            if n < 0 && errno == EINTR { continue }
            throw StoreError(.unavailable, "cannot write \(path)", errno: n < 0 ? errno : ENOSPC)
        }
    }

    static func sync(_ fd: Int32, path: String, dataOnly: Bool = true) throws(StoreError) {
        while (dataOnly ? fdatasync(fd) : fsync(fd)) != 0 {
            if errno == EINTR { continue }
            throw StoreError(.unavailable, "cannot sync \(path)", errno: errno)
        }
    }

    /// fsync of a directory, so created, renamed and removed names are durable.
    static func syncDirectory(_ path: String) throws(StoreError) {
        let fd = try openFile(path, O_RDONLY | O_DIRECTORY)
        defer { close(fd) }
        try sync(fd, path: path, dataOnly: false)
    }

    static func truncate(_ fd: Int32, to length: Int, path: String) throws(StoreError) {
        while ftruncate(fd, off_t(length)) != 0 {
            if errno == EINTR { continue }
            throw StoreError(.unavailable, "cannot truncate \(path)", errno: errno)
        }
    }

    /// The whole file.
    static func readAll(_ path: String) throws(StoreError) -> [UInt8] {
        let fd = try openFile(path, O_RDONLY)
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw StoreError(.unavailable, "cannot stat \(path)", errno: errno) }
        var out = [UInt8](repeating: 0, count: Int(st.st_size))
        var off = 0
        while off < out.count {
            let n = out.withUnsafeMutableBytes { pread(fd, $0.baseAddress! + off, $0.count - off, off_t(off)) }
            if n < 0 && errno == EINTR { continue }
            if n < 0 { throw StoreError(.unavailable, "cannot read \(path)", errno: errno) }
            if n == 0 { break }
            off += n
        }
        if off < out.count { out.removeLast(out.count - off) }
        return out
    }

    /// Writes a whole file durably: temp file, fsync, rename, fsync the directory.
    static func writeAtomically(_ path: String, chunks: [[UInt8]], directory: String) throws(StoreError) {
        let tmp = path + ".tmp"
        let fd = try openFile(tmp, O_WRONLY | O_CREAT | O_TRUNC)
        do throws(StoreError) {
            var off = 0
            for c in chunks {
                try pwriteAll(fd, c, at: off, path: tmp)
                off += c.count
            }
            try sync(fd, path: tmp, dataOnly: false)
            close(fd)
        } catch {
            close(fd)
            unlink(tmp)
            throw error
        }
        guard rename(tmp, path) == 0 else {
            let e = errno
            unlink(tmp)
            throw StoreError(.unavailable, "cannot rename \(tmp)", errno: e)
        }
        try syncDirectory(directory)
    }

    static func list(_ directory: String) throws(StoreError) -> [String] {
        guard let d = opendir(directory) else { throw StoreError(.unusable, "cannot read directory \(directory)", errno: errno) }
        defer { closedir(d) }
        var names: [String] = []
        while let e = readdir(d) {
            let name = withUnsafeBytes(of: e.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            if name != "." && name != ".." { names.append(name) }
        }
        return names.sorted()
    }

    /// Creates `path` as a 0700 directory owned by us, or checks and tightens an existing one.
    static func ensurePrivateDirectory(_ path: String) throws(StoreError) {
        if mkdir(path, 0o700) != 0 && errno != EEXIST {
            throw StoreError(.unusable, "cannot create directory \(path)", errno: errno)
        }
        var st = stat()
        guard lstat(path, &st) == 0 else { throw StoreError(.unusable, "cannot stat \(path)", errno: errno) }
        guard (st.st_mode & S_IFMT) == S_IFDIR else { throw StoreError(.unusable, "\(path) is not a directory") }
        guard st.st_uid == geteuid() else {
            throw StoreError(.unusable, "\(path) belongs to uid \(st.st_uid), not to this process (uid \(geteuid())); fix its owner")
        }
        if st.st_mode & 0o077 != 0 { chmod(path, 0o700) }
    }

    static func fileSize(_ path: String) -> Int {
        var st = stat()
        return stat(path, &st) == 0 ? Int(st.st_size) : 0
    }
}
