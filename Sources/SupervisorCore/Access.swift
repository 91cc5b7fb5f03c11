import Foundation
import HTTPServer
import SupervisorConfig
import SupervisorIdentity
import SupervisorStore

/// Authentication, the CSRF rule, CORS and the client address: one place every route goes through.
struct Access: Sendable {
    let state: DaemonState
    var identity: IdentityService { state.identity }

    static let authCookie = "cxs_auth"
    static let anonCookie = "cxs_anon"

    /// The value of cookie `name` in the request, if any.
    static func cookie(_ name: String, in req: Request) -> String? {
        for header in req.headers.values("Cookie") {
            for pair in header.split(separator: ";") {
                let kv = pair.split(separator: "=", maxSplits: 1)
                if kv.count == 2, kv[0].trimmingCharacters(in: .whitespaces) == name {
                    return kv[1].trimmingCharacters(in: .whitespaces)
                }
            }
        }
        return nil
    }

    /// Who is calling. A bearer token that does not work is `401` at once (no falling back to a cookie);
    /// a stale cookie is ignored. Unsafe methods authenticated by a cookie must pass the CSRF rule.
    func caller(_ req: Request) throws(Problem) -> Caller {
        if let auth = req.headers["Authorization"] {
            guard let token = Access.bearerToken(auth), let signedIn = identity.signIn(token: token) else {
                throw Problem(401, "unauthorized", "The bearer token is not valid (expired, revoked or unknown).",
                              headers: [("WWW-Authenticate", "Bearer error=\"invalid_token\"")])
            }
            return .user(signedIn, viaCookie: false)
        }
        if let token = Access.cookie(Access.authCookie, in: req), let signedIn = identity.signIn(token: token) {
            try checkCSRF(req)
            return .user(signedIn, viaCookie: true)
        }
        if let uid = state.callerPolicy.isLocalOperator(req) { return .localOperator(uid: uid) }
        if let id = Access.cookie(Access.anonCookie, in: req), let a = identity.anonymousSession(id: id) {
            try checkCSRF(req)
            return .browser(a)
        }
        return .anonymous
    }

    /// The token of `Bearer <token>` (the scheme in any case), without splitting or copying the header twice.
    static func bearerToken(_ header: String) -> Substring? {
        let u = header.utf8
        guard u.count > 7 else { return nil }
        var i = u.startIndex
        for c in "bearer".utf8 {
            guard u[i] | 0x20 == c else { return nil }
            i = u.index(after: i)
        }
        guard u[i] == UInt8(ascii: " ") else { return nil }
        return header[u.index(after: i)...]
    }

    /// A signed-in user, or `401`.
    func user(_ req: Request) throws(Problem) -> (User, DeviceSession) {
        if case .user(let s, _) = try caller(req) { return (s.user, s.device) }
        throw Problem(401, "unauthorized", "Log in first: POST /api/v1/auth/login, then send the token as a bearer token or the cxs_auth cookie.",
                      headers: [("WWW-Authenticate", "Bearer")])
    }

    /// Cookie-authenticated POST, PUT, PATCH and DELETE need an allowed `Origin` (a `--cors-origin` or this
    /// server's own) or an `X-Requested-With` header, which a cross-site form cannot send.
    func checkCSRF(_ req: Request) throws(Problem) {
        let m = req.method.rawValue
        guard m == "POST" || m == "PUT" || m == "PATCH" || m == "DELETE" else { return }
        if req.headers["X-Requested-With"] != nil { return }
        if let origin = req.headers["Origin"]?.lowercased() {
            if state.setting(\.corsOrigins).contains(origin) { return }
            if let host = req.headers["Host"]?.lowercased(), origin == "http://" + host || origin == "https://" + host { return }
        }
        throw Problem(403, "csrf_rejected", "A cookie-authenticated \(m) needs an allowed Origin or the X-Requested-With header.")
    }

    /// The client's address: the peer, or behind a trusted proxy the first untrusted hop of
    /// `X-Forwarded-For`, read from the right.
    func clientAddress(_ req: Request) -> String {
        let peer: String
        switch req.peer {
        case .tcp(let a, _): peer = a
        case .unix(let pid, let uid, _): return "unix:uid=\(uid),pid=\(pid)"
        }
        let proxies = state.setting(\.trustedProxies)
        guard !proxies.isEmpty, proxies.contains(where: { $0.contains(peer) }) else { return peer }
        let hops = req.headers.values("X-Forwarded-For").flatMap { $0.split(separator: ",") }.map { $0.trimmingCharacters(in: .whitespaces) }
        for hop in hops.reversed() {
            guard CIDR.parseAddress(hop) != nil else { return peer }
            if !proxies.contains(where: { $0.contains(hop) }) { return hop }
        }
        return hops.first.flatMap { CIDR.parseAddress($0) != nil ? $0 : nil } ?? peer
    }

    /// `Set-Cookie` for `name`: HttpOnly, SameSite=Lax, Path=/, Secure per configuration.
    func setCookie(_ name: String, _ value: String, maxAge: Int64) -> (String, String) {
        var c = "\(name)=\(value); Path=/; Max-Age=\(maxAge); HttpOnly; SameSite=Lax"
        if state.setting(\.cookieSecure) { c += "; Secure" }
        return ("Set-Cookie", c)
    }

    /// CORS for configured origins, on every response (errors and preflights too): the origin echoed with
    /// credentials allowed; for a preflight, the route's methods and the request headers the API reads.
    static func corsFilter(_ state: DaemonState) -> @Sendable (RequestHead, inout Response) -> Void {
        { head, response in
            guard let origin = head.headers["Origin"]?.lowercased() else { return }
            guard state.setting(\.corsOrigins).contains(origin) else { return }
            response.headers.add("Access-Control-Allow-Origin", origin)
            response.headers.add("Access-Control-Allow-Credentials", "true")
            response.headers.add("Vary", "Origin")
            if head.method == .OPTIONS, head.headers["Access-Control-Request-Method"] != nil {
                if let allow = response.headers["Allow"] { response.headers.add("Access-Control-Allow-Methods", allow) }
                response.headers.add("Access-Control-Allow-Headers", "Authorization, Content-Type, X-Requested-With, X-Request-ID")
                response.headers.add("Access-Control-Max-Age", "600")
            } else {
                response.headers.add("Access-Control-Expose-Headers", "X-Request-ID, Location, Retry-After, RateLimit, RateLimit-Policy")
            }
        }
    }
}

extension Problem {
    /// The one mapping of identity errors to answers.
    init(_ e: IdentityError) {
        switch e {
        case .invalidCredentials:
            self.init(401, "invalid_credentials", "Invalid username or password.")
        case .rateLimited(let after):
            self.init(429, "rate_limited", "Too many failed logins; try again later.", headers: [("Retry-After", "\(max(1, after))")])
        case .validation(let field, let message):
            self = Problem.validation(field: field, message)
        case .notFound:
            self.init(404, "resource_not_found", "No such resource.")
        case .conflict(let m):
            self.init(409, "conflict", m)
        case .storage(let s):
            self.init(503, "storage_unavailable", "The state store cannot take writes right now (\(s.message)); try again later.",
                      headers: [("Retry-After", "5")])
        }
    }
}
