import Foundation
import Glibc
import TestSupport
import Testing

/// The built daemon over TCP and its Unix socket, with curl and raw sockets.
@Suite("Listeners and protocol", .serialized)
struct ListenerTests {
    @Test func healthzOverTCPAndUnixSocketWithCurl() throws {
        let d = try DaemonProcess()
        let tcp = try curl(["-i", "\(d.baseURL)/healthz"])
        #expect(tcp.status == 0)
        #expect(tcp.stdout.hasPrefix("HTTP/1.1 200 OK"))
        #expect(tcp.stdout.contains("{\"status\":\"ok\"}"))
        for h in ["X-Content-Type-Options: nosniff", "Cache-Control: no-store", "Referrer-Policy: no-referrer", "X-Request-ID: "] {
            #expect(tcp.stdout.contains(h), "missing \(h)")
        }
        let unix = try curl(["-i", "--unix-socket", d.socketPath, "http://localhost/healthz"])
        #expect(unix.stdout.hasPrefix("HTTP/1.1 200 OK"))
        // The socket has the configured mode.
        var st = stat()
        #expect(stat(d.socketPath, &st) == 0)
        #expect(st.st_mode & 0o777 == 0o660)
        #expect(d.stop() == 0)
        #expect(!FileManager.default.fileExists(atPath: d.socketPath), "socket file removed at exit")
    }

    @Test func ipv6ListenerAnswers() throws {
        let d = try DaemonProcess(["--listen", "[::1]:0"])
        let r = try curl(["-g", "-o", "/dev/null", "-w", "%{http_code}", "http://[::1]:\(d.port)/healthz"])
        #expect(r.stdout == "200")
    }

    @Test func unknownRouteIsProblemDetailsWithRequestID() throws {
        let d = try DaemonProcess()
        let c = try RawClient(port: d.port)
        try c.send("GET /no/such/thing HTTP/1.1\r\nHost: x\r\nX-Request-ID: my-req.1\r\n\r\n")
        let r = try #require(c.readResponse())
        #expect(r.status == 404)
        #expect(r.header("Content-Type") == "application/problem+json")
        #expect(r.header("X-Request-ID") == "my-req.1")
        #expect(r.text.contains("\"code\":\"resource_not_found\""))
        #expect(r.text.contains("\"request_id\":\"my-req.1\""))
        // An insane request id is replaced, not echoed.
        try c.send("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Request-ID: <script>\r\n\r\n")
        let r2 = try #require(c.readResponse())
        #expect(r2.header("X-Request-ID") != "<script>")
        #expect(!(r2.header("X-Request-ID") ?? "").isEmpty)
    }

    @Test func pipelinedRequestsAreAnsweredInOrderOnOneConnection() throws {
        let d = try DaemonProcess()
        let c = try RawClient(port: d.port)
        try c.send("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Request-ID: a\r\n\r\n"
                   + "HEAD /healthz HTTP/1.1\r\nHost: x\r\nX-Request-ID: b\r\n\r\n"
                   + "GET /nope HTTP/1.1\r\nHost: x\r\nX-Request-ID: c\r\n\r\n"
                   + "DELETE /healthz HTTP/1.1\r\nHost: x\r\nX-Request-ID: d\r\n\r\n"
                   + "GET /healthz/ HTTP/1.1\r\nHost: x\r\nX-Request-ID: e\r\n\r\n")
        let a = try #require(c.readResponse())
        let b = try #require(c.readResponse(isHead: true))
        let cc = try #require(c.readResponse())
        let dd = try #require(c.readResponse())
        let e = try #require(c.readResponse())
        let statuses: [Int] = [a.status, b.status, cc.status, dd.status, e.status]
        #expect(statuses == [200, 200, 404, 405, 200])
        #expect([a, b, cc, dd, e].map { $0.header("X-Request-ID") } == ["a", "b", "c", "d", "e"])
        #expect(b.header("Content-Length") == a.header("Content-Length"), "HEAD carries GET's length")
        #expect(dd.header("Allow") == "GET, HEAD, OPTIONS")
        #expect(c.pendingBytes.isEmpty, "HEAD sent no body")
        #expect(!c.closedByPeer)
    }

