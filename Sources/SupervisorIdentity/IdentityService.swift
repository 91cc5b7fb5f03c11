import CShim
import Foundation
import Glibc
import SupervisorStore
import Synchronization

/// Why an identity operation failed. The API layer maps each to one problem-details answer.
public enum IdentityError: Error, Sendable, Equatable {
    /// Unknown user or wrong password: one answer for both (no account enumeration).
    case invalidCredentials
    /// Too many failed logins; try again after this many seconds.
    case rateLimited(retryAfter: Int64)
    case validation(field: String, message: String)
    case notFound
    case conflict(String)
    /// The store could not make the change durable.
    case storage(StoreError)
}

/// Timing and limits of identities.
public struct IdentitySettings: Sendable {
    /// A device session unused for this long is expired.
    public var tokenIdleSeconds: Int64 = 7 * 86_400
    /// A device session ends this long after login, used or not.
    public var tokenLifetimeSeconds: Int64 = 30 * 86_400
    /// Anonymous browser identities live this long after their last use (the cookie's Max-Age).
    public var anonymousLifetimeSeconds: Int64 = 30 * 86_400
    /// Failed logins per account and per client address before they are refused for a while.
    public var failedLoginsPerAccount = QuotaPolicy(name: "login_account", limit: 5, window: 900)
    public var failedLoginsPerAddress = QuotaPolicy(name: "login_address", limit: 20, window: 900)
    /// Per-identity quotas reported in `GET /api/session/info` and the RateLimit headers.
    public var sessionCreation = QuotaPolicy(name: "session_creation", limit: 10, window: 3600)
    public var commands = QuotaPolicy(name: "commands", limit: 1000, window: 3600)
    /// `last_activity` of a device session is written at most this often (it moves on every request).
    public var activityWriteInterval: Int64 = 60

    public init() {}
}

/// A successful login: the token (shown once, never stored), its device session and the user.
public struct LoginResult: Sendable {
    public let token: String
    public let session: DeviceSession
    public let user: User
}

/// A signed-in user and the device session of the token, as the store held them at one moment. A class, so
/// that handing it to a route (every authenticated request) costs one reference count, not one per field.
public final class SignedIn: Sendable {
    public let user: User
    public let device: DeviceSession
    /// Whether a request has already issued the write that moves this device session's activity: until
    /// that write is applied (and the cache dropped), every request would otherwise issue one too.
    private let touchIssued = Atomic<Bool>(false)

    /// True for exactly one caller (until `releaseTouch`, after a write that failed).
    func claimTouch() -> Bool { !touchIssued.exchange(true, ordering: .relaxed) }
    func releaseTouch() { touchIssued.store(false, ordering: .relaxed) }

    public init(user: User, device: DeviceSession) {
        self.user = user
        self.device = device
    }
}

/// Recently authenticated tokens, valid while the store's identity generation has not moved (any change of a
/// user or device session clears it, before the change can be read). Bounded: cleared when full.
struct TokenCache {
    static let capacity = 1024
    var generation: UInt64 = .max
    var entries: [TokenKey: SignedIn] = [:]
}

/// Users, logins and device sessions, anonymous browser identities and quotas, kept in the durable store.
///
/// Operations that write block until the store has the change on disk: call them off the event loops.
public final class IdentityService: Sendable {
    public let store: Store
    public let settings: IdentitySettings
    private let clock: @Sendable () -> Int64
    private let accountFailures: RateLimiter
    private let addressFailures: RateLimiter
    public let sessionQuota: RateLimiter
    public let commandQuota: RateLimiter
    /// Serialises user creation and renames, so two requests cannot both take one name.
    private let userWrites = Mutex<Void>(())
    /// Serialises read-modify-write of anonymous usage counters.
    private let anonymousWrites = Mutex<Void>(())
    /// Striped per thread: one shared lock was a cache line bounced between the loops on every request.
    private let tokenCache = Striped { TokenCache() }

    /// `clock` gives milliseconds since the epoch (tests inject their own).
    public init(store: Store, settings: IdentitySettings = IdentitySettings(), clock: @escaping @Sendable () -> Int64 = IdentityService.wallClock) {
        self.store = store
        self.settings = settings
        self.clock = clock
        accountFailures = RateLimiter(policy: settings.failedLoginsPerAccount)
        addressFailures = RateLimiter(policy: settings.failedLoginsPerAddress)
        sessionQuota = RateLimiter(policy: settings.sessionCreation)
        commandQuota = RateLimiter(policy: settings.commands)
    }

    public static let wallClock: @Sendable () -> Int64 = {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Int64(ts.tv_sec) * 1000 + Int64(ts.tv_nsec) / 1_000_000
    }

    public var now: Int64 { clock() }

    // MARK: Users

