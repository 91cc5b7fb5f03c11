import Foundation
import Glibc
import TestSupport
import Testing

/// The stand-in ChimeraX of this repository.
let standIn = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    .appendingPathComponent("Fixtures/chimerax-standin/ChimeraX").path

/// A daemon with the stand-in, a user "ann" (and "ben") logged in.
final class SessionFixture {
    let state: String
    var daemon: DaemonProcess
    let ann: String
    let ben: String
    var port: UInt16 { daemon.port }

    init(_ extra: [String] = [], environment: [String: String] = [:]) throws {
        state = DaemonProcess.makeTempDirectory() + "/state"
        for u in ["ann", "ben"] {
            let r = try runProgram(DaemonProcess.binary, ["users", "add", u, "--password-stdin", "--state-dir", state],
                                   environment: cleanEnvironment(), stdin: "\(u)-password\n")
            guard r.status == 0 else { throw TestFailure(r.stderr) }
        }
        daemon = try DaemonProcess(["--state-dir", state, "--chimerax", standIn] + extra, environment: environment)
        func login(_ u: String, _ port: UInt16) throws -> String {
            let r = try httpRequest(port: port, "POST", "/api/v1/auth/login", body: #"{"username":"\#(u)","password":"\#(u)-password"}"#)
            guard let t = r.json["token"] as? String else { throw TestFailure("login \(u): \(r.text)") }
            return t
        }
        ann = try login("ann", daemon.port)
        ben = try login("ben", daemon.port)
    }

    func call(_ method: String, _ path: String, as token: String? = nil, body: String? = nil) throws -> RawResponse {
        try httpRequest(port: port, method, path, headers: (token ?? ann).isEmpty ? [] : [("Authorization", "Bearer \(token ?? ann)")], body: body)
    }

    func create(_ body: String = "{}", as token: String? = nil) throws -> [String: Any] {
        let r = try call("POST", "/api/sessions", as: token, body: body)
        guard r.status == 201 else { throw TestFailure("create: \(r.status) \(r.text)") }
        return r.json
    }

    func waitFor(_ id: String, status: String, timeout: Double = 20) throws -> [String: Any] {
        let deadline = Date().addingTimeInterval(timeout)
        var last: [String: Any] = [:]
        while Date() < deadline {
            last = try call("GET", "/api/sessions/\(id)").json
            if last["status"] as? String == status { return last }
            usleep(50_000)
        }
        throw TestFailure("session \(id) never became \(status): \(last)")
    }

    /// Processes whose command line mentions the stand-in and this daemon's state directory's sessions.
    func standIns() -> [pid_t] {
        ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).compactMap { pid_t($0) }.filter { p in
            guard let cwd = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(p)/cwd") else { return false }
            return cwd.hasPrefix(state + "/sessions/")
        }
    }
}

