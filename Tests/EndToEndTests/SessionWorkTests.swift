import Foundation
import Glibc
import TestSupport
import Synchronization
import Testing

/// Commands, transcript, documents and finalize against the built daemon and the stand-in ChimeraX.
@Suite("Working inside a session", .serialized)
struct SessionWorkTests {
    func command(_ f: SessionFixture, _ id: String, _ c: String, as token: String? = nil) throws -> RawResponse {
        let body = String(decoding: try JSONSerialization.data(withJSONObject: ["command": c]), as: UTF8.self)
        return try f.call("POST", "/api/sessions/\(id)/commands", as: token, body: body)
    }


    @Test func commandsAnswerInTheAPIShapeAndTheTranscriptKeepsTheirOrder() throws {
        let f = try SessionFixture()
        let id = try f.readySession()
        let ok = try command(f, id, "info models")
        #expect(ok.status == 200, "\(ok.text)")
        #expect(ok.json["ok"] as? Bool == true && ok.json["id"] as? String == id && ok.json["command"] as? String == "info models")
        #expect(ok.json["error"] is NSNull && ok.json["json_values"] is [Any] && ok.json["duration_ms"] is NSNumber)
        #expect(((ok.json["log"] as? [String: Any])?["note"] as? [String]) == ["0 models\n"], "\(ok.text)")
        #expect(ok.header("ratelimit") != nil)

        let failing = try command(f, id, "open missing.pdb")
        #expect(failing.status == 200 && failing.json["ok"] as? Bool == false)
        let err = try #require(failing.json["error"] as? [String: Any])
        #expect(err["type"] as? String == "UserError" && (err["message"] as? String ?? "").contains("No such file"))

        #expect(try command(f, id, "version; view").json["ok"] as? Bool == true)
        // The user's usage and command quota count them.
        let info = try f.call("GET", "/api/session/info").json
        #expect((info["usage_stats"] as? [String: Any])?["commands_run"] as? Int == 3, "\(info)")
        let commandsQuota = ((info["rate_limits"] as? [String: Any])?["commands"] as? [String: Any]) ?? [:]
        #expect(commandsQuota["remaining"] as? Int == (commandsQuota["limit"] as? Int ?? 0) - 3, "\(commandsQuota)")
        let metrics = try curl(["--unix-socket", f.daemon.socketPath, "http://localhost/metrics"]).stdout
        #expect(metrics.contains(#"chimerax_supervisor_commands_total{result="ok"} 2"#) && metrics.contains(#"chimerax_supervisor_commands_total{result="error"} 1"#))

        // The transcript: lifecycle event, log blocks, then each command and its reply in order.
        let all = try f.call("GET", "/api/sessions/\(id)/messages?limit=200")
        #expect(all.status == 200)
        let items = try #require(all.json["items"] as? [[String: Any]])
        let orders = items.compactMap { $0["order"] as? Int }
        #expect(orders == orders.sorted() && Set(orders).count == orders.count)
        let commands = items.filter { $0["kind"] as? String == "command" }.compactMap { $0["text"] as? String }
        #expect(commands == ["info models", "open missing.pdb", "version; view"], "\(commands)")
        // ChimeraX's own log of a command comes between it and its reply; commands and replies alternate.
        let exchange = items.compactMap { $0["kind"] as? String }.filter { $0 == "command" || $0 == "reply" }
        #expect(exchange == ["command", "reply", "command", "reply", "command", "reply"], "\(exchange)")
        #expect(items.contains { $0["kind"] as? String == "event" && ($0["text"] as? String ?? "").contains("ready") })
        #expect(items.contains { $0["kind"] as? String == "log" && ($0["text"] as? String ?? "").contains("REST server started") },
                "ChimeraX's stdout log is in the transcript")
        #expect(all.json["total_count"] as? Int == items.count)

