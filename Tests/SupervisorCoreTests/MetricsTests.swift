import HTTPServer
import Testing
@testable import SupervisorCore

@Suite("HTTP metrics")
struct MetricsTests {
    /// Runs of one key, keys interleaved, and a new route in the middle (an insertion that moves the other
    /// entries) are all counted where they belong.
    @Test func countsAndHistogramsFollowEveryKeyWhateverTheOrder() {
        let m = HTTPMetrics()
        let sequence: [(String?, HTTPMethod, Int)] = [
            ("/a", .GET, 200), ("/a", .GET, 200), ("/b", .PUT, 200), ("/a", .GET, 200), ("/a", .GET, 404),
            (nil, .GET, 404), ("/c", .POST, 201), ("/a", .GET, 200), ("/b", .PUT, 200), ("/c", .POST, 201), ("/c", .POST, 201),
        ]
        for (route, method, status) in sequence { m.record(route: route, method: method, status: status, nanos: 700_000) }
        var text = ""
        m.render(into: &text)
        let lines = Set(text.split(separator: "\n").map(String.init))
        for expected in [
            #"chimerax_supervisor_http_requests_total{route="/a",method="GET",status="200"} 4"#,
            #"chimerax_supervisor_http_requests_total{route="/a",method="GET",status="404"} 1"#,
            #"chimerax_supervisor_http_requests_total{route="/b",method="PUT",status="200"} 2"#,
            #"chimerax_supervisor_http_requests_total{route="/c",method="POST",status="201"} 3"#,
            #"chimerax_supervisor_http_requests_total{route="unmatched",method="GET",status="404"} 1"#,
            #"chimerax_supervisor_http_request_duration_seconds_count{route="/a"} 5"#,
            #"chimerax_supervisor_http_request_duration_seconds_bucket{route="/a",le="0.0005"} 0"#,
            #"chimerax_supervisor_http_request_duration_seconds_bucket{route="/a",le="0.001"} 5"#,
            #"chimerax_supervisor_http_request_duration_seconds_count{route="/c"} 3"#,
        ] {
            #expect(lines.contains(expected), "missing: \(expected)")
        }
        #expect(lines.filter { $0.hasPrefix("chimerax_supervisor_http_requests_total{") }.count == 5)
    }
}
