import Foundation
import Synchronization
import Testing
import TestSupport
@testable import SupervisorIdentity
@testable import SupervisorStore

/// A clock the test moves by hand (milliseconds since the epoch).
private final class ManualClock: Sendable {
    let ms = Atomic<Int64>(1_790_000_000_000)
    func advance(seconds: Int64) { ms.wrappingAdd(seconds * 1000, ordering: .relaxed) }
    var now: @Sendable () -> Int64 { { [self] in ms.load(ordering: .relaxed) } }
}

private func service(_ clock: ManualClock, _ settings: IdentitySettings = IdentitySettings()) throws -> IdentityService {
    let store = try Store(stateDirectory: DaemonProcess.makeTempDirectory() + "/state")
    return IdentityService(store: store, settings: settings, clock: clock.now)
}

@Suite("Identity service")
struct IdentityServiceTests {
    @Test func tokensExpireWhenIdleAndAtTheirAbsoluteEnd() throws {
        let clock = ManualClock()
        var settings = IdentitySettings()
        settings.tokenIdleSeconds = 600
        settings.tokenLifetimeSeconds = 3000
        settings.activityWriteInterval = 60
        let id = try service(clock, settings)
        defer { id.store.close() }
        _ = try id.createUser(username: "ann", password: "ann-password", isAdmin: false)
        let login = try id.login(username: "ann", password: "ann-password", address: "192.0.2.1", userAgent: "curl/8")
        #expect(id.authenticate(token: login.token) != nil)
        // Used every 9 minutes, it stays alive past the idle time...
        for _ in 0..<5 {
            clock.advance(seconds: 540)
            #expect(id.authenticate(token: login.token) != nil)
            // The activity write is asynchronous; let it land before the next step.
            usleep(20_000)
        }
        // ...until the absolute lifetime ends, however busy (300 s after the last use: not idle).
        clock.advance(seconds: 299)
        #expect(id.authenticate(token: login.token) != nil)
        clock.advance(seconds: 1)
        #expect(id.authenticate(token: login.token) == nil)

        // Unused for longer than the idle time: refused.
        let second = try id.login(username: "ann", password: "ann-password", address: "192.0.2.1", userAgent: "curl/8")
        clock.advance(seconds: 601)
        #expect(id.authenticate(token: second.token) == nil)
        #expect(id.deviceSessions(userID: second.user.id).isEmpty)
    }

    @Test func revokedTokensAreRefusedAndOnlyTheOwnerCanRevoke() throws {
        let clock = ManualClock()
        let id = try service(clock)
        defer { id.store.close() }
        _ = try id.createUser(username: "ann", password: "ann-password", isAdmin: false)
        let bob = try id.createUser(username: "bob", password: "bob-password", isAdmin: false)
        let a = try id.login(username: "ann", password: "ann-password", address: "a", userAgent: "")
        #expect(throws: IdentityError.notFound) { try id.revoke(sessionID: a.session.id, userID: bob.id, reason: "x") }
        #expect(id.authenticate(token: a.token) != nil)
        try id.revoke(sessionID: a.session.id, userID: a.user.id, reason: "logout")
        #expect(id.authenticate(token: a.token) == nil)
        #expect(throws: IdentityError.notFound) { try id.revoke(sessionID: a.session.id, userID: a.user.id, reason: "again") }
        // Stored: the hash, not the token.
        let stored = try #require(id.store.state.deviceSessions[a.session.id])
        #expect(stored.tokenHash == SHA256.hash(a.token) && stored.revokeReason == "logout")
    }

    @Test func remembersTokensOnlyUntilAUserOrDeviceSessionChanges() throws {
        let clock = ManualClock()
        let id = try service(clock)
        defer { id.store.close() }
        let ann = try id.createUser(username: "ann", password: "ann-password", isAdmin: false)
        let bob = try id.createUser(username: "bob", password: "bob-password", isAdmin: false)
        let a1 = try id.login(username: "ann", password: "ann-password", address: "a", userAgent: "")
        let a2 = try id.login(username: "ann", password: "ann-password", address: "a", userAgent: "")
        let b = try id.login(username: "bob", password: "bob-password", address: "b", userAgent: "")
        // Answered twice (the second from the cache), the same identity each time.
        for _ in 0..<2 {
            #expect(id.signIn(token: a1.token)?.device.id == a1.session.id)
            #expect(id.signIn(token: b.token)?.user.id == bob.id)
        }
        // Log out everywhere but a2: a1 is refused at once, a2 and bob's token still work.
        _ = try id.revokeAll(userID: ann.id, keep: a2.session.id, reason: "logout_all")
        #expect(id.signIn(token: a1.token) == nil)
        #expect(id.signIn(token: a2.token)?.device.id == a2.session.id)
        #expect(id.signIn(token: b.token) != nil)
        // A new password revokes the rest; a deleted user's token is refused.
        try id.setPassword(userID: ann.id, password: "another-password")
        #expect(id.signIn(token: a2.token) == nil)
        _ = try id.deleteUser(id: bob.id)
        #expect(id.signIn(token: b.token) == nil)
        // A token that differs in one character is refused, cached neighbour or not.
        let last = a2.token.last == "A" ? "B" : "A"
        #expect(id.signIn(token: String(a2.token.dropLast()) + last) == nil)
    }

