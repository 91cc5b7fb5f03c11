import CShim
import Foundation
import Glibc
import Synchronization
import SupervisorSessions
import SupervisorStore
import TestSupport

// Benchmarks that print figures and assert nothing. Run from the package directory:
//   swift run -c release chimerax-supervisor-bench http [--connections 64] [--duration 5] [--rounds 3] [--idle 10000]
//   swift run -c release chimerax-supervisor-bench commands [--count 500]

/// Prints a line at once (straight to descriptor 1: figures appear as measured, also in a file or pipe).
func say(_ line: String) {
    var text = line + "\n"
    text.withUTF8 { b in _ = Glibc.write(1, b.baseAddress, b.count) }
}

struct BenchError: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}

func tempDirectory() -> String {
    var template = Array("/tmp/cxs-bench-XXXXXX".utf8CString)
    let p = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
    return String(decoding: UnsafeRawBufferPointer(start: p, count: strlen(p!)), as: UTF8.self)
}

/// A port nothing on 127.0.0.1 listens on or is bound to now (the kernel picks it; the socket is closed).
func freePort() -> UInt16? {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    let ok = withUnsafeMutablePointer(to: &addr) { p in
        p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) == 0 && getsockname(fd, $0, &len) == 0 }
    }
    return ok ? UInt16(bigEndian: addr.sin_port) : nil
}

/// Runs a command to completion (posix_spawn + waitpid: Foundation's Process hangs on nginx's daemonizing fork).
func run(_ path: String, _ args: [String], timeout: Double = 120) throws -> (Int32, String) {
    let r = try runProgram(path, args, timeout: timeout)
    return (r.status, r.stdout + r.stderr)
}

func which(_ name: String) -> String? {
    let path = (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":").map(String.init)
    for dir in path + ["/usr/sbin", "/sbin"] {
        let p = "\(dir)/\(name)"
        if access(p, X_OK) == 0 { return p }
    }
    return nil
}

struct WrkResult {
    let requestsPerSecond: Double
    let p99Milliseconds: Double
    let raw: String
}

func parseWrk(_ text: String) throws -> WrkResult {
    var rps: Double?
    var p99: Double?
    for line in text.split(separator: "\n") {
        let t = line.trimmingCharacters(in: .whitespaces)
        if t.hasPrefix("Requests/sec:") { rps = Double(t.dropFirst("Requests/sec:".count).trimmingCharacters(in: .whitespaces)) }
        if t.hasPrefix("99%") {
            let v = t.dropFirst(3).trimmingCharacters(in: .whitespaces)
            if v.hasSuffix("us") { p99 = Double(v.dropLast(2)).map { $0 / 1000 } }
            else if v.hasSuffix("ms") { p99 = Double(v.dropLast(2)) }
            else if v.hasSuffix("s") { p99 = Double(v.dropLast(1)).map { $0 * 1000 } }
        }
    }
    guard let rps, let p99 else { throw BenchError("could not read wrk output:\n\(text)") }
    return WrkResult(requestsPerSecond: rps, p99Milliseconds: p99, raw: text)
}

func rssBytes(_ pid: Int32) -> Int {
    guard let s = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return 0 }
    for line in s.split(separator: "\n") where line.hasPrefix("VmRSS:") {
        return (line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first.flatMap { Int($0) } ?? 0) * 1024
    }
    return 0
}

func connect(port: UInt16) -> Int32 {
    var sa = sockaddr_in()
    sa.sin_family = sa_family_t(AF_INET)
    sa.sin_port = port.bigEndian
    sa.sin_addr.s_addr = inet_addr("127.0.0.1")
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    let r = withUnsafePointer(to: &sa) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
    if r != 0 {
        close(fd)
        return -1
    }
    return fd
}

/// Starts the release daemon on a free port; returns it and its port.
func startDaemon(binary: String, dir: String, extra: [String]) throws -> (Child, UInt16) {
    let log = dir + "/daemon.log"
    let p = try Child(binary, ["serve", "--listen", "127.0.0.1:0", "--socket", "none", "--state-dir", dir + "/state", "--log-level", "warning"] + extra,
                      environment: cleanEnvironment(), outputPath: log)
    // The port is logged at notice; warning level hides it, so read it from /proc instead.
    for _ in 0..<500 {
        usleep(10_000)
        if let port = listeningPort(pid: p.pid) { return (p, port) }
    }
    throw BenchError("daemon did not start:\n" + ((try? String(contentsOfFile: log, encoding: .utf8)) ?? ""))
}

