import Foundation
import Glibc
import HTTPServer
import SupervisorConfig
import SupervisorIdentity
import SupervisorSessions
import SupervisorStore

/// API.md §4: create, get, list, update, delete and heartbeat of ChimeraX sessions.
struct SessionRoutes {
    let state: DaemonState
    let manager: SessionManager

    func register(on router: inout Router) {
        let access = Access(state: state)
        let manager = self.manager
        let state = self.state

        /// The caller's identity key if it may own sessions, else the problem to answer.
        @Sendable func owner(_ req: Request) throws(Problem) -> (type: String, id: String, caller: Caller) {
            let caller = try access.caller(req)
            switch caller {
            case .browser where !state.setting(\.allowAnonymous):
                throw Problem(403, "forbidden", "Anonymous sessions may not own ChimeraX sessions here; log in.")
            case .localOperator: throw Problem(403, "forbidden", "A local operator has no identity to own sessions; log in as a user.")
            case .anonymous: throw Problem(401, "unauthorized", "Log in, or POST /api/session/ for an anonymous session first.", headers: [("WWW-Authenticate", "Bearer")])
            default:
                let o = caller.owner!
                return (o.type, o.id, caller)
            }
        }

        /// The session if the caller may act on it: `404 session_not_found`, `403 forbidden`.
        @Sendable func owned(_ req: Request) throws(Problem) -> SessionRecord {
            let caller = try access.caller(req)
            guard let rec = manager.record(req.params["id"] ?? "") else { throw Problem(404, "session_not_found", "No such session.") }
            if caller.mayActOn(ownerType: rec.ownerType, ownerID: rec.ownerID) { return rec }
            if case .anonymous = caller { throw Problem(401, "unauthorized", "Credentials are required.", headers: [("WWW-Authenticate", "Bearer")]) }
            throw Problem(403, "forbidden", "This session belongs to someone else.")
        }

        let uploadLimit = state.configuration.uploadMaxBytes
        router.addBlocking(.POST, "/api/sessions", bodyLimit: uploadLimit + (1 << 20), doc: RouteDoc(
            "Start a ChimeraX session: JSON {name, pdb_id, metadata, idle_timeout_s}, or multipart/form-data with a file part "
                + "`structure` and the same fields.", tags: ["sessions"],
            responses: [("201", "the session, with Location"), ("400", "validation_error"), ("401", "unauthorized"), ("403", "forbidden or csrf_rejected"),
                        ("413", "payload_too_large"), ("415", "unsupported_format"), ("429", "capacity_exhausted (per user) or rate_limited"),
                        ("503", "capacity_exhausted (host), storage_unavailable or service_unavailable")])) { req throws(Problem) in
            let (type, id, caller) = try owner(req)
            let c = state.configuration
            let body: JSON
            var upload: SessionManager.Upload?
            let contentType = req.headers["Content-Type"] ?? ""
            if contentType.lowercased().hasPrefix("multipart/") {
                guard let boundary = Multipart.boundary(of: contentType) else {
                    throw Problem(415, "unsupported_format", "Send multipart/form-data with a boundary, or application/json.")
                }
                var fields: [(String, JSON)] = []
                do throws(Problem) {
                    try Multipart.parse(req.body, boundary: boundary) { part throws(Problem) in
                        if part.name == "structure" {
                            guard upload == nil else { throw Problem.validation(field: "structure", "only one structure per session") }
                            upload = try SessionRoutes.storeUpload(part, workDir: c.workDir, limit: c.uploadMaxBytes)
                        } else if ["name", "pdb_id", "metadata", "idle_timeout_s"].contains(part.name) {
                            guard part.data.count <= 64 << 10 else { throw Problem.validation(field: part.name, "at most 64 KiB") }
                            let text = String(decoding: part.data, as: UTF8.self)
                            switch part.name {
                            case "metadata": fields.append((part.name, (try? JSON.parse(Array(text.utf8))) ?? .string(text)))
                            case "idle_timeout_s": fields.append((part.name, Int(text).map { .int($0) } ?? .string(text)))
                            default: fields.append((part.name, .string(text)))
                            }
                        } else {
                            throw Problem.validation(field: part.name, "unknown field")
                        }
                    }
                } catch {
                    if let u = upload { unlink(u.path) }
                    throw error
                }
                body = .object(fields)
            } else {
                body = try req.jsonObject(limit: 64 << 10)
            }
            do throws(Problem) {
                return try createSession(req, body: body, upload: upload, type: type, id: id, caller: caller)
            } catch {
                if let u = upload { unlink(u.path) }
                throw error
            }
        }

        @Sendable func createSession(_ req: Request, body: JSON, upload: SessionManager.Upload?, type: String, id: String, caller: Caller) throws(Problem) -> Response {
            let c = state.configuration
            var errors: [Problem.FieldError] = []
            var name = ""
            if let v = body["name"], v != .null {
                if case .string(let s) = v, s.count <= 200, !s.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) { name = s }
                else { errors.append(.init(field: "name", message: "a string of at most 200 characters without control characters")) }
            }
            var pdb: String?
            if let v = body["pdb_id"], v != .null {
                if case .string(let s) = v, let p = StructureRules.pdbIDForOpen(s) { pdb = p }
                else { errors.append(.init(field: "pdb_id", message: "a PDB id: a digit and three letters or digits (1abc), or pdb_ and eight (pdb_00001abc)")) }
            }
            var metadata = "{}"
            if let v = body["metadata"], v != .null {
                if case .object = v, v.serialized().count <= 16 << 10 { metadata = String(decoding: v.serialized(), as: UTF8.self) }
                else { errors.append(.init(field: "metadata", message: "an object of at most 16 KiB")) }
            }
            var idle = c.idleTimeout
            if let v = body["idle_timeout_s"], v != .null {
                if let n = v.intValue, (1...c.idleTimeout).contains(n) { idle = n }
                else { errors.append(.init(field: "idle_timeout_s", message: "an integer from 1 to \(c.idleTimeout)")) }
            }
            let known: Set<String> = ["name", "pdb_id", "metadata", "idle_timeout_s"]
            if case .object(let members) = body { for (k, _) in members where !known.contains(k) { errors.append(.init(field: k, message: "unknown field")) } }
            if pdb != nil && upload != nil { errors.append(.init(field: "pdb_id", message: "either pdb_id or a structure upload, not both")) }
            if !errors.isEmpty { throw Problem.validation(errors) }
            guard let key = caller.identityKey else { throw Problem(401, "unauthorized", "No identity.") }
            let quota = state.identity.sessionQuota.consume(key, now: state.identity.now)
            let rateHeaders = [("RateLimit-Policy", quota.policy.policyHeader), ("RateLimit", quota.header)]
            guard quota.allowed else {
                throw Problem(429, "rate_limited", "Too many sessions started; try again later.", headers: [("Retry-After", "\(max(1, quota.resetIn))")] + rateHeaders)
            }
            let rec: SessionRecord
            do throws(SessionError) {
                rec = try manager.create(ownerType: type, ownerID: id, name: name, pdbID: pdb, upload: upload, metadataJSON: metadata, idleTimeout: idle)
            } catch {
                switch error {
                case .capacityUser(let n): throw Problem(429, "capacity_exhausted", "You have \(n) sessions running, the most allowed; end one first.", headers: [("Retry-After", "30")])
                case .capacityHost(let n): throw Problem(503, "capacity_exhausted", "This server runs \(n) sessions, its most; try again later.", headers: [("Retry-After", "30")])
                case .noChimeraX: throw Problem(503, "service_unavailable", "No ChimeraX executable is configured on this server.")
                case .spawn(let m): throw Problem(503, "service_unavailable", "ChimeraX could not be started: \(m)")
                case .storage(let e): throw Problem(503, "storage_unavailable", "The state store cannot take writes right now (\(e.message)).", headers: [("Retry-After", "5")])
                }
            }
            if case .browser(let a) = caller {
                // The session runs already; a counter that cannot be written is logged, not an error for it.
                do throws(IdentityError) {
                    try state.identity.countUsage(anonymousID: a.id, sessions: 1, uploads: upload == nil ? 0 : 1)
                } catch {
                    state.logger.warning("anonymous usage not recorded", [("SESSION_ID", rec.id), ("error", "\(error)")])
                }
            }
            var resp = Response.json(sessionJSON(rec, c, usage: manager.currentUsage(rec)), status: 201)
            resp.headers.add("Location", "/api/sessions/\(rec.id)")
            for (n, v) in rateHeaders { resp.headers.add(n, v) }
            return resp
        }

