import Testing
@testable import HTTPServer

/// What a decoder made of some input: heads, bodies (consecutive pieces joined) and ends, or the error.
private func decode(_ chunks: [[UInt8]], limits: ParserLimits = ParserLimits()) -> (events: [String], error: HTTPParseError?) {
    var d = RequestDecoder(limits: limits)
    var out: [String] = []
    var body: [UInt8] = []
    func drain() throws(HTTPParseError) {
        while let e = try d.next() {
            switch e {
            case .head(let h):
                let hd = h
                let fields = hd.headers.fields.map { "\($0.name)=\($0.value)" }.joined(separator: ",")
                out.append("head \(hd.method) \(hd.target) 1.\(hd.versionMinor) \(hd.framing) ka=\(hd.keepAlive) [\(fields)]")
            case .body(let b):
                body += b
            case .end:
                if !body.isEmpty { out.append("body " + String(decoding: body, as: UTF8.self)) }
                body = []
                out.append("end")
                d.resume()
            }
        }
    }
    do {
        for c in chunks {
            d.append(c)
            try drain()
        }
        return (out, nil)
    } catch {
        return (out, error)
    }
}

private func bytes(_ s: String) -> [UInt8] { Array(s.utf8) }

@Suite("RequestDecoder")
struct RequestDecoderTests {
    static let pipelined =
        "GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
        + "POST /b?q=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
        + "PUT /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\nTrailer: t\r\n\r\n"
        + "\r\nHEAD /d HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"