/// The TCP port a process listens on, from /proc/net/tcp and its descriptors.
func listeningPort(pid: Int32) -> UInt16? {
    guard let fds = try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd") else { return nil }
    var inodes = Set<String>()
    for fd in fds {
        if let target = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/fd/\(fd)"), target.hasPrefix("socket:[") {
            inodes.insert(String(target.dropFirst(8).dropLast()))
        }
    }
    guard let table = try? String(contentsOfFile: "/proc/net/tcp", encoding: .utf8) else { return nil }
    for line in table.split(separator: "\n").dropFirst() {
        let f = line.split(separator: " ", omittingEmptySubsequences: true)
        if f.count > 9, f[3] == "0A", inodes.contains(String(f[9])) {
            let local = f[1].split(separator: ":")
            if local.count == 2, let port = UInt16(local[1], radix: 16) { return port }
        }
    }
    return nil
}

func httpBench(connections: Int, duration: Int, rounds: Int, idle: Int) throws {
    guard let wrk = which("wrk") else { throw BenchError("wrk is not installed: apt-get install -y wrk") }
    guard let nginx = which("nginx") else { throw BenchError("nginx is not installed: apt-get install -y nginx-light") }
    let dir = tempDirectory()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    say("building the release daemon…")
    let binary = try releaseDaemonBinary()

    var rl = rlimit()
    getrlimit(Int32(RLIMIT_NOFILE.rawValue), &rl)
    rl.rlim_cur = rl.rlim_max
    setrlimit(Int32(RLIMIT_NOFILE.rawValue), &rl)

    let (daemon, port) = try startDaemon(binary: binary, dir: dir, extra: [])
    defer {
        daemon.signal(SIGTERM)
        _ = daemon.wait(timeout: 15)
    }
    try compareWithNginx(wrk: wrk, nginx: nginx, dir: dir, port: port, path: "/healthz", script: nil,
                         location: #"location / { default_type "application/json; charset=utf-8"; return 200 '{"status":"ok"}'; }"#,
                         title: "GET /healthz", nginxLabel: "nginx (fixed 200):  ", connections: connections, duration: duration, rounds: rounds)

    // Idle keep-alive connections and the daemon's memory.
    let before = rssBytes(daemon.pid)
    var fds: [Int32] = []
    fds.reserveCapacity(idle)
    let request = Array("GET /healthz HTTP/1.1\r\nHost: bench\r\n\r\n".utf8)
    var buf = [UInt8](repeating: 0, count: 4096)
    for _ in 0..<idle {
        let fd = connect(port: port)
        if fd < 0 { break }
        _ = request.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        fds.append(fd)
        if fds.count % 500 == 0 {
            // Read the answers in batches so every connection has completed one exchange and sits idle.
            for f in fds.suffix(500) { _ = recv(f, &buf, buf.count, 0) }
        }
    }
    for f in fds.suffix(fds.count % 500) { _ = recv(f, &buf, buf.count, 0) }
    usleep(500_000)
    let after = rssBytes(daemon.pid)
    say("\(fds.count) idle keep-alive connections (each after one request):")
    say(String(format: "  daemon RSS %.1f MB before, %.1f MB with them open (%.1f KB per connection; target < 150 MB)",
                 Double(before) / 1e6, Double(after) / 1e6, Double(after - before) / Double(max(1, fds.count)) / 1e3))
    for f in fds { close(f) }
}

