import Dispatch
import Foundation
import HTTPServer
import SupervisorIdentity
import SupervisorStore

/// API.md §3: login, logout, the user, device sessions, anonymous browser sessions, and §5 user administration.
struct IdentityRoutes {
    let state: DaemonState


    func register(on router: inout Router) {
        let access = Access(state: state)
        let state = self.state
        let identity = state.identity
        let logger = state.logger
        // New anonymous identities per client address: each one is a durable record.
        let anonymousCreation = RateLimiter(policy: QuotaPolicy(name: "anonymous_sessions", limit: 60, window: 3600))

        // MARK: §3.1 login and device sessions

        router.addBlocking(.POST, "/api/v1/auth/login", doc: RouteDoc(
            "Log in with a user name and password: a bearer token and the cxs_auth cookie.", tags: ["auth"],
            responses: [("200", "token, expires_at, user, session"), ("400", "validation_error"), ("401", "invalid_credentials"),
                        ("429", "rate_limited, with Retry-After"), ("503", "storage_unavailable")], isPublic: true)) { req throws(Problem) in
            let body = try req.jsonObject(limit: 8 << 10)
            var errors: [Problem.FieldError] = []
            let username = body["username"].flatMap { if case .string(let s) = $0 { s } else { nil } }
            let password = body["password"].flatMap { if case .string(let s) = $0 { s } else { nil } }
            if username?.isEmpty ?? true { errors.append(.init(field: "username", message: "required string")) }
            if password?.isEmpty ?? true { errors.append(.init(field: "password", message: "required string")) }
            guard errors.isEmpty, let username, let password else { throw Problem.validation(errors) }
            let address = access.clientAddress(req)
            do throws(IdentityError) {
                let r = try identity.login(username: username, password: password, address: address, userAgent: req.headers["User-Agent"] ?? "")
                logger.notice("login", [("event", "login_success"), ("USER_ID", r.user.id), ("username", r.user.username),
                                        ("device_session_id", r.session.id), ("client_address", address), ("device", r.session.deviceName)])
                var resp = Response.json(.object([
                    ("token", .string(r.token)),
                    ("expires_at", .string(rfc3339(identity.effectiveExpiry(r.session)))),
                    ("user", userJSON(r.user)),
                    ("session", deviceJSON(r.session, current: r.session.id, identity: identity)),
                ]))
                let (n, v) = access.setCookie(Access.authCookie, r.token, maxAge: identity.settings.tokenLifetimeSeconds)
                resp.headers.add(n, v)
                return resp
            } catch {
                if case .invalidCredentials = error {
                    logger.warning("login failed", [("event", "login_failure"), ("username", String(username.prefix(64))), ("client_address", address)])
                } else if case .rateLimited = error {
                    logger.warning("login refused: too many failures", [("event", "login_rate_limited"), ("username", String(username.prefix(64))),
                                                                         ("client_address", address)])
                }
                throw Problem(error)
            }
        }

        router.addBlocking(.POST, "/api/v1/auth/logout", doc: RouteDoc(
            "Log out: the current device session is revoked at once.", tags: ["auth"],
            responses: [("204", "logged out"), ("400", "validation_error"), ("401", "unauthorized"), ("403", "csrf_rejected")],
            query: [("end_sessions", "true: the user's ChimeraX sessions end too (reason logout)")])) { req throws(Problem) in
            let endSessions = try boolQuery(req, "end_sessions") ?? false
            let (user, device) = try access.user(req)
            do throws(IdentityError) {
                try identity.revoke(sessionID: device.id, userID: user.id, reason: "logout")
            } catch {
                throw Problem(error)
            }
            let ended = endSessions ? state.endSessions(ownerType: "user", ownerID: user.id, reason: "logout") : 0
            logger.notice("logout", [("event", "logout"), ("USER_ID", user.id), ("device_session_id", device.id), ("sessions_ended", "\(ended)")])
            var resp = Response(status: 204)
            let (n, v) = access.setCookie(Access.authCookie, "", maxAge: 0)
            resp.headers.add(n, v)
            return resp
        }

        router.add(.GET, "/api/v1/auth/users/me", doc: RouteDoc(
            "The signed-in user.", tags: ["auth"], responses: [("200", "the user"), ("401", "unauthorized")])) { req throws(Problem) in
            let (user, _) = try access.user(req)
            return Response.json(userJSON(user))
        }

        router.add(.GET, "/api/v1/auth/users/me/sessions", doc: RouteDoc(
            "The user's live device sessions, most recently used first; is_current marks this one.", tags: ["auth"],
            responses: [("200", "{success, data: {sessions, total_count}}"), ("401", "unauthorized")])) { req throws(Problem) in
            let (user, device) = try access.user(req)
            let list = identity.deviceSessions(userID: user.id)
            return Response.json(.object([
                ("success", .bool(true)),
                ("data", .object([("sessions", .array(list.map { deviceJSON($0, current: device.id, identity: identity) })), ("total_count", .int(list.count))])),
            ]))
        }

        router.addBlocking(.DELETE, "/api/v1/auth/users/me/sessions/{id}", doc: RouteDoc(
            "End one of the user's device sessions; its token is refused from the next request on.", tags: ["auth"],
            responses: [("200", "{success, message, data: {session_id, device_name}}"), ("401", "unauthorized"), ("403", "csrf_rejected"),
                        ("404", "session_not_found")])) { req throws(Problem) in
            let (user, current) = try access.user(req)
            let id = req.params["id"] ?? ""
            let ended: DeviceSession
            do throws(IdentityError) {
                ended = try identity.revoke(sessionID: id, userID: user.id, reason: "terminated")
            } catch {
                if case .notFound = error { throw Problem(404, "session_not_found", "No such device session of yours.") }
                throw Problem(error)
            }
            logger.notice("device session terminated", [("event", "session_terminated"), ("USER_ID", user.id), ("device_session_id", id),
                                                        ("by_device_session_id", current.id)])
            return Response.json(.object([
                ("success", .bool(true)), ("message", .string("Session terminated successfully")),
                ("data", .object([("session_id", .string(ended.id)), ("device_name", .string(ended.deviceName))])),
            ]))
        }

        router.addBlocking(.DELETE, "/api/v1/auth/users/me/sessions", doc: RouteDoc(
            "End all of the user's device sessions (log out everywhere).", tags: ["auth"],
            responses: [("200", "{success, message, data: {terminated_count}}"), ("400", "validation_error"), ("401", "unauthorized"),
                        ("403", "csrf_rejected")],
            query: [("keep_current", "true: keep the session making this request (default false)"),
                    ("end_sessions", "true: the user's ChimeraX sessions end too")])) { req throws(Problem) in
            let keep = try boolQuery(req, "keep_current") ?? false
            let endSessions = try boolQuery(req, "end_sessions") ?? false
            let (user, current) = try access.user(req)
            let ended: [DeviceSession]
            do throws(IdentityError) {
                ended = try identity.revokeAll(userID: user.id, keep: keep ? current.id : nil, reason: "terminated_all")
            } catch {
                throw Problem(error)
            }
            if endSessions { state.endSessions(ownerType: "user", ownerID: user.id, reason: "logout") }
            logger.notice("all device sessions terminated", [("event", "sessions_terminated_all"), ("USER_ID", user.id),
                                                             ("count", "\(ended.count)"), ("kept_current", "\(keep)")])
            var resp = Response.json(.object([
                ("success", .bool(true)), ("message", .string("All sessions terminated successfully")),
                ("data", .object([("terminated_count", .int(ended.count))])),
            ]))
            if !keep {
                let (n, v) = access.setCookie(Access.authCookie, "", maxAge: 0)
                resp.headers.add(n, v)
            }
            return resp
        }

        // MARK: §3.2 anonymous browser sessions

        router.addBlocking(.POST, "/api/session", doc: RouteDoc(
            "Create an anonymous browser session, or return the one named by the cxs_anon cookie.", tags: ["anonymous"],
            responses: [("200", "session_id, is_new_session, created_at, last_active, usage_stats"), ("400", "validation_error"),
                        ("403", "csrf_rejected"), ("503", "service_unavailable")], isPublic: true)) { req throws(Problem) in
            let body = try req.jsonObject(limit: 8 << 10)
            var clientID: String?
            if let v = body["client_session_id"], v != .null {
                guard case .string(let s) = v, IdentityService.isUUID(s) else {
                    throw Problem.validation(field: "client_session_id", "must be a UUID")
                }
                clientID = s
            }
            // The cookie first (a cookie-authenticated unsafe request: the CSRF rule); else a live id the client
            // kept (issued by us); else a new one.
            let fromCookie = Access.cookie(Access.anonCookie, in: req).flatMap { identity.anonymousSession(id: $0) }
            if fromCookie != nil { try access.checkCSRF(req) }
            let known = fromCookie?.id ?? clientID.flatMap { identity.anonymousSession(id: $0)?.id }
            if known == nil {
                let q = anonymousCreation.consume(access.clientAddress(req), now: identity.now)
                if !q.allowed {
                    throw Problem(429, "rate_limited", "Too many new anonymous sessions from this address; try again later.",
                                  headers: [("Retry-After", "\(max(1, q.resetIn))"), ("RateLimit-Policy", q.policy.policyHeader), ("RateLimit", q.header)])
                }
            }
            let result: (AnonymousSession, isNew: Bool)
            do throws(IdentityError) {
                result = try identity.anonymous(cookie: known)
            } catch {
                if case .storage = error { throw Problem(503, "service_unavailable", "The state store cannot take writes right now; try again later.") }
                throw Problem(error)
            }
            var resp = Response.json(.object([
                ("session_id", .string(result.0.id)), ("is_new_session", .bool(result.isNew)),
                ("created_at", .string(rfc3339(result.0.createdAt))), ("last_active", .string(rfc3339(result.0.lastActive))),
                ("usage_stats", usageJSON(result.0)),
            ]))
            let (n, v) = access.setCookie(Access.anonCookie, result.0.id, maxAge: identity.settings.anonymousLifetimeSeconds)
            resp.headers.add(n, v)
            return resp
        }

        router.addBlocking(.POST, "/api/session/sync", doc: RouteDoc(
            "Adopt an anonymous session id the server issued and that is still live (sets cxs_anon).", tags: ["anonymous"],
            responses: [("200", "session_id, is_synced, message"), ("400", "validation_error"), ("404", "resource_not_found"),
                        ("503", "service_unavailable")], isPublic: true)) { req throws(Problem) in
            let body = try req.jsonObject(limit: 8 << 10)
            guard case .string(let id)? = body["client_session_id"] else {
                throw Problem.validation(field: "client_session_id", "required: the session id to adopt")
            }
            if Access.cookie(Access.anonCookie, in: req).flatMap({ identity.anonymousSession(id: $0) }) != nil { try access.checkCSRF(req) }
            let a: AnonymousSession
            do throws(IdentityError) {
                a = try identity.syncAnonymous(id: id)
            } catch {
                if case .notFound = error { throw Problem(404, "resource_not_found", "No live anonymous session has this id.") }
                if case .storage = error { throw Problem(503, "service_unavailable", "The state store cannot take writes right now; try again later.") }
                throw Problem(error)
            }
            var resp = Response.json(.object([
                ("session_id", .string(a.id)), ("is_synced", .bool(true)), ("message", .string("Session synchronized")),
            ]))
            let (n, v) = access.setCookie(Access.anonCookie, a.id, maxAge: identity.settings.anonymousLifetimeSeconds)
            resp.headers.add(n, v)
            return resp
        }

        router.add(.GET, "/api/session/info", doc: RouteDoc(
            "Usage and limits of the calling identity (anonymous browser or user).", tags: ["anonymous"],
            responses: [("200", "session_id, created_at, last_active, usage_stats, rate_limits"), ("401", "no identity"),
                        ("404", "resource_not_found")], isPublic: true)) { req throws(Problem) in
            let caller = try access.caller(req)
            let id: String, created: Int64, last: Int64, usage: JSON
            switch caller {
            case .browser(let a):
                (id, created, last, usage) = (a.id, a.createdAt, a.lastActive, usageJSON(a))
            case .user(let s, _):
                let (u, d) = (s.user, s.device)
                // Counted from the user's session records (the live ones' commands from memory).
                let owned = state.store.read { $0.sessions(ownedBy: "user", u.id) }.map { state.sessionRecord($0.id) ?? $0 }
                (id, created, last) = (d.id, d.createdAt, d.lastActivity)
                usage = .object([("sessions_created", .int(owned.count)), ("commands_run", .int(owned.reduce(0) { $0 + $1.commandsRun })),
                                 ("uploads", .int(owned.filter { $0.structureSource == "upload" }.count))])
            default:
                if Access.cookie(Access.anonCookie, in: req) != nil {
                    throw Problem(404, "resource_not_found", "The anonymous session of this cookie is unknown or expired; POST /api/session/ for a new one.")
                }
                throw Problem(401, "unauthorized", "No session: POST /api/session/ or log in first.")
            }
            let quotas = identity.quotas(identity: caller.identityKey ?? "")
            var resp = Response.json(.object([
                ("session_id", .string(id)), ("created_at", .string(rfc3339(created))), ("last_active", .string(rfc3339(last))),
                ("usage_stats", usage),
                ("rate_limits", .object(quotas.map { q in
                    (q.policy.name, .object([("limit", .int(q.policy.limit)), ("remaining", .int(q.remaining)), ("reset_at", .string(rfc3339(q.resetAt)))]))
                })),
            ]))
            resp.headers.add("RateLimit-Policy", quotas.map(\.policy.policyHeader).joined(separator: ", "))
            resp.headers.add("RateLimit", quotas.map(\.header).joined(separator: ", "))
            return resp
        }
    }

