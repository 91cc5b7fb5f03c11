import Foundation
import Glibc
import TestSupport
import Testing

/// Slow clients, limits, descriptor exhaustion.
@Suite("Robustness", .serialized)
struct RobustnessTests {
    @Test func slowClientDoesNotDelayOthersAndTimesOut() throws {
        let d = try DaemonProcess(["--header-timeout", "2"])
        let slow = try RawClient(port: d.port)
        try slow.send("GET /healthz HTTP/1.1\r\nHo")
        // While the slow head is pending, 50 other requests on other connections are all answered.
        for _ in 0..<50 {
            let c = try RawClient(port: d.port)
            try c.send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            let r = try #require(c.readResponse(timeout: 5))
            #expect(r.status == 200)
        }
        #expect(slow.pendingBytes.isEmpty && !slow.closedByPeer, "the slow client is still waiting on its own head")
        // And the slow one is cut off with 408 by the header timeout.
        let r = try #require(slow.readResponse(timeout: 10))
        #expect(r.status == 408)
        #expect(slow.waitForClose())
    }

    @Test func idleKeepAliveConnectionIsClosedAfterTheTimeout() throws {
        let d = try DaemonProcess(["--keepalive-timeout", "1"])
        let c = try RawClient(port: d.port)
        try c.send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        #expect(c.readResponse()?.status == 200)
        #expect(c.waitForClose(timeout: 10))
    }

    @Test func stalledBodyIs408() throws {
        let d = try DaemonProcess(["--body-timeout", "1"])
        let c = try RawClient(port: d.port)
        try c.send("GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
        let r = try #require(c.readResponse(timeout: 10))
        #expect(r.status == 408)
    }

    @Test func connectionLimitPausesAcceptingUntilASlotFrees() throws {
        let d = try DaemonProcess(["--max-connections", "3"])
        var held: [RawClient] = []
        for _ in 0..<3 {
            let c = try RawClient(port: d.port)
            try c.send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            #expect(c.readResponse()?.status == 200)
            held.append(c)
        }
        let waiting = try RawClient(port: d.port)  // completes in the kernel backlog
        try waiting.send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        #expect(waiting.readResponse(timeout: 0.5) == nil, "a fourth connection was served past the limit")
        held.removeFirst()  // closes one
        let r = try #require(waiting.readResponse(timeout: 10))
        #expect(r.status == 200)
    }

    @Test func descriptorExhaustionDoesNotSpinTheLoop() throws {
        // A hard descriptor limit of 64: the daemon cannot raise it, and accept() meets EMFILE.
        let dir = DaemonProcess.makeTempDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let log = dir + "/emfile.log"
        let p = try Child("/usr/bin/prlimit", ["--nofile=64:64", "--", DaemonProcess.binary, "serve", "--listen", "127.0.0.1:0",
                                               "--socket", "none", "--state-dir", dir + "/state", "--event-loops", "1"],
                          environment: cleanEnvironment(), outputPath: log)
        defer { p.kill9() }
        var port: UInt16 = 0
        for _ in 0..<500 where port == 0 {
            usleep(20_000)
            let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
            if let line = text.split(separator: "\n").first(where: { $0.contains("kind=tcp") }), let r = line.range(of: "port=") {
                port = UInt16(line[r.upperBound...].prefix { $0.isNumber }) ?? 0
            }
        }
        #expect(port != 0)
        let first = try RawClient(port: port)
        var clients: [RawClient] = []
        for _ in 0..<100 { clients.append(try RawClient(port: port)) }
        usleep(300_000)
        let before = cpuSeconds(p.pid)
        usleep(1_000_000)
        let used = cpuSeconds(p.pid) - before
        #expect(used < 0.5, "the loop spun at EMFILE: \(used) CPU seconds in 1 s")
        // The connection accepted before exhaustion still works, and the log says why accepting paused.
        try first.send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        #expect(first.readResponse()?.status == 200)
        #expect(((try? String(contentsOfFile: log, encoding: .utf8)) ?? "").contains("pausing accept"))
        clients.removeAll()
    }

    func cpuSeconds(_ pid: Int32) -> Double {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8), let close = stat.lastIndex(of: ")") else { return 0 }
        let f = stat[stat.index(after: close)...].split(separator: " ")
        return ((Double(f[11]) ?? 0) + (Double(f[12]) ?? 0)) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }
}
