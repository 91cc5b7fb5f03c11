import CShim
import Foundation
import Glibc

/// One ChimeraX process: spawned into its own process group with a clean environment, stdin a pipe held open
/// for its life, stdout and stderr drained continuously, its exit seen through a pidfd on the reactor.
/// Descendants are tracked through /proc so that a grandchild that left the group (setsid) is still found
/// and killed. Reactor thread only, after `spawn`.
public final class ChimeraXProcess: @unchecked Sendable {
    // @unchecked Sendable: created on any thread, then used only on its reactor's thread.
    public let pid: pid_t
    private let pidfd: Int32
    private var stdinFD: Int32
    private var stdoutFD: Int32
    private var stderrFD: Int32
    private let reactor: Reactor
    public private(set) var stdout = OutputScanner()
    public private(set) var stderr = OutputScanner(maxLineBytes: 4096, tailLines: 40)
    public private(set) var exit: ProcessExit?
    /// Descendants seen (pid → start time in clock ticks, to tell a reused pid from the same process).
    public private(set) var descendants: [pid_t: UInt64] = [:]
    private let startTime: UInt64

    /// Called for every complete stdout line (`stderr: false`) or stderr line.
    public var onLine: ((String, _ stderr: Bool) -> Void)?
    /// Called when a stream has no more output for now (`stderr` true for stderr): a log block may end here.
    public var onDrained: ((_ stderr: Bool) -> Void)?
    /// Called once when the process has exited and been reaped.
    public var onExit: ((ProcessExit) -> Void)?

    public struct SpawnError: Error, CustomStringConvertible {
        public let errno: Int32
        public let what: String
        public init(errno: Int32, what: String) {
            self.errno = errno
            self.what = what
        }
        public var description: String { "\(what): \(String(cString: strerror(errno)))" }
    }

    /// The network namespace the process runs in when it was isolated (its REST port is reachable only
    /// through it), else nil.
    public let network: NetworkNamespace?

    /// Starts `executable` with `arguments` in `directory`, environment exactly `environment`; with a
    /// `network`, inside that namespace (a fresh one per session: see `NetworkNamespacePool`); with `nice` > 0,
    /// at that nice value.
    public init(executable: String, arguments: [String], environment: [String: String], directory: String, network: NetworkNamespace? = nil,
                nice: Int = 0, reactor: Reactor) throws {
        var inPipe: [Int32] = [0, 0], outPipe: [Int32] = [0, 0], errPipe: [Int32] = [0, 0]
        guard cshim_pipe(&inPipe, 0) == 0 else { throw SpawnError(errno: errno, what: "pipe") }
        guard cshim_pipe(&outPipe, 1) == 0 else {
            inPipe.forEach { close($0) }
            throw SpawnError(errno: errno, what: "pipe")
        }
        guard cshim_pipe(&errPipe, 1) == 0 else {
            (inPipe + outPipe).forEach { close($0) }
            throw SpawnError(errno: errno, what: "pipe")
        }
        var p: pid_t = 0
        let rc = withSpawnVectors([executable] + arguments, environment) { a, e in
            cshim_spawn_session(&p, executable, a, e, directory, inPipe[0], outPipe[1], errPipe[1], network?.fd ?? -1, Int32(nice))
        }
        // The child's ends are the child's now.
        close(inPipe[0])
        close(outPipe[1])
        close(errPipe[1])
        guard rc == 0 else {
            close(inPipe[1])
            close(outPipe[0])
            close(errPipe[0])
            throw SpawnError(errno: rc, what: "spawn \(executable)")
        }
        let fd = cshim_pidfd_open(p)
        guard fd >= 0 else {
            let e = errno
            kill(p, SIGKILL)
            var st: Int32 = 0
            waitpid(p, &st, 0)
            [inPipe[1], outPipe[0], errPipe[0]].forEach { close($0) }
            throw SpawnError(errno: e, what: "pidfd_open")
        }
        pid = p
        pidfd = fd
        // The namespace is held open for the session's life (it outlives the process while a request uses it).
        self.network = network
        stdinFD = inPipe[1]
        stdoutFD = outPipe[0]
        stderrFD = errPipe[0]
        self.reactor = reactor
        startTime = ChimeraXProcess.startTime(of: p) ?? 0
    }

    /// Starts draining output and watching for the exit. Reactor thread.
    public func attach() {
        reactor.watch(stdoutFD) { [weak self] in self?.drain(stderr: false) }
        reactor.watch(stderrFD) { [weak self] in self?.drain(stderr: true) }
        reactor.watch(pidfd) { [weak self] in self?.reap() }
    }