    public static func validateUsername(_ name: String) throws(IdentityError) {
        guard (1...64).contains(name.utf8.count),
            name.utf8.allSatisfy({ isalnum(Int32($0)) != 0 || $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: "_") || $0 == UInt8(ascii: "-") })
        else {
            throw .validation(field: "username", message: "1 to 64 characters of letters, digits, '.', '_' and '-'")
        }
    }

    public static func validatePassword(_ password: String) throws(IdentityError) {
        guard password.count >= 8 else { throw .validation(field: "password", message: "at least 8 characters") }
        guard password.utf8.count <= PasswordHasher.maxLength else {
            throw .validation(field: "password", message: "at most \(PasswordHasher.maxLength) bytes")
        }
    }

    public func createUser(username: String, password: String, isAdmin: Bool) throws(IdentityError) -> User {
        try IdentityService.validateUsername(username)
        try IdentityService.validatePassword(password)
        guard let hash = PasswordHasher.hash(password) else { throw .storage(StoreError(.unavailable, "crypt(3) failed")) }
        return try userWrites.withLock { _ throws(IdentityError) -> User in
            if store.read({ $0.user(named: username) }) != nil { throw .conflict("the user name \(username) is taken") }
            let user = User(id: IdentityService.newID(), username: username, passwordHash: hash, isAdmin: isAdmin, createdAt: now)
            try write([.putUser(user)])
            return user
        }
    }

    public func users() -> [User] { store.state.users.values.sorted { $0.createdAt == $1.createdAt ? $0.username < $1.username : $0.createdAt < $1.createdAt } }

    public func user(id: String) -> User? { store.read { $0.users[id] } }

    public func user(named name: String) -> User? { store.read { $0.user(named: name) } }

    /// Deletes the user and revokes every device session of it. Returns the user.
    @discardableResult
    public func deleteUser(id: String) throws(IdentityError) -> User {
        try userWrites.withLock { _ throws(IdentityError) -> User in
            guard let user = store.read({ $0.users[id] }) else { throw .notFound }
            let devices = store.read { $0.deviceSessions(ofUser: id) }
            try write(devices.map { .deleteDeviceSession(id: $0.id) } + [.deleteUser(id: id)])
            return user
        }
    }

    /// Sets a new password; every device session of the user is revoked (a password change logs out everywhere).
    public func setPassword(userID: String, password: String) throws(IdentityError) {
        try IdentityService.validatePassword(password)
        guard let hash = PasswordHasher.hash(password) else { throw .storage(StoreError(.unavailable, "crypt(3) failed")) }
        try userWrites.withLock { _ throws(IdentityError) in
            guard var user = store.read({ $0.users[userID] }) else { throw .notFound }
            user.passwordHash = hash
            user.passwordChangedAt = now
            let t = now
            let revoked = store.read { $0.deviceSessions(ofUser: userID) }.filter { $0.revokedAt == nil }.map { d -> Mutation in
                var d = d
                d.revokedAt = t
                d.revokeReason = "password_changed"
                return .putDeviceSession(d)
            }
            try write([.putUser(user)] + revoked)
        }
    }

    // MARK: Login and device sessions

    /// Checks the password and opens a device session. Failures count per account and per address; past the
    /// limit the answer is `.rateLimited` before the password is even looked at.
    public func login(username: String, password: String, address: String, userAgent: String) throws(IdentityError) -> LoginResult {
        let t = now
        let accountKey = username.lowercased()
        let a = accountFailures.peek(accountKey, now: t)
        let b = addressFailures.peek(address, now: t)
        if a.remaining == 0 || b.remaining == 0 {
            throw .rateLimited(retryAfter: max(a.remaining == 0 ? a.resetIn : 0, b.remaining == 0 ? b.resetIn : 0))
        }
        let user = store.read { $0.user(named: username) }
        // The same work whether or not the user exists: verify against a decoy hash.
        let ok = PasswordHasher.verify(password, against: user?.passwordHash ?? PasswordHasher.decoy) && user != nil
        guard ok, let user else {
            accountFailures.add(accountKey, now: t)
            addressFailures.add(address, now: t)
            throw .invalidCredentials
        }
        accountFailures.reset(accountKey)
        let token = IdentityService.newToken()
        let info = DeviceInfo.parse(userAgent)
        let session = DeviceSession(
            id: IdentityService.newID(), userID: user.id, tokenHash: SHA256.hash(token), ipAddress: address,
            userAgent: String(userAgent.prefix(DeviceInfo.maxLength)), browser: info.browser, os: info.os, deviceType: info.device,
            deviceName: info.deviceName, createdAt: t, lastActivity: t, expiresAt: t + settings.tokenLifetimeSeconds * 1000)
        try write([.putDeviceSession(session)])
        return LoginResult(token: token, session: session, user: user)
    }

    /// The user and device session a token stands for, if it is live: not revoked, not past its absolute or
    /// idle expiry, its user still there. Compares the token's hash in constant time.
    public func authenticate(token: String) -> (User, DeviceSession)? {
        signIn(token: token).map { ($0.user, $0.device) }
    }

    /// The user and device session of a bearer token or `cxs_auth` cookie, if it is live.
    ///
    /// Every authenticated request comes here, so what the store says of a token is kept in a small cache,
    /// dropped as soon as any user or device session changes (a logout, a revocation, a password change, a
    /// deleted user): the store's identity generation moves before such a change can be read, and an entry is
    /// used only while the generation it was read under is current. Expiry is checked on every use.
    public func signIn(token: String) -> SignedIn? { signIn(token: token[...]) }

    /// The same for a token inside a header (hashed where it is: a copy cost an allocation per request).
    public func signIn(token: Substring) -> SignedIn? {
        guard token.utf8.count == 43 else { return nil }
        let key = SHA256.key(token)
        let t = now
        let generation = store.identityGeneration
        var found = tokenCache.withLock { c -> SignedIn? in
            if c.generation != generation {
                c.entries.removeAll(keepingCapacity: true)
                c.generation = generation
                return nil
            }
            return c.entries[key]
        }
        if found == nil {
            guard let (session, user) = store.deviceSessionAndUser(token: key) else { return nil }
            let s = SignedIn(user: user, device: session)
            tokenCache.withLock { c in
                guard c.generation == generation else { return }
                if c.entries.count >= TokenCache.capacity { c.entries.removeAll(keepingCapacity: true) }
                c.entries[key] = s
            }
            found = s
        }
        guard let s = found, s.device.tokenHash.count == 32, TokenKey(s.device.tokenHash).constantTimeEquals(key), isLive(s.device, at: t) else {
            return nil
        }
        // Activity moves the idle expiry; written at most once per interval (a write per request would cost a
        // disk flush per request). After a crash, the idle clock is at most that much behind.
        if t - s.device.lastActivity >= settings.activityWriteInterval * 1000, s.claimTouch() {
            var touched = s.device
            touched.lastActivity = t
            store.write([.putDeviceSession(touched)]) { e in if e != nil { s.releaseTouch() } }
        }
        return s
    }

    public func isLive(_ d: DeviceSession, at t: Int64) -> Bool {
        d.revokedAt == nil && t < d.expiresAt && t < d.lastActivity + settings.tokenIdleSeconds * 1000
    }

    /// When the device session stops working if unused: the earlier of idle and absolute expiry.
    public func effectiveExpiry(_ d: DeviceSession) -> Int64 { min(d.expiresAt, d.lastActivity + settings.tokenIdleSeconds * 1000) }

    /// The live device sessions of a user, most recently used first.
    public func deviceSessions(userID: String) -> [DeviceSession] {
        let t = now
        return store.read { $0.deviceSessions(ofUser: userID) }.filter { isLive($0, at: t) }
            .sorted { $0.lastActivity == $1.lastActivity ? $0.id < $1.id : $0.lastActivity > $1.lastActivity }
    }

    /// Revokes one device session of `userID`; `.notFound` for another user's, an unknown or an ended one.
    @discardableResult
    public func revoke(sessionID: String, userID: String, reason: String) throws(IdentityError) -> DeviceSession {
        let t = now
        guard var d = store.read({ $0.deviceSessions[sessionID] }), d.userID == userID, isLive(d, at: t) else { throw .notFound }
        d.revokedAt = t
        d.revokeReason = reason
        try write([.putDeviceSession(d)])
        return d
    }

    /// Revokes every live device session of `userID` except `keep`; returns how many.
    public func revokeAll(userID: String, keep: String?, reason: String) throws(IdentityError) -> [DeviceSession] {
        let t = now
        let targets = deviceSessions(userID: userID).filter { $0.id != keep }.map { d -> DeviceSession in
            var d = d
            d.revokedAt = t
            d.revokeReason = reason
            return d
        }
        if !targets.isEmpty { try write(targets.map { .putDeviceSession($0) }) }
        return targets
    }

    // MARK: Anonymous browser identities

    /// The anonymous identity named by the cookie if it is live (its `last_active` moves), else a new one.
    public func anonymous(cookie: String?) throws(IdentityError) -> (AnonymousSession, isNew: Bool) {
        let t = now
        if let id = cookie, IdentityService.isUUID(id), let a = anonymousSession(id: id) {
            return (try touch(a), false)
        }
        let a = AnonymousSession(id: IdentityService.newUUID(), createdAt: t, lastActive: t, expiresAt: t + settings.anonymousLifetimeSeconds * 1000)
        try write([.putAnonymousSession(a)])
        return (a, true)
    }

    /// A live anonymous identity by id (no change).
    public func anonymousSession(id: String) -> AnonymousSession? {
        let t = now
        guard let a = store.read({ $0.anonymousSessions[id] }), a.expiresAt > t else { return nil }
        return a
    }

    /// Adopts an id the server issued that is still live; never creates one with a client-chosen id.
    public func syncAnonymous(id: String) throws(IdentityError) -> AnonymousSession {
        guard IdentityService.isUUID(id) else { throw .validation(field: "client_session_id", message: "must be a UUID") }
        guard let a = anonymousSession(id: id) else { throw .notFound }
        return try touch(a)
    }

    /// Use of an anonymous identity moves its expiry; written at most once per `activityWriteInterval`, as for
    /// device sessions, so repeated requests with the cookie do not cost a disk flush each.
    private func touch(_ a: AnonymousSession) throws(IdentityError) -> AnonymousSession {
        let t = now
        guard t - a.lastActive >= settings.activityWriteInterval * 1000 else { return a }
        var a = a
        a.lastActive = t
        a.expiresAt = t + settings.anonymousLifetimeSeconds * 1000
        try write([.putAnonymousSession(a)])
        return a
    }

    /// Adds to an anonymous identity's usage counters. Serialised and written before returning: the record is
    /// read, changed and written whole, so two concurrent requests must not both start from the same copy.
    public func countUsage(anonymousID id: String, sessions: Int = 0, commands: Int = 0, uploads: Int = 0) throws(IdentityError) {
        try anonymousWrites.withLock { _ throws(IdentityError) in
            guard var a = store.read({ $0.anonymousSessions[id] }) else { return }
            a.sessionsCreated += sessions
            a.commandsRun += commands
            a.uploads += uploads
            try write([.putAnonymousSession(a)])
        }
    }

    /// Quota state of an identity (`user:<id>` or `anonymous:<id>`), counting nothing.
    public func quotas(identity: String) -> [QuotaState] {
        let t = now
        return [sessionQuota.peek(identity, now: t), commandQuota.peek(identity, now: t)]
    }

    /// Removes records nobody can use any more: anonymous identities past their expiry, and device sessions
    /// ended (revoked or expired) more than `keepDays` ago (kept a while for the audit trail). Returns how many.
    @discardableResult
    public func purgeExpired(keepDays: Int64 = 7) throws(IdentityError) -> Int {
        let t = now
        let horizon = t - keepDays * 86_400_000
        let (anon, devices) = store.read { s -> ([String], [String]) in
            (s.anonymousSessionsExpiring(before: t).map(\.id),
             s.deviceSessions.values.filter { d in
                 let ended = d.revokedAt ?? min(d.expiresAt, d.lastActivity + settings.tokenIdleSeconds * 1000)
                 return ended < horizon
             }.map(\.id))
        }
        let m: [Mutation] = anon.map { .deleteAnonymousSession(id: $0) } + devices.map { .deleteDeviceSession(id: $0) }
        if !m.isEmpty { try write(m) }
        return m.count
    }

    // MARK: Helpers

    private func write(_ m: [Mutation]) throws(IdentityError) {
        do throws(StoreError) {
            try store.write(m)
        } catch {
            throw .storage(error)
        }
    }

    /// 256 random bits from getrandom(2), base64url without padding (43 characters).
    public static func newToken() -> String {
        var bytes = [UInt8](repeating: 0, count: 32)
        precondition(cshim_getrandom(&bytes, 32) == 0, "getrandom failed")
        return Data(bytes).base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    /// A random id for users and device sessions (128 bits, hex).
    public static func newID() -> String {
        var bytes = [UInt8](repeating: 0, count: 16)
        precondition(cshim_getrandom(&bytes, 16) == 0, "getrandom failed")
        return hexString(bytes)
    }

    /// A random UUID v4, lower-case text.
    public static func newUUID() -> String {
        var b = [UInt8](repeating: 0, count: 16)
        precondition(cshim_getrandom(&b, 16) == 0, "getrandom failed")
        b[6] = (b[6] & 0x0F) | 0x40
        b[8] = (b[8] & 0x3F) | 0x80
        let h = hexString(b)
        let c = Array(h)
        return String(c[0..<8]) + "-" + String(c[8..<12]) + "-" + String(c[12..<16]) + "-" + String(c[16..<20]) + "-" + String(c[20..<32])
    }

    /// Whether `s` is UUID text (any version, either case).
    public static func isUUID(_ s: String) -> Bool {
        let u = Array(s.utf8)
        guard u.count == 36 else { return false }
        for (i, c) in u.enumerated() {
            if i == 8 || i == 13 || i == 18 || i == 23 {
                if c != UInt8(ascii: "-") { return false }
            } else if isxdigit(Int32(c)) == 0 {
                return false
            }
        }
        return true
    }
}
