import Foundation
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