        router.addBlocking(.GET, "/api/sessions/{id}", doc: RouteDoc(
            "One session; ?wait=ready&timeout=S holds the answer until it leaves starting (S at most 60).", tags: ["sessions"],
            responses: [("200", "the session"), ("400", "validation_error"), ("401", "unauthorized"), ("403", "forbidden"), ("404", "session_not_found")],
            query: [("wait", "ready"), ("timeout", "seconds, 0 to 60 (default 30)")])) { (req, responder) throws(Problem) in
            let rec = try owned(req)
            @Sendable func answer(_ r: SessionRecord) -> Response {
                Response.json(sessionJSON(r, state.configuration, usage: manager.currentUsage(r)))
            }
            guard let w = req.query("wait") else {
                responder.send(answer(rec))
                return
            }
            guard w == "ready" else { throw Problem.validation(field: "wait", "only 'ready'") }
            var timeout = 30.0
            if let t = req.query("timeout") {
                guard let v = Double(t), v >= 0, v.isFinite else { throw Problem.validation(field: "timeout", "seconds, a number from 0 to 60") }
                timeout = min(60, v)
            }
            // Answered when the session leaves `starting` (or at the timeout), from the thread that saw it.
            manager.whenReady(rec.id, timeout: timeout) { r in responder.send(answer(r ?? rec)) }
        }