    @Test func requestsFollowedByAHalfCloseAreStillAnswered() throws {
        // Answers are written at the end of the loop's turn; a client that sends its requests and shuts its
        // side in the same moment must still get every one of them, then the close. The last batch is exactly
        // one read of the server (64 KiB), so the server's next read in the same turn sees the end of input
        // while the answers are still unwritten.
        let d = try DaemonProcess()
        let plain = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
        let fill = 64 * 1024 / plain.utf8.count - 1
        let rest = 64 * 1024 - fill * plain.utf8.count
        let padded = "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: " + String(repeating: "p", count: rest - plain.utf8.count - 9) + "\r\n\r\n"
        for (n, text) in [(1, plain), (3, String(repeating: plain, count: 3)), (fill + 1, String(repeating: plain, count: fill) + padded)] {
            #expect(n == 1 || n == 3 || text.utf8.count == 64 * 1024)
            let c = try RawClient(port: d.port)
            try c.send(text)
            shutdown(c.fd, Int32(SHUT_WR))
            for i in 0..<n {
                let r = try #require(c.readResponse(), "answer \(i + 1) of \(n)")
                #expect(r.status == 200)
            }
            #expect(c.readResponse(timeout: 5) == nil)
            #expect(c.closedByPeer)
        }
    }

    @Test func smugglingShapesAre400AndClose() throws {
        let d = try DaemonProcess()
        let shapes = [
            "POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            "POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcd",
            // A route that reads bodies, so the chunk is parsed (a 405 would be answered before reading it).
            "GET /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nnothex\r\n",
            "GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n folded\r\n\r\n",
            "GET /healthz HTTP/1.1\r\nHost: x\r\nX-A : 1\r\n\r\n",
            "G@T /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
        ]
        for s in shapes {
            let c = try RawClient(port: d.port)
            try c.send(s)
            let r = try #require(c.readResponse(), "no answer to \(s.debugDescription)")
            #expect(r.status == 400, "\(s.debugDescription)")
            #expect(r.header("Connection") == "close")
            #expect(r.text.contains("\"code\":\"bad_request\""))
            #expect(c.waitForClose(), "connection left open after \(s.debugDescription)")
        }
    }

    @Test func oversizeHeadsAre431And414() throws {
        let d = try DaemonProcess()
        let many = try RawClient(port: d.port)
        try many.send("GET /healthz HTTP/1.1\r\nHost: x\r\n" + (0..<120).map { "X-\($0): v\r\n" }.joined() + "\r\n")
        #expect(many.readResponse()?.status == 431)
        let big = try RawClient(port: d.port)
        try big.send("GET /healthz HTTP/1.1\r\nHost: x\r\nX: " + String(repeating: "y", count: 40_000) + "\r\n\r\n")
        #expect(big.readResponse()?.status == 431)
        let long = try RawClient(port: d.port)
        try long.send("GET /" + String(repeating: "a", count: 10_000) + " HTTP/1.1\r\nHost: x\r\n\r\n")
        #expect(long.readResponse()?.status == 414)
    }

    @Test func bodyOverTheRouteLimitIs413WithoutContinue() throws {
        let d = try DaemonProcess()
        let c = try RawClient(port: d.port)
        // /openapi.json takes no large bodies; Expect: 100-continue must not be granted.
        try c.send("GET /openapi.json HTTP/1.1\r\nHost: x\r\nContent-Length: 10485760\r\nExpect: 100-continue\r\n\r\n")
        let r = try #require(c.readResponse())
        #expect(r.status == 413)
        #expect(r.text.contains("payload_too_large"))
        #expect(c.waitForClose())
    }

    @Test func smallBodyWithExpectContinueGets100ThenTheAnswer() throws {
        let d = try DaemonProcess()
        let c = try RawClient(port: d.port)
        try c.send("GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n")
        c.fill(timeout: 5)
        #expect(String(decoding: c.pendingBytes, as: UTF8.self).hasPrefix("HTTP/1.1 100 Continue\r\n\r\n"))
        try c.send("{}")
        #expect(c.readResponse()?.status == 200)
        // Chunked body on the same connection.
        try c.send("GET /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n")
        #expect(c.readResponse()?.status == 200)
    }