/// The same wrk load against us and against nginx answering `location` on the next port, in one run;
/// prints both req/s and p99 and the ratio.
func compareWithNginx(wrk: String, nginx: String, dir: String, port: UInt16, path: String, script: String?, location: String, title: String,
                      nginxLabel: String, connections: Int, duration: Int, rounds: Int, p99Target: String = "") throws {
    guard rounds > 0 else { throw BenchError("--rounds must be at least 1") }
    guard let nginxPort = freePort() else { throw BenchError("no free port for nginx") }
    let conf = """
        worker_processes auto;
        pid \(dir)/nginx.pid;
        error_log \(dir)/nginx-error.log;
        daemon on;
        events { worker_connections 20000; }
        http {
            access_log off;
            server {
                listen 127.0.0.1:\(nginxPort);
                \(location)
            }
        }
        """
    try conf.write(toFile: dir + "/nginx.conf", atomically: true, encoding: .utf8)
    let (ns, nout) = try run(nginx, ["-c", dir + "/nginx.conf"])
    guard ns == 0 else { throw BenchError("nginx failed to start:\n\(nout)") }
    defer { _ = try? run(nginx, ["-c", dir + "/nginx.conf", "-s", "stop"]) }
    usleep(300_000)
    let threads = min(connections, Int(cshim_cpu_count()))
    func load(_ p: UInt16, seconds: Int) throws -> WrkResult {
        let (_, text) = try run(wrk, ["-t\(threads)", "-c\(connections)", "-d\(seconds)s", "--latency"] + (script.map { ["-s", $0] } ?? [])
                                  + ["http://127.0.0.1:\(p)\(path)"])
        return try parseWrk(text)
    }
    // Rounds alternate which server goes first (ours, nginx; nginx, ours; …), so that a drift of the machine
    // (this one is shared: nginx alone moved between 98,000 and 140,000 req/s from run to run) falls on both.
    say("\(title), \(connections) keep-alive connections, \(threads) wrk threads, \(rounds) rounds of \(duration) s each, alternating (after 2 s warm-up)")
    _ = try load(port, seconds: 2)
    _ = try load(nginxPort, seconds: 2)
    var ours: [WrkResult] = [], theirs: [WrkResult] = []
    for round in 0..<rounds {
        if round % 2 == 0 {
            ours.append(try load(port, seconds: duration))
            theirs.append(try load(nginxPort, seconds: duration))
        } else {
            theirs.append(try load(nginxPort, seconds: duration))
            ours.append(try load(port, seconds: duration))
        }
        say(String(format: "  round %d: ours %8.0f req/s  p99 %6.3f ms  |  nginx %8.0f req/s  p99 %6.3f ms  |  ratio %.2f", round + 1,
                   ours[round].requestsPerSecond, ours[round].p99Milliseconds, theirs[round].requestsPerSecond,
                   theirs[round].p99Milliseconds, ours[round].requestsPerSecond / theirs[round].requestsPerSecond))
    }
    // Every round lasts as long, so the mean of the rates is the rate over all rounds.
    func mean(_ rs: [WrkResult]) -> Double { rs.map(\.requestsPerSecond).reduce(0, +) / Double(rs.count) }
    func p99s(_ rs: [WrkResult]) -> [Double] { rs.map(\.p99Milliseconds).sorted() }
    let ourP99 = p99s(ours), theirP99 = p99s(theirs)
    say(String(format: "  chimerax-supervisor: %10.0f req/s   p99 %7.3f ms median of rounds, %.3f ms worst%@", mean(ours),
               percentile(ourP99, 0.5), ourP99.last!, p99Target))
    say(String(format: "  %@ %10.0f req/s   p99 %7.3f ms median of rounds, %.3f ms worst", nginxLabel, mean(theirs),
               percentile(theirP99, 0.5), theirP99.last!))
    let ratios = zip(ours, theirs).map { $0.requestsPerSecond / $1.requestsPerSecond }
    say(String(format: "  ratio (ours / nginx): %.2f req/s over all rounds, %.2f to %.2f by round   (target >= 0.80)",
               mean(ours) / mean(theirs), ratios.min()!, ratios.max()!))
}

// MARK: Sessions

/// The repository's stand-in ChimeraX (the bench runs from the package directory).
func standInPath() -> String { FileManager.default.currentDirectoryPath + "/Fixtures/chimerax-standin/ChimeraX" }

func releaseDaemonBinary() throws -> String {
    let swift = which("swift") ?? "/opt/swift/usr/bin/swift"
    let (st, out) = try run(swift, ["build", "-c", "release", "--product", "chimerax-supervisor"], timeout: 3600)
    guard st == 0 else { throw BenchError("swift build failed:\n\(out)") }
    let (_, binPath) = try run(swift, ["build", "-c", "release", "--show-bin-path"])
    return binPath.trimmingCharacters(in: .whitespacesAndNewlines) + "/chimerax-supervisor"
}

