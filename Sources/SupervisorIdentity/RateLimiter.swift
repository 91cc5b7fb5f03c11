import Synchronization

/// A quota: at most `limit` events per `window` seconds, counted in fixed windows that start with the first
/// event (draft-ietf-httpapi-ratelimit-headers: `q` and `w`).
public struct QuotaPolicy: Sendable, Equatable {
    public let name: String
    public let limit: Int
    public let window: Int64

    public init(name: String, limit: Int, window: Int64) {
        self.name = name
        self.limit = limit
        self.window = window
    }

    /// `"session_creation";q=10;w=3600`
    public var policyHeader: String { "\"\(name)\";q=\(limit);w=\(window)" }
}

/// Where a key stands in a quota.
public struct QuotaState: Sendable, Equatable {
    public let policy: QuotaPolicy
    public let remaining: Int
    /// Seconds until the window resets.
    public let resetIn: Int64
    /// When the window resets, in milliseconds since the epoch.
    public let resetAt: Int64
    /// Whether the event that asked was allowed (always true for a plain look).
    public let allowed: Bool

    /// `"session_creation";r=4;t=1200`
    public var header: String { "\"\(policy.name)\";r=\(remaining);t=\(resetIn)" }
}

/// Fixed-window counters per key, bounded in memory: the oldest windows go first when there are too many keys.
/// Time is injected (milliseconds), so tests need no sleeping.
public final class RateLimiter: Sendable {
    public let policy: QuotaPolicy
    private let maxKeys: Int
    private struct Window {
        var start: Int64
        var count: Int
    }

    private let windows = Mutex<[String: Window]>([:])

    public init(policy: QuotaPolicy, maxKeys: Int = 100_000) {
        self.policy = policy
        self.maxKeys = maxKeys
    }

    /// Counts one event for `key` if the quota allows it.
    public func consume(_ key: String, now: Int64) -> QuotaState { record(key, now: now, consume: true) }

    /// Where `key` stands, counting nothing.
    public func peek(_ key: String, now: Int64) -> QuotaState { record(key, now: now, consume: false) }

    /// Counts an event whatever the quota says (failed logins: each one counts).
    public func add(_ key: String, now: Int64) { _ = record(key, now: now, consume: true, force: true) }

    public func reset(_ key: String) { windows.withLock { $0[key] = nil } }

    private func record(_ key: String, now: Int64, consume: Bool, force: Bool = false) -> QuotaState {
        let windowMs = policy.window * 1000
        return windows.withLock { w in
            var win = w[key] ?? Window(start: now, count: 0)
            if now - win.start >= windowMs { win = Window(start: now, count: 0) }
            var allowed = win.count < policy.limit
            if consume && (allowed || force) {
                win.count += 1
                if w[key] == nil && w.count >= maxKeys { Self.evictOldest(&w, now: now, windowMs: windowMs) }
                w[key] = win
            }
            if force { allowed = win.count <= policy.limit }
            let resetAt = win.start + windowMs
            return QuotaState(policy: policy, remaining: max(0, policy.limit - win.count), resetIn: max(0, (resetAt - now + 999) / 1000),
                              resetAt: resetAt, allowed: allowed)
        }
    }

    private static func evictOldest(_ w: inout [String: Window], now: Int64, windowMs: Int64) {
        // Expired windows first; if none, the oldest tenth.
        let expired = w.filter { now - $0.value.start >= windowMs }.map(\.key)
        if !expired.isEmpty {
            for k in expired { w[k] = nil }
            return
        }
        for (k, _) in w.sorted(by: { $0.value.start < $1.value.start }).prefix(max(1, w.count / 10)) { w[k] = nil }
    }
}