        let page = try f.call("GET", "/api/sessions/\(id)/messages?limit=2&offset=1&sort_order=desc")
        let pageItems = try #require(page.json["items"] as? [[String: Any]])
        #expect(pageItems.compactMap { $0["order"] as? Int } == Array(orders.reversed()[1...2]))
        #expect(page.json["next_offset"] as? Int == 3 && page.json["prev_offset"] as? Int == 0)
        #expect(try f.call("GET", "/api/sessions/\(id)/messages?sort_by=level").status == 400)
        #expect(try f.call("GET", "/api/sessions/\(id)/messages?sort_order=up").status == 400)
        #expect(try f.call("GET", "/api/sessions/\(id)/messages?sort_by=timestamp").status == 200)
        let byAlias = try f.call("GET", "/api/sessions/\(id)/messages?sort_by=message_order&sort_order=desc&limit=1").json["items"] as? [[String: Any]]
        #expect(byAlias?.first?["order"] as? Int == orders.last)
        #expect(try f.call("GET", "/api/sessions/\(id)/messages", as: f.ben).status == 403)
        #expect(try f.call("GET", "/api/sessions/\(UUID().uuidString.lowercased())/messages").status == 404)
    }

    @Test func aReplyInTextPlainFromChimeraXBefore111ReadsTheSame() throws {
        // ChimeraX before 1.11 sends the same JSON as text/plain.
        let f = try SessionFixture(environment: ["CHIMERAX_STANDIN_VERSION": "1.10"])
        let id = try f.readySession()
        let r = try command(f, id, "version")
        #expect(r.status == 200 && r.json["ok"] as? Bool == true, "\(r.text)")
        #expect(((r.json["log"] as? [String: Any])?["note"] as? [String])?.first?.contains("version: 1.10") == true, "\(r.text)")
        let bad = try command(f, id, "open missing.pdb")
        #expect(bad.json["ok"] as? Bool == false && (bad.json["error"] as? [String: Any])?["type"] as? String == "UserError")
    }

    @Test func theTranscriptKeepsItsNewestEntriesWithinItsBound() throws {
        let f = try SessionFixture(["--transcript-max", "10"])
        let id = try f.readySession()
        for i in 0..<12 { #expect(try command(f, id, "turn y \(i)").status == 200) }
        let r = try f.call("GET", "/api/sessions/\(id)/messages?limit=200").json
        let items = r["items"] as? [[String: Any]] ?? []
        let orders = items.compactMap { $0["order"] as? Int }
        // Trimmed in steps: never more than the bound and a tenth, the newest kept, in order.
        #expect(items.count >= 10 && items.count <= 11 && r["total_count"] as? Int == items.count, "\(orders)")
        #expect(orders == Array((orders.first ?? 0)...(orders.last ?? 0)) && items.last?["text"] as? String == "ok")
        #expect(items.compactMap { $0["text"] as? String }.contains("turn y 11"))
    }

    @Test func everyRefusedFormIs403AndReachesNothing() throws {
        let f = try SessionFixture()
        let id = try f.readySession()
        let outside = f.state + "/escape.png"
        for c in ["runscript evil.py", "exit", "view; exit", "view ;exit", "alias x exit", "perframe \"exit\"", "time view", "open evil.py",
                  "open evil.cxc", "open x.pdb format python", "open x.pdb format cmd", "open http://example.org/x.pdb", "save ../../escape.png",
                  "save \(outside)", "save evil.py", "info models saveFile /tmp/x", "remotecontrol rest stop", "cd /", "frobnicate",
                  "view\nexit"] {
            let r = try command(f, id, c)
            #expect(r.status == 403 && r.json["code"] as? String == "command_not_allowed", "\(c): \(r.status) \(r.text)")
        }
        #expect(!FileManager.default.fileExists(atPath: outside))
        // None of them reached ChimeraX: it still runs and answers.
        #expect(try f.call("GET", "/api/sessions/\(id)").json["status"] as? String == "ready")
        #expect(try command(f, id, "version").json["ok"] as? Bool == true)
        // Refusals are in the transcript, marked.
        let items = try f.call("GET", "/api/sessions/\(id)/messages?limit=200").json["items"] as? [[String: Any]] ?? []
        #expect(items.contains { $0["text"] as? String == "runscript evil.py" && $0["level"] as? String == "error" })
        // Another user, an unknown session, bad bodies.
        #expect(try command(f, id, "version", as: f.ben).status == 403)
        #expect(try command(f, UUID().uuidString.lowercased(), "version").status == 404)
        #expect(try f.call("POST", "/api/sessions/\(id)/commands", body: #"{"command":7}"#).status == 400)
        #expect(try f.call("POST", "/api/sessions/\(id)/commands", body: #"{"command":"view","x":1}"#).status == 400)
        #expect(try f.call("POST", "/api/sessions/\(id)/commands", body: #"{"command":"   "}"#).status == 400)
    }

    @Test func aSavedImageIsADocumentThatDownloadsAndNothingElseIsReachable() throws {
        let f = try SessionFixture()
        let id = try f.readySession()
        #expect(try command(f, id, "save image.png width 64 height 64").json["ok"] as? Bool == true)
        let docs = try f.call("GET", "/api/sessions/\(id)/documents")
        let items = try #require(docs.json["items"] as? [[String: Any]])
        let image = try #require(items.first { $0["name"] as? String == "image.png" }, "\(docs.text)")
        #expect(image["media_type"] as? String == "image/png" && (image["size_bytes"] as? Int ?? 0) > 8 && image["created_at"] is String)
        #expect(!items.contains { ["home", "start", "tmp"].contains($0["name"] as? String ?? "") }, "directories are not documents")
        let got = try f.call("GET", "/api/sessions/\(id)/documents/image.png")
        #expect(got.status == 200 && got.header("content-type") == "image/png")
        #expect(Array(got.body.prefix(8)) == [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A])
        #expect(got.header("content-disposition") == "attachment; filename=\"image.png\"")
        for bad in ["..%2F..%2Fstate%2Fstore.log", "%2Fetc%2Fpasswd", "home", ".hidden", "nosuch.png", "..", "%2E%2E"] {
            #expect(try f.call("GET", "/api/sessions/\(id)/documents/\(bad)").status == 404, "\(bad)")
        }
        // A large document streams from the file (sendfile) with its length; HEAD gives the length only.
        let dir = f.state + "/sessions/" + id
        let big = (0..<(24 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ $0 >> 12) }
        #expect(FileManager.default.createFile(atPath: dir + "/big.cxs", contents: Data(big)))
        let out = DaemonProcess.makeTempDirectory() + "/big.cxs"
        let dl = try curl(["-s", "-o", out, "-w", "%{http_code} %{size_download} %{content_type}", "-H", "Authorization: Bearer \(f.ann)",
                           "http://127.0.0.1:\(f.port)/api/sessions/\(id)/documents/big.cxs"])
        #expect(dl.stdout == "200 \(big.count) application/x-chimerax-session", "\(dl.stdout)")
        #expect(FileManager.default.contents(atPath: out) == Data(big), "the bytes arrive intact")
        let head = try curl(["-s", "-I", "-H", "Authorization: Bearer \(f.ann)", "http://127.0.0.1:\(f.port)/api/sessions/\(id)/documents/big.cxs"])
        #expect(head.stdout.lowercased().contains("content-length: \(big.count)\r\n") && head.stdout.components(separatedBy: "ontent-Length").count == 2,
                "\(head.stdout)")
        // A link planted in the directory is not followed.
        symlink("/etc/passwd", dir + "/passwd.png")
        #expect(try f.call("GET", "/api/sessions/\(id)/documents/passwd.png").status == 404)
        #expect(try f.call("GET", "/api/sessions/\(id)/documents", as: f.ben).status == 403)
        // After termination the files are gone.
        _ = try f.call("DELETE", "/api/sessions/\(id)")
        #expect(try f.call("GET", "/api/sessions/\(id)/documents").status == 410)
        #expect(try f.call("GET", "/api/sessions/\(id)/documents/image.png").status == 410)
    }

    @Test func finalizeSavesASessionFileAndKeepsTheDocuments() throws {
        let f = try SessionFixture()
        let id = try f.readySession()
        #expect(try command(f, id, "save view.png").status == 200)
        let r = try f.call("POST", "/api/sessions/\(id)/finalize")
        #expect(r.status == 200 && r.json["status"] as? String == "finalized" && r.json["termination_reason"] as? String == "finalized", "\(r.text)")
        let names = (try f.call("GET", "/api/sessions/\(id)/documents").json["items"] as? [[String: Any]] ?? []).compactMap { $0["name"] as? String }
        #expect(names.contains("session.cxs") && names.contains("view.png"), "\(names)")
        let cxs = try f.call("GET", "/api/sessions/\(id)/documents/session.cxs")
        #expect(cxs.status == 200 && String(decoding: cxs.body, as: UTF8.self).hasPrefix("# ChimeraX Session"))
        #expect(f.standIns().isEmpty)
        #expect(try command(f, id, "version").status == 410, "no commands after the end")
        #expect(try f.call("POST", "/api/sessions/\(id)/finalize").status == 410)
        // Deleting a finalized session removes its documents; the record stays finalized.
        let del = try f.call("DELETE", "/api/sessions/\(id)")
        #expect(del.json["status"] as? String == "finalized" && del.json["documents_removed"] as? Int == 2, "\(del.text)")
        #expect(!FileManager.default.fileExists(atPath: f.state + "/sessions/" + id))
    }

    @Test func aCommandThatOutlastsItsTimeoutIs504AndTheNextOneWorks() throws {
        let f = try SessionFixture(["--command-timeout", "1"])
        let id = try f.readySession()
        let slow = try command(f, id, "wait 90")   // 1.5 s in the stand-in
        #expect(slow.status == 504 && slow.json["code"] as? String == "command_timeout", "\(slow.text)")
        let next = try command(f, id, "version")
        #expect(next.status == 200 && next.json["ok"] as? Bool == true, "\(next.text)")
        #expect(try f.call("GET", "/api/sessions/\(id)").json["status"] as? String == "ready")
    }

    @Test func commandsWaitTheirTurnInABoundedQueue() throws {
        let f = try SessionFixture(["--command-timeout", "5"])
        let id = try f.readySession()
        let statuses = Mutex<[Int]>([])
        let group = DispatchGroup()
        let port = f.port, token = f.ann
        @Sendable func post(_ c: String) {
            let r = try? httpRequest(port: port, "POST", "/api/sessions/\(id)/commands", headers: [("Authorization", "Bearer \(token)")],
                                     body: #"{"command":"\#(c)"}"#)
            statuses.withLock { $0.append(r?.status ?? 0) }
        }
        // Threads of their own (the global queue would run only a few blocking clients at once).
        func client(_ c: String) {
            group.enter()
            Thread {
                post(c)
                group.leave()
            }.start()
        }
        // One slow command runs (1 s); ten more arrive while it does: eight wait, the rest are refused.
        client("wait 60")
        usleep(300_000)
        for _ in 0..<10 { client("version") }
        group.wait()
        let s = statuses.withLock { $0 }.sorted()
        #expect(s.filter { $0 == 200 }.count == 9 && s.filter { $0 == 429 }.count == 2, "\(s)")
        // In order: the transcript has the slow command, then the eight that waited.
        let items = try f.call("GET", "/api/sessions/\(id)/messages?limit=200").json["items"] as? [[String: Any]] ?? []
        let commands = items.filter { $0["kind"] as? String == "command" }.compactMap { $0["text"] as? String }
        #expect(commands == ["wait 60"] + Array(repeating: "version", count: 8), "\(commands)")
    }
}

