import Foundation
import Glibc
import TestSupport
import Testing

/// A state directory with users made by the offline CLI, and a daemon on it.
private final class IdentityFixture {
    let state: String
    var daemon: DaemonProcess
    var port: UInt16 { daemon.port }
    let extra: [String]

    init(users: [(String, String, Bool)] = [("alice", "alice-password", true), ("bob", "bob-password", false)], extra: [String] = []) throws {
        state = DaemonProcess.makeTempDirectory() + "/state"
        self.extra = extra
        for (name, password, admin) in users {
            let r = try runProgram(DaemonProcess.binary, ["users", "add", name, "--password-stdin", "--state-dir", state] + (admin ? ["--admin"] : []),
                                   environment: cleanEnvironment(), stdin: password + "\n")
            guard r.status == 0 else { throw TestFailure("users add \(name): \(r.stderr)") }
        }
        daemon = try DaemonProcess(["--state-dir", state] + extra)
    }

    func restart() throws {
        #expect(daemon.stop() == 0)
        daemon = try DaemonProcess(["--state-dir", state] + extra)
    }

    func login(_ user: String, _ password: String, userAgent: String = "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0",
               headers: [(String, String)] = []) throws -> RawResponse {
        try httpRequest(port: port, "POST", "/api/v1/auth/login", headers: [("User-Agent", userAgent)] + headers,
                        body: #"{"username":"\#(user)","password":"\#(password)"}"#)
    }

    func token(_ user: String, _ password: String, userAgent: String = "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0") throws -> String {
        let r = try login(user, password, userAgent: userAgent)
        guard r.status == 200, let t = r.json["token"] as? String else { throw TestFailure("login \(user): \(r.status) \(r.text)") }
        return t
    }

    func get(_ path: String, token: String? = nil, headers: [(String, String)] = []) throws -> RawResponse {
        try httpRequest(port: port, "GET", path, headers: (token.map { [("Authorization", "Bearer \($0)")] } ?? []) + headers)
    }

    func send(_ method: String, _ path: String, token: String? = nil, headers: [(String, String)] = [], body: String? = nil) throws -> RawResponse {
        try httpRequest(port: port, method, path, headers: (token.map { [("Authorization", "Bearer \($0)")] } ?? []) + headers, body: body)
    }
}

private func cookieValue(_ r: RawResponse, _ name: String) -> String? {
    for c in r.headers("Set-Cookie") where c.hasPrefix(name + "=") {
        return String(c.dropFirst(name.count + 1).prefix { $0 != ";" })
    }
    return nil
}

@Suite("Identity")
struct IdentityTests {
    @Test func loginGivesATokenAndACookieWithTheRightAttributes() throws {
        let f = try IdentityFixture()
        let r = try f.login("alice", "alice-password")
        #expect(r.status == 200)
        let token = try #require(r.json["token"] as? String)
        #expect(token.count == 43, "256 bits, base64url")
        let cookie = try #require(r.headers("Set-Cookie").first)
        #expect(cookie.hasPrefix("cxs_auth=\(token);"))
        for attr in ["HttpOnly", "SameSite=Lax", "Path=/", "Max-Age="] { #expect(cookie.contains(attr), "\(cookie)") }
        #expect(!cookie.contains("Secure"), "loopback listener: no Secure by default")
        let user = try #require(r.json["user"] as? [String: Any])
        #expect(user["username"] as? String == "alice" && user["is_admin"] as? Bool == true)
        #expect(Set(user.keys) == ["id", "username", "is_admin", "created_at"])
        let session = try #require(r.json["session"] as? [String: Any])
        #expect(session["device_name"] as? String == "Firefox on Linux")
        #expect(session["is_current"] as? Bool == true)
        #expect((r.json["expires_at"] as? String)?.hasSuffix("Z") == true)
        // The token works as a bearer token and as the cookie (reads need no CSRF header).
        #expect(try f.get("/api/v1/auth/users/me", token: token).json["username"] as? String == "alice")
        #expect(try f.get("/api/v1/auth/users/me", headers: [("Cookie", "other=1; cxs_auth=\(token)")]).json["username"] as? String == "alice")
        #expect(try f.get("/api/v1/auth/users/me").status == 401)
        #expect(try f.get("/api/v1/auth/users/me", token: token + "x").status == 401)
        // The token is not stored: it appears nowhere in the state directory.
        let files = try FileManager.default.subpathsOfDirectory(atPath: f.state)
        for file in files {
            if let data = FileManager.default.contents(atPath: f.state + "/" + file) {
                #expect(data.range(of: Data(token.utf8)) == nil, "token found in \(file)")
            }
        }
    }

    @Test func wrongPasswordAndUnknownUserAreIndistinguishable() throws {
        let f = try IdentityFixture()
        let wrong = try f.login("alice", "not-her-password")
        let unknown = try f.login("mallory", "not-her-password")
        #expect(wrong.status == 401 && unknown.status == 401)
        var a = wrong.json, b = unknown.json
        a["request_id"] = nil
        b["request_id"] = nil
        #expect(NSDictionary(dictionary: a) == NSDictionary(dictionary: b))
        #expect(a["code"] as? String == "invalid_credentials")
        #expect(wrong.headers.map(\.0).sorted() == unknown.headers.map(\.0).sorted())
        // Missing fields are a validation error naming them.
        let bad = try f.send("POST", "/api/v1/auth/login", body: #"{"username":"alice"}"#)
        #expect(bad.status == 400 && bad.json["code"] as? String == "validation_error")
        #expect((bad.json["errors"] as? [[String: Any]])?.first?["field"] as? String == "password")
    }

    @Test func deviceSessionsListTerminateOneAllAndAllButCurrent() throws {
        let f = try IdentityFixture()
        let chrome = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36"
        let iphone = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1"
        let t1 = try f.token("bob", "bob-password", userAgent: chrome)
        let t2 = try f.token("bob", "bob-password", userAgent: iphone)
        let t3 = try f.token("bob", "bob-password")
        let list = try f.get("/api/v1/auth/users/me/sessions/", token: t1)
        #expect(list.status == 200 && list.json["success"] as? Bool == true)
        let data = try #require(list.json["data"] as? [String: Any])
        let sessions = try #require(data["sessions"] as? [[String: Any]])
        #expect(data["total_count"] as? Int == 3 && sessions.count == 3)
        #expect(sessions.filter { $0["is_current"] as? Bool == true }.count == 1)
        let current = try #require(sessions.first { $0["is_current"] as? Bool == true })
        #expect(current["device_name"] as? String == "Chrome on Windows")
        #expect((current["device_info"] as? [String: String]) == ["browser": "Chrome", "os": "Windows", "device": "Desktop"])
        let phone = try #require(sessions.first { $0["device_name"] as? String == "Safari on iOS" })
        #expect((phone["device_info"] as? [String: String])?["device"] == "Mobile")
        for key in ["id", "ip_address", "user_agent", "device_info", "device_name", "location", "is_active", "last_activity", "created_at",
                    "expires_at", "login_method", "is_current"] {
            #expect(current[key] != nil, "missing \(key)")
        }
        // Without the trailing slash it is the same route.
        #expect(try f.get("/api/v1/auth/users/me/sessions", token: t1).status == 200)

        // End the phone's session: its token is refused on the very next request.
        let phoneID = try #require(phone["id"] as? String)
        let del = try f.send("DELETE", "/api/v1/auth/users/me/sessions/\(phoneID)/", token: t1)
        #expect(del.status == 200 && del.json["message"] as? String == "Session terminated successfully")
        #expect((del.json["data"] as? [String: Any])?["session_id"] as? String == phoneID)
        #expect((del.json["data"] as? [String: Any])?["device_name"] as? String == "Safari on iOS")
        #expect(try f.get("/api/v1/auth/users/me", token: t2).status == 401)
        #expect(try f.send("DELETE", "/api/v1/auth/users/me/sessions/\(phoneID)/", token: t1).json["code"] as? String == "session_not_found")

        // All but the current one.
        let keep = try f.send("DELETE", "/api/v1/auth/users/me/sessions/?keep_current=true", token: t1)
        #expect(keep.status == 200 && (keep.json["data"] as? [String: Any])?["terminated_count"] as? Int == 1)
        #expect(keep.json["message"] as? String == "All sessions terminated successfully")
        #expect(try f.get("/api/v1/auth/users/me", token: t3).status == 401)
        #expect(try f.get("/api/v1/auth/users/me", token: t1).status == 200)

        // All, the current one included.
        let t4 = try f.token("bob", "bob-password")
        let all = try f.send("DELETE", "/api/v1/auth/users/me/sessions/", token: t1)
        #expect((all.json["data"] as? [String: Any])?["terminated_count"] as? Int == 2)
        #expect(try f.get("/api/v1/auth/users/me", token: t1).status == 401)
        #expect(try f.get("/api/v1/auth/users/me", token: t4).status == 401)
        #expect(try f.send("DELETE", "/api/v1/auth/users/me/sessions/?keep_current=maybe", token: f.token("bob", "bob-password")).status == 400)
    }

    @Test func aUserCannotSeeOrEndAnotherUsersDeviceSessions() throws {
        let f = try IdentityFixture()
        let alice = try f.token("alice", "alice-password")
        let bob = try f.token("bob", "bob-password")
        let aliceSessions = try f.get("/api/v1/auth/users/me/sessions/", token: alice)
        let aliceID = try #require(((aliceSessions.json["data"] as? [String: Any])?["sessions"] as? [[String: Any]])?.first?["id"] as? String)
        let bobList = try f.get("/api/v1/auth/users/me/sessions/", token: bob)
        let bobIDs = ((bobList.json["data"] as? [String: Any])?["sessions"] as? [[String: Any]])?.compactMap { $0["id"] as? String } ?? []
        #expect(!bobIDs.contains(aliceID))
        let r = try f.send("DELETE", "/api/v1/auth/users/me/sessions/\(aliceID)/", token: bob)
        #expect(r.status == 404 && r.json["code"] as? String == "session_not_found")
        #expect(try f.get("/api/v1/auth/users/me", token: alice).status == 200, "alice is still logged in")
        // Bob ending all of his does not touch Alice's.
        _ = try f.send("DELETE", "/api/v1/auth/users/me/sessions/", token: bob)
        #expect(try f.get("/api/v1/auth/users/me", token: alice).status == 200)
    }

    @Test func cookieAuthenticatedUnsafeRequestsNeedAnAllowedOriginOrXRequestedWith() throws {
        let f = try IdentityFixture(extra: ["--cors-origin", "https://app.example"])
        func cookieLogout(_ headers: [(String, String)]) throws -> RawResponse {
            let t = try f.token("bob", "bob-password")
            return try f.send("POST", "/api/v1/auth/logout", headers: [("Cookie", "cxs_auth=\(t)")] + headers)
        }
        let none = try cookieLogout([])
        #expect(none.status == 403 && none.json["code"] as? String == "csrf_rejected")
        #expect(try cookieLogout([("Origin", "https://evil.example")]).status == 403)
        #expect(try cookieLogout([("Origin", "null")]).status == 403)
        #expect(try cookieLogout([("X-Requested-With", "XMLHttpRequest")]).status == 204)
        #expect(try cookieLogout([("Origin", "https://app.example")]).status == 204)
        #expect(try cookieLogout([("Origin", "http://127.0.0.1:\(f.port)")]).status == 204, "the server's own origin")
        // A bearer token is not a cookie: no CSRF rule.
        let t = try f.token("bob", "bob-password")
        #expect(try f.send("POST", "/api/v1/auth/logout", token: t).status == 204)
        // Logout clears the cookie.
        let t2 = try f.token("bob", "bob-password")
        let out = try f.send("POST", "/api/v1/auth/logout", token: t2)
        #expect(out.headers("Set-Cookie").first?.hasPrefix("cxs_auth=;") == true)
        #expect(out.headers("Set-Cookie").first?.contains("Max-Age=0") == true)
    }

    @Test func corsPreflightAndCredentialedResponsesForConfiguredOriginsOnly() throws {
        let f = try IdentityFixture(extra: ["--cors-origin", "https://app.example"])
        let pre = try f.send("OPTIONS", "/api/v1/auth/users/me/sessions/", headers: [
            ("Origin", "https://app.example"), ("Access-Control-Request-Method", "DELETE"), ("Access-Control-Request-Headers", "authorization"),
        ])
        #expect(pre.status == 204)
        #expect(pre.header("Access-Control-Allow-Origin") == "https://app.example")
        #expect(pre.header("Access-Control-Allow-Credentials") == "true")
        #expect(pre.header("Access-Control-Allow-Methods")?.contains("DELETE") == true)
        #expect(pre.header("Access-Control-Allow-Headers")?.lowercased().contains("authorization") == true)
        #expect(pre.header("Vary")?.contains("Origin") == true)
        let evil = try f.send("OPTIONS", "/api/v1/auth/users/me/sessions/", headers: [("Origin", "https://evil.example"), ("Access-Control-Request-Method", "DELETE")])
        #expect(evil.header("Access-Control-Allow-Origin") == nil)
        // Actual responses, errors included, carry the CORS headers for the allowed origin.
        let me = try f.get("/api/v1/auth/users/me", headers: [("Origin", "https://app.example")])
        #expect(me.status == 401 && me.header("Access-Control-Allow-Origin") == "https://app.example")
        #expect(me.header("Access-Control-Expose-Headers")?.contains("X-Request-ID") == true)
        #expect(try f.get("/healthz", headers: [("Origin", "https://evil.example")]).header("Access-Control-Allow-Origin") == nil)
    }

    @Test func anonymousSessionsCreateOrGetSyncAndInfo() throws {
        let f = try IdentityFixture(users: [])
        let first = try f.send("POST", "/api/session/", body: "{}")
        #expect(first.status == 200 && first.json["is_new_session"] as? Bool == true)
        let id = try #require(first.json["session_id"] as? String)
        #expect(id.count == 36 && Array(id)[14] == "4", "UUID v4")
        let cookie = try #require(first.headers("Set-Cookie").first)
        for attr in ["cxs_anon=\(id);", "HttpOnly", "SameSite=Lax", "Max-Age=2592000", "Path=/"] { #expect(cookie.contains(attr), "\(cookie)") }
        #expect((first.json["usage_stats"] as? [String: Int]) == ["sessions_created": 0, "commands_run": 0, "uploads": 0])
        // The cookie names it again (an unsafe cookie request: X-Requested-With).
        let again = try f.send("POST", "/api/session/", headers: [("Cookie", "cxs_anon=\(id)"), ("X-Requested-With", "fetch")], body: "{}")
        #expect(again.json["session_id"] as? String == id && again.json["is_new_session"] as? Bool == false)
        #expect(try f.send("POST", "/api/session/", headers: [("Cookie", "cxs_anon=\(id)")], body: "{}").status == 403, "CSRF")
        // Without the cookie, the id the client kept is adopted; an unknown one is not.
        let kept = try f.send("POST", "/api/session/", body: #"{"client_session_id":"\#(id)"}"#)
        #expect(kept.json["session_id"] as? String == id && kept.json["is_new_session"] as? Bool == false)
        let stranger = "8f14e45f-ceea-467f-a0e6-3c1b2f1e9a7b"
        let fresh = try f.send("POST", "/api/session/", body: #"{"client_session_id":"\#(stranger)"}"#)
        #expect(fresh.json["session_id"] as? String != stranger && fresh.json["is_new_session"] as? Bool == true)
        #expect(try f.send("POST", "/api/session/", body: #"{"client_session_id":"not-a-uuid"}"#).status == 400)

        // Sync adopts only live ids the server issued.
        let unknown = try f.send("POST", "/api/session/sync", body: #"{"client_session_id":"\#(stranger)"}"#)
        #expect(unknown.status == 404 && unknown.json["code"] as? String == "resource_not_found")
        #expect(cookieValue(unknown, "cxs_anon") == nil)
        #expect(try f.send("POST", "/api/session/sync", body: #"{"client_session_id":"x"}"#).json["code"] as? String == "validation_error")
        let synced = try f.send("POST", "/api/session/sync", body: #"{"client_session_id":"\#(id)"}"#)
        #expect(synced.status == 200 && synced.json["is_synced"] as? Bool == true && cookieValue(synced, "cxs_anon") == id)

        // Info with usage and limits, and the RateLimit headers.
        let info = try f.get("/api/session/info", headers: [("Cookie", "cxs_anon=\(id)")])
        #expect(info.status == 200 && info.json["session_id"] as? String == id)
        let limits = try #require(info.json["rate_limits"] as? [String: [String: Any]])
        #expect(limits["session_creation"]?["limit"] as? Int == 10 && limits["session_creation"]?["remaining"] as? Int == 10)
        #expect(limits["commands"]?["reset_at"] as? String != nil)
        #expect(info.header("RateLimit-Policy")?.contains(#""session_creation";q=10;w=3600"#) == true)
        #expect(info.header("RateLimit")?.contains(#""session_creation";r=10;t="#) == true)
        #expect(try f.get("/api/session/info", headers: [("Cookie", "cxs_anon=\(stranger)")]).status == 404)
        #expect(try f.get("/api/session/info").status == 401)
    }

    @Test func newAnonymousSessionsAreLimitedPerAddress() throws {
        let f = try IdentityFixture(users: [])
        var first: String?
        for i in 0..<60 {
            let r = try f.send("POST", "/api/session/", body: "{}")
            #expect(r.status == 200, "creation \(i)")
            if first == nil { first = r.json["session_id"] as? String }
        }
        let refused = try f.send("POST", "/api/session/", body: "{}")
        #expect(refused.status == 429 && refused.json["code"] as? String == "rate_limited")
        #expect(Int(refused.header("Retry-After") ?? "") ?? 0 > 0)
        #expect(refused.header("RateLimit")?.hasPrefix(#""anonymous_sessions";r=0;"#) == true)
        // An existing identity is still returned.
        let again = try f.send("POST", "/api/session/", headers: [("Cookie", "cxs_anon=\(first ?? "")"), ("X-Requested-With", "x")], body: "{}")
        #expect(again.status == 200 && again.json["session_id"] as? String == first)
    }

    @Test func bruteForceIsLockedOutWithRetryAfterAndAGenericMessage() throws {
        let f = try IdentityFixture()
        for _ in 0..<5 { #expect(try f.login("bob", "guess").status == 401) }
        let locked = try f.login("bob", "bob-password")
        #expect(locked.status == 429 && locked.json["code"] as? String == "rate_limited")
        #expect(Int(locked.header("Retry-After") ?? "") ?? 0 > 0)
        // The same for a name that does not exist: no account enumeration.
        for _ in 0..<5 { _ = try f.login("nobody", "guess") }
        let ghost = try f.login("nobody", "guess")
        #expect(ghost.status == 429 && ghost.json["detail"] as? String == locked.json["detail"] as? String)
        // Another account from the same address still works (the per-address limit is higher).
        #expect(try f.login("alice", "alice-password").status == 200)
    }

    @Test func loginsAndRevocationsSurviveARestart() throws {
        let f = try IdentityFixture()
        let live = try f.token("alice", "alice-password")
        let dead = try f.token("alice", "alice-password")
        #expect(try f.send("POST", "/api/v1/auth/logout", token: dead).status == 204)
        let anon = try #require(try f.send("POST", "/api/session/", body: "{}").json["session_id"] as? String)
        try f.restart()
        #expect(try f.get("/api/v1/auth/users/me", token: live).status == 200)
        #expect(try f.get("/api/v1/auth/users/me", token: dead).status == 401)
        #expect(try f.get("/api/session/info", headers: [("Cookie", "cxs_anon=\(anon)")]).status == 200)
        // kill -9 too: acknowledged means on disk.
        let late = try f.token("bob", "bob-password")
        kill(f.daemon.pid, SIGKILL)
        _ = f.daemon.waitForExit()
        f.daemon = try DaemonProcess(["--state-dir", f.state])
        #expect(try f.get("/api/v1/auth/users/me", token: late).json["username"] as? String == "bob")
    }

    @Test func adminsManageUsersAndTheCLIWorksOfflineAndThroughTheSocket() throws {
        let f = try IdentityFixture()
        let admin = try f.token("alice", "alice-password")
        let bob = try f.token("bob", "bob-password")
        #expect(try f.send("POST", "/management/users", token: bob, body: #"{"username":"carol","password":"carol-password"}"#).status == 403)
        #expect(try f.send("POST", "/management/users", body: #"{"username":"carol","password":"carol-password"}"#).status == 401)
        let created = try f.send("POST", "/management/users", token: admin, body: #"{"username":"carol","password":"carol-password","is_admin":false}"#)
        #expect(created.status == 201 && created.json["username"] as? String == "carol")
        #expect(try f.send("POST", "/management/users", token: admin, body: #"{"username":"Carol","password":"carol-password"}"#).status == 409)
        #expect(try f.send("POST", "/management/users", token: admin, body: #"{"username":"dave","password":"short"}"#).status == 400)
        let list = try f.get("/management/users", token: admin)
        #expect(list.json["total_count"] as? Int == 3)
        #expect(try f.get("/metrics", token: admin).status == 200)
        #expect(try f.get("/metrics", token: bob).status == 403)
        // Deleting a user revokes its tokens at once.
        let bobID = try #require((list.json["items"] as? [[String: Any]])?.first { $0["username"] as? String == "bob" }?["id"] as? String)
        #expect(try f.send("DELETE", "/management/users/\(bobID)", token: admin).status == 204)
        #expect(try f.get("/api/v1/auth/users/me", token: bob).status == 401)
        #expect(try f.login("bob", "bob-password").status == 401)

        // The CLI goes through the socket while the daemon holds the state directory.
        let env = cleanEnvironment()
        let args = ["--state-dir", f.state, "--socket", f.daemon.socketPath]
        let add = try runProgram(DaemonProcess.binary, ["users", "add", "erin", "--password-stdin"] + args, environment: env, stdin: "erin-password\n")
        #expect(add.status == 0 && add.stdout.contains("through the running daemon"), "\(add.stderr)")
        #expect(try f.token("erin", "erin-password").count == 43)
        let listed = try runProgram(DaemonProcess.binary, ["users", "list", "--json"] + args, environment: env)
        #expect(listed.stdout.contains(#""username":"erin""#))
        let dup = try runProgram(DaemonProcess.binary, ["users", "add", "erin", "--password-stdin"] + args, environment: env, stdin: "erin-password\n")
        #expect(dup.status == 1 && dup.stderr.contains("409"))
        let passwd = try runProgram(DaemonProcess.binary, ["users", "passwd", "erin", "--password-stdin"] + args, environment: env, stdin: "new-erin-password\n")
        #expect(passwd.status == 0, "\(passwd.stderr)")
        #expect(try f.login("erin", "new-erin-password").status == 200)
        let del = try runProgram(DaemonProcess.binary, ["users", "delete", "erin"] + args, environment: env)
        #expect(del.status == 0, "\(del.stderr)")
        #expect(try f.login("erin", "new-erin-password").status == 401)
        // Offline (no daemon): directly on the state directory.
        #expect(f.daemon.stop() == 0)
        let offline = try runProgram(DaemonProcess.binary, ["users", "list", "--state-dir", f.state], environment: env)
        #expect(offline.status == 0 && offline.stdout.contains("alice") && offline.stdout.contains("carol") && !offline.stdout.contains("erin"))
        let noPassword = try runProgram(DaemonProcess.binary, ["users", "add", "frank", "--state-dir", f.state], environment: env)
        #expect(noPassword.status != 0 && noPassword.stderr.contains("--password-stdin"))
    }

    @Test func behindATrustedProxyTheClientAddressComesFromXForwardedFor() throws {
        let plain = try IdentityFixture()
        let direct = try plain.login("bob", "bob-password", headers: [("X-Forwarded-For", "203.0.113.9")])
        #expect((direct.json["session"] as? [String: Any])?["ip_address"] as? String == "127.0.0.1", "untrusted peer: the header is ignored")
        let proxied = try IdentityFixture(extra: ["--trusted-proxy", "127.0.0.0/8"])
        let r = try proxied.login("bob", "bob-password", headers: [("X-Forwarded-For", "198.51.100.7, 203.0.113.9, 127.0.0.5")])
        #expect((r.json["session"] as? [String: Any])?["ip_address"] as? String == "203.0.113.9", "the first untrusted hop from the right")
    }
}