        router.add(.GET, "/api/sessions", doc: RouteDoc(
            "The caller's sessions, list envelope.", tags: ["sessions"],
            responses: [("200", "list envelope of sessions"), ("400", "validation_error"), ("401", "unauthorized")],
            query: [("status", "one of starting, ready, busy, stopping, terminated, failed, finalized"), ("limit", "1..200 (50)"), ("offset", "≥ 0"),
                    ("sort_by", "created_at, last_activity or name"), ("sort_order", "asc or desc (desc)")])) { req throws(Problem) in
            let (type, id, _) = try owner(req)
            let (limit, offset) = try pagination(req)
            var all = state.store.read { $0.sessions(ownedBy: type, id) }.map { manager.record($0.id) ?? $0 }
            if let s = req.query("status") {
                guard SessionStatus(rawValue: s) != nil else { throw Problem.validation(field: "status", "one of \(SessionStatus.allCases.map(\.rawValue).joined(separator: ", "))") }
                all = all.filter { $0.status == s }
            }
            let sortBy = req.query("sort_by") ?? "created_at"
            let order = req.query("sort_order") ?? "desc"
            guard ["created_at", "last_activity", "name"].contains(sortBy) else { throw Problem.validation(field: "sort_by", "created_at, last_activity or name") }
            guard order == "asc" || order == "desc" else { throw Problem.validation(field: "sort_order", "asc or desc") }
            all.sort { a, b in
                let less: Bool
                switch sortBy {
                case "last_activity": less = a.lastActivity == b.lastActivity ? a.id < b.id : a.lastActivity < b.lastActivity
                case "name": less = a.name == b.name ? a.id < b.id : a.name < b.name
                default: less = a.createdAt == b.createdAt ? a.id < b.id : a.createdAt < b.createdAt
                }
                return order == "asc" ? less : !less
            }
            let c = state.configuration
            return Response.json(listEnvelope(all.dropFirst(offset).prefix(limit).map { sessionJSON($0, c) }, total: all.count, limit: limit, offset: offset))
        }

        for method in [HTTPMethod("PATCH"), .PUT] {
            router.addBlocking(method, "/api/sessions/{id}", doc: RouteDoc(
                "Change name, metadata or idle_timeout_s, or push expires_at with extend_s (never past the maximum lifetime).", tags: ["sessions"],
                responses: [("200", "the session"), ("400", "validation_error"), ("403", "forbidden"), ("404", "session_not_found"), ("410", "session_ended")])) { req throws(Problem) in
                let rec = try owned(req)
                let body = try req.jsonObject(limit: 64 << 10)
                let c = state.configuration
                var errors: [Problem.FieldError] = []
                var name: String?, metadata: String?, idle: Int?, extend: Int?
                if case .object(let members) = body {
                    for (k, v) in members {
                        switch k {
                        case "name":
                            if case .string(let s) = v, s.count <= 200 { name = s } else { errors.append(.init(field: k, message: "a string of at most 200 characters")) }
                        case "metadata":
                            if case .object = v, v.serialized().count <= 16 << 10 { metadata = String(decoding: v.serialized(), as: UTF8.self) }
                            else { errors.append(.init(field: k, message: "an object of at most 16 KiB")) }
                        case "idle_timeout_s":
                            if let n = v.intValue, (1...c.idleTimeout).contains(n) { idle = n } else { errors.append(.init(field: k, message: "an integer from 1 to \(c.idleTimeout)")) }
                        case "extend_s":
                            if let n = v.intValue, (1...c.maxLifetime).contains(n) { extend = n } else { errors.append(.init(field: k, message: "an integer from 1 to \(c.maxLifetime)")) }
                        default:
                            errors.append(.init(field: k, message: "unknown field"))
                        }
                    }
                }
                if !errors.isEmpty { throw Problem.validation(errors) }
                if rec.isEnded { throw Problem(410, "session_ended", "The session has ended (\(rec.status)).") }
                let now = SessionManager.now()
                guard let updated = manager.update(rec.id, { r in
                    if let name { r.name = name }
                    if let metadata { r.metadataJSON = metadata }
                    if let idle { r.idleTimeoutSeconds = idle }
                    r.lastActivity = now
                    var expires = now + Int64(r.idleTimeoutSeconds) * 1000
                    if let extend { expires = max(expires, r.expiresAt + Int64(extend) * 1000) }
                    r.expiresAt = min(expires, r.lifetimeEndsAt)
                }) else { throw Problem(410, "session_ended", "The session has ended.") }
                return Response.json(sessionJSON(updated, c))
            }
        }

