import CShim
import Foundation
import Glibc
import SupervisorSessions

/// A child process started with `cshim_spawn` (every descriptor above 2 closed in the child, so concurrent
/// tests cannot leak sockets or pipes into each other's children) and reaped with `waitpid`.
public final class Child: @unchecked Sendable {
    // @unchecked Sendable: `status` is written by whichever thread reaps first; tests use one thread per child.
    public let pid: pid_t
    private var status: Int32?

    /// Starts `path` with `args`; output and errors appended to `outputPath` (or /dev/null); stdin from
    /// `inputPath` (or /dev/null).
    public init(_ path: String, _ args: [String], environment: [String: String], directory: String? = nil,
                outputPath: String? = nil, errorPath: String? = nil, inputPath: String? = nil) throws
    {
        let outFD = open(outputPath ?? "/dev/null", O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
        let errFD = errorPath.map { open($0, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644) } ?? outFD
        let inFD = open(inputPath ?? "/dev/null", O_RDONLY | O_CLOEXEC)
        defer {
            close(outFD)
            if errFD != outFD { close(errFD) }
            close(inFD)
        }
        var p: pid_t = 0
        let rc = withSpawnVectors([path] + args, environment) { a, e in
            cshim_spawn(&p, path, a, e, directory, inFD, outFD, errFD, 0)
        }
        if rc != 0 { throw TestFailure("spawn \(path): errno \(rc)") }
        pid = p
    }

    /// The exit status (128+signal when killed), or nil if still running after `timeout`.
    public func wait(timeout: Double) -> Int32? {
        if let status { return status }
        let deadline = Date().addingTimeInterval(timeout)
        repeat {
            var st: Int32 = 0
            let r = waitpid(pid, &st, WNOHANG)
            if r == pid {
                let sig = st & 0x7F
                status = sig == 0 ? (st >> 8) & 0xFF : 128 + sig
                return status
            }
            if r < 0 { return status }
            usleep(5_000)
        } while Date() < deadline
        return nil
    }

    public var isRunning: Bool { wait(timeout: 0) == nil }

    public func signal(_ sig: Int32) { if isRunning { kill(pid, sig) } }

    /// SIGKILL and reap, if still running.
    public func kill9() {
        if isRunning {
            kill(pid, SIGKILL)
            _ = wait(timeout: 10)
        }
    }

    deinit { kill9() }
}

/// The environment of this test process without the variables that would change a daemon's behaviour.
public func cleanEnvironment(_ extra: [String: String] = [:]) -> [String: String] {
    var env = ProcessInfo.processInfo.environment.filter {
        !$0.key.hasPrefix("CHIMERAX_SUPERVISOR_") && !$0.key.hasPrefix("LISTEN_") && $0.key != "NOTIFY_SOCKET"
            && $0.key != "JOURNAL_STREAM" && !$0.key.hasPrefix("WATCHDOG_") && $0.key != "RUNTIME_DIRECTORY"
            && $0.key != "STATE_DIRECTORY"
    }
    for (k, v) in extra { env[k] = v }
    return env
}