    @Test func pipelinedRequestsDecodeInOrder() {
        let r = decode([bytes(Self.pipelined)])
        #expect(r.error == nil)
        #expect(r.events == [
            "head GET /a 1.1 none ka=true [Host=x]", "end",
            "head POST /b?q=1 1.1 length(5) ka=true [Host=x,Content-Length=5]", "body hello", "end",
            "head PUT /c 1.1 chunked ka=true [Host=x,Transfer-Encoding=chunked]", "body abc0123456789abcdef", "end",
            "head HEAD /d 1.0 none ka=true [Connection=keep-alive]", "end",
        ])
    }

    @Test func everySplitPointGivesTheSameEvents() {
        let all = bytes(Self.pipelined)
        let reference = decode([all])
        for k in 0...all.count {
            let r = decode([Array(all[..<k]), Array(all[k...])])
            #expect(r.error == nil, "split at \(k)")
            #expect(r.events == reference.events, "split at \(k)")
        }
    }

    @Test func everyTwoSplitPointsOfAChunkedBodyGiveTheSameEvents() {
        let all = bytes("POST /u HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n1;a=b\r\n \r\n0\r\n\r\n")
        let reference = decode([all])
        #expect(reference.events.contains("body hello "))
        for i in 0...all.count {
            for j in i...all.count {
                let r = decode([Array(all[..<i]), Array(all[i..<j]), Array(all[j...])])
                #expect(r.events == reference.events && r.error == nil, "splits at \(i), \(j)")
            }
        }
    }

    @Test func byteByByteInputGivesTheSameEvents() {
        let all = bytes(Self.pipelined)
        let r = decode(all.map { [$0] })
        #expect(r.error == nil)
        #expect(r.events == decode([all]).events)
    }

    @Test func decoderWaitsForResumeBetweenPipelinedRequests() throws {
        var d = RequestDecoder()
        d.append(bytes("GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\n\r\n"))
        guard case .head = try d.next() else { Issue.record("expected head"); return }
        #expect(try d.next() == .end)
        #expect(try d.next() == nil)
        #expect(d.isPaused)
        d.resume()
        guard case .head(let h) = try d.next() else { Issue.record("expected second head"); return }
        #expect(h.target == "/2")
    }

    @Test func absoluteFormIsReducedToPathAndQuery() {
        let r = decode([bytes("GET http://example.org/x/y?z=1 HTTP/1.1\r\nHost: example.org\r\n\r\n")])
        #expect(r.events.first?.hasPrefix("head GET /x/y?z=1 ") == true)
    }

    @Test func pathAndQueryAreSplitAtTheFirstQuestionMark() throws {
        for (target, path, query) in [("/a/b?x=1&y=?2", "/a/b", "x=1&y=?2"), ("/a?", "/a", ""), ("/?q", "/", "q"), ("/plain", "/plain", ""),
                                      ("http://h/p?q=1", "/p", "q=1"), ("http://h?q", "/", "q")] {
            var d = RequestDecoder()
            d.append(bytes("GET \(target) HTTP/1.1\r\nHost: h\r\n\r\n"))
            guard case .head(let h) = try d.next() else {
                Issue.record("\(target): no head")
                continue
            }
            #expect(h.path == path && h.query == query, "\(target)")
        }
    }

    @Test func tcharIsExactlyTheRFC9110Set() {
        let set = Set("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ".utf8)
        for b in 0...255 { #expect(isTchar(UInt8(b)) == set.contains(UInt8(b)), "byte \(b)") }
    }

    @Test func connectionCloseAndHTTP10DefaultsDecideKeepAlive() {
        #expect(decode([bytes("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")]).events.first?.contains("ka=false") == true)
        #expect(decode([bytes("GET / HTTP/1.0\r\n\r\n")]).events.first?.contains("ka=false") == true)
    }

    @Test func identicalDuplicateContentLengthIsAccepted() {
        let r = decode([bytes("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok")])
        #expect(r.error == nil)
        #expect(r.events.contains("body ok"))
    }

    @Test func expectContinueIsRecognised() throws {
        var d = RequestDecoder()
        d.append(bytes("POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n"))
        guard case .head(let h) = try d.next() else { Issue.record("expected head"); return }
        #expect(h.expectContinue)
    }

    /// Every shape that must be refused, with the status it is refused with.
    static let rejected: [(String, String, Int)] = [
        ("CL with TE", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        ("TE with CL", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", 400),
        ("differing duplicate CL", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", 400),
        ("differing CL list", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 4\r\n\r\n", 400),
        ("signed CL", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\n", 400),
        ("hex CL", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0x3\r\n\r\n", 400),
        ("empty CL", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: \r\n\r\n", 400),
        ("huge CL", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n", 400),
        ("bad chunk size", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
        ("empty chunk size", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\r\n", 400),
        ("negative chunk size", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n", 400),
        ("overlong chunk size", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000000\r\n", 400),
        ("space after chunk size", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5 5\r\n", 400),
        ("chunk data without CRLF", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n", 400),
        ("chunk line bare LF", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\nab\r\n", 400),
        ("TE not ending in chunked", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 400),
        ("TE chunked twice", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", 400),
        ("TE in HTTP/1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        ("unknown TE", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
        ("obs-fold", "GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n  continued\r\n\r\n", 400),
        ("obs-fold with tab", "GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n\tcontinued\r\n\r\n", 400),
        ("space before colon", "GET / HTTP/1.1\r\nHost: x\r\nContent-Length : 0\r\n\r\n", 400),
        ("tab before colon", "GET / HTTP/1.1\r\nHost: x\r\nX-A\t: 1\r\n\r\n", 400),
        ("control character in value", "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\u{01}b\r\n\r\n", 400),
        ("NUL in value", "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\u{00}b\r\n\r\n", 400),
        ("DEL in value", "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\u{7F}b\r\n\r\n", 400),
        ("bare CR in value", "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n", 400),
        ("bare LF line end", "GET / HTTP/1.1\nHost: x\r\n\r\n", 400),
        ("empty field name", "GET / HTTP/1.1\r\nHost: x\r\n: v\r\n\r\n", 400),
        ("field without colon", "GET / HTTP/1.1\r\nHost: x\r\nNoColon\r\n\r\n", 400),
        ("non-token field name", "GET / HTTP/1.1\r\nHost: x\r\nX(A): 1\r\n\r\n", 400),
        ("non-token method", "G(T / HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        ("method with slash", "GE/T / HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        ("double space in request line", "GET  / HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        ("missing version", "GET /\r\nHost: x\r\n\r\n", 400),
        ("lowercase version", "GET / http/1.1\r\nHost: x\r\n\r\n", 400),
        ("HTTP/2.0", "GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505),
        ("HTTP/1.2", "GET / HTTP/1.2\r\nHost: x\r\n\r\n", 505),
        ("target not origin-form", "GET foo HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        ("asterisk for GET", "GET * HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        ("non-ASCII target", "GET /\u{e9} HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        ("HTTP/1.1 without Host", "GET / HTTP/1.1\r\n\r\n", 400),
        ("two Host fields", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        ("unknown expectation", "POST / HTTP/1.1\r\nHost: x\r\nExpect: 200-ok\r\nContent-Length: 1\r\n\r\n", 417),
        ("request line too long", "GET /" + String(repeating: "a", count: 9000) + " HTTP/1.1\r\nHost: x\r\n\r\n", 414),
        ("too many fields", "GET / HTTP/1.1\r\nHost: x\r\n" + (0..<101).map { "X-\($0): v\r\n" }.joined() + "\r\n", 431),
        ("header section too large", "GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + String(repeating: "b", count: 33 * 1024) + "\r\n\r\n", 431),
        ("trailer too large", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: " + String(repeating: "t", count: 9000) + "\r\n\r\n", 431),
        ("too many empty lines first", String(repeating: "\r\n", count: 9) + "GET / HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ]

    @Test(arguments: rejected.indices)
    func rejectedShape(_ i: Int) {
        let (name, text, status) = Self.rejected[i]
        let whole = decode([bytes(text)])
        #expect(whole.error?.status == status, "\(name): whole input gave \(String(describing: whole.error))")
        let split = decode(bytes(text).map { [$0] })
        #expect(split.error?.status == status, "\(name): byte-by-byte gave \(String(describing: split.error))")
    }

    @Test func unterminatedOversizeHeadIsRefusedBeforeItEnds() {
        // The limit applies while the head is still arriving: a client cannot make us buffer without bound.
        let r = decode([bytes("GET / HTTP/1.1\r\nHost: x\r\nX: " + String(repeating: "a", count: 40 * 1024))])
        #expect(r.error?.status == 431)
        let line = decode([bytes("GET /" + String(repeating: "a", count: 9000))])
        #expect(line.error?.status == 414)
    }
}