        router.addBlocking(.DELETE, "/api/sessions/{id}", doc: RouteDoc(
            "End the session (idempotent): the final record and documents_removed.", tags: ["sessions"],
            responses: [("200", "the final session with documents_removed"), ("403", "forbidden"), ("404", "session_not_found")])) { req throws(Problem) in
            let rec = try owned(req)
            var removed = 0
            if !rec.isEnded || rec.status == "finalized" {
                removed = SessionManager.documents(in: rec.directory).count
            }
            let c = state.configuration
            let final = manager.stop(rec.id, reason: .userRequest, wait: Double(c.stopGrace) + 5) ?? rec
            // A finalized session kept its documents; deleting it removes them (the record stays).
            if rec.status == "finalized" { manager.removeDirectory(rec.directory) }
            guard case .object(var members) = sessionJSON(final, c) else { return Response(status: 500) }
            members.append(("documents_removed", .int(final.isEnded ? removed : 0)))
            return Response.json(.object(members))
        }

        registerWork(on: &router, access: access, owned: owned)

        for method in [HTTPMethod.PUT, .POST] {
            router.add(method, "/api/sessions/{id}/heartbeat", doc: RouteDoc(
                "Keep the session alive: moves last_activity and expires_at (POST for navigator.sendBeacon).", tags: ["sessions"],
                responses: [("200", "id, status, last_activity, expires_at"), ("403", "forbidden"), ("404", "session_not_found"), ("410", "session_ended")])) { req throws(Problem) in
                let caller = try access.caller(req)
                let id = req.params["id"] ?? ""
                switch manager.heartbeat(id, caller: caller) {
                case .notFound:
                    throw Problem(404, "session_not_found", "No such session.")
                case .forbidden:
                    if case .anonymous = caller { throw Problem(401, "unauthorized", "Credentials are required.", headers: [("WWW-Authenticate", "Bearer")]) }
                    throw Problem(403, "forbidden", "This session belongs to someone else.")
                case .ended(let status):
                    throw Problem(410, "session_ended", "The session has ended (\(status)).")
                case .alive(let status, let last, let expires):
                    return Response.json(serialized: SessionRoutes.heartbeatAnswer(id: id, status: status, lastActivity: last, expiresAt: expires))
                }
            }
        }
    }
}

extension SessionRoutes {
    /// `{"id", "status", "last_activity", "expires_at"}`, written straight to bytes (the most frequent answer).
    static func heartbeatAnswer(id: String, status: String, lastActivity: Int64, expiresAt: Int64) -> [UInt8] {
        var w = JSONObjectWriter(capacity: 160)
        w.string("id", id)
        w.string("status", status)
        w.unescapedString("last_activity") { rfc3339(lastActivity, into: &$0) }
        w.unescapedString("expires_at") { rfc3339(expiresAt, into: &$0) }
        return w.finish()
    }

