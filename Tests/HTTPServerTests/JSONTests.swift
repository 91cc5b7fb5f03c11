import Testing
@testable import HTTPServer

@Suite("JSON")
struct JSONTests {
    @Test func roundTripKeepsOrderAndEscapes() throws {
        let text = #"{"b":1,"a":[true,false,null,-2.5,"x\"\\\n\u0001é😀"],"c":{}}"#
        let v = try JSON.parse(text)
        #expect(v["b"]?.intValue == 1)
        #expect(v.serializedString() == #"{"b":1,"a":[true,false,null,-2.5,"x\"\\\n\u0001é😀"],"c":{}}"#)
    }

    @Test func surrogatePairsDecode() throws {
        #expect(try JSON.parse(#""\ud83d\ude00""#) == .string("😀"))
    }

    @Test(arguments: [
        "", "{", "{\"a\":1,}", "[1,]", "01", "1.", ".5", "+1", "\"\u{01}\"", "\"\\x\"", "tru", "nul", "{\"a\" 1}",
        "{\"a\":1}x", "\"\\ud800\"", "\"\\udc00\"", "{\"a\":1,\"a\":2}", "[\"unterminated]", "1e", "-",
    ])
    func invalidTextIsRefused(_ text: String) {
        #expect(throws: JSONParseError.self) { try JSON.parse(text) }
    }

    @Test func nestingIsBounded() {
        let deep = String(repeating: "[", count: 100) + String(repeating: "]", count: 100)
        #expect(throws: JSONParseError.self) { try JSON.parse(deep) }
        let ok = String(repeating: "[", count: 10) + String(repeating: "]", count: 10)
        #expect(throws: Never.self) { try JSON.parse(ok) }
    }

    @Test func problemDetailsCarryCodeRequestIDAndFieldErrors() throws {
        let p = Problem.validation(field: "name", "too long")
        let r = p.response(requestID: "rid-1")
        #expect(r.status == 400)
        #expect(r.headers["Content-Type"] == "application/problem+json")
        let body = try JSON.parse(r.body)
        #expect(body["code"] == .string("validation_error"))
        #expect(body["request_id"] == .string("rid-1"))
        #expect(body["status"]?.intValue == 400)
        guard case .array(let errs) = body["errors"] else { Issue.record("no errors"); return }
        #expect(errs.first?["field"] == .string("name"))
    }
}
