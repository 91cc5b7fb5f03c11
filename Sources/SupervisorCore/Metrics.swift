import HTTPServer
import SupervisorStore
import Synchronization

/// A counter that several threads add to, striped (see `Striped`) and summed when read.
public final class StripedCounter: Sendable {
    private let stripes = Striped { 0 }

    public init() {}

    public func add(_ n: Int) { stripes.withLock { $0 += n } }

    public var value: Int {
        var sum = 0
        stripes.forEach { sum += $0 }
        return sum
    }
}

/// HTTP metrics, striped per thread (each event loop records into its own shard under an uncontended lock);
/// `/metrics` merges the shards.
public final class HTTPMetrics: Sendable {
    /// Latency histogram bounds in seconds.
    public static let buckets: [Double] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]

    struct Key: Hashable {
        let route: String
        let method: String
        let status: Int
    }

    struct Histogram {
        var counts = [UInt64](repeating: 0, count: HTTPMetrics.buckets.count)
        var sum: Double = 0
        var count: UInt64 = 0
    }

    struct Shard {
        var requests: [Key: UInt64] = [:]
        var latency: [String: Histogram] = [:]
        /// The last key recorded and where its two entries are: a run of requests to the same route (the usual
        /// case under load) counts without hashing the route. Indices stay valid until the next insertion,
        /// and every insertion happens here, followed by a fresh lookup.
        var last: (key: Key, request: Dictionary<Key, UInt64>.Index, latency: Dictionary<String, Histogram>.Index)?
    }

    private let shards: Striped<Shard>

    public init() {
        shards = Striped { Shard() }
    }

    public func record(route: String?, method: HTTPMethod, status: Int, nanos: UInt64) {
        let key = Key(route: route ?? "unmatched", method: method.rawValue, status: status)
        let seconds = Double(nanos) / 1e9
        shards.withLock { s in
            if s.last?.key != key {
                if s.requests[key] == nil { s.requests[key] = 0 }
                if s.latency[key.route] == nil { s.latency[key.route] = Histogram() }
                s.last = (key, s.requests.index(forKey: key)!, s.latency.index(forKey: key.route)!)
            }
            let (_, r, l) = s.last!
            s.requests.values[r] += 1
            // In place: a copy of the histogram would copy its counts (an allocation per request).
            HTTPMetrics.observe(&s.latency.values[l], seconds)
        }
    }

    private static func observe(_ h: inout Histogram, _ seconds: Double) {
        if let i = buckets.firstIndex(where: { seconds <= $0 }) { h.counts[i] += 1 }
        h.sum += seconds
        h.count += 1
    }

    /// Prometheus text exposition of the merged shards.
    public func render(into out: inout String) {
        var requests: [Key: UInt64] = [:]
        var latency: [String: Histogram] = [:]
        shards.forEach { s in
            for (k, v) in s.requests { requests[k, default: 0] += v }
            for (k, h) in s.latency {
                var m = latency[k] ?? Histogram()
                for i in 0..<h.counts.count { m.counts[i] += h.counts[i] }
                m.sum += h.sum
                m.count += h.count
                latency[k] = m
            }
        }
        out += "# HELP chimerax_supervisor_http_requests_total HTTP requests answered, by route pattern, method and status.\n"
        out += "# TYPE chimerax_supervisor_http_requests_total counter\n"
        for (k, v) in requests.sorted(by: { ($0.key.route, $0.key.method, $0.key.status) < ($1.key.route, $1.key.method, $1.key.status) }) {
            out += "chimerax_supervisor_http_requests_total{route=\"\(escape(k.route))\",method=\"\(escape(k.method))\",status=\"\(k.status)\"} \(v)\n"
        }
        out += "# HELP chimerax_supervisor_http_request_duration_seconds Time from request head to response, by route pattern.\n"
        out += "# TYPE chimerax_supervisor_http_request_duration_seconds histogram\n"
        for (route, h) in latency.sorted(by: { $0.key < $1.key }) {
            var cumulative: UInt64 = 0
            let label = escape(route)
            for (i, b) in HTTPMetrics.buckets.enumerated() {
                cumulative += h.counts[i]
                out += "chimerax_supervisor_http_request_duration_seconds_bucket{route=\"\(label)\",le=\"\(b)\"} \(cumulative)\n"
            }
            out += "chimerax_supervisor_http_request_duration_seconds_bucket{route=\"\(label)\",le=\"+Inf\"} \(h.count)\n"
            out += "chimerax_supervisor_http_request_duration_seconds_sum{route=\"\(label)\"} \(h.sum)\n"
            out += "chimerax_supervisor_http_request_duration_seconds_count{route=\"\(label)\"} \(h.count)\n"
        }
    }

    /// Label value escaping (backslash, quote, newline).
    func escape(_ s: String) -> String {
        s.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"").replacingOccurrences(of: "\n", with: "\\n")
    }
}
