import Foundation
import Glibc
import TestSupport
import Testing

/// Signals, systemd notification, socket activation, configuration errors.
@Suite("Lifecycle", .serialized)
struct LifecycleTests {
    @Test func sigtermAnswersTheRequestInFlightAndExitsZero() throws {
        let d = try DaemonProcess()
        let idle = try RawClient(port: d.port)
        try idle.send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        #expect(idle.readResponse()?.status == 200)
        let inFlight = try RawClient(port: d.port)
        try inFlight.send("GET /healthz HTTP/1.1\r\nHost: x\r\n")
        usleep(200_000)
        d.signal(SIGTERM)
        #expect(idle.waitForClose(timeout: 5), "idle keep-alive connection closed by the drain")
        try inFlight.send("X-Late: yes\r\n\r\n")
        let r = try #require(inFlight.readResponse())
        #expect(r.status == 200)
        #expect(r.header("Connection") == "close")
        #expect(d.waitForExit() == 0)
        #expect(d.log.contains("stopping: draining connections"))
        // Nothing listens any more.
        #expect(throws: TestFailure.self) { try RawClient(port: d.port) }
    }

    @Test func notifySocketReceivesReadyStatusWatchdogReloadingAndStopping() throws {
        let dir = DaemonProcess.makeTempDirectory()
        let path = dir + "/notify.sock"
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        defer { close(fd) }
        var sa = sockaddr_un()
        sa.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &sa.sun_path) { raw in for (i, b) in path.utf8.enumerated() { raw[i] = b } }
        let b = withUnsafePointer(to: &sa) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) } }
        #expect(b == 0)
        let config = dir + "/d.conf"
        _ = FileManager.default.createFile(atPath: config, contents: Data("log-level = info\n".utf8))
        let d = try DaemonProcess(["--config", config], environment: ["NOTIFY_SOCKET": path, "WATCHDOG_USEC": "400000"], directory: dir)
        var messages: [String] = []
        func receive(until needle: String, timeout: Double = 10) -> Bool {
            let deadline = Date().addingTimeInterval(timeout)
            while Date() < deadline {
                if messages.contains(where: { $0.contains(needle) }) { return true }
                var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                if poll(&p, 1, 200) > 0 {
                    var buf = [UInt8](repeating: 0, count: 4096)
                    let n = recv(fd, &buf, buf.count, 0)
                    if n > 0 { messages.append(String(decoding: buf[..<n], as: UTF8.self)) }
                }
            }
            return false
        }
        #expect(receive(until: "READY=1"))
        #expect(messages.first { $0.contains("READY=1") }?.contains("STATUS=Listening on") == true)
        #expect(receive(until: "WATCHDOG=1"), "watchdog pings while the loops turn")
        _ = FileManager.default.createFile(atPath: config, contents: Data("log-level = debug\nidle-timeout = 60\n".utf8))
        d.signal(SIGHUP)
        #expect(receive(until: "RELOADING=1"))
        #expect(messages.first { $0.contains("RELOADING=1") }?.contains("MONOTONIC_USEC=") == true)
        #expect(receive(until: "Configuration reloaded"))
        #expect(d.log.contains("configuration reloaded"))
        #expect(d.log.contains("changed=idle-timeout,log-level") || d.log.contains("changed=log-level,idle-timeout"))
        d.signal(SIGTERM)
        #expect(receive(until: "STOPPING=1"))
        #expect(d.waitForExit() == 0)
    }

    @Test func socketActivationReplacesTheDefaultListeners() throws {
        let dir = DaemonProcess.makeTempDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let port = freePort()
        let sock = dir + "/activated.sock"
        let log = dir + "/activate.log"
        let p = try Child("/usr/bin/systemd-socket-activate",
                          ["-l", "127.0.0.1:\(port)", "-l", sock, "--fdname=http:api",
                           DaemonProcess.binary, "serve", "--state-dir", dir + "/state"],
                          environment: cleanEnvironment(), directory: dir, outputPath: log)
        defer { p.kill9() }
        // The first connection starts the daemon with both sockets passed.
        var answered = ""
        for _ in 0..<100 where answered.isEmpty {
            usleep(50_000)
            answered = (try? curl(["-o", "/dev/null", "-w", "%{http_code}", "http://127.0.0.1:\(port)/healthz"]).stdout) ?? ""
            if answered == "000" { answered = "" }
        }
        #expect(answered == "200")
        let viaUnix = try curl(["-o", "/dev/null", "-w", "%{http_code}", "--unix-socket", sock, "http://localhost/healthz"])
        #expect(viaUnix.stdout == "200")
        let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
        #expect(text.components(separatedBy: "msg=listening").count - 1 == 2, "exactly the two passed sockets:\n\(text)")
        #expect(!text.contains("port=8731"), "no default listener besides the passed ones")
        #expect(!FileManager.default.fileExists(atPath: dir + "/.chimerax-supervisor/api.sock"))
    }

    @Test func badConfigurationExitsTwoNamingTheOptionAndBindsNothing() throws {
        let dir = DaemonProcess.makeTempDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let sock = dir + "/api.sock"
        let state = dir + "/state"
        let cases: [([String], [String: String], String)] = [
            (["--idle-timeout", "soon"], [:], "--idle-timeout"),
            (["--listen", "localhost"], [:], "--listen"),
            ([], ["CHIMERAX_SUPERVISOR_MEMORY_MAX": "4Q"], "CHIMERAX_SUPERVISOR_MEMORY_MAX"),
            (["--frobnicate"], [:], "--frobnicate"),
            (["--chimerax", "/no/such/ChimeraX"], [:], "--chimerax"),
            (["--command-allow", "view", "--command-allow", "alias"], [:], "--command-allow"),
            (["--command-allow", "View!"], [:], "--command-allow"),
        ]
        for (args, env, needle) in cases {
            var e = ProcessInfo.processInfo.environment
            for (k, v) in env { e[k] = v }
            let r = try runProgram(DaemonProcess.binary, ["serve", "--socket", sock, "--state-dir", state, "--listen", "127.0.0.1:0"] + args,
                                   environment: e)
            #expect(r.status == 2, "\(args) \(env): exit \(r.status)")
            #expect(r.stderr.contains(needle), "message should name \(needle): \(r.stderr)")
            #expect(r.stderr.split(separator: "\n").count == 1, "one clear line: \(r.stderr)")
            #expect(!FileManager.default.fileExists(atPath: sock), "nothing bound")
            #expect(!FileManager.default.fileExists(atPath: state), "nothing written")
        }
    }

    @Test func configPrintShowsValuesAndSources() throws {
        var env = ProcessInfo.processInfo.environment
        env["CHIMERAX_SUPERVISOR_MAX_SESSIONS"] = "7"
        let r = try runProgram(DaemonProcess.binary, ["config", "print", "--idle-timeout", "33"], environment: env)
        #expect(r.status == 0)
        #expect(r.stdout.contains("idle-timeout = 33"))
        #expect(r.stdout.contains("# flag --idle-timeout"))
        #expect(r.stdout.contains("max-sessions = 7"))
        #expect(r.stdout.contains("# environment CHIMERAX_SUPERVISOR_MAX_SESSIONS"))
        let j = try runProgram(DaemonProcess.binary, ["config", "print", "--json"], environment: env)
        let parsed = try JSONSerialization.jsonObject(with: Data(j.stdout.utf8)) as? [[String: String]]
        #expect(parsed?.first { $0["name"] == "max-sessions" }?["value"] == "7")
    }

    func freePort() -> UInt16 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var sa = sockaddr_in()
        sa.sin_family = sa_family_t(AF_INET)
        sa.sin_addr.s_addr = inet_addr("127.0.0.1")
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafePointer(to: &sa) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) } }
        _ = withUnsafeMutablePointer(to: &sa) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
        return UInt16(bigEndian: sa.sin_port)
    }
}