    /// Checks an uploaded structure by name and content and writes it next to the session directories
    /// (moved into the session's own at creation). `413` over the limit, `415` when name or content is not a
    /// structure ChimeraX opens.
    static func storeUpload(_ part: Multipart.Part, workDir: String, limit: Int) throws(Problem) -> SessionManager.Upload {
        guard part.data.count <= limit else {
            throw Problem(413, "payload_too_large", "The structure is larger than \(limit) bytes, the upload limit.")
        }
        let original = String((part.filename ?? "").split(separator: "/").last ?? "").split(separator: "\\").last.map(String.init) ?? ""
        guard let (format, gz) = StructureRules.format(ofFilename: original) else {
            throw Problem(415, "unsupported_format", "The file name must end in a structure format ChimeraX opens (.pdb .ent .pqr .cif .mmcif .mmtf .mol2 .sdf .mol .gro .pdbqt .cxs).")
        }
        guard !part.data.isEmpty, StructureRules.contentMatches(Array(part.data.prefix(64 << 10)), format: format, gzipped: gz) else {
            throw Problem(415, "unsupported_format", "The content is not a \(format.rawValue) file.")
        }
        mkdir(workDir, 0o700)
        let path = workDir + "/.incoming-" + IdentityService.newUUID()
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw Problem(503, "service_unavailable", "The upload could not be stored.") }
        var off = 0
        while off < part.data.count {
            let n = write(fd, part.data.baseAddress! + off, part.data.count - off)
            if n <= 0 {
                if n < 0 && errno == EINTR { continue }
                close(fd)
                unlink(path)
                throw Problem(503, "storage_unavailable", "The upload could not be stored (disk full?).")
            }
            off += n
        }
        close(fd)
        let safeName = String(original.unicodeScalars.filter { $0.value >= 0x20 && $0.value != 0x7F }.prefix(255).map(Character.init))
        return SessionManager.Upload(path: path, storedName: StructureRules.storedName(for: format, gzipped: gz), originalName: safeName,
                                     format: format.rawValue, size: part.data.count)
    }
}

extension JSON {
    /// An integer value (a whole number), or nil.
    var intValue: Int? {
        switch self {
        case .int(let i): return i
        case .number(let d): return d.rounded() == d && abs(d) < 1e15 ? Int(d) : nil
        default: return nil
        }
    }
}

/// The session as API.md §4 shows it.
func sessionJSON(_ r: SessionRecord, _ c: Configuration, usage: TreeUsage? = nil) -> JSON {
    func ts(_ v: Int64?) -> JSON { v.map { .string(rfc3339($0)) } ?? .null }
    var structure: JSON = .null
    if let src = r.structureSource {
        structure = .object([("source", .string(src)), ("pdb_id", r.pdbID.map { .string($0) } ?? .null),
                             ("filename", r.structureFilename.map { .string($0) } ?? .null), ("format", r.structureFormat.map { .string($0) } ?? .null),
                             ("size_bytes", r.structureSizeBytes.map { .int($0) } ?? .null),
                             // Whether ChimeraX opened it: "pending" until it is asked, then "opened" or "failed" with its message.
                             ("open_status", .string(r.structureOpenError.map { $0.isEmpty ? "opened" : "failed" } ?? "pending")),
                             ("open_error", r.structureOpenError.flatMap { $0.isEmpty ? nil : .string($0) } ?? .null)])
    }
    let metadata = (try? JSON.parse(Array(r.metadataJSON.utf8))) ?? .object([])
    let exit: JSON = (r.exitCode == nil && r.exitSignal == nil) ? .null
        : .object([("code", r.exitCode.map { .int($0) } ?? .null), ("signal", r.exitSignal.map { .string($0) } ?? .null)])
    return .object([
        ("id", .string(r.id)), ("name", .string(r.name)), ("owner", .object([("type", .string(r.ownerType)), ("id", .string(r.ownerID))])),
        ("status", .string(r.status)), ("created_at", ts(r.createdAt)), ("ready_at", ts(r.readyAt)), ("last_activity", ts(r.lastActivity)),
        ("expires_at", ts(r.isEnded ? nil : r.expiresAt)), ("ended_at", ts(r.endedAt)), ("idle_timeout_s", .int(r.idleTimeoutSeconds)),
        ("termination_reason", r.terminationReason.map { .string($0) } ?? .null), ("exit", exit), ("structure", structure),
        ("resources", .object([
            ("cpu_seconds", .number(max(usage?.cpuSeconds ?? 0, r.cpuSeconds))), ("memory_bytes", .int(usage?.rssBytes ?? 0)),
            ("memory_peak_bytes", .int(max(usage?.rssBytes ?? 0, r.memoryPeakBytes))), ("tasks", .int(usage?.tasks ?? 0)),
            ("limits", .object([("memory_bytes", .int(c.memoryMax)), ("cpu_percent", .int(c.cpuQuota)), ("tasks", .int(c.tasksMax))])),
        ])),
        ("metadata", metadata),
    ])
}