@Suite("ChimeraX sessions", .serialized)
struct SessionTests {
    @Test func createByPDBIdBecomesReadyAndDeleteEndsIt() throws {
        let f = try SessionFixture()
        let r = try f.call("POST", "/api/sessions", body: #"{"name":"first","pdb_id":"PDB_00001ABC","metadata":{"k":[1,2]},"idle_timeout_s":600}"#)
        #expect(r.status == 201)
        let id = try #require(r.json["id"] as? String)
        #expect(r.header("Location") == "/api/sessions/\(id)")
        #expect(r.json["status"] as? String == "starting")
        #expect((r.json["owner"] as? [String: String])?["type"] == "user")
        #expect(((r.json["structure"] as? [String: Any])?["pdb_id"] as? String) == "1abc")
        #expect(((r.json["structure"] as? [String: Any])?["open_status"] as? String) == "pending")
        #expect((r.json["metadata"] as? [String: [Int]]) == ["k": [1, 2]])
        let ready = try f.call("GET", "/api/sessions/\(id)?wait=ready&timeout=20")
        #expect(["ready", "busy"].contains(ready.json["status"] as? String ?? ""), "\(ready.text)")
        #expect(ready.json["ready_at"] as? String != nil)
        let res = try #require(ready.json["resources"] as? [String: Any])
        #expect((res["memory_bytes"] as? Int ?? 0) > 1_000_000 && (res["tasks"] as? Int ?? 0) >= 1, "\(res)")
        #expect((res["limits"] as? [String: Int])?["memory_bytes"] == 4 << 30)
        #expect(!f.standIns().isEmpty)
        let pid = f.standIns()[0]
        let limits = try String(contentsOfFile: "/proc/\(pid)/limits", encoding: .utf8)
        #expect(limits.contains { _ in true } && limits.split(separator: "\n").contains { $0.hasPrefix("Max core file size") && $0.contains(" 0 ") })
        // ChimeraX runs at --chimerax-nice (default 5), the daemon at its own (field 19 of stat, after the ")").
        func nice(_ p: Int32) -> String? {
            let stat = (try? String(contentsOfFile: "/proc/\(p)/stat", encoding: .utf8)) ?? ""
            return stat.split(separator: ")").last?.split(separator: " ").dropFirst(16).first.map(String.init)
        }
        #expect(nice(pid) == "5" && nice(f.daemon.pid) == "0", "\(String(describing: nice(pid))) \(String(describing: nice(f.daemon.pid)))")
        let metrics = try curl(["--unix-socket", f.daemon.socketPath, "http://localhost/metrics"]).stdout
        #expect(metrics.contains("chimerax_supervisor_sessions_created_total 1"))
        #expect(metrics.contains("chimerax_supervisor_spawn_seconds_count 1"))
        let list = try f.call("GET", "/api/sessions?status=ready&sort_by=name&sort_order=asc")
        #expect(list.status == 200 && list.json["limit"] as? Int == 50)
        let del = try f.call("DELETE", "/api/sessions/\(id)")
        #expect(del.status == 200 && del.json["status"] as? String == "terminated" && del.json["termination_reason"] as? String == "user_request")
        #expect(del.json["documents_removed"] as? Int != nil)
        #expect(((del.json["resources"] as? [String: Any])?["memory_peak_bytes"] as? Int ?? 0) > 1_000_000, "peak memory kept in the final record")
        let after = try curl(["--unix-socket", f.daemon.socketPath, "http://localhost/metrics"]).stdout
        #expect(after.contains(#"chimerax_supervisor_session_terminations_total{reason="user_request"} 1"#))
        #expect(after.contains(#"chimerax_supervisor_sessions{status="terminated"} 1"#))
        #expect(f.standIns().isEmpty, "ChimeraX still runs after DELETE")
        let again = try f.call("DELETE", "/api/sessions/\(id)")
        #expect(again.status == 200 && again.json["ended_at"] as? String == del.json["ended_at"] as? String, "DELETE is idempotent")
        #expect(try f.call("PUT", "/api/sessions/\(id)/heartbeat").status == 410)
        #expect(!FileManager.default.fileExists(atPath: f.state + "/sessions/\(id)"), "the session directory is removed")
    }

    @Test func uploadsAreCheckedByNameAndContentSizeLimitedAndOpened() throws {
        let f = try SessionFixture(["--upload-max-bytes", "4096"])
        let dir = DaemonProcess.makeTempDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let pdb = "HEADER    TEST\nATOM      1  N   THR A   1      17.047  14.099   3.625  1.00 13.79           N\nEND\n"
        try pdb.write(toFile: dir + "/crambin.pdb", atomically: true, encoding: .utf8)
        try "data_1ABC\n_entry.id 1ABC\n".write(toFile: dir + "/fake.pdb", atomically: true, encoding: .utf8)
        try "print('hi')\n".write(toFile: dir + "/evil.py", atomically: true, encoding: .utf8)
        try String(repeating: "ATOM  \n", count: 1000).write(toFile: dir + "/big.pdb", atomically: true, encoding: .utf8)
        func upload(_ file: String, extra: [String] = []) throws -> (Int, [String: Any]) {
            let r = try curl(["-H", "Authorization: Bearer \(f.ann)", "-F", "structure=@\(dir)/\(file)", "-F", "name=up"] + extra
                             + ["-w", "\n%{http_code}", "http://127.0.0.1:\(f.port)/api/sessions"])
            let lines = r.stdout.split(separator: "\n")
            let body = (try? JSONSerialization.jsonObject(with: Data(lines.dropLast().joined(separator: "\n").utf8))) as? [String: Any] ?? [:]
            return (Int(lines.last ?? "") ?? 0, body)
        }
        let (status, ok) = try upload("crambin.pdb")
        #expect(status == 201, "\(ok)")
        let s = try #require(ok["structure"] as? [String: Any])
        #expect(s["source"] as? String == "upload" && s["filename"] as? String == "crambin.pdb" && s["format"] as? String == "pdb")
        #expect(s["size_bytes"] as? Int == pdb.utf8.count)
        let id = try #require(ok["id"] as? String)
        _ = try f.waitFor(id, status: "ready")
        #expect(FileManager.default.fileExists(atPath: f.state + "/sessions/\(id)/upload.pdb"), "stored under a generated name")
        let opened = try f.call("GET", "/api/sessions/\(id)")
        var tries = 0
        var structure = opened.json["structure"] as? [String: Any]
        while structure?["open_status"] as? String == "pending" && tries < 100 {
            usleep(50_000)
            tries += 1
            structure = try f.call("GET", "/api/sessions/\(id)").json["structure"] as? [String: Any]
        }
        #expect(structure?["open_status"] as? String == "opened" && structure?["open_error"] is NSNull, "\(String(describing: structure))")
        #expect(try upload("fake.pdb").0 == 415)
        #expect(try upload("evil.py").0 == 415)
        #expect(try upload("big.pdb").0 == 413)
        #expect(try upload("crambin.pdb", extra: ["-F", "pdb_id=1abc"]).0 == 400)
        #expect(try upload("crambin.pdb", extra: ["-F", "shell=1"]).0 == 400)
        // Nothing of the refused uploads stays behind.
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: f.state + "/sessions").filter { $0.hasPrefix(".incoming") }
        #expect(leftovers.isEmpty)
        #expect(try f.call("GET", "/api/sessions").json["total_count"] as? Int == 1)
    }