    private func boolQuery(_ req: Request, _ name: String) throws(Problem) -> Bool? {
        guard let v = req.query(name) else { return nil }
        switch v.lowercased() {
        case "true", "1": return true
        case "false", "0": return false
        default: throw Problem.validation(field: name, "must be true or false")
        }
    }
}

func userJSON(_ u: User) -> JSON {
    .object([("id", .string(u.id)), ("username", .string(u.username)), ("is_admin", .bool(u.isAdmin)), ("created_at", .string(rfc3339(u.createdAt)))])
}

func deviceJSON(_ d: DeviceSession, current: String, identity: IdentityService) -> JSON {
    .object([
        ("id", .string(d.id)), ("ip_address", .string(d.ipAddress)), ("user_agent", .string(d.userAgent)),
        ("device_info", .object([("browser", .string(d.browser)), ("os", .string(d.os)), ("device", .string(d.deviceType))])),
        ("device_name", .string(d.deviceName)), ("location", .null), ("is_active", .bool(identity.isLive(d, at: identity.now))),
        ("last_activity", .string(rfc3339(d.lastActivity))), ("created_at", .string(rfc3339(d.createdAt))),
        ("expires_at", .string(rfc3339(identity.effectiveExpiry(d)))), ("login_method", .string(d.loginMethod)),
        ("is_current", .bool(d.id == current)),
    ])
}