    @Test func failedLoginsLockTheAccountUntilTheWindowPasses() throws {
        let clock = ManualClock()
        let id = try service(clock)
        defer { id.store.close() }
        _ = try id.createUser(username: "ann", password: "ann-password", isAdmin: false)
        for _ in 0..<5 {
            #expect(throws: IdentityError.invalidCredentials) { try id.login(username: "ann", password: "nope", address: "a", userAgent: "") }
        }
        #expect(throws: IdentityError.rateLimited(retryAfter: 900)) { try id.login(username: "ann", password: "ann-password", address: "b", userAgent: "") }
        clock.advance(seconds: 899)
        #expect(throws: IdentityError.rateLimited(retryAfter: 1)) { try id.login(username: "ANN", password: "ann-password", address: "b", userAgent: "") }
        clock.advance(seconds: 1)
        #expect(try id.login(username: "ann", password: "ann-password", address: "b", userAgent: "").user.username == "ann")
    }

    @Test func quotaWindowsCountAndReset() {
        let q = RateLimiter(policy: QuotaPolicy(name: "session_creation", limit: 3, window: 60))
        #expect(q.consume("k", now: 0).remaining == 2)
        #expect(q.consume("k", now: 1000).remaining == 1)
        #expect(q.consume("k", now: 2000).allowed)
        let refused = q.consume("k", now: 3000)
        #expect(!refused.allowed && refused.remaining == 0 && refused.resetIn == 57)
        #expect(refused.header == #""session_creation";r=0;t=57"#)
        #expect(q.policy.policyHeader == #""session_creation";q=3;w=60"#)
        #expect(q.consume("other", now: 3000).allowed, "per key")
        #expect(q.consume("k", now: 60_000).allowed, "a new window")
        // Bounded memory: many keys evict old windows.
        let small = RateLimiter(policy: QuotaPolicy(name: "x", limit: 1, window: 60), maxKeys: 100)
        for i in 0..<1000 { _ = small.consume("key\(i)", now: Int64(i)) }
        #expect(small.peek("key999", now: 1000).remaining == 0)
    }

    @Test func anonymousIdentitiesAreOnlyEverServerIssued() throws {
        let clock = ManualClock()
        let id = try service(clock)
        defer { id.store.close() }
        let (a, isNew) = try id.anonymous(cookie: nil)
        #expect(isNew && IdentityService.isUUID(a.id))
        #expect(try id.anonymous(cookie: a.id).isNew == false)
        let made = "8f14e45f-ceea-467f-a0e6-3c1b2f1e9a7b"
        #expect(throws: IdentityError.notFound) { try id.syncAnonymous(id: made) }
        #expect(try id.anonymous(cookie: made).0.id != made)
        #expect(throws: IdentityError.validation(field: "client_session_id", message: "must be a UUID")) { try id.syncAnonymous(id: "nope") }
        // Using it again within a minute writes nothing (each write is a disk flush); later it moves the expiry.
        let writes = id.store.statistics.writes
        for _ in 0..<20 { _ = try id.anonymous(cookie: a.id) }
        #expect(id.store.statistics.writes == writes)
        clock.advance(seconds: 61)
        #expect(try id.syncAnonymous(id: a.id).expiresAt == clock.now() + 30 * 86_400_000)
        #expect(id.store.statistics.writes == writes + 1)
        try id.countUsage(anonymousID: a.id, sessions: 2, uploads: 1)
        #expect(id.anonymousSession(id: a.id)?.sessionsCreated == 2 && id.anonymousSession(id: a.id)?.uploads == 1)
        clock.advance(seconds: 31 * 86_400)
        #expect(id.anonymousSession(id: a.id) == nil, "expired after 30 days unused")
        #expect(throws: IdentityError.notFound) { try id.syncAnonymous(id: a.id) }
    }

    @Test func expiredIdentitiesArePurgedAfterAWhile() throws {
        let clock = ManualClock()
        let id = try service(clock)
        defer { id.store.close() }
        _ = try id.createUser(username: "ann", password: "ann-password", isAdmin: false)
        let login = try id.login(username: "ann", password: "ann-password", address: "a", userAgent: "")
        let (anon, _) = try id.anonymous(cookie: nil)
        try id.revoke(sessionID: login.session.id, userID: login.user.id, reason: "logout")
        #expect(try id.purgeExpired() == 0, "nothing is old enough yet")
        clock.advance(seconds: 8 * 86_400)
        #expect(try id.purgeExpired() == 1, "the revoked device session, kept 7 days")
        #expect(id.store.state.deviceSessions[login.session.id] == nil)
        #expect(id.store.state.anonymousSessions[anon.id] != nil)
        clock.advance(seconds: 23 * 86_400)
        #expect(try id.purgeExpired() == 1, "the anonymous identity, 30 days unused")
        #expect(id.store.state.anonymousSessions.isEmpty)
        #expect(id.store.state.users.count == 1)
    }
}