@Suite("A session's private REST port", .serialized)
struct PrivateRESTPortTests {
    @Test func noOtherLocalProcessCanConnectToChimeraXButTheSupervisorCan() throws {
        let f = try SessionFixture()
        let id = try f.readySession()
        // The port, from ChimeraX's own log line in the transcript.
        let items = try f.call("GET", "/api/sessions/\(id)/messages?limit=200").json["items"] as? [[String: Any]] ?? []
        let line = try #require(items.compactMap { $0["text"] as? String }.first { $0.contains("REST server started on host 127.0.0.1 port ") })
        let port = try #require(UInt16(line.components(separatedBy: "port ").last!.prefix { $0.isNumber }))
        // ChimeraX runs in a network namespace of its own: not ours, not the daemon's.
        let standIn = try #require(f.standIns().first)
        let theirs = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(standIn)/ns/net")
        #expect(theirs != (try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/ns/net")))
        #expect(theirs != (try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(f.daemon.pid)/ns/net")))
        // From here (any local process on the host's loopback) the port does not answer ChimeraX.
        let fd = tcpConnect(port: port)
        defer { if fd >= 0 { close(fd) } }
        if fd >= 0 {
            // Something else on the host happens to use that port number: it must not be ChimeraX.
            let req = Array("GET /cmdline.html HTTP/1.0\r\n\r\n".utf8)
            _ = send(fd, req, req.count, 0)
            var buf = [UInt8](repeating: 0, count: 4096)
            let n = recv(fd, &buf, buf.count, 0)
            #expect(!String(decoding: buf.prefix(max(0, n)), as: UTF8.self).contains("ChimeraX command line"))
        } else {
            #expect(errno == ECONNREFUSED)
        }
        // The supervisor reaches it.
        let body = #"{"command":"version"}"#
        #expect(try f.call("POST", "/api/sessions/\(id)/commands", body: body).json["ok"] as? Bool == true)
    }
}