func usageJSON(_ a: AnonymousSession) -> JSON {
    .object([("sessions_created", .int(a.sessionsCreated)), ("commands_run", .int(a.commandsRun)), ("uploads", .int(a.uploads))])
}

/// RFC 3339 UTC with milliseconds, from milliseconds since the epoch (`2026-11-22T13:00:00.123Z`). Built by
/// hand: it is on every heartbeat's path, and `String(format:)` costs more than the rest of the answer.
func rfc3339(_ ms: Int64) -> String {
    String(unsafeUninitializedCapacity: 24) { b in
        writeRFC3339(ms, b.baseAddress!)
        return 24
    }
}

/// The same 24 bytes appended to `out` (hot answers write timestamps straight into their JSON).
func rfc3339(_ ms: Int64, into out: inout [UInt8]) {
    withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 24) { b in
        writeRFC3339(ms, b.baseAddress!)
        out.append(contentsOf: UnsafeBufferPointer(b))
    }
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` into the 24 bytes at `b`.
private func writeRFC3339(_ ms: Int64, _ b: UnsafeMutablePointer<UInt8>) {
    // The civil date by arithmetic (H. Hinnant's days-to-civil): glibc's gmtime_r takes a process-wide lock.
    let secs = ms >= 0 ? ms / 1000 : (ms - 999) / 1000
    let millis = Int(ms - secs * 1000)
    let days = secs >= 0 ? secs / 86_400 : (secs - 86_399) / 86_400
    let daySecs = Int(secs - days * 86_400)
    let z = days + 719_468
    let era = (z >= 0 ? z : z - 146_096) / 146_097
    let doe = z - era * 146_097
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
    let mp = (5 * doy + 2) / 153
    let day = Int(doy - (153 * mp + 2) / 5 + 1)
    let month = Int(mp < 10 ? mp + 3 : mp - 9)
    let year = Int(yoe + era * 400 + (month <= 2 ? 1 : 0))
    // Written in place: a temporary array cost an allocation per timestamp (two per heartbeat).
    func put(_ v: Int, _ at: Int, _ width: Int) {
        var v = v
        for i in stride(from: at + width - 1, through: at, by: -1) {
            b[i] = UInt8(ascii: "0") + UInt8(v % 10)
            v /= 10
        }
    }
    put(year, 0, 4)
    b[4] = UInt8(ascii: "-")
    put(month, 5, 2)
    b[7] = UInt8(ascii: "-")
    put(day, 8, 2)
    b[10] = UInt8(ascii: "T")
    put(daySecs / 3600, 11, 2)
    b[13] = UInt8(ascii: ":")
    put(daySecs / 60 % 60, 14, 2)
    b[16] = UInt8(ascii: ":")
    put(daySecs % 60, 17, 2)
    b[19] = UInt8(ascii: ".")
    put(millis, 20, 3)
    b[23] = UInt8(ascii: "Z")
}

extension Router {
    /// Handlers that wait for the store's fsync run on a worker thread, never on an event loop. 64 at once:
    /// far more than the CPUs, since they mostly wait; beyond that they queue in order.
    static let workers = WorkerPool(name: "blocking", maxThreads: 64)

    /// A synchronous route whose handler may block (durable writes, password hashing).
    mutating func addBlocking(_ method: HTTPMethod, _ pattern: String, bodyLimit: Int = 64 * 1024, doc: RouteDoc,
                              _ body: @escaping @Sendable (Request) throws(Problem) -> Response)
    {
        addBlocking(method, pattern, bodyLimit: bodyLimit, doc: doc) { (req, responder) throws(Problem) in responder.send(try body(req)) }
    }

    /// The same for a handler that answers through `responder`, now or later (a thrown `Problem` is the answer).
    mutating func addBlocking(_ method: HTTPMethod, _ pattern: String, bodyLimit: Int = 64 * 1024, doc: RouteDoc,
                              _ body: @escaping @Sendable (Request, Responder) throws(Problem) -> Void)
    {
        add(method, pattern, bodyLimit: bodyLimit, doc: doc) { req, responder in
            Router.workers.async {
                do throws(Problem) {
                    try body(req, responder)
                } catch {
                    responder.send(error)
                }
            }
        }
    }
}