    @Test func optionsAnswersAllow() throws {
        let d = try DaemonProcess()
        let r = try curl(["-i", "-X", "OPTIONS", "\(d.baseURL)/metrics"])
        #expect(r.stdout.hasPrefix("HTTP/1.1 204"))
        #expect(r.stdout.contains("Allow: GET, HEAD, OPTIONS"))
    }

    @Test func metricsNeedAnAdminAndCountRequests() throws {
        let d = try DaemonProcess()
        _ = try curl(["\(d.baseURL)/healthz"])
        let anon = try curl(["-o", "/dev/null", "-w", "%{http_code}", "\(d.baseURL)/metrics"])
        #expect(anon.stdout == "401")
        // root (this test) on the Unix socket is a local operator.
        let m = try curl(["--unix-socket", d.socketPath, "http://localhost/metrics"])
        #expect(m.stdout.contains("chimerax_supervisor_http_requests_total{route=\"/healthz\",method=\"GET\",status=\"200\"} 1"))
        #expect(m.stdout.contains("chimerax_supervisor_http_request_duration_seconds_bucket{route=\"/healthz\",le=\"+Inf\"} 1"))
        #expect(m.stdout.contains("chimerax_supervisor_http_connections_open 1"))
        #expect(m.stdout.contains("chimerax_supervisor_http_requests_total{route=\"/metrics\",method=\"GET\",status=\"401\"} 1"))
        #expect(m.stdout.contains("chimerax_supervisor_store_healthy 1"))
        #expect(m.stdout.contains("chimerax_supervisor_store_write_failures_total 0"))
    }

    @Test func openAPIListsExactlyWhatIsServed() throws {
        let d = try DaemonProcess()
        let r = try curl(["\(d.baseURL)/openapi.json"])
        let doc = try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
        #expect(doc["openapi"] as? String == "3.1.0")
        let paths = try #require(doc["paths"] as? [String: [String: Any]])
        #expect(Set(paths.keys) == [
            "/healthz", "/readyz", "/metrics", "/openapi.json",
            "/api/v1/auth/login", "/api/v1/auth/logout", "/api/v1/auth/users/me", "/api/v1/auth/users/me/sessions",
            "/api/v1/auth/users/me/sessions/{id}", "/api/session", "/api/session/sync", "/api/session/info",
            "/management/users", "/management/users/{id}", "/management/users/{id}/password",
            "/api/sessions", "/api/sessions/{id}", "/api/sessions/{id}/heartbeat", "/api/sessions/{id}/commands", "/api/sessions/{id}/messages",
            "/api/sessions/{id}/documents", "/api/sessions/{id}/documents/{name}", "/api/sessions/{id}/finalize", "/api/sessions/{id}/events",
        ])
        for (path, ops) in paths {
            for method in ops.keys {
                // Every documented operation reaches a handler: not the router's 404 ("No route for") nor a 405.
                let r = try curl(["--unix-socket", d.socketPath, "-w", "\n%{http_code}", "-X", method.uppercased(),
                                  "http://localhost\(path.replacingOccurrences(of: "{id}", with: "x"))"])
                #expect(!r.stdout.contains("No route for") && !r.stdout.hasSuffix("\n405"), "\(method) \(path) is documented but answers \(r.stdout)")
            }
        }
        // And nothing that is served is missing: an undocumented path is the router's 404.
        let missing = try curl(["--unix-socket", d.socketPath, "http://localhost/api/v1/auth/nothing"])
        #expect(missing.stdout.contains("No route for"))
    }

    @Test func readyzReportsMissingChimeraXAndTurnsReadyWithOne() throws {
        let d = try DaemonProcess(environment: ["PATH": "/nonexistent"])
        let r = try curl(["-i", "\(d.baseURL)/readyz"])
        #expect(r.stdout.hasPrefix("HTTP/1.1 503"))
        #expect(r.stdout.contains("\"chimerax\":{\"ok\":false"))
        let fake = d.directory + "/chimerax"
        _ = FileManager.default.createFile(atPath: fake, contents: Data("#!/bin/sh\n".utf8), attributes: [.posixPermissions: 0o755])
        let d2 = try DaemonProcess(["--chimerax", fake])
        let r2 = try curl(["-i", "\(d2.baseURL)/readyz"])
        #expect(r2.stdout.hasPrefix("HTTP/1.1 200"))
        #expect(r2.stdout.contains("\"status\":\"ready\""))
    }
}