extension SessionFixture {
    /// A new session of ann's, once ready.
    func readySession(_ body: String = "{}") throws -> String {
        guard let id = try create(body)["id"] as? String else { throw TestFailure("no id") }
        _ = try waitFor(id, status: "ready")
        return id
    }
}

/// A Server-Sent Events client on a raw socket: the head, then events as they arrive.
final class EventStreamClient {
    let fd: Int32
    private var buffer: [UInt8] = []
    private(set) var status = 0
    private(set) var contentType = ""
    private(set) var ended = false

    init(port: UInt16, path: String, token: String, lastEventID: Int? = nil) throws {
        fd = tcpConnect(port: port)
        guard fd >= 0 else { throw TestFailure("connect: \(errno)") }
        var tv = timeval(tv_sec: 0, tv_usec: 200_000)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        let req = "GET \(path) HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \(token)\r\nAccept: text/event-stream\r\n"
            + (lastEventID.map { "Last-Event-ID: \($0)\r\n" } ?? "") + "\r\n"
        _ = send(fd, req, req.utf8.count, 0)
        let deadline = Date().addingTimeInterval(5)
        while Date() < deadline {
            fill()
            if let end = find([13, 10, 13, 10]) {
                let head = String(decoding: buffer[..<end], as: UTF8.self)
                status = Int(head.split(separator: " ").dropFirst().first ?? "") ?? 0
                contentType = head.split(separator: "\r\n").first { $0.lowercased().hasPrefix("content-type:") }.map { String($0.dropFirst(13)).trimmingCharacters(in: .whitespaces) } ?? ""
                buffer.removeFirst(end + 4)
                return
            }
        }
        throw TestFailure("no response head")
    }

