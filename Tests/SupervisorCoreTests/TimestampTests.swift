import Foundation
import HTTPServer
import Testing
@testable import SupervisorCore

@Suite("Timestamps")
struct TimestampTests {
    @Test func rfc3339WithMillisecondsMatchesFoundation() {
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        f.timeZone = TimeZone(identifier: "UTC")
        var rng = SystemRandomNumberGenerator()
        for ms in [Int64(0), 1, 999, 1000, 1_790_000_000_123, 951_782_400_000, 4_102_444_799_999] + (0..<500).map({ _ in Int64.random(in: 0...4_102_444_799_999, using: &rng) }) {
            let expected = f.string(from: Date(timeIntervalSince1970: Double(ms) / 1000))
            #expect(rfc3339(ms) == expected, "\(ms)")
        }
    }
}

@Suite("Heartbeat answer")
struct HeartbeatAnswerTests {
    /// The answer written straight to bytes is exactly what the JSON tree serializes to, escapes included.
    @Test func theWrittenAnswerEqualsTheTreeSerialization() throws {
        for (id, status, last, expires) in [("3ba00f25-c760-48b1-bc98-911d17394109", "ready", Int64(1_795_000_000_123), Int64(1_795_000_900_123)),
                                            ("with \"quote\" and \\ and \n and \u{1}", "busy", 0, 951_782_400_000),
                                            ("ünïcødé ✓", "", -1, 4_102_444_799_999)] {
            let tree = JSON.object([("id", .string(id)), ("status", .string(status)), ("last_activity", .string(rfc3339(last))),
                                    ("expires_at", .string(rfc3339(expires)))])
            let written = SessionRoutes.heartbeatAnswer(id: id, status: status, lastActivity: last, expiresAt: expires)
            #expect(written == tree.serialized(), "\(String(decoding: written, as: UTF8.self))")
            #expect(try JSON.parse(written) == tree)
        }
    }
}
