import Foundation
import Testing
@testable import SupervisorConfig

@Suite("Configuration")
struct ConfigurationTests {
    func load(_ args: [String], env: [String: String] = [:]) throws(ConfigError) -> Configuration {
        try Configuration.load(arguments: args, environment: env, currentDirectory: "/srv", cpuCount: 2)
    }

    func tempFile(_ text: String) -> String {
        let path = NSTemporaryDirectory() + "cxs-config-\(UUID().uuidString).conf"
        _ = FileManager.default.createFile(atPath: path, contents: Data(text.utf8))
        return path
    }

    @Test func defaultsMatchTheContract() throws {
        let c = try load([])
        #expect(c.listen == ListenAddress(host: "127.0.0.1", port: 8731))
        #expect(c.socketPath == "/srv/.chimerax-supervisor/api.sock")
        #expect(c.stateDir == "/srv/.chimerax-supervisor/state")
        #expect(c.workDir == "/srv/.chimerax-supervisor/state/sessions")
        #expect(c.idleTimeout == 900 && c.maxLifetime == 28800 && c.startTimeout == 120 && c.stopGrace == 10)
        #expect(c.maxSessions == 64 && c.maxSessionsPerUser == 4)
        #expect(c.uploadMaxBytes == 268_435_456 && c.memoryMax == 4_294_967_296 && c.cpuQuota == 200 && c.tasksMax == 512)
        #expect(c.chimeraxNice == 5)
        #expect(c.socketMode == 0o660 && c.backend == "auto" && c.poolSize == 0 && !c.allowAnonymous)
        #expect(c.cookieSecure == false, "loopback listener: cookies not Secure by default")
        #expect(c.source(of: "idle-timeout") == .defaultValue)
    }

    @Test func systemdDirectoriesAreUsedWhenSet() throws {
        let c = try load([], env: ["RUNTIME_DIRECTORY": "/run/cxs", "STATE_DIRECTORY": "/var/lib/cxs:/var/lib/other"])
        #expect(c.socketPath == "/run/cxs/api.sock")
        #expect(c.stateDir == "/var/lib/cxs")
        let x = try load([], env: ["XDG_RUNTIME_DIR": "/run/user/1000"])
        #expect(x.socketPath == "/run/user/1000/chimerax-supervisor/api.sock")
    }

    @Test func flagsWinOverEnvironmentWhichWinsOverFile() throws {
        let file = tempFile("idle-timeout = 100\nmax_lifetime = 200\nstop-grace = 3 # comment\n# full comment\n")
        let env = ["CHIMERAX_SUPERVISOR_IDLE_TIMEOUT": "150", "CHIMERAX_SUPERVISOR_MAX_LIFETIME": "250"]
        let c = try load(["--config", file, "--idle-timeout=175"], env: env)
        #expect(c.idleTimeout == 175)
        #expect(c.source(of: "idle-timeout") == .flag("--idle-timeout"))
        #expect(c.maxLifetime == 250)
        #expect(c.source(of: "max-lifetime") == .environment("CHIMERAX_SUPERVISOR_MAX_LIFETIME"))
        #expect(c.stopGrace == 3)
        #expect(c.source(of: "stop-grace") == .file(path: file, line: 3))
    }

    @Test func chimeraxNiceIsZeroToNineteen() throws {
        #expect(try load(["--chimerax-nice", "0"]).chimeraxNice == 0)
        #expect(try load([], env: ["CHIMERAX_SUPERVISOR_CHIMERAX_NICE": "19"]).chimeraxNice == 19)
        for bad in ["20", "-1", "five"] {
            #expect(throws: ConfigError.self, "\(bad)") { try load(["--chimerax-nice", bad]) }
        }
    }

