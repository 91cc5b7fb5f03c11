import Foundation

/// Reads a ChimeraX process's stdout or stderr as it arrives: splits lines (bounded), finds the REST port
/// line, and keeps the last lines for the transcript and for failure reports.
///
/// The port line may be glued to the `cmd> ` prompt, and the `--cmd` echo before it says `port 0`
/// (`Executing: remotecontrol rest start port 0 json true`): only `REST server started on host H port P`
/// counts, anywhere in a line.
public struct OutputScanner: Sendable {
    /// Longest line kept; the rest of a longer line is dropped (and counted).
    public let maxLineBytes: Int
    /// Lines kept for the tail.
    public let tailLines: Int
    private var partial: [UInt8] = []
    private var partialTruncated = false
    public private(set) var tail: [String] = []
    public private(set) var port: UInt16?
    public private(set) var host: String?
    public private(set) var droppedBytes = 0
    public private(set) var totalBytes = 0

    public init(maxLineBytes: Int = 16 << 10, tailLines: Int = 50) {
        self.maxLineBytes = maxLineBytes
        self.tailLines = tailLines
    }

    /// Feeds bytes; returns the complete lines they finished.
    public mutating func feed(_ bytes: some Collection<UInt8>) -> [String] {
        totalBytes += bytes.count
        var lines: [String] = []
        for b in bytes {
            if b == 0x0A {
                lines.append(finishLine())
            } else if partial.count < maxLineBytes {
                partial.append(b)
            } else {
                partialTruncated = true
                droppedBytes += 1
            }
        }
        // An unfinished line is never read for the port: "port 3" may be the start of "port 34719".
        return lines
    }

    /// The unfinished last line, as a line (at end of output).
    public mutating func flush() -> String? { partial.isEmpty ? nil : finishLine() }

    private mutating func finishLine() -> String {
        var line = String(decoding: partial, as: UTF8.self)
        if line.hasSuffix("\r") { line.removeLast() }
        if partialTruncated { line += " […]" }
        partial.removeAll(keepingCapacity: true)
        partialTruncated = false
        if port == nil, let (h, p) = OutputScanner.portLine(line) {
            host = h
            port = p
        }
        tail.append(line)
        if tail.count > tailLines { tail.removeFirst(tail.count - tailLines) }
        return line
    }

    /// `REST server started on host H port P` anywhere in `line`: the host and a port from 1 to 65535.
    public static func portLine(_ line: String) -> (String, UInt16)? {
        let marker = "REST server started on host "
        var search = line[...]
        while let r = search.range(of: marker) {
            let rest = search[r.upperBound...]
            let host = rest.prefix { $0 != " " }
            let after = rest.dropFirst(host.count)
            if !host.isEmpty, after.hasPrefix(" port ") {
                let digits = after.dropFirst(6).prefix { $0.isASCII && $0.isNumber }
                if (1...5).contains(digits.count), let p = UInt16(digits), p > 0 { return (String(host), p) }
            }
            search = rest
        }
        return nil
    }
}
