import Foundation
import Glibc
import HTTPServer
import SupervisorSessions
import SupervisorStore

/// API.md §4: commands, messages, documents and finalize of a session.
extension SessionRoutes {
    func registerWork(on router: inout Router, access: Access, owned: @escaping @Sendable (Request) throws(Problem) -> SessionRecord) {
        let manager = self.manager
        let state = self.state

        @Sendable func problem(_ f: CommandFailure) -> Problem {
            switch f {
            case .notFound: return Problem(404, "session_not_found", "No such session.")
            case .forbidden: return Problem(403, "forbidden", "This session belongs to someone else.")
            case .ended(let s): return Problem(410, "session_ended", "The session has ended (\(s)).")
            case .notReady(let s): return Problem(409, "session_not_ready", "The session is \(s); commands run once it is ready.")
            case .refused(let r): return Problem(403, "command_not_allowed", "'\(r.command)' is not allowed: \(r.reason).")
            case .queueFull: return Problem(429, "rate_limited", "Too many commands are waiting for this session; try again shortly.", headers: [("Retry-After", "1")])
            case .timeout(let s): return Problem(504, "command_timeout", "ChimeraX did not answer within \(s) s; the session stays usable.")
            case .noAnswer: return Problem(502, "chimerax_unavailable", "ChimeraX did not answer.")
            case .saveFailed(let m): return Problem(502, "finalize_failed", "ChimeraX could not save the session: \(m)")
            }
        }

        router.add(.POST, "/api/sessions/{id}/commands", doc: RouteDoc(
            "Run one ChimeraX command (checked against the allow-list, each part split by `;`) through its REST interface.", tags: ["sessions"],
            responses: [("200", "id, command, ok, error, log, json_values, duration_ms"), ("400", "validation_error"), ("403", "command_not_allowed or forbidden"),
                        ("404", "session_not_found"), ("409", "session_not_ready"), ("410", "session_ended"), ("429", "rate_limited"),
                        ("502", "chimerax_unavailable"), ("504", "command_timeout")])) { req, responder in
          do throws(Problem) {
            let caller = try access.caller(req)
            let body = try req.jsonObject(limit: 64 << 10)
            guard case .string(let command)? = body["command"] else { throw Problem.validation(field: "command", "a string") }
            if case .object(let members) = body, let k = members.first(where: { $0.0 != "command" })?.0 {
                throw Problem.validation(field: k, "unknown field")
            }
            guard !command.trimmingCharacters(in: .whitespaces).isEmpty, command.utf8.count <= 8192 else {
                throw Problem.validation(field: "command", "a command of 1 to 8192 bytes")
            }
            let id = req.params["id"] ?? ""
            // Ownership before the quota: someone else's session costs nothing.
            let rec = manager.record(id)
            if let rec, !caller.mayActOn(ownerType: rec.ownerType, ownerID: rec.ownerID) {
                if case .anonymous = caller { throw Problem(401, "unauthorized", "Credentials are required.", headers: [("WWW-Authenticate", "Bearer")]) }
                throw Problem(403, "forbidden", "This session belongs to someone else.")
            }
            var rateHeaders: [(String, String)] = []
            if let key = caller.identityKey, rec?.isEnded == false {
                let quota = state.identity.commandQuota.consume(key, now: state.identity.now)
                rateHeaders = [("RateLimit-Policy", quota.policy.policyHeader), ("RateLimit", quota.header)]
                guard quota.allowed else {
                    throw Problem(429, "rate_limited", "Too many commands; try again later.", headers: [("Retry-After", "\(max(1, quota.resetIn))")] + rateHeaders)
                }
            }
            // Answered when ChimeraX has (no thread waits meanwhile).
            let limitHeaders = rateHeaders
            manager.submitCommand(id, command, caller: caller) { result in
                let counted: String
                switch result {
                case .success(let o): counted = o.ok ? "ok" : "error"
                case .failure(.refused): counted = "refused"
                case .failure(.timeout): counted = "timeout"
                case .failure(.queueFull): counted = "busy"
                case .failure: counted = "failed"
                }
                manager.counters.withLock { $0.commands[counted, default: 0] += 1 }
                switch result {
                case .failure(let f):
                    responder.send(problem(f))
                case .success(let outcome):
                    // (A store write: not on the thread this answer may come on.)
                    if case .browser(let a) = caller { DispatchQueue.global().async { try? state.identity.countUsage(anonymousID: a.id, commands: 1) } }
                    var resp = Response.json(.object([
                        ("id", .string(id)), ("command", .string(command)), ("ok", .bool(outcome.ok)), ("error", outcome.error), ("log", outcome.log),
                        ("json_values", outcome.jsonValues), ("duration_ms", .number((outcome.durationMs * 1000).rounded() / 1000)),
                    ]))
                    for (k, v) in limitHeaders { resp.headers.add(k, v) }
                    responder.send(resp)
                }
            }
          } catch {
            responder.send(error)
          }
        }

        router.add(.GET, "/api/sessions/{id}/messages", doc: RouteDoc(
            "The transcript: commands, replies, ChimeraX's log and lifecycle events; list envelope.", tags: ["sessions"],
            responses: [("200", "list envelope of {order, timestamp, kind, level, text, data}"), ("400", "validation_error"), ("403", "forbidden"),
                        ("404", "session_not_found")],
            query: [("limit", "1..200 (50)"), ("offset", "≥ 0"), ("sort_by", "order (also message_order) or timestamp (order)"), ("sort_order", "asc or desc (asc)")])) { req throws(Problem) in
            let rec = try owned(req)
            let (limit, offset) = try pagination(req)
            // `message_order` is the name the original design gave `order`: accepted as the same.
            let sortBy = req.query("sort_by").map { $0 == "message_order" ? "order" : $0 } ?? "order"
            let order = req.query("sort_order") ?? "asc"
            var errors: [Problem.FieldError] = []
            if !["order", "timestamp"].contains(sortBy) { errors.append(.init(field: "sort_by", message: "order or timestamp")) }
            if order != "asc" && order != "desc" { errors.append(.init(field: "sort_order", message: "asc or desc")) }
            if !errors.isEmpty { throw Problem.validation(errors) }
            var entries = state.store.read { $0.transcripts[rec.id] ?? [] }
            // Stored in order; by timestamp ties keep the order.
            if sortBy == "timestamp" { entries.sort { $0.timestamp == $1.timestamp ? $0.order < $1.order : $0.timestamp < $1.timestamp } }
            if order == "desc" { entries.reverse() }
            let page = entries.dropFirst(offset).prefix(limit).map { e -> JSON in
                .object([("order", .int(e.order)), ("timestamp", .string(rfc3339(e.timestamp))), ("kind", .string(e.kind)), ("level", .string(e.level)),
                         ("text", .string(e.text)), ("data", e.dataJSON.flatMap { try? JSON.parse($0) } ?? .null)])
            }
            return Response.json(listEnvelope(Array(page), total: entries.count, limit: limit, offset: offset))
        }

        router.add(.GET, "/api/sessions/{id}/documents", doc: RouteDoc(
            "Files of the session (the upload, images and session files ChimeraX saved); list envelope.", tags: ["sessions"],
            responses: [("200", "list envelope of {name, size_bytes, media_type, created_at}"), ("403", "forbidden"), ("404", "session_not_found"),
                        ("410", "session_ended")],
            query: [("limit", "1..200 (50)"), ("offset", "≥ 0")])) { req throws(Problem) in
            let rec = try owned(req)
            let (limit, offset) = try pagination(req)
            guard !rec.isEnded || rec.status == "finalized" else { throw Problem(410, "session_ended", "The session has ended (\(rec.status)); its files are gone.") }
            let docs = SessionManager.documents(in: rec.directory)
            let items = docs.dropFirst(offset).prefix(limit).map { d -> JSON in
                .object([("name", .string(d.name)), ("size_bytes", .int(d.size)), ("media_type", .string(d.mediaType)), ("created_at", .string(rfc3339(d.createdAt)))])
            }
            return Response.json(listEnvelope(Array(items), total: docs.count, limit: limit, offset: offset))
        }

        router.add(.GET, "/api/sessions/{id}/documents/{name}", doc: RouteDoc(
            "Download one document of the session (a file directly in its directory; never through a link).", tags: ["sessions"],
            responses: [("200", "the file"), ("403", "forbidden"), ("404", "session_not_found or resource_not_found"), ("410", "session_ended")])) { req, responder in
            do throws(Problem) {
                let rec = try owned(req)
                guard !rec.isEnded || rec.status == "finalized" else { throw Problem(410, "session_ended", "The session has ended (\(rec.status)); its files are gone.") }
                let name = req.params["name"] ?? ""
                guard let fd = SessionManager.openDocument(name, in: rec.directory) else { throw Problem(404, "resource_not_found", "No such document.") }
                var st = stat()
                fstat(fd, &st)
                let ext = name.split(separator: ".").last.map { $0.lowercased() } ?? ""
                var head = Response(status: 200)
                head.headers.add("Content-Type", SessionManager.mediaTypes[ext] ?? "application/octet-stream")
                head.headers.add("Content-Length", "\(st.st_size)")
                // The name is a plain file name (checked); quotes and backslashes escaped, non-ASCII in filename*.
                let ascii = name.unicodeScalars.allSatisfy { $0.isASCII && $0.value >= 0x20 }
                let quoted = name.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
                head.headers.add("Content-Disposition", ascii ? "attachment; filename=\"\(quoted)\""
                    : "attachment; filename*=UTF-8''\(SessionManager.queryEncode(name))")
                head.headers.add("X-Content-Type-Options", "nosniff")
                // Sent from the file as the client takes it (sendfile): no size limit, no copy in memory.
                guard let stream = responder.startStream(head) else {
                    close(fd)
                    return
                }
                stream.sendFile(fd, length: Int(st.st_size))
            } catch {
                responder.send(error)
            }
        }

        router.add(.GET, "/api/sessions/{id}/events", doc: RouteDoc(
            "A text/event-stream of the session: `status` changes, `expiry_warning` (a while before it would expire, with "
                + "seconds_left) and `transcript` entries; resumes after `Last-Event-ID`; a keep-alive comment every 15 s. "
                + "An ended session's stream gives its final status and ends.", tags: ["sessions"],
            responses: [("200", "text/event-stream"), ("400", "validation_error"), ("403", "forbidden"), ("404", "session_not_found"),
                        ("429", "rate_limited (too many streams for this session)")])) { req, responder in
            do throws(Problem) {
                let rec = try owned(req)
                var last: Int?
                if let v = req.headers["Last-Event-ID"] ?? req.query("last_event_id") {
                    guard let n = Int(v.trimmingCharacters(in: .whitespaces)), n >= 0 else {
                        throw Problem.validation(field: "Last-Event-ID", "a non-negative integer (an id this stream sent)")
                    }
                    last = n
                }
                var head = Response(status: 200)
                head.headers.add("Content-Type", "text/event-stream; charset=utf-8")
                head.headers.add("Cache-Control", "no-store")
                head.headers.add("X-Accel-Buffering", "no")
                let current = JSON.object([("id", .string(rec.id)), ("status", .string(rec.status)),
                                           ("termination_reason", rec.terminationReason.map { .string($0) } ?? .null)])
                guard manager.events.hasRoom(rec.id) else {
                    throw Problem(429, "rate_limited", "Too many event streams are open for this session.", headers: [("Retry-After", "5")])
                }
                guard let stream = responder.startStream(head) else { return }
                do throws(SessionEvents.SubscribeError) {
                    try manager.events.subscribe(rec.id, stream, lastEventID: last, initial: ("status", current))
                } catch {
                    switch error {
                    case .closed:
                        // Ended: the final status, then the end of the stream.
                        stream.write(Array("retry: 2000\n\nevent: status\ndata: \(current.serializedString())\n\n".utf8))
                        stream.finish()
                    case .tooMany:
                        stream.write(Array("event: error\ndata: {\"code\":\"rate_limited\",\"detail\":\"too many event streams for this session\"}\n\n".utf8))
                        stream.finish()
                    }
                }
            } catch {
                responder.send(error)
            }
        }

        router.addBlocking(.POST, "/api/sessions/{id}/finalize", doc: RouteDoc(
            "Save the session as session.cxs among its documents, then stop it; answers once it is finalized (documents kept).", tags: ["sessions"],
            responses: [("200", "the finalized session"), ("403", "forbidden"), ("404", "session_not_found"), ("409", "session_not_ready"),
                        ("410", "session_ended"), ("502", "finalize_failed"), ("504", "command_timeout")])) { req throws(Problem) in
            let caller = try access.caller(req)
            let id = req.params["id"] ?? ""
            let final: SessionRecord
            do throws(CommandFailure) {
                final = try manager.finalize(id, caller: caller)
            } catch {
                throw problem(error)
            }
            return Response.json(sessionJSON(final, state.configuration))
        }
    }
}