/// A release daemon with the stand-in in `dir`, a user "bench" logged in, and one session ready: the daemon,
/// its port, the bearer token and the session id.
func daemonWithReadySession(binary: String, dir: String, extra: [String]) throws -> (Child, UInt16, String, String) {
    let add = try runProgram(binary, ["users", "add", "bench", "--password-stdin", "--state-dir", dir + "/state"], environment: cleanEnvironment(),
                             stdin: "bench-password\n")
    guard add.status == 0 else { throw BenchError("users add: \(add.stderr)") }
    let (daemon, port) = try startDaemon(binary: binary, dir: dir, extra: ["--chimerax", standInPath()] + extra)
    do {
        let login = try httpRequest(port: port, "POST", "/api/v1/auth/login", body: #"{"username":"bench","password":"bench-password"}"#)
        guard let token = login.json["token"] as? String else { throw BenchError("login: \(login.text)") }
        let auth = [("Authorization", "Bearer \(token)")]
        let created = try httpRequest(port: port, "POST", "/api/sessions", headers: auth, body: "{}")
        guard let id = created.json["id"] as? String else { throw BenchError("create: \(created.text)") }
        _ = try httpRequest(port: port, "GET", "/api/sessions/\(id)?wait=ready&timeout=30", headers: auth)
        return (daemon, port, token, id)
    } catch {
        daemon.signal(SIGTERM)
        _ = daemon.wait(timeout: 30)
        throw error
    }
}

/// Heartbeat PUTs against us and against nginx answering the same route with a fixed body; then create-to-ready
/// latency of `count` sessions next to the stand-in's own start time.
func sessionsBench(connections: Int, duration: Int, rounds: Int, count: Int) throws {
    guard let wrk = which("wrk") else { throw BenchError("wrk is not installed: apt-get install -y wrk") }
    guard let nginx = which("nginx") else { throw BenchError("nginx is not installed: apt-get install -y nginx-light") }
    say("building the release daemon…")
    let binary = try releaseDaemonBinary()
    let dir = tempDirectory()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let (daemon, port, token, id) = try daemonWithReadySession(binary: binary, dir: dir, extra: ["--max-sessions", "500",
                                                                                               "--max-sessions-per-user", "500", "--session-quota", "100000"])
    defer {
        daemon.signal(SIGTERM)
        _ = daemon.wait(timeout: 30)
    }
    let auth = [("Authorization", "Bearer \(token)")]
    let beat = try httpRequest(port: port, "PUT", "/api/sessions/\(id)/heartbeat", headers: auth)
    guard beat.status == 200 else { throw BenchError("heartbeat: \(beat.text)") }

    let script = dir + "/put.lua"
    try "wrk.method = \"PUT\"\nwrk.headers[\"Authorization\"] = \"Bearer \(token)\"\n".write(toFile: script, atomically: true, encoding: .utf8)
    let fixed = beat.text.replacingOccurrences(of: "'", with: "")
    try compareWithNginx(wrk: wrk, nginx: nginx, dir: dir, port: port, path: "/api/sessions/\(id)/heartbeat", script: script,
                         location: "location = /api/sessions/\(id)/heartbeat { default_type \"application/json; charset=utf-8\"; return 200 '\(fixed)'; }",
                         title: "PUT /api/sessions/{id}/heartbeat with a bearer token", nginxLabel: "nginx (fixed JSON): ", connections: connections,
                         duration: duration, rounds: rounds, p99Target: "   (target < 2 ms)")
    _ = try httpRequest(port: port, "DELETE", "/api/sessions/\(id)", headers: auth)

    // Each session's own start, from the kernel: `perf record` of every program start, listen(), connect()
    // and sendto() on the host, stamped with CLOCK_MONOTONIC like the bench's clock. The stand-in's own part
    // is from the exec of its file to its REST socket listening, plus from the supervisor's connect() for the
    // readiness probe to the stand-in's reply. Everything else between the POST and the ready answer is
    // overhead: the request, the spawn, reading the port line and sending the probe, handling the reply and
    // answering `?wait=ready`.
    let trace = StartTrace(dir: dir)
    if trace == nil { say("(perf is not available: apt-get install -y linux-perf for the per-session figures)") }
    var windows: [(start: Double, end: Double)] = []
    // Through the supervisor: POST, then GET ?wait=ready; alternating with the stand-in started alone (by this
    // bench: spawned, its stdout a pipe read as it comes, probed as soon as the port line is there), so that
    // whatever else the machine does hits both alike.
    var alone: [Double] = []
    var total: [Double] = []
    let fifo = dir + "/stdin.fifo"
    mkfifo(fifo, 0o600)
    let holder = open(fifo, O_RDWR | O_CLOEXEC)
    defer { close(holder) }
    for i in 0..<count {
        alone.append(try startStandInAlone(dir: dir, index: i, stdin: fifo))

        let t1 = monotonic()
        let r = try httpRequest(port: port, "POST", "/api/sessions", headers: auth, body: "{}")
        guard let sid = r.json["id"] as? String else { throw BenchError("create: \(r.text)") }
        let ready = try httpRequest(port: port, "GET", "/api/sessions/\(sid)?wait=ready&timeout=30", headers: auth)
        let t2 = monotonic()
        total.append(t2 - t1)
        windows.append((t1, t2))
        guard ["ready", "busy"].contains(ready.json["status"] as? String ?? "") else { throw BenchError("not ready: \(ready.text)") }
        _ = try httpRequest(port: port, "DELETE", "/api/sessions/\(sid)", headers: auth)
    }
    say("create to ready, \(count) sessions one after another:")
    let sortedTotal = total.sorted(), sortedAlone = alone.sorted()
    say(String(format: "  through the supervisor (POST to ready answer):    p50 %5.1f ms  p99 %5.1f ms",
               percentile(sortedTotal, 0.5) * 1000, percentile(sortedTotal, 0.99) * 1000))
    if let trace, let events = try trace.stop() {
        let path = standInPath()
        var own: [Double] = [], overhead: [Double] = []
        var toExec: [Double] = [], toProbe: [Double] = [], toAnswer: [Double] = []
        for (i, w) in windows.enumerated() {
            let inWindow = { (e: StartTrace.Event) in e.time >= w.start && e.time <= w.end }
            guard let exec = events.execs.first(where: { inWindow($0) && $0.filename == path }),
                  let listen = events.listens.first(where: { inWindow($0) && $0.pid == exec.pid && $0.time >= exec.time }),
                  let probe = events.connects.first(where: { inWindow($0) && $0.pid == daemon.pid && $0.time >= listen.time }),
                  let reply = events.sends.first(where: { inWindow($0) && $0.pid == exec.pid && $0.time >= probe.time })
            else { throw BenchError("session \(i + 1): the stand-in's exec, listen and probe reply are not all in the kernel trace") }
            let mine = (listen.time - exec.time) + (reply.time - probe.time)
            own.append(mine)
            overhead.append(total[i] - mine)
            toExec.append(exec.time - w.start)
            toProbe.append(probe.time - listen.time)
            toAnswer.append(w.end - reply.time)
        }
        own.sort()
        overhead.sort()
        say(String(format: "  the stand-in's own part in them (exec to listen, probe to reply): p50 %5.1f ms  p99 %5.1f ms",
                   percentile(own, 0.5) * 1000, percentile(own, 0.99) * 1000))
        say(String(format: "  overhead, session by session:                     p50 %5.1f ms  p99 %5.1f ms  max %.1f ms   (target < 5 ms)",
                   percentile(overhead, 0.5) * 1000, percentile(overhead, 0.99) * 1000, overhead.last! * 1000))
        toExec.sort()
        toProbe.sort()
        toAnswer.sort()
        say(String(format: "    of which POST to exec p50 %.2f p99 %.2f ms; listen to probe p50 %.2f p99 %.2f ms; probe reply to ready answer p50 %.2f p99 %.2f ms",
                   percentile(toExec, 0.5) * 1000, percentile(toExec, 0.99) * 1000, percentile(toProbe, 0.5) * 1000,
                   percentile(toProbe, 0.99) * 1000, percentile(toAnswer, 0.5) * 1000, percentile(toAnswer, 0.99) * 1000))
    }
    say(String(format: "  the stand-in started alone (spawn to REST answer): p50 %5.1f ms  p99 %5.1f ms",
               percentile(sortedAlone, 0.5) * 1000, percentile(sortedAlone, 0.99) * 1000))
    say(String(format: "  difference of the two distributions (a cross-check, noisy at p99): p50 %.1f ms  p99 %.1f ms",
               (percentile(sortedTotal, 0.5) - percentile(sortedAlone, 0.5)) * 1000,
               (percentile(sortedTotal, 0.99) - percentile(sortedAlone, 0.99)) * 1000))
}

/// Starts the stand-in as the supervisor would (stdin a FIFO held open, as the supervisor holds a pipe: at end
/// of input ChimeraX exits), reads its stdout from a pipe as it comes, and probes its REST port as soon as the
/// port line is there, every 0.5 ms until it answers. Seconds from spawn to the answer.
func startStandInAlone(dir: String, index: Int, stdin: String) throws -> Double {
    let outFifo = dir + "/alone-\(index).out"
    mkfifo(outFifo, 0o600)
    defer { unlink(outFifo) }
    let reader = open(outFifo, O_RDWR | O_NONBLOCK | O_CLOEXEC)
    guard reader >= 0 else { throw BenchError("cannot open a FIFO for the stand-in's output") }
    defer { close(reader) }
    let t0 = monotonic()
    let c = try Child(standInPath(), ["--nogui", "--offscreen", "--cmd", "remotecontrol rest start port 0 json true"],
                      environment: ["PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": dir], directory: dir, outputPath: outFifo, inputPath: stdin)
    defer { c.kill9() }
    var text = [UInt8]()
    var buffer = [UInt8](repeating: 0, count: 4096)
    var port: UInt16?
    while port == nil {
        guard monotonic() - t0 < 30 else { throw BenchError("the stand-in did not start") }
        var pfd = pollfd(fd: reader, events: Int16(POLLIN), revents: 0)
        guard poll(&pfd, 1, 100) > 0 else { continue }
        let n = read(reader, &buffer, buffer.count)
        if n > 0 { text += buffer[0..<n] }
        let s = String(decoding: text, as: UTF8.self)
        if let r = s.range(of: "REST server started on host 127.0.0.1 port "), s[r.upperBound...].contains(where: { !$0.isNumber }) {
            port = UInt16(s[r.upperBound...].prefix { $0.isNumber })
        }
    }
    while RESTClient.get(port: port!, path: "/cmdline.html", timeout: 2)?.status != 200 {
        guard monotonic() - t0 < 30 else { throw BenchError("the stand-in's REST port did not answer") }
        usleep(500)
    }
    return monotonic() - t0
}

/// Program starts, listen(), connect() and sendto() calls on the whole host, with CLOCK_MONOTONIC times in
/// seconds, recorded by `perf record` (root) from `init` to `stop()`. Nil when perf is missing or cannot record.
final class StartTrace {
    struct Event {
        let pid: Int32
        let time: Double
        var filename = ""
    }
    private let perf: String
    private let data: String
    private let recorder: Child

    init?(dir: String) {
        guard let perf = which("perf") else { return nil }
        self.perf = perf
        data = dir + "/start-trace.perf"
        let events = ["sched:sched_process_exec", "syscalls:sys_exit_listen", "syscalls:sys_enter_connect", "syscalls:sys_enter_sendto"]
        // At nice 10: the recorder wakes to drain its buffers, and should not take a CPU from what it measures.
        guard let c = try? Child("/usr/bin/nice", ["-n", "10", perf, "record", "-q", "-a", "-k", "mono"] + events.flatMap { ["-e", $0] } + ["-o", data],
                                 environment: ["PATH": "/usr/bin:/bin"], outputPath: dir + "/perf.log") else { return nil }
        recorder = c
        // perf writes its header once it records; give it up to 5 s.
        let t0 = monotonic()
        while monotonic() - t0 < 5 && (try? FileManager.default.attributesOfItem(atPath: data)[.size] as? Int ?? 0) ?? 0 == 0 && c.isRunning {
            usleep(10_000)
        }
        usleep(200_000)
        guard c.isRunning else { return nil }
    }

    /// Stops recording and reads the events; nil (after saying why) when perf recorded nothing usable.
    func stop() throws -> (execs: [Event], listens: [Event], connects: [Event], sends: [Event])? {
        recorder.signal(SIGINT)
        _ = recorder.wait(timeout: 30)
        let (status, text) = try run(perf, ["script", "-i", data, "-F", "pid,time,event,trace"], timeout: 300)
        guard status == 0 else {
            say("(perf script failed: \(text.prefix(200)))")
            return nil
        }
        var execs: [Event] = [], listens: [Event] = [], connects: [Event] = [], sends: [Event] = []
        for line in text.split(separator: "\n") {
            // "  25918 42713.087661: sched:sched_process_exec: filename=/usr/bin/python3 pid=25918 old_pid=25918"
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            guard fields.count >= 3, let pid = Int32(fields[0]), let time = Double(fields[1].dropLast()) else { continue }
            switch fields[2] {
            case "sched:sched_process_exec:" where fields.count >= 4 && fields[3].hasPrefix("filename="):
                execs.append(Event(pid: pid, time: time, filename: String(fields[3].dropFirst("filename=".count))))
            case "syscalls:sys_exit_listen:": listens.append(Event(pid: pid, time: time))
            case "syscalls:sys_enter_connect:": connects.append(Event(pid: pid, time: time))
            case "syscalls:sys_enter_sendto:": sends.append(Event(pid: pid, time: time))
            default: break
            }
        }
        return (execs, listens, connects, sends)
    }
}

// MARK: Commands

/// Command round trips, one after another: `POST /api/sessions/{id}/commands` through the supervisor (one
/// keep-alive connection, as a browser would) next to `GET /run?command=` sent straight to the stand-in's
/// REST port, alternating. The direct requests run on a thread that has entered the session's network
/// namespace (the port exists only there).
func commandsBench(count: Int) throws {
    say("building the release daemon…")
    let binary = try releaseDaemonBinary()
    let dir = tempDirectory()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let state = dir + "/state"
    let (daemon, port, token, id) = try daemonWithReadySession(binary: binary, dir: dir, extra: ["--command-quota", "100000000"])
    defer {
        daemon.signal(SIGTERM)
        _ = daemon.wait(timeout: 30)
    }
    let auth = [("Authorization", "Bearer \(token)")]
    // The stand-in's port from its log line in the transcript, and its network namespace.
    // (The log block with it is written once the output pauses, which may be just after the session is ready.)
    var standInPort: UInt16?
    let t0 = monotonic()
    while standInPort == nil && monotonic() - t0 < 5 {
        let messages = try httpRequest(port: port, "GET", "/api/sessions/\(id)/messages?limit=200", headers: auth).text
        if let r = messages.range(of: "REST server started on host 127.0.0.1 port ") {
            standInPort = UInt16(messages[r.upperBound...].prefix { $0.isNumber })
        } else {
            usleep(20_000)
        }
    }
    guard let standInPort else { throw BenchError("no port line in the transcript") }
    let pids = ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).compactMap { pid_t($0) }.filter {
        (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\($0)/cwd")) == state + "/sessions/" + id
    }
    guard let standIn = pids.first else { throw BenchError("the stand-in's process was not found") }
    let nsfd = open("/proc/\(standIn)/ns/net", O_RDONLY | O_CLOEXEC)
    guard nsfd >= 0 else { throw BenchError("cannot open the stand-in's network namespace") }
    defer { close(nsfd) }

    let client = try RawClient(port: port)
    let body = #"{"command":"version"}"#
    let request = "POST /api/sessions/\(id)/commands HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer \(token)\r\n"
        + "Content-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)"
    // The direct requests run on their own thread, inside the namespace.
    let work = DispatchSemaphore(value: 0), done = DispatchSemaphore(value: 0)
    let directTime = Mutex<Double>(0)
    let entered = Mutex<Int32>(1)
    let thread = Thread {
        entered.withLock { $0 = cshim_setns_net(nsfd) }
        done.signal()
        while true {
            work.wait()
            let t0 = monotonic()
            let ok = RESTClient.get(port: standInPort, path: "/run?command=version", timeout: 10)?.status == 200
            directTime.withLock { $0 = ok ? monotonic() - t0 : -1 }
            done.signal()
        }
    }
    thread.start()
    done.wait()
    guard entered.withLock({ $0 }) == 0 else { throw BenchError("cannot enter the stand-in's network namespace (root is needed)") }
    func direct() throws -> Double {
        work.signal()
        done.wait()
        let t = directTime.withLock { $0 }
        guard t >= 0 else { throw BenchError("the direct request failed") }
        return t
    }
    func through() throws -> Double {
        let t0 = monotonic()
        try client.send(request)
        guard let resp = client.readResponse(), resp.status == 200 else { throw BenchError("command through the supervisor failed") }
        return monotonic() - t0
    }
    for _ in 0..<50 {
        _ = try direct()
        _ = try through()
    }
    var a: [Double] = [], b: [Double] = []
    for _ in 0..<count {
        a.append(try direct())
        b.append(try through())
    }
    a.sort()
    b.sort()
    say("command round trip (`version`), \(count) of each, alternating:")
    say(String(format: "  through the supervisor:       p50 %.3f ms  p99 %.3f ms", percentile(b, 0.5) * 1000, percentile(b, 0.99) * 1000))
    say(String(format: "  straight to the stand-in:     p50 %.3f ms  p99 %.3f ms", percentile(a, 0.5) * 1000, percentile(a, 0.99) * 1000))
    say(String(format: "  overhead:                     p50 %.3f ms  p99 %.3f ms   (target < 1 ms at p99)",
               (percentile(b, 0.5) - percentile(a, 0.5)) * 1000, (percentile(b, 0.99) - percentile(a, 0.99)) * 1000))
}

// MARK: Store

/// The user record the crash test expects for `id` (its content is a function of the id, so a test can tell a
/// whole record from a damaged one).
func writerUser(_ id: String, _ n: Int) -> User {
    User(id: id, username: id, passwordHash: String(repeating: "h\(id.count)", count: 1 + n % 40), isAdmin: n % 2 == 0, createdAt: Int64(n))
}

/// `store-writer DIR WRITERS COMPACT_BYTES`: writes as fast as it can from WRITERS threads and prints
/// `ack ID` after each acknowledged write (one write(2) per line, so a kill never splits one). Every fifth
/// write is a session record with two transcript entries in one atomic write. Runs until killed.
func storeWriter(_ dir: String, writers: Int, compactBytes: Int) throws {
    var o = Store.Options()
    o.compactionBytes = compactBytes
    let store = try Store(stateDirectory: dir, options: o)
    let prefix = String(UInt32.random(in: 0...UInt32.max), radix: 36)
    for w in 0..<writers {
        let t = Thread {
            var n = 0
            while true {
                n += 1
                let id = "\(prefix)-\(w)-\(n)"
                let mutations: [Mutation]
                if n % 5 == 0 {
                    let s = SessionRecord(id: id, name: "s", ownerType: "user", ownerID: "u", status: "ready", createdAt: Int64(n),
                                          lastActivity: Int64(n), expiresAt: Int64(n) + 900, idleTimeoutSeconds: 900, lifetimeEndsAt: Int64(n) + 9000)
                    mutations = [.putSession(s),
                                 .appendTranscript(TranscriptEntry(sessionID: id, order: 1, timestamp: Int64(n), kind: "command", level: "info", text: "open 1abc")),
                                 .appendTranscript(TranscriptEntry(sessionID: id, order: 2, timestamp: Int64(n), kind: "reply", level: "info", text: "ok"))]
                } else {
                    mutations = [.putUser(writerUser(id, n))]
                }
                do {
                    try store.write(mutations)
                } catch {
                    continue
                }
                let line = Array("ack \(id) \(n)\n".utf8)
                _ = line.withUnsafeBytes { Glibc.write(1, $0.baseAddress, $0.count) }
            }
        }
        t.start()
    }
    while true { sleep(60) }
}

func percentile(_ sorted: [Double], _ p: Double) -> Double {
    sorted.isEmpty ? 0 : sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))]
}

