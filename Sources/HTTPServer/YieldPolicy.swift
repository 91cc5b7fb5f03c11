/// When the event loop gives up the CPU after a turn that wrote answers, and when it stops doing so.
///
/// A `sched_yield()` after such a turn lets a client on this host (a frontend on the Unix socket, a load
/// generator) that those answers woke run at once, instead of waiting out the loop's time slice while the loop
/// keeps finding work. Measured co-located with wrk on two CPUs, the heartbeat p99 went from 1.2–5 ms to about
/// 1.3 ms, and a yield that keeps the loop off the CPU for over 2 ms happened 0–2 times per loop in 5 s.
/// With CPU-bound processes on every CPU (busy ChimeraX sessions) nearly every yield hands one of them a whole
/// slice: 20–220 such yields per second per loop, and always yielding cut heartbeats from ~45,000 to ~7,700
/// req/s. So ten costly yields within a second stop the yielding for a second (with the two busy processes:
/// 48,198 req/s at 8 connections, 71,854 at 64, as without yields). Fewer do not: a client that happened to
/// run long now and then paused it, and the paused seconds brought the tail back (one costly yield: heartbeat
/// p99 up to 3.7 ms; three: /healthz at 120,000–130,000 req/s paused 1–4 times per 5 s run, p99 1.3–7.4 ms;
/// ten: 0–1 pauses, p99 0.85–3.2 ms).
/// Times are monotonic nanoseconds, passed in so that the policy can be tested with a made-up clock.
struct YieldPolicy {
    /// A yield that kept the loop off the CPU longer than this handed the CPU to something that took a slice.
    static let costly: UInt64 = 2_000_000
    /// This many costly yields within `window` stop the yielding for `pause`.
    static let costlyLimit = 10
    static let window: UInt64 = 1_000_000_000
    static let pause: UInt64 = 1_000_000_000

    private var costlyCount = 0
    private var windowStart: UInt64 = 0
    private var pausedUntil: UInt64 = 0

    /// Whether to yield after a turn that wrote answers, at `now`.
    func shouldYield(now: UInt64) -> Bool { now >= pausedUntil }

    /// A yield that began at `start` and returned at `end`.
    mutating func yielded(start: UInt64, end: UInt64) {
        guard end &- start > YieldPolicy.costly else { return }
        if costlyCount == 0 || end &- windowStart > YieldPolicy.window {
            windowStart = end
            costlyCount = 0
        }
        costlyCount += 1
        if costlyCount >= YieldPolicy.costlyLimit {
            pausedUntil = end &+ YieldPolicy.pause
            costlyCount = 0
        }
    }
}