    private func drain(stderr isErr: Bool) {
        let fd = isErr ? stderrFD : stdoutFD
        guard fd >= 0 else { return }
        var buf = [UInt8](repeating: 0, count: 16 << 10)
        while true {
            let n = read(fd, &buf, buf.count)
            if n > 0 {
                let lines = isErr ? stderr.feed(buf[0..<n]) : stdout.feed(buf[0..<n])
                for l in lines { onLine?(l, isErr) }
                continue
            }
            if n < 0 && errno == EINTR { continue }
            if n < 0 && errno == EAGAIN {
                onDrained?(isErr)
                return
            }
            // End of output (or an error): stop watching; the exit comes through the pidfd.
            reactor.unwatch(fd)
            close(fd)
            if isErr {
                if let l = stderr.flush() { onLine?(l, true) }
                stderrFD = -1
            } else {
                if let l = stdout.flush() { onLine?(l, false) }
                stdoutFD = -1
            }
            onDrained?(isErr)
            return
        }
    }

    private func reap() {
        var code: Int32 = 0, sig: Int32 = 0
        let r = cshim_pidfd_reap(pidfd, &code, &sig)
        guard r == 1 || r < 0 else { return }
        reactor.unwatch(pidfd)
        close(pidfd)
        // Whatever output is still buffered in the pipes belongs to the transcript.
        drain(stderr: false)
        drain(stderr: true)
        for fd in [stdoutFD, stderrFD] where fd >= 0 {
            reactor.unwatch(fd)
            close(fd)
        }
        stdoutFD = -1
        stderrFD = -1
        closeStdin()
        let e = r == 1 ? ProcessExit(code: code >= 0 ? code : nil, signal: sig > 0 ? sig : nil) : ProcessExit(code: nil, signal: nil)
        exit = e
        onExit?(e)
    }

    /// Before `attach` only (a start that is abandoned): kills the process group at once and reaps the process.
    public func killAndReap() {
        guard exit == nil else { return }
        kill(-pid, SIGKILL)
        var st: Int32 = 0
        while waitpid(pid, &st, 0) < 0 && errno == EINTR {}
        close(pidfd)
        exit = ProcessExit(code: nil, signal: SIGKILL)
    }

    /// Closes stdin (ChimeraX ends at end of input). Part of stopping.
    public func closeStdin() {
        if stdinFD >= 0 {
            close(stdinFD)
            stdinFD = -1
        }
    }

    /// A signal to the whole process group, and to every tracked descendant that left it.
    public func signalAll(_ sig: Int32) {
        refreshDescendants()
        if exit == nil { kill(-pid, sig) }
        for (d, start) in descendants where ChimeraXProcess.startTime(of: d) == start {
            kill(d, sig)
        }
    }

    /// Descendants still alive (pid reuse excluded), for reporting survivors.
    public func liveDescendants() -> [pid_t] {
        descendants.filter { ChimeraXProcess.startTime(of: $0.key) == $0.value }.map(\.key).sorted()
    }

    /// Adds every process whose parent chain leads to this one or to a descendant seen before (a grandchild
    /// whose parent died is found through it), or that is in its process group, to `descendants`. Called
    /// before every signal and on every accounting sample.
    public func refreshDescendants(from table: ProcessTable = .read()) {
        for (p, start) in table.members(of: tracked, group: pid) where p != pid && descendants[p] == nil {
            descendants[p] = start
        }
    }

    /// A descendant found another way (an orphan the daemon adopted as subreaper, marked as this session's).
    public func adopt(_ pid: pid_t, start: UInt64) {
        if pid != self.pid && descendants[pid] == nil { descendants[pid] = start }
    }

    /// The process itself and every descendant seen, with start times.
    public var tracked: [pid_t: UInt64] {
        var t = descendants
        if exit == nil { t[pid] = startTime }
        return t
    }

    /// Usage summed over the process and its descendants (also those that left the group or lost their
    /// parent), from `table`. Forgets descendants that are gone.
    public func usage(from table: ProcessTable) -> TreeUsage {
        refreshDescendants(from: table)
        let members = table.members(of: tracked, group: pid)
        descendants = descendants.filter { members[$0.key] == $0.value }
        return table.usage(of: members.keys)
    }

    static func startTime(of pid: pid_t) -> UInt64? { ProcStat.read(pid)?.start }

    deinit {
        for fd in [stdinFD, stdoutFD, stderrFD] where fd >= 0 { close(fd) }
        if exit == nil { close(pidfd) }
    }
}

/// `arguments` and the environment as the NULL-terminated C arrays `posix_spawn`/`execve` take (the entries
/// `NAME=value`, sorted by name), valid inside `body`.
public func withSpawnVectors<T>(_ arguments: [String], _ environment: [String: String],
                                _ body: (UnsafePointer<UnsafeMutablePointer<CChar>?>, UnsafePointer<UnsafeMutablePointer<CChar>?>) -> T) -> T {
    let argv = arguments.map { strdup($0) } + [nil]
    let envp = environment.sorted { $0.key < $1.key }.map { strdup("\($0.key)=\($0.value)") } + [nil]
    defer {
        argv.forEach { free($0) }
        envp.forEach { free($0) }
    }
    return argv.withUnsafeBufferPointer { a in envp.withUnsafeBufferPointer { e in body(a.baseAddress!, e.baseAddress!) } }
}