    @Test func badInputIsRefusedAndChangesNothing() throws {
        let f = try SessionFixture()
        for body in [#"{"pdb_id":"abcd"}"#, #"{"pdb_id":"1abc; exit"}"#, #"{"pdb_id":"pdb_1abc"}"#, #"{"idle_timeout_s":0}"#, #"{"idle_timeout_s":1e9}"#,
                     #"{"metadata":[1]}"#, #"{"name":5}"#, #"{"frobnicate":true}"#, "[]", "{"] {
            let r = try f.call("POST", "/api/sessions", body: body)
            #expect(r.status == 400 && r.json["code"] as? String == "validation_error", "\(body): \(r.text)")
        }
        let upload = try httpRequest(port: f.port, "POST", "/api/sessions", headers: [("Authorization", "Bearer \(f.ann)"),
                                                                                        ("Content-Type", "multipart/form-data; boundary=x")], body: "not multipart at all")
        #expect(upload.status == 400 && upload.json["code"] as? String == "validation_error")
        let noBoundary = try httpRequest(port: f.port, "POST", "/api/sessions", headers: [("Authorization", "Bearer \(f.ann)"),
                                                                                            ("Content-Type", "multipart/form-data")], body: "x")
        #expect(noBoundary.status == 415)
        #expect(try f.call("GET", "/api/sessions").json["total_count"] as? Int == 0)
        #expect(try f.call("GET", "/api/sessions?status=sleeping").status == 400)
        #expect(try f.call("GET", "/api/sessions?sort_by=pid").status == 400)
        #expect(try f.call("GET", "/api/sessions?limit=500").status == 400)
        #expect(try f.call("POST", "/api/sessions", as: "", body: "{}").status == 401)
        #expect(try f.call("GET", "/api/sessions/nope").json["code"] as? String == "session_not_found")
    }

