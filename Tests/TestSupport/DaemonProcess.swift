import Foundation
import Glibc

/// The built `chimerax-supervisor`, started in a private temporary directory and always stopped.
public final class DaemonProcess: @unchecked Sendable {
    // @unchecked Sendable: a test owns its daemon; fields are written once before the instance is shared.
    public let directory: String
    public private(set) var child: Child!
    private let arguments: [String]
    public let logPath: String
    public private(set) var port: UInt16 = 0
    public let socketPath: String
    private var stopped = false

    /// `.build/<config>/chimerax-supervisor`, next to the test bundle (or $CHIMERAX_SUPERVISOR_BIN).
    public static var binary: String {
        if let b = ProcessInfo.processInfo.environment["CHIMERAX_SUPERVISOR_BIN"] { return b }
        let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        var dir = URL(fileURLWithPath: exe).deletingLastPathComponent()
        // The XCTest bundle may be a directory (…xctest/…); walk up to the build directory.
        while !FileManager.default.fileExists(atPath: dir.appendingPathComponent("chimerax-supervisor").path) && dir.path != "/" {
            dir = dir.deletingLastPathComponent()
        }
        return dir.appendingPathComponent("chimerax-supervisor").path
    }

    public static func makeTempDirectory() -> String {
        var template = Array("/tmp/cxs-test-XXXXXX".utf8CString)
        let p = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        return String(cString: p!)
    }

    /// Starts `chimerax-supervisor serve` with `arguments` (a TCP listener on port 0 and a socket in the
    /// temporary directory unless given) and waits until it listens.
    public init(_ arguments: [String] = [], environment: [String: String] = [:], wait: Bool = true, directory: String? = nil) throws {
        self.directory = directory ?? DaemonProcess.makeTempDirectory()
        logPath = self.directory + "/daemon.log"
        socketPath = self.directory + "/api.sock"
        var args = ["serve"]
        if !arguments.contains(where: { $0.hasPrefix("--listen") }) { args += ["--listen", "127.0.0.1:0"] }
        if !arguments.contains(where: { $0.hasPrefix("--socket") && !$0.hasPrefix("--socket-") }) { args += ["--socket", socketPath] }
        if !arguments.contains(where: { $0.hasPrefix("--state-dir") }) { args += ["--state-dir", self.directory + "/state"] }
        args += arguments
        self.arguments = args
        child = try Child(DaemonProcess.binary, args, environment: cleanEnvironment(environment), directory: self.directory,
                          outputPath: logPath)
        if wait { try waitUntilListening() }
    }

    /// Waits for the `listening` log lines; reads the TCP port back.
    public func waitUntilListening(timeout: Double = 20) throws {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            let text = log
            if text.contains("msg=listening") {
                for line in text.split(separator: "\n") where line.contains("msg=listening kind=tcp") {
                    if let r = line.range(of: "port=") { port = UInt16(line[r.upperBound...].prefix { $0.isNumber }) ?? 0 }
                }
                let wantsTCP = !arguments.contains("none") || port != 0
                if port != 0 || !wantsTCP || text.contains("kind=unix") { return }
            }
            if let st = child.wait(timeout: 0) { throw TestFailure("daemon exited with \(st):\n\(log)") }
            usleep(20_000)
        }
        throw TestFailure("daemon did not listen within \(timeout)s:\n\(log)")
    }

    public var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }
    public var pid: Int32 { child.pid }
    public var baseURL: String { "http://127.0.0.1:\(port)" }

    public func signal(_ sig: Int32) { child.signal(sig) }

    /// Waits for exit (killing after `timeout`); returns the exit status, or 128+signal.
    @discardableResult
    public func waitForExit(timeout: Double = 20) -> Int32 {
        if let st = child.wait(timeout: timeout) { return st }
        child.kill9()
        return 128 + SIGKILL
    }

    /// SIGTERM and wait; returns the exit status.
    @discardableResult
    public func stop() -> Int32 {
        child.signal(SIGTERM)
        return waitForExit()
    }

    deinit {
        child?.kill9()
        try? FileManager.default.removeItem(atPath: directory)
    }
}

/// Runs a program to completion and returns its status and output. Output goes through temporary files,
/// not pipes: a child spawned concurrently by another test may inherit a pipe's write end and hold it open.
public func runProgram(_ path: String, _ args: [String], environment: [String: String]? = nil, stdin: String? = nil,
                       timeout: Double = 60) throws
    -> (status: Int32, stdout: String, stderr: String)
{
    let dir = DaemonProcess.makeTempDirectory()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let outPath = dir + "/out", errPath = dir + "/err", inPath = dir + "/in"
    _ = FileManager.default.createFile(atPath: outPath, contents: nil)
    _ = FileManager.default.createFile(atPath: errPath, contents: nil)
    _ = FileManager.default.createFile(atPath: inPath, contents: Data((stdin ?? "").utf8))
    let child = try Child(path, args, environment: environment ?? ProcessInfo.processInfo.environment,
                          outputPath: outPath, errorPath: errPath, inputPath: inPath)
    guard let status = child.wait(timeout: timeout) else { throw TestFailure("\(path) did not finish in \(Int(timeout)) s") }
    let o = (try? String(contentsOfFile: outPath, encoding: .utf8)) ?? ""
    let e = (try? String(contentsOfFile: errPath, encoding: .utf8)) ?? ""
    return (status, o, e)
}

/// `curl` with `args`; `-sS` added.
public func curl(_ args: [String]) throws -> (status: Int32, stdout: String, stderr: String) {
    try runProgram("/usr/bin/curl", ["-sS", "--max-time", "20"] + args)
}