    deinit { close(fd) }

    private func fill() {
        var buf = [UInt8](repeating: 0, count: 16384)
        let n = recv(fd, &buf, buf.count, 0)
        if n > 0 { buffer += buf[0..<n] } else if n == 0 { ended = true }
    }

    private func find(_ needle: [UInt8]) -> Int? {
        guard buffer.count >= needle.count else { return nil }
        for i in 0...(buffer.count - needle.count) where Array(buffer[i..<i + needle.count]) == needle { return i }
        return nil
    }

    struct Event {
        var id: Int?
        var name = "message"
        var data = ""
        var json: [String: Any] { (try? JSONSerialization.jsonObject(with: Data(data.utf8))) as? [String: Any] ?? [:] }
    }

    /// Events until `done` says stop (or `timeout` seconds, or the end of the stream).
    func events(timeout: Double = 10, until done: ([Event]) -> Bool) -> [Event] {
        var out: [Event] = []
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline && !done(out) {
            while let end = find([10, 10]) {
                let block = String(decoding: buffer[..<end], as: UTF8.self)
                buffer.removeFirst(end + 2)
                var e = Event()
                var isComment = true
                for line in block.split(separator: "\n", omittingEmptySubsequences: false) {
                    if line.hasPrefix(":") { continue }
                    isComment = false
                    if line.hasPrefix("id: ") { e.id = Int(line.dropFirst(4)) }
                    if line.hasPrefix("event: ") { e.name = String(line.dropFirst(7)) }
                    if line.hasPrefix("data: ") { e.data += line.dropFirst(6) }
                }
                if !isComment && !e.data.isEmpty { out.append(e) }
            }
            if done(out) || ended { break }
            fill()
        }
        return out
    }
}