/// Durable writes per second and p99 latency with 1 and 64 writers; recovery time of 100,000 records.
func storeBench(seconds: Int, records: Int) throws {
    let base = tempDirectory()
    defer { try? FileManager.default.removeItem(atPath: base) }
    say("store in \(base) (filesystem of /tmp); each write is one user record (~120 bytes), acknowledged after fdatasync")
    for writers in [1, 64] {
        let dir = base + "/w\(writers)"
        let store = try Store(stateDirectory: dir)
        let latencies = Mutex<[Double]>([])
        let stop = Atomic<Bool>(false)
        let finished = DispatchSemaphore(value: 0)
        let t0 = monotonic()
        for w in 0..<writers {
            Thread {
                var mine: [Double] = []
                var n = 0
                while !stop.load(ordering: .relaxed) {
                    n += 1
                    let id = "w\(w)-\(n)"
                    let s = monotonic()
                    try? store.write([.putUser(writerUser(id, n))])
                    mine.append(monotonic() - s)
                }
                latencies.withLock { $0.append(contentsOf: mine) }
                finished.signal()
            }.start()
        }
        sleep(UInt32(seconds))
        stop.store(true, ordering: .relaxed)
        for _ in 0..<writers { finished.wait() }
        let elapsed = monotonic() - t0
        let all = latencies.withLock { $0 }.sorted()
        say(String(format: "  %2d writer%@: %8.0f durable writes/s   p50 %.3f ms   p99 %.3f ms   (%d writes in %.1f s)",
                     writers, writers == 1 ? " " : "s", Double(all.count) / elapsed, percentile(all, 0.5) * 1000, percentile(all, 0.99) * 1000, all.count, elapsed))
        store.close()
    }
    // Recovery: `records` records written in big batches, then reopened (log replay), then compacted into a
    // snapshot and reopened again (snapshot load).
    let dir = base + "/recovery"
    do {
        var o = Store.Options()
        o.compactionBytes = Int.max
        let store = try Store(stateDirectory: dir, options: o)
        var batch: [Mutation] = []
        for n in 1...records {
            batch.append(.putUser(writerUser("r-\(n)", n)))
            if batch.count == 1000 {
                try store.write(batch)
                batch = []
            }
        }
        if !batch.isEmpty { try store.write(batch) }
        store.close()
    }
    var t = monotonic()
    var store = try Store(stateDirectory: dir)
    var took = monotonic() - t
    let count = store.state.users.count
    say(String(format: "  recovery of %d records from the log: %.3f s  (%@)", count, took, store.recoveryReport))
    store.close()
    // Force a snapshot: reopen with a tiny compaction threshold and one write.
    var o = Store.Options()
    o.compactionBytes = 1
    store = try Store(stateDirectory: dir, options: o)
    try store.write([.noop])
    store.close()
    t = monotonic()
    store = try Store(stateDirectory: dir)
    took = monotonic() - t
    say(String(format: "  recovery of %d records from a snapshot: %.3f s  (%@)", store.state.users.count, took, store.recoveryReport))
    store.close()
}

