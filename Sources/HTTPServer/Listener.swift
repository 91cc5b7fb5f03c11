import CShim
import Glibc

/// Where to listen.
public enum ListenerSpec: Sendable, Equatable {
    /// TCP on a numeric IPv4 or IPv6 address (or `localhost`); port 0 picks a free port.
    case tcp(host: String, port: UInt16)
    /// A Unix stream socket at `path` with permissions `mode`, group `gid` when given.
    case unix(path: String, mode: UInt32, gid: UInt32?)
    /// A listening socket passed in (systemd socket activation); `kind` is `"tcp"` or `"unix"`.
    case inherited(fd: Int32, kind: String)
}

/// A bound, listening, non-blocking socket.
public final class Listener: Sendable {
    public let fd: Int32
    /// `"tcp"` or `"unix"`: requests carry it so policies can differ by transport.
    public let kind: String
    /// What it is bound to, for logs and tests (`127.0.0.1:8731`, `[::1]:8731`, `/run/x/api.sock`).
    public let boundAddress: String
    /// The bound TCP port (0 for Unix).
    public let port: UInt16
    /// The socket file to unlink at shutdown: only one this process created.
    let ownedPath: String?

    init(fd: Int32, kind: String, boundAddress: String, port: UInt16, ownedPath: String?) {
        self.fd = fd
        self.kind = kind
        self.boundAddress = boundAddress
        self.port = port
        self.ownedPath = ownedPath
    }

    /// Creates the listening socket.
    public static func open(_ spec: ListenerSpec, backlog: Int32 = 4096) throws(SystemCallError) -> Listener {
        switch spec {
        case .tcp(let host, let port): return try openTCP(host: host, port: port, backlog: backlog)
        case .unix(let path, let mode, let gid): return try openUnix(path: path, mode: mode, gid: gid, backlog: backlog)
        case .inherited(let fd, let kind):
            let flags = fcntl(fd, F_GETFL)
            _ = fcntl(fd, F_SETFL, flags | O_NONBLOCK)
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
            let (addr, port) = localAddress(fd)
            return Listener(fd: fd, kind: kind, boundAddress: addr, port: port, ownedPath: nil)
        }
    }

    /// Stops listening; removes a socket file this process created.
    func close() {
        closeDescriptor(fd)
        if let p = ownedPath { unlink(p) }
    }

