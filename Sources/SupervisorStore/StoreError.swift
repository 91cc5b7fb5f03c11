import Glibc

/// What went wrong in the store: a stable code, a message that says what to do, and the errno if any.
public struct StoreError: Error, CustomStringConvertible, Sendable, Equatable {
    public enum Code: String, Sendable {
        /// A write could not be made durable (disk full, I/O error). Nothing of it stays; retry later.
        case unavailable = "storage_unavailable"
        /// A file is damaged in a way recovery must not guess about.
        case corrupt = "storage_corrupt"
        /// Another process holds the state directory.
        case locked = "storage_locked"
        /// A file was written by a newer version of the program.
        case tooNew = "storage_format_too_new"
        /// The directory cannot be used (permissions, owner, not a directory).
        case unusable = "storage_unusable"
        /// The store was closed.
        case closed = "storage_closed"
    }

    public let code: Code
    public let message: String
    public let errno: Int32?
    /// For `.corrupt`: the file and the byte offset of the damage.
    public var file: String?
    public var offset: Int?

    public init(_ code: Code, _ message: String, errno: Int32? = nil, file: String? = nil, offset: Int? = nil) {
        self.code = code
        self.message = message
        self.errno = errno
        self.file = file
        self.offset = offset
    }

    public var description: String {
        var s = message
        if let errno { s += " (\(String(cString: strerror(errno))))" }
        return s
    }
}