@Suite("Live session events", .serialized)
struct SessionEventTests {
    @Test func aStreamSeesStatusAndTranscriptResumesFromLastEventIDAndEndsWithTheSession() throws {
        let f = try SessionFixture()
        let id = try f.readySession()
        let a = try EventStreamClient(port: f.port, path: "/api/sessions/\(id)/events", token: f.ann)
        #expect(a.status == 200 && a.contentType.hasPrefix("text/event-stream"))
        let first = a.events { $0.contains { $0.name == "status" } }
        #expect(first.first?.name == "status" && first.first?.json["status"] as? String == "ready", "the current state first")

        let body = #"{"command":"info models"}"#
        #expect(try f.call("POST", "/api/sessions/\(id)/commands", body: body).status == 200)
        let live = a.events { es in es.contains { $0.name == "transcript" && $0.json["kind"] as? String == "reply" } }
        #expect(live.contains { $0.name == "status" && $0.json["status"] as? String == "busy" })
        let command = live.first { $0.name == "transcript" && $0.json["kind"] as? String == "command" }
        #expect(command?.json["text"] as? String == "info models")
        let lastSeen = try #require(live.compactMap(\.id).max())
        let ids = live.compactMap(\.id)
        #expect(ids == ids.sorted(), "ids increase")

        // Gone while something happens; back with Last-Event-ID: what was missed, nothing twice.
        close(a.fd)
        #expect(try f.call("POST", "/api/sessions/\(id)/commands", body: #"{"command":"version"}"#).status == 200)
        let b = try EventStreamClient(port: f.port, path: "/api/sessions/\(id)/events", token: f.ann, lastEventID: lastSeen)
        let missed = b.events { es in es.contains { $0.name == "transcript" && $0.json["text"] as? String == "version" } }
        #expect(missed.contains { $0.name == "transcript" && $0.json["text"] as? String == "version" }, "\(missed.map(\.data))")
        #expect(missed.allSatisfy { ($0.id ?? 0) > lastSeen })
        #expect(!missed.contains { $0.name == "status" && $0.json["status"] as? String == "ready" && $0.id == nil })

        // The end: the final status, then the stream closes.
        _ = try f.call("DELETE", "/api/sessions/\(id)")
        let end = b.events { es in es.contains { $0.json["status"] as? String == "terminated" } }
        #expect(end.contains { $0.name == "status" && $0.json["termination_reason"] as? String == "user_request" })
        _ = b.events(timeout: 3) { _ in false }
        #expect(b.ended, "the stream ends with the session")

        // An ended session's stream: its final status, and the end. Someone else's: 403.
        let c = try EventStreamClient(port: f.port, path: "/api/sessions/\(id)/events", token: f.ann)
        let final = c.events(timeout: 3) { _ in false }
        #expect(final.count == 1 && final.first?.json["status"] as? String == "terminated" && c.ended)
        #expect(try EventStreamClient(port: f.port, path: "/api/sessions/\(id)/events", token: f.ben).status == 403)
        #expect(try EventStreamClient(port: f.port, path: "/api/sessions/\(id)/events", token: f.ann, lastEventID: nil).status == 200)
    }

    @Test func anExpiryWarningComesWithTheTimeLeft() throws {
        let f = try SessionFixture(["--expiry-warning", "2"])
        let id = try #require(try f.create(#"{"idle_timeout_s":4}"#)["id"] as? String)
        _ = try f.waitFor(id, status: "ready")
        let s = try EventStreamClient(port: f.port, path: "/api/sessions/\(id)/events", token: f.ann)
        let events = s.events(timeout: 8) { es in es.contains { $0.json["status"] as? String == "terminated" } }
        let warning = try #require(events.first { $0.name == "expiry_warning" }, "\(events.map(\.data))")
        let left = warning.json["seconds_left"] as? Int ?? 0
        #expect(left >= 1 && left <= 2 && warning.json["reason"] as? String == "idle_timeout" && warning.json["expires_at"] is String)
        #expect(events.contains { $0.json["termination_reason"] as? String == "idle_timeout" })
    }
}