    private static func openTCP(host: String, port: UInt16, backlog: Int32) throws(SystemCallError) -> Listener {
        var h = host
        if h.hasPrefix("[") && h.hasSuffix("]") { h = String(h.dropFirst().dropLast()) }
        if h == "localhost" { h = "127.0.0.1" }
        var v4 = in_addr()
        var v6 = in6_addr()
        let fd: Int32
        if inet_pton(AF_INET, h, &v4) == 1 {
            fd = try syscallChecked("socket(AF_INET)") { cshim_socket(AF_INET, Int32(SOCK_STREAM.rawValue)) }
            var one: Int32 = 1
            setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
            var sa = sockaddr_in()
            sa.sin_family = sa_family_t(AF_INET)
            sa.sin_port = port.bigEndian
            sa.sin_addr = v4
            let r = withUnsafePointer(to: &sa) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            if r != 0 {
                let e = errno
                closeDescriptor(fd)
                throw SystemCallError(call: "bind(\(host):\(port))", errno: e)
            }
        } else if inet_pton(AF_INET6, h, &v6) == 1 {
            fd = try syscallChecked("socket(AF_INET6)") { cshim_socket(AF_INET6, Int32(SOCK_STREAM.rawValue)) }
            var one: Int32 = 1
            setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
            // `[::]` means IPv6 only here; give `0.0.0.0` separately for IPv4.
            setsockopt(fd, Int32(IPPROTO_IPV6), IPV6_V6ONLY, &one, socklen_t(MemoryLayout<Int32>.size))
            var sa = sockaddr_in6()
            sa.sin6_family = sa_family_t(AF_INET6)
            sa.sin6_port = port.bigEndian
            sa.sin6_addr = v6
            let r = withUnsafePointer(to: &sa) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in6>.size)) }
            }
            if r != 0 {
                let e = errno
                closeDescriptor(fd)
                throw SystemCallError(call: "bind([\(h)]:\(port))", errno: e)
            }
        } else {
            throw SystemCallError(call: "inet_pton(\(host)): not a numeric address", errno: EINVAL)
        }
        if listen(fd, backlog) != 0 {
            let e = errno
            closeDescriptor(fd)
            throw SystemCallError(call: "listen", errno: e)
        }
        let (addr, bound) = localAddress(fd)
        return Listener(fd: fd, kind: "tcp", boundAddress: addr, port: bound, ownedPath: nil)
    }

    private static func openUnix(path: String, mode: UInt32, gid: UInt32?, backlog: Int32) throws(SystemCallError) -> Listener {
        var sa = sockaddr_un()
        let maxLen = MemoryLayout.size(ofValue: sa.sun_path) - 1
        guard path.utf8.count <= maxLen else {
            throw SystemCallError(call: "socket path longer than \(maxLen) bytes: \(path)", errno: ENAMETOOLONG)
        }
        sa.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &sa.sun_path) { raw in
            for (i, b) in path.utf8.enumerated() { raw[i] = b }
        }
        let len = socklen_t(MemoryLayout<sa_family_t>.size + path.utf8.count + 1)
        // A socket file left by a daemon that died: remove it, but never steal one that still answers.
        var st = stat()
        if lstat(path, &st) == 0 {
            guard (st.st_mode & S_IFMT) == S_IFSOCK else {
                throw SystemCallError(call: "\(path) exists and is not a socket", errno: EEXIST)
            }
            let probe = cshim_socket(AF_UNIX, Int32(SOCK_STREAM.rawValue))
            let c = withUnsafePointer(to: &sa) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(probe, $0, len) } }
            let e = errno
            closeDescriptor(probe)
            if c == 0 || e == EAGAIN {
                throw SystemCallError(call: "\(path) is in use by another process", errno: EADDRINUSE)
            }
            unlink(path)
        }
        let fd = try syscallChecked("socket(AF_UNIX)") { cshim_socket(AF_UNIX, Int32(SOCK_STREAM.rawValue)) }
        // Bind with a restrictive umask so the socket is never briefly wider than `mode`.
        let old = umask(0o177)
        let r = withUnsafePointer(to: &sa) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) } }
        let e = errno
        umask(old)
        if r != 0 {
            closeDescriptor(fd)
            throw SystemCallError(call: "bind(\(path))", errno: e)
        }
        if let gid, chown(path, uid_t.max, gid) != 0 {
            let e = errno
            closeDescriptor(fd)
            unlink(path)
            throw SystemCallError(call: "chown(\(path), group \(gid))", errno: e)
        }
        if chmod(path, mode_t(mode)) != 0 {
            let e = errno
            closeDescriptor(fd)
            unlink(path)
            throw SystemCallError(call: "chmod(\(path))", errno: e)
        }
        if listen(fd, backlog) != 0 {
            let e = errno
            closeDescriptor(fd)
            unlink(path)
            throw SystemCallError(call: "listen(\(path))", errno: e)
        }
        return Listener(fd: fd, kind: "unix", boundAddress: path, port: 0, ownedPath: path)
    }

    static func localAddress(_ fd: Int32) -> (String, UInt16) {
        var ss = sockaddr_storage()
        var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let r = withUnsafeMutablePointer(to: &ss) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
        guard r == 0 else { return ("?", 0) }
        return describe(&ss)
    }

    /// Text address and port of a socket address (Unix: the path, port 0).
    static func describe(_ ss: inout sockaddr_storage) -> (String, UInt16) {
        switch Int32(ss.ss_family) {
        case AF_INET:
            return withUnsafePointer(to: &ss) {
                $0.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { p in
                    var a = p.pointee.sin_addr
                    var buf = [CChar](repeating: 0, count: 64)
                    inet_ntop(AF_INET, &a, &buf, 64)
                    return (cText(buf), UInt16(bigEndian: p.pointee.sin_port))
                }
            }
        case AF_INET6:
            return withUnsafePointer(to: &ss) {
                $0.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { p in
                    var a = p.pointee.sin6_addr
                    var buf = [CChar](repeating: 0, count: 64)
                    inet_ntop(AF_INET6, &a, &buf, 64)
                    return (cText(buf), UInt16(bigEndian: p.pointee.sin6_port))
                }
            }
        case AF_UNIX:
            return withUnsafePointer(to: &ss) {
                $0.withMemoryRebound(to: sockaddr_un.self, capacity: 1) { p in
                    var path = p.pointee.sun_path
                    let s = withUnsafeBytes(of: &path) { raw in
                        String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
                    }
                    return (s, 0)
                }
            }
        default:
            return ("?", 0)
        }
    }
}

/// A NUL-terminated C buffer as text.
func cText(_ buf: [CChar]) -> String {
    String(decoding: buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}