    @Test func sizesArePowersOf1024() throws {
        #expect(try ValueParsers.size("4G") == 4_294_967_296)
        #expect(try ValueParsers.size("512M") == 536_870_912)
        #expect(try ValueParsers.size("1K") == 1024)
        #expect(try ValueParsers.size("2T") == 2 << 40)
        #expect(try ValueParsers.size("123") == 123)
        #expect(throws: ConfigError.self) { try ValueParsers.size("4X") }
        #expect(throws: ConfigError.self) { try ValueParsers.size("-1G") }
        #expect(throws: ConfigError.self) { try ValueParsers.size("99999999999T") }
    }

    @Test func listenAcceptsIPv4IPv6AndNone() throws {
        #expect(try ValueParsers.listen("0.0.0.0:80") == ListenAddress(host: "0.0.0.0", port: 80))
        #expect(try ValueParsers.listen("[::1]:0") == ListenAddress(host: "::1", port: 0))
        #expect(try ValueParsers.listen("none") == nil)
        for bad in ["8731", "host:1", "1.2.3.4:70000", "[::1:80", "1.2.3:80", ":80"] {
            #expect(throws: ConfigError.self, "\(bad)") { try ValueParsers.listen(bad) }
        }
    }

    @Test func cookieSecureDefaultsOnForANonLoopbackListener() throws {
        #expect(try load(["--listen", "0.0.0.0:8731"]).cookieSecure)
        #expect(try load(["--listen", "0.0.0.0:8731", "--no-cookie-secure"]).cookieSecure == false)
    }

    @Test func corsOriginRepeatsAndIsValidated() throws {
        let c = try load(["--cors-origin", "https://a.example", "--cors-origin=http://b.example:8080"])
        #expect(c.corsOrigins == ["https://a.example", "http://b.example:8080"])
        #expect(throws: ConfigError.self) { try load(["--cors-origin", "https://a.example/path"]) }
    }

    @Test func errorsNameTheOptionAndTheSource() {
        do {
            _ = try load([], env: ["CHIMERAX_SUPERVISOR_MEMORY_MAX": "lots"])
            Issue.record("expected an error")
        } catch {
            #expect(error.message.contains("--memory-max"))
            #expect(error.message.contains("CHIMERAX_SUPERVISOR_MEMORY_MAX"))
        }
        let file = tempFile("listen = 1.2.3.4:80\nbogus = 1\n")
        do {
            _ = try load(["--config", file])
            Issue.record("expected an error")
        } catch {
            #expect(error.message.contains(":2: unknown option 'bogus'"))
        }
        #expect(throws: ConfigError.self) { try load(["--no-such-flag"]) }
        #expect(throws: ConfigError.self) { try load(["--idle-timeout"]) }
        #expect(throws: ConfigError.self) { try load(["--idle-timeout", "0"]) }
        #expect(throws: ConfigError.self) { try load(["--backend", "docker"]) }
        #expect(throws: ConfigError.self) { try load(["--socket-mode", "999"]) }
        #expect(throws: ConfigError.self) { try load(["--socket-group", "no-such-group-here"]) }
        #expect(throws: ConfigError.self) { try load(["--chimerax", "/nonexistent/ChimeraX"]) }
        #expect(throws: ConfigError.self) { try load(["--config", "/nonexistent.conf"]) }
        #expect(throws: ConfigError.self) { try load(["stray"]) }
    }

    @Test func unknownEnvironmentVariablesAreWarnedAbout() throws {
        let c = try load([], env: ["CHIMERAX_SUPERVISOR_IDLE_TIMOUT": "5"])
        #expect(c.warnings.contains { $0.contains("CHIMERAX_SUPERVISOR_IDLE_TIMOUT") })
    }

    @Test func printShowsEveryOptionWithItsSource() throws {
        let c = try load(["--max-sessions", "9"])
        let text = c.printable()
        for o in optionTable { #expect(text.contains("\(o.name) = "), "\(o.name) missing") }
        #expect(text.contains("max-sessions = 9") && text.contains("# flag --max-sessions"))
    }
}
