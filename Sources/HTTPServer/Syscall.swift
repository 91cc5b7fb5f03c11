import CShim
import Glibc

/// An error from a system call: the call's name and `errno`, so logs say what failed and why.
public struct SystemCallError: Error, CustomStringConvertible, Sendable {
    public let call: String
    public let errno: Int32

    public init(call: String, errno: Int32) {
        self.call = call
        self.errno = errno
    }

    public var description: String { "\(call): \(String(cString: strerror(errno))) (errno \(errno))" }
}

/// The result of a non-blocking call: a value, or "would block".
public enum IOResult<T> {
    case done(T)
    case wouldBlock
}

/// The one choke point for system calls that follow the `-1` + `errno` convention: retries `EINTR`, reports
/// `EAGAIN` as would-block, throws everything else with the call's name.
/// `EBADF` and `EFAULT` are programming errors here (a descriptor we own, a buffer we built) and trap.
@inline(__always)
public func syscall<T: FixedWidthInteger>(
    _ name: @autoclosure () -> String, blocking: Bool = false, _ body: () -> T
) throws(SystemCallError) -> IOResult<T> {
    while true {
        let r = body()
        if r >= 0 { return .done(r) }
        let e = Glibc.errno
        switch e {
        case EINTR:
            continue
        case EAGAIN where !blocking:
            return .wouldBlock
        case EBADF, EFAULT:
            preconditionFailure("\(name()) failed with \(e): a descriptor or buffer bug")
        default:
            throw SystemCallError(call: name(), errno: e)
        }
    }
}

/// Same, for calls that must not report would-block (bind, listen, setsockopt...).
@inline(__always)
@discardableResult
public func syscallChecked<T: FixedWidthInteger>(
    _ name: @autoclosure () -> String, _ body: () -> T
) throws(SystemCallError) -> T {
    switch try syscall(name(), blocking: true, body) {
    case .done(let v): return v
    case .wouldBlock: throw SystemCallError(call: name(), errno: EAGAIN)
    }
}

/// Closes a descriptor, ignoring EINTR (on Linux the descriptor is released even then; retrying is wrong).
@inline(__always)
public func closeDescriptor(_ fd: Int32) {
    _ = Glibc.close(fd)
}
