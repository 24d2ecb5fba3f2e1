import XCTest
@testable import MobileSD

/// Token ids exactly as the host's CLIPTokenizer makes them (golden section "tokenizer"): unicode, case,
/// punctuation, contractions, special tokens, truncation.
final class BPETokenizerTests: XCTestCase {
    func testEveryPromptMatchesTheHost() throws {
        let g = try GoldenVectors.shared()
        let section = try g.section("tokenizer")
        let tokenizer = try BPETokenizer(vocabularyURL: g.root.appendingPathComponent(section["vocab"]!.string!),
                                         mergesURL: g.root.appendingPathComponent(section["merges"]!.string!),
                                         bosId: section["bos_id"]!.int!, eosId: section["eos_id"]!.int!,
                                         padId: section["pad_id"]!.int!, maxLength: section["max_length"]!.int!)
        let cases = section["cases"]?.array ?? []
        XCTAssertGreaterThanOrEqual(cases.count, 30)
        for c in cases {
            let prompt = c["prompt"]!.string!
            let expected = (c["ids"]?.array ?? []).compactMap(\.int).map { Int32($0) }
            let (ids, length) = tokenizer.tokenize(prompt)
            XCTAssertEqual(ids, expected, "prompt \(prompt.debugDescription)")
            XCTAssertEqual(length, c["untruncated_length"]?.int, "untruncated length of \(prompt.debugDescription)")
        }
    }
}
