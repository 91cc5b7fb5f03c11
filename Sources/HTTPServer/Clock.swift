import Glibc

/// Monotonic nanoseconds (CLOCK_MONOTONIC); what every deadline in the loop is measured in.
@inline(__always)
public func monotonicNanos() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
}

/// Seconds as nanoseconds.
@inline(__always)
public func nanos(seconds: Double) -> UInt64 { UInt64(max(0, seconds) * 1e9) }