    @Test func anotherUserGets403AndHeartbeatsKeepASessionPastItsIdleTimeout() throws {
        let f = try SessionFixture(["--idle-timeout", "2"])
        let s = try f.create()
        let id = try #require(s["id"] as? String)
        _ = try f.waitFor(id, status: "ready")
        #expect(try f.call("GET", "/api/sessions/\(id)", as: f.ben).status == 403)
        #expect(try f.call("PUT", "/api/sessions/\(id)/heartbeat", as: f.ben).status == 403)
        #expect(try f.call("DELETE", "/api/sessions/\(id)", as: f.ben).status == 403)
        #expect(try f.call("GET", "/api/sessions", as: f.ben).json["total_count"] as? Int == 0)
        // Heartbeats every 0.7 s for 4 s: alive past twice its idle timeout.
        for _ in 0..<6 {
            let hb = try f.call(["PUT", "POST"].randomElement()!, "/api/sessions/\(id)/heartbeat")
            #expect(hb.status == 200 && hb.json["status"] as? String == "ready", "\(hb.text)")
            usleep(700_000)
        }
        #expect(try f.call("GET", "/api/sessions/\(id)").json["status"] as? String == "ready")
        // Then silence: it ends by idle timeout, and its process is gone.
        let end = try f.waitFor(id, status: "terminated", timeout: 10)
        #expect(end["termination_reason"] as? String == "idle_timeout")
        usleep(300_000)
        #expect(f.standIns().isEmpty)
    }

    @Test func theSessionQuotaIsEnforcedWithRateLimitHeaders() throws {
        let f = try SessionFixture(["--session-quota", "2"])
        let first = try f.call("POST", "/api/sessions", body: "{}")
        #expect(first.header("RateLimit-Policy") == #""session_creation";q=2;w=3600"#)
        #expect(first.header("RateLimit")?.hasPrefix(#""session_creation";r=1;"#) == true)
        _ = try f.create()
        let third = try f.call("POST", "/api/sessions", body: "{}")
        #expect(third.status == 429 && third.json["code"] as? String == "rate_limited" && third.header("Retry-After") != nil)
        let info = try f.call("GET", "/api/session/info")
        #expect(((info.json["rate_limits"] as? [String: [String: Any]])?["session_creation"]?["remaining"] as? Int) == 0)
        #expect((info.json["usage_stats"] as? [String: Int])?["sessions_created"] == 2)
    }