func monotonic() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}


let args = Array(CommandLine.arguments.dropFirst())
let command = args.first ?? "help"
func option(_ name: String, _ def: Int, in args: [String]) -> Int {
    if let i = args.firstIndex(of: name), i + 1 < args.count, let v = Int(args[i + 1]) { return v }
    return def
}
do {
    switch command {
    case "http":
        try httpBench(connections: option("--connections", 64, in: args), duration: option("--duration", 5, in: args),
                          rounds: option("--rounds", 3, in: args), idle: option("--idle", 10_000, in: args))
    case "commands":
        try commandsBench(count: option("--count", 500, in: args))
    case "sessions":
        try sessionsBench(connections: option("--connections", 64, in: args), duration: option("--duration", 5, in: args),
                              rounds: option("--rounds", 3, in: args), count: option("--sessions", 100, in: args))
    case "store":
        try storeBench(seconds: option("--duration", 5, in: args), records: option("--records", 100_000, in: args))
    case "store-writer":
        guard args.count >= 4, let w = Int(args[2]), let c = Int(args[3]) else { throw BenchError("usage: store-writer DIR WRITERS COMPACT_BYTES") }
        try storeWriter(args[1], writers: w, compactBytes: c)
    default:
        say("""
            usage: chimerax-supervisor-bench http [--connections 64] [--duration 5] [--rounds 3] [--idle 10000]
                   chimerax-supervisor-bench sessions [--connections 64] [--duration 5] [--rounds 3] [--sessions 100]
                   chimerax-supervisor-bench commands [--count 500]
                   chimerax-supervisor-bench store [--duration 5] [--records 100000]
                   chimerax-supervisor-bench store-writer DIR WRITERS COMPACT_BYTES   (the crash test's writer)
            """)
    }
} catch {
    FileHandle.standardError.write(Data("bench: \(error)\n".utf8))
    exit(1)
}
