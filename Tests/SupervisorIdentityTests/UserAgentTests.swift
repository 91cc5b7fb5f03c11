import Foundation
import Testing
@testable import SupervisorIdentity

/// One line of Fixtures/user-agents/corpus.tsv.
private struct CorpusEntry {
    let browser: String
    let os: String
    let device: String
    let claimed: Bool
    let ua: String
    let line: Int
}

private func loadCorpus() throws -> [CorpusEntry] {
    let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    let text = try String(contentsOf: root.appendingPathComponent("Fixtures/user-agents/corpus.tsv"), encoding: .utf8)
    var out: [CorpusEntry] = []
    for (i, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() where !line.hasPrefix("#") && !line.isEmpty {
        let f = line.split(separator: "\t", maxSplits: 4, omittingEmptySubsequences: false).map(String.init)
        guard f.count == 5 else { throw CorpusError(line: i + 1) }
        out.append(CorpusEntry(browser: f[0], os: f[1], device: f[2], claimed: f[3] == "yes", ua: f[4], line: i + 1))
    }
    return out
}

private struct CorpusError: Error { let line: Int }

@Suite("User-Agent parsing")
struct UserAgentTests {
    @Test func theCorpusIsParsedAsLabelledForEveryClaimedFamily() throws {
        let corpus = try loadCorpus()
        #expect(corpus.count >= 300, "the corpus must hold at least 300 strings")
        var checked = [0, 0, 0], passed = [0, 0, 0]
        var unclaimed = 0, unclaimedBrowserRight = 0
        for e in corpus {
            let d = DeviceInfo.parse(e.ua)
            if e.claimed {
                for (k, (want, got)) in [(e.browser, d.browser), (e.os, d.os), (e.device, d.device)].enumerated() where want != "-" {
                    checked[k] += 1
                    if want == got { passed[k] += 1 } else { Issue.record("line \(e.line): \(["browser", "os", "device"][k]) \(got), expected \(want): \(e.ua)") }
                }
            } else {
                unclaimed += 1
                if d.browser == e.browser { unclaimedBrowserRight += 1 }
                // OS and device are claimed for every string, whatever the browser.
                for (k, (want, got)) in [(e.os, d.os), (e.device, d.device)].enumerated() where want != "-" {
                    checked[k + 1] += 1
                    if want == got { passed[k + 1] += 1 } else { Issue.record("line \(e.line): \(["os", "device"][k]) \(got), expected \(want): \(e.ua)") }
                }
            }
        }
        func pct(_ k: Int) -> String { String(format: "%.1f%% (%d/%d)", 100 * Double(passed[k]) / Double(max(1, checked[k])), passed[k], checked[k]) }
        print("User-Agent corpus: \(corpus.count) strings; claimed browser families \(pct(0)), OS \(pct(1)), device type \(pct(2)); "
              + "browsers outside the claimed families named as labelled: \(unclaimedBrowserRight)/\(unclaimed)")
    }

    @Test func deviceNamesReadTheWayPeopleSayThem() {
        #expect(DeviceInfo.parse("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36").deviceName == "Chrome on Windows")
        #expect(DeviceInfo.parse("Mozilla/5.0 (iPad; CPU OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1").deviceName == "Safari on iPadOS")
        #expect(DeviceInfo.parse("curl/8.0").deviceName == "curl")
        #expect(DeviceInfo.parse("").deviceName == "Unknown device")
        #expect(DeviceInfo.parse("").device == "Other")
        // Very long or odd input is cut, never a crash.
        let long = String(repeating: "Mozilla/5.0 (Windows NT 10.0) ", count: 10_000)
        #expect(DeviceInfo.parse(long).os == "Windows")
        #expect(DeviceInfo.parse("\u{0}\u{FFFF}💥").browser == "Other")
    }
}