    @Test func logoutWithEndSessionsAndDeletingAUserEndTheirSessions() throws {
        let f = try SessionFixture()
        let a = try #require(try f.create()["id"] as? String)
        let keep = try #require(try f.create(as: f.ben)["id"] as? String)
        _ = try f.waitFor(a, status: "ready")
        // Logout without end_sessions leaves the session; with it, the session ends (reason logout).
        let second = try httpRequest(port: f.port, "POST", "/api/v1/auth/login", body: #"{"username":"ann","password":"ann-password"}"#).json["token"] as! String
        #expect(try f.call("POST", "/api/v1/auth/logout", as: second).status == 204)
        #expect(try f.call("GET", "/api/sessions/\(a)").json["status"] as? String == "ready")
        #expect(try f.call("POST", "/api/v1/auth/logout?end_sessions=true").status == 204)
        let ended = try httpRequest(port: f.port, "GET", "/api/sessions/\(a)", headers: []).status
        #expect(ended == 401, "the token is gone with the logout")
        // Read the record through the Unix socket as a local operator (admin).
        let rec = try curl(["--unix-socket", f.daemon.socketPath, "http://localhost/api/sessions/\(a)"])
        #expect(rec.stdout.contains(#""termination_reason":"logout""#), "\(rec.stdout)")
        // Deleting ben (as the local operator) ends ben's session with reason admin.
        let users = try curl(["--unix-socket", f.daemon.socketPath, "http://localhost/management/users"])
        let benID = try #require((try JSONSerialization.jsonObject(with: Data(users.stdout.utf8)) as? [String: Any]).flatMap { ($0["items"] as? [[String: Any]])?.first { $0["username"] as? String == "ben" }?["id"] as? String })
        let del = try curl(["--unix-socket", f.daemon.socketPath, "-X", "DELETE", "-o", "/dev/null", "-w", "%{http_code}", "http://localhost/management/users/\(benID)"])
        #expect(del.stdout == "204")
        let benRec = try curl(["--unix-socket", f.daemon.socketPath, "http://localhost/api/sessions/\(keep)"])
        #expect(benRec.stdout.contains(#""termination_reason":"admin""#), "\(benRec.stdout)")
        usleep(200_000)
        #expect(f.standIns().isEmpty)
    }

    @Test func capacityPerUserIs429AndPerHostIs503() throws {
        let f = try SessionFixture(["--max-sessions-per-user", "2", "--max-sessions", "3"])
        _ = try f.create()
        _ = try f.create()
        let user = try f.call("POST", "/api/sessions", body: "{}")
        #expect(user.status == 429 && user.json["code"] as? String == "capacity_exhausted")
        _ = try f.create(as: f.ben)
        let host = try f.call("POST", "/api/sessions", as: f.ben, body: "{}")
        #expect(host.status == 503 && host.json["code"] as? String == "capacity_exhausted")
    }

    @Test func faultModesEndAsTheyShould() throws {
        let crash = try SessionFixture(environment: ["CHIMERAX_STANDIN_FAULT": "crash-after:0.5"])
        let c = try #require(try crash.create()["id"] as? String)
        let crashed = try crash.waitFor(c, status: "failed")
        #expect(crashed["termination_reason"] as? String == "crashed" && (crashed["exit"] as? [String: Any])?["signal"] as? String == "SIGSEGV")

        let never = try SessionFixture(["--start-timeout", "1"], environment: ["CHIMERAX_STANDIN_FAULT": "never-ready"])
        let n = try #require(try never.create()["id"] as? String)
        #expect(try never.waitFor(n, status: "failed")["termination_reason"] as? String == "start_timeout")
        #expect(never.standIns().isEmpty)

        let stubborn = try SessionFixture(["--stop-grace", "1"], environment: ["CHIMERAX_STANDIN_FAULT": "ignore-sigterm"])
        let s = try #require(try stubborn.create()["id"] as? String)
        _ = try stubborn.waitFor(s, status: "ready")
        let del = try stubborn.call("DELETE", "/api/sessions/\(s)")
        #expect(del.json["status"] as? String == "terminated" && (del.json["exit"] as? [String: Any])?["signal"] as? String == "SIGKILL")
        #expect(stubborn.standIns().isEmpty)

        let slow = try SessionFixture(["--start-timeout", "10"], environment: ["CHIMERAX_STANDIN_FAULT": "slow-start:1.5"])
        let sl = try #require(try slow.create()["id"] as? String)
        let waited = try slow.call("GET", "/api/sessions/\(sl)?wait=ready&timeout=0.5")
        #expect(waited.json["status"] as? String == "starting", "still starting after 0.5 s")
        #expect(try slow.waitFor(sl, status: "ready")["ready_at"] as? String != nil)

        let forker = try SessionFixture(environment: ["CHIMERAX_STANDIN_FAULT": "fork-orphan"])
        let o = try #require(try forker.create()["id"] as? String)
        _ = try forker.waitFor(o, status: "ready")
        usleep(200_000)
        #expect(forker.standIns().count >= 2, "the stand-in and its setsid child")
        _ = try forker.call("DELETE", "/api/sessions/\(o)")
        usleep(300_000)
        #expect(forker.standIns().isEmpty, "the setsid grandchild outlived the session")
    }

    /// `?wait=ready` holds no thread while it waits: with 200 requests waiting (more than the 64 threads for
    /// blocking handlers) a plain GET is still answered at once, and every waiter is answered `ready` once the
    /// session is; the waiters of a session that fails to start are answered when it leaves `starting`, not
    /// at their timeout.
    @Test func waitsForReadyHoldNoThreadsAndAreAnsweredOnTheChange() throws {
        let f = try SessionFixture(["--start-timeout", "20"], environment: ["CHIMERAX_STANDIN_FAULT": "slow-start:3"])
        let id = try #require(try f.create()["id"] as? String)
        var clients: [RawClient] = []
        for _ in 0..<200 {
            let c = try RawClient(port: f.port)
            try c.send("GET /api/sessions/\(id)?wait=ready&timeout=30 HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer \(f.ann)\r\n\r\n")
            clients.append(c)
        }
        usleep(300_000)
        let t = Date()
        #expect(try f.call("GET", "/api/sessions/\(id)").json["status"] as? String == "starting")
        #expect(Date().timeIntervalSince(t) < 1, "a plain GET waited behind the waits")
        var statuses: [String: Int] = [:]
        for c in clients {
            let r = c.readResponse(timeout: 25)
            statuses[r.map { $0.status == 200 ? ($0.json["status"] as? String ?? "?") : "\($0.status)" } ?? "no answer", default: 0] += 1
        }
        #expect(statuses == ["ready": 200], "\(statuses)")

        let never = try SessionFixture(["--start-timeout", "1"], environment: ["CHIMERAX_STANDIN_FAULT": "never-ready"])
        let n = try #require(try never.create()["id"] as? String)
        let t0 = Date()
        let waited = try never.call("GET", "/api/sessions/\(n)?wait=ready&timeout=20")
        // (API.md: until it leaves `starting`; a start timeout goes through `stopping` to `failed`.)
        #expect(["stopping", "failed"].contains(waited.json["status"] as? String ?? ""), "\(waited.text)")
        #expect(Date().timeIntervalSince(t0) < 10, "answered when the session failed, not at the timeout")
        // Other users' sessions and unknown ones are refused before any wait.
        #expect(try never.call("GET", "/api/sessions/\(n)?wait=ready&timeout=20", as: never.ben).status == 403)
        #expect(try never.call("GET", "/api/sessions/00000000-0000-4000-8000-000000000000?wait=ready").status == 404)
        #expect(try never.call("GET", "/api/sessions/\(n)?wait=soon").status == 400)
    }

    /// DELETEs waiting out the stop grace of ChimeraX processes that ignore SIGTERM do not hold up other
    /// requests (they ran on a queue that libdispatch ran about three at a time).
    @Test func slowDeletesDoNotHoldUpOtherRequests() throws {
        let f = try SessionFixture(["--stop-grace", "3"], environment: ["CHIMERAX_STANDIN_FAULT": "ignore-sigterm"])
        var ids: [String] = []
        for _ in 0..<4 { ids.append(try #require(try f.create()["id"] as? String)) }
        for id in ids { _ = try f.waitFor(id, status: "ready") }
        let clients = try ids.map { id in
            let c = try RawClient(port: f.port)
            try c.send("DELETE /api/sessions/\(id) HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer \(f.ann)\r\n\r\n")
            return c
        }
        usleep(300_000)
        let t = Date()
        let login = try httpRequest(port: f.port, "POST", "/api/v1/auth/login", body: #"{"username":"ben","password":"ben-password"}"#)
        #expect(login.status == 200)
        #expect(try f.call("GET", "/api/sessions/\(ids[0])").json["status"] as? String == "stopping")
        #expect(Date().timeIntervalSince(t) < 1.5, "a login and a GET waited behind the DELETEs")
        for c in clients {
            let r = c.readResponse(timeout: 20)
            #expect(r?.status == 200 && r?.json["status"] as? String == "terminated", "\(r?.text ?? "no answer")")
        }
    }

    @Test func aSessionOverItsMemoryLimitIsKilledAsOutOfMemoryAndAccountedUntilThen() throws {
        // The stand-in grows by 16 MiB a second; the limit is 64 MiB of resident memory.
        let f = try SessionFixture(["--memory-max", "64M"], environment: ["CHIMERAX_STANDIN_FAULT": "grow-memory:16"])
        let id = try #require(try f.create()["id"] as? String)
        let ready = try f.waitFor(id, status: "ready")
        let resources = try #require(ready["resources"] as? [String: Any])
        #expect((resources["memory_bytes"] as? Int ?? 0) > 1 << 20 && (resources["tasks"] as? Int ?? 0) >= 1, "\(resources)")
        #expect((resources["limits"] as? [String: Any])?["memory_bytes"] as? Int == 64 << 20)
        let failed = try f.waitFor(id, status: "failed", timeout: 30)
        #expect(failed["termination_reason"] as? String == "out_of_memory", "\(failed)")
        #expect((failed["exit"] as? [String: Any])?["signal"] as? String == "SIGKILL")
        let peak = (failed["resources"] as? [String: Any])?["memory_peak_bytes"] as? Int ?? 0
        #expect(peak > 64 << 20, "the peak seen was over the limit: \(peak)")
        #expect(f.standIns().isEmpty)
        let metrics = try curl(["--unix-socket", f.daemon.socketPath, "http://localhost/metrics"]).stdout
        #expect(metrics.contains(#"chimerax_supervisor_session_terminations_total{reason="out_of_memory"} 1"#))
    }

    @Test func aGrandchildThatDoubleForkedAwayIsAdoptedCountedAndKilled() throws {
        let f = try SessionFixture(environment: ["CHIMERAX_STANDIN_FAULT": "double-fork"])
        let id = try #require(try f.create()["id"] as? String)
        _ = try f.waitFor(id, status: "ready")
        // Its parent exited at once: the orphan is the daemon's child now (subreaper), not init's.
        let deadline = Date().addingTimeInterval(5)
        var orphan: pid_t?
        while orphan == nil && Date() < deadline {
            orphan = f.standIns().first { p in
                let stat = (try? String(contentsOfFile: "/proc/\(p)/stat", encoding: .utf8)) ?? ""
                let fields = stat[(stat.lastIndex(of: ")").map { stat.index($0, offsetBy: 2) } ?? stat.startIndex)...].split(separator: " ")
                return fields.count > 1 && pid_t(fields[1]) == f.daemon.pid
            }
            if orphan == nil { usleep(100_000) }
        }
        let o = try #require(orphan, "no orphan adopted by the daemon")
        // Counted with the session once a sample has seen it (two processes' threads at least).
        usleep(1_500_000)
        let tasks = (try f.call("GET", "/api/sessions/\(id)").json["resources"] as? [String: Any])?["tasks"] as? Int ?? 0
        // Every thread of every process of the session (the stand-in and the orphan), as /proc counts them.
        let threads = f.standIns().reduce(0) { sum, p in
            let status = (try? String(contentsOfFile: "/proc/\(p)/status", encoding: .utf8)) ?? ""
            return sum + (status.split(separator: "\n").first { $0.hasPrefix("Threads:") }.flatMap { Int($0.dropFirst(8).trimmingCharacters(in: .whitespaces)) } ?? 0)
        }
        #expect(f.standIns().count == 2 && tasks == threads, "the orphan's tasks are counted: \(tasks) of \(threads)")
        _ = try f.call("DELETE", "/api/sessions/\(id)")
        usleep(1_500_000)
        #expect(kill(o, 0) != 0, "the orphan is gone")
        #expect(f.standIns().isEmpty)
        let zombies = ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).compactMap { pid_t($0) }.filter { p in
            let stat = (try? String(contentsOfFile: "/proc/\(p)/stat", encoding: .utf8)) ?? ""
            let after = stat[(stat.lastIndex(of: ")").map { stat.index($0, offsetBy: 2) } ?? stat.startIndex)...].split(separator: " ")
            return after.count > 1 && after[0] == "Z" && pid_t(after[1]) == f.daemon.pid
        }
        #expect(zombies.isEmpty, "reaped: \(zombies)")
    }

    @Test func aStoppedDaemonLeavesNoChimeraXAndItsSessionsEndAsSupervisorShutdown() throws {
        let f = try SessionFixture()
        let id = try #require(try f.create()["id"] as? String)
        _ = try f.waitFor(id, status: "ready")
        #expect(f.daemon.stop() == 0)
        #expect(f.standIns().isEmpty)
        f.daemon = try DaemonProcess(["--state-dir", f.state, "--chimerax", standIn])
        let r = try f.call("GET", "/api/sessions/\(id)")
        #expect(r.json["status"] as? String == "terminated" && r.json["termination_reason"] as? String == "supervisor_shutdown", "\(r.text)")
        // After kill -9 too: the next start closes the records of sessions whose processes are gone.
        let id2 = try #require(try f.create()["id"] as? String)
        _ = try f.waitFor(id2, status: "ready")
        kill(f.daemon.pid, SIGKILL)
        _ = f.daemon.waitForExit()
        for p in f.standIns() { kill(p, SIGKILL) }
        f.daemon = try DaemonProcess(["--state-dir", f.state, "--chimerax", standIn])
        #expect(try f.call("GET", "/api/sessions/\(id2)").json["termination_reason"] as? String == "supervisor_shutdown")
    }

    @Test func twoHundredSessionsCreatedAndDeletedLeaveNoDescriptorsOrChildrenBehind() throws {
        let f = try SessionFixture(["--max-sessions-per-user", "8", "--session-quota", "1000"])
        func fds() -> Int { ((try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(f.daemon.pid)/fd")) ?? []).count }
        func children() -> Int { f.standIns().count }
        func rssKiB() -> Int {
            let status = (try? String(contentsOfFile: "/proc/\(f.daemon.pid)/status", encoding: .utf8)) ?? ""
            return status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") }.flatMap { $0.split(separator: " ").dropFirst().first }.flatMap { Int($0) } ?? 0
        }
        // Warm up (threads, pools, allocator arenas), then measure.
        for _ in 0..<20 { _ = try f.call("DELETE", "/api/sessions/\(try #require(try f.create()["id"] as? String))") }
        let before = fds()
        let rssBefore = rssKiB()
        for i in 0..<200 {
            let id = try #require(try f.create()["id"] as? String, "create \(i)")
            let d = try f.call("DELETE", "/api/sessions/\(id)")
            #expect(d.status == 200 && d.json["status"] as? String == "terminated", "delete \(i): \(d.text)")
        }
        usleep(300_000)
        let after = fds()
        let rssAfter = rssKiB()
        print("200 sessions: daemon descriptors \(before) before, \(after) after; RSS \(rssBefore) KiB before, \(rssAfter) KiB after; stand-ins left \(children())")
        #expect(after <= before + 2, "descriptors grew from \(before) to \(after)")
        // Ended records stay in the store (a few KiB each); anything per session beyond that would be a leak.
        #expect(rssAfter - rssBefore < 16 * 1024, "the daemon grew by \(rssAfter - rssBefore) KiB over 200 sessions")
        #expect(children() == 0)
    }
}
